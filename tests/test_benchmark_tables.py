"""The benchmarks that are grids are study files (``benchmarks/studies/``) and a script that writes their table from
the study's ``results.csv``. The studies take hours, so here each table script reads a study folder laid out as
``privmed study`` writes it, with known figures, and the table must show them; the study files themselves must
load as studies (every cell validated)."""

from __future__ import annotations

import json
import math
import runpy
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from privmed import Mechanism, epsilon_for, load_study
from privmed.privacy.record import PrivacyRecord, Stage
from privmed.rundir import write_json, write_record, write_yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
STUDIES = sorted((BENCH / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_benchmark_study_is_a_valid_study_with_its_table_script(path):
    study, _ = load_study(path)
    assert study.cells(Path("OUT"))
    tables = [s for s in BENCH.glob("*_table.py") if f"studies/{path.name}" in s.read_text()]
    assert tables, f"no benchmarks/*_table.py reads {path.name}"


def study_folder(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    """``tmp_path/name`` as ``privmed study benchmarks/studies/<name>.yaml --out`` leaves it: the study file,
    ``timing.json`` and ``results.csv`` (the columns the table scripts read), one finished row per ``rows``."""
    out = tmp_path / name
    out.mkdir()
    shutil.copy(BENCH / "studies" / f"{name}.yaml", out / "study.yaml")
    (out / "timing.json").write_text(json.dumps({"invocations": [{"started": "", "seconds": 120.0, "workers": 2,
                                                                   "cpu_count": 2, "runs_trained": len(rows)}],
                                                 "wall_seconds": 120.0}))
    table = [{"run": f"{r['strategy']}__eps{r['epsilon']:g}__seed{r['seed']}", "status": "finished", "unit": "patient",
              "test_auroc_ci_low": 0.4, "test_auroc_ci_high": 0.8, "train_seconds": 10.0,
              "total_epsilon": r["epsilon"], **r} for r in rows]
    for row in table:
        row["dir"] = f"runs/{row['run']}"
    pd.DataFrame(table + [{"run": "unfinished", "status": "pending", "strategy": rows[0]["strategy"]}]).to_csv(
        out / "results.csv", index=False)
    return out


def run_table(script: str, monkeypatch, *args: str) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(BENCH / script), run_name="__main__")


def test_cnn_utility_table_reads_each_strategys_levers_from_the_study_file(tmp_path, monkeypatch):
    rows = [{"strategy": s, "epsilon": eps, "seed": seed, "val_auroc": 0.6 + views / 100 + seed / 50,
             "test_auroc": 0.5 + views / 100}
            for s, views in (("views1_ema0", 1), ("views4_ema0.9", 4)) for eps in (1.0, math.inf) for seed in (0, 1)]
    out = study_folder(tmp_path, "cnn_utility", rows)
    run_table("cnn_utility_table.py", monkeypatch, "--study", str(out), "--results", str(tmp_path / "results"))
    md = (tmp_path / "results" / "cnn_utility.md").read_text()
    assert "| 1 | 4 | 0.9 | 1 | 0.650 | 0.540 (0.540-0.540) | 2 | 10 |" in md  # views 4, ema .9: mean of seeds
    assert "| ∞ | 1 | 0 | inf | 0.620 | 0.510 (0.510-0.510) | 2 | 10 |" in md
    written = pd.read_csv(tmp_path / "results" / "cnn_utility.csv")
    assert len(written) == 8 and set(written["views"]) == {1, 4}  # the pending row is left out


def test_phantom_pretrain_table_marks_the_better_head_on_val_and_compares_at_the_same_target(tmp_path, monkeypatch):
    rows = [{"strategy": "dp_sgd_real", "epsilon": 2.0, "seed": 0, "val_auroc": 0.6, "test_auroc": 0.55},
            {"strategy": "pretrain_finetune_kept", "epsilon": 2.0, "seed": 0, "val_auroc": 0.65, "test_auroc": 0.60},
            {"strategy": "pretrain_finetune_reinit", "epsilon": 2.0, "seed": 0, "val_auroc": 0.62, "test_auroc": 0.70}]
    out = study_folder(tmp_path, "phantom_pretrain", rows)
    run_table("phantom_pretrain_table.py", monkeypatch, "--study", str(out), "--results", str(tmp_path / "results"))
    md = (tmp_path / "results" / "phantom_pretrain.md").read_text()
    assert "| pretrain_finetune_kept | kept * | 2 | 2 | 0.650 | 0.600 (0.600-0.600) | +0.050 | 1 |" in md
    assert "| pretrain_finetune_reinit | re-initialised | 2 | 2 | 0.620 | 0.700 (0.700-0.700) | +0.150 | 1 |" in md


def fake_run(out: Path, run: str, *, epsilon: float, kept: dict) -> None:
    """A run folder with the files cbis_dp_sgd_table reads: its config, its sealed ledger, its metrics."""
    folder = out / "runs" / run
    folder.mkdir(parents=True)
    write_yaml(folder / "config.yaml", {"privacy": {"max_images_per_patient": 1},
                                        "training": {"lr": 0.3, "epochs": 40}, "tune": {"lr": [], "epochs": [15, 40]}})
    write_json(folder / "metrics.json", {"checkpoint": {"candidate": kept}})
    if math.isinf(epsilon):
        record = PrivacyRecord(private=False, summary="not private")
    else:
        stages = (Mechanism("dp_sgd[epochs=15]", 1.0, 0.2, 75), Mechanism("dp_sgd[epochs=40]", 1.0, 0.2, 200))
        delta = 1e-4
        record = PrivacyRecord(private=True, summary="private", epsilon=epsilon_for(stages, delta=delta), delta=delta,
                               noise_multiplier=1.0, sample_rate=0.2, steps=200,
                               stages=tuple(Stage(stage=m.stage, noise_multiplier=m.noise_multiplier,
                                                  sample_rate=m.sample_rate, steps=m.steps) for m in stages))
    write_record(folder, record)


def test_cbis_dp_sgd_table_checks_every_ledger_with_an_independent_accountant(tmp_path, monkeypatch):
    stages = (Mechanism("a", 1.0, 0.2, 75), Mechanism("b", 1.0, 0.2, 200))
    private = epsilon_for(stages, delta=1e-4)
    rows = [{"strategy": unit, "unit": unit, "epsilon": eps, "seed": 0, "val_auroc": 0.7, "test_auroc": test}
            for unit, test in (("patient", 0.6), ("image", 0.5)) for eps in (1.0, math.inf)]
    out = study_folder(tmp_path, "cbis_dp_sgd", rows)
    table = pd.read_csv(out / "results.csv")
    table.loc[table["epsilon"] == 1.0, "total_epsilon"] = private
    table.to_csv(out / "results.csv", index=False)
    for r in rows:
        fake_run(out, f"{r['strategy']}__eps{r['epsilon']:g}__seed0", epsilon=r["epsilon"], kept={"epochs": 15})
    run_table("cbis_dp_sgd_table.py", monkeypatch, "--study", str(out), "--results", str(tmp_path / "results"))
    written = pd.read_csv(tmp_path / "results" / "cbis_dp_sgd.csv")
    checked = written[written["epsilon"] == 1.0]
    assert len(checked) == 2 and (checked["epsilon_prv_accountant"].astype(float) - private).abs().max() < 0.01
    assert set(written["chosen_epochs"]) == {15} and set(written["candidates"]) == {2}
    md = (tmp_path / "results" / "cbis_dp_sgd.md").read_text()
    assert "| 1 | 0.525 | 0.600 (0.600-0.600) | 0.700 | 0.500 (0.500-0.500) | 0.700 | +0.100 | yes |" in md
    assert "largest difference" in md and "over 2 runs" in md
