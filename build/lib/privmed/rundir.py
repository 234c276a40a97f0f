"""The run directory: resolved config, privacy ledger, metrics, predictions, checkpoints, log.

Files are written atomically (temporary file + rename) so an interrupted run never
leaves a half-written JSON or CSV behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

CONFIG = "config.yaml"
PRIVACY = "privacy.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
LOG = "train.log"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def write_json(path: Path, data: Any) -> None:
    """Atomically write JSON (inf/nan become the strings 'inf'/'nan')."""
    _atomic_write(path, json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Atomically write a CSV without the index."""
    _atomic_write(path, frame.to_csv(index=False))


def write_yaml(path: Path, data: Any) -> None:
    """Atomically write a plain mapping as YAML (the resolved configuration)."""
    _atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def read_config_dict(run: Path) -> dict[str, Any]:
    return yaml.safe_load((Path(run) / CONFIG).read_text())


def append_log(run: Path, line: str) -> None:
    with open(Path(run) / LOG, "a") as fh:
        fh.write(line.rstrip("\n") + "\n")


def _atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return str(obj)
    return obj
