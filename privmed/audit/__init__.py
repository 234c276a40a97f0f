"""Empirical privacy audits: membership inference against trained models and generators."""
