"""Studies: a grid of runs (strategies x epsilon x seeds x models) from one file, resumable, on workers."""

from .config import StudyConfig, load_study, study_from_dict
from .results import collect
from .runner import StudyResult, run_study

__all__ = ["StudyConfig", "load_study", "study_from_dict", "run_study", "StudyResult", "collect"]
