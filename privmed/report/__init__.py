"""Reports: a study's privacy–utility–fairness report as one HTML file and a Markdown twin."""

from .study import write_report

__all__ = ["write_report"]
