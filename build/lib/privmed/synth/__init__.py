"""Synthetic data: a class-conditioned generator trained with or without DP, sampling, quality."""
