"""privmed report: a study's HTML and Markdown report, and that it renders in headless Chromium."""

from __future__ import annotations

import io
import json
from html import escape as html_escape
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privmed.cli import main
from privmed.errors import PrivmedError
from privmed.evaluation.fairness import SUPPRESSED
from privmed.report import write_report
from privmed.report.document import Table, format_value, to_html
from privmed.report.study import NOT_A_STUDY
from privmed.study import run_study, study_from_dict

STUDY = {
    "name": "tiny-report",
    "base": {"data": {"phantom_samples": 300, "image_size": 32},
             "training": {"epochs": 2, "batch_size": 64, "bootstrap_resamples": 100}},
    "strategies": {"dp_sgd": {}, "lower_lr": {"training": {"lr": 0.05}}},
    "epsilons": [1, 4, "inf"],
    "seeds": [0],
    "fairness": {"attributes": ["breast_density"]},
    "audit": {"shadows": 2, "canaries": 60, "strategies": ["dp_sgd"], "epsilons": [1, "inf"]},
    "validation_choices": ["The learning rates were picked by hand for this test."],
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, str]:
    from privmed.data.phantom import PhantomSpec, write_phantom_dataset

    out = tmp_path_factory.mktemp("report_study")
    external = write_phantom_dataset(out.parent / "external_phantom", PhantomSpec(n_samples=200, image_size=32,
                                                                                  seed=7))
    raw = {**STUDY, "external": [{"name": "other_site", "path": str(external.parent), "split": "test"}]}
    run_study(study_from_dict(raw), raw, out=out, progress=lambda _: None)
    html, md = write_report(out)
    return out, html.read_text(), md.read_text()


def test_report_lists_every_run_and_says_which_are_not_private(report):
    out, html, md = report
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 6
    for run in results["run"]:
        assert run in html and run in md
    assert "2 of 6 finished runs are not differentially private" in html
    assert set(results["unit"]) == {"patient"}  # the phantom has patient ids: the default unit
    assert "Unit of privacy (whom ε protects): one patient and all of their images in 6 run(s)." in md
    assert "The classifier was trained on the private data without DP-SGD" in html
    assert "The learning rates were picked by hand for this test." in md
    assert "best AUROC on the private validation split" in md


def test_report_has_the_utility_and_fairness_charts_inline(report):
    out, html, md = report
    charts = re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', html)
    assert charts == ["utility_test", "utility_other_site", "subgroup_auroc_breast_density", "parity_breast_density"]
    assert "<script" not in html and "<link" not in html  # self-contained: nothing fetched, nothing run
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    for name in charts:
        assert (out / "report_files" / f"{name}.svg").is_file() and f"report_files/{name}.svg" in md


def test_report_suppresses_small_subgroups(report):
    out, html, _ = report
    fairness = pd.read_csv(out / "fairness.csv")
    assert fairness["suppressed"].any(), "the tiny phantom should have a density group under 10 test samples"
    assert html_escape(SUPPRESSED) in html


def test_external_test_sets_get_their_own_columns_and_curve(report):
    out, html, _ = report
    results = pd.read_csv(out / "results.csv")
    assert results["other_site_auroc"].notna().all() and (results["other_site_n"] > 0).all()
    run = out / results["dir"].iloc[0]
    assert (run / "evaluations" / "other_site" / "test" / "metrics.json").is_file()
    assert "external test set &#x27;other_site&#x27; (test)" in html


def test_audited_runs_carry_attack_results_beside_their_claimed_epsilon(report):
    out, html, _ = report
    results = pd.read_csv(out / "results.csv").set_index("run")
    audited = results[results["audit_design"].notna()]
    assert sorted(audited.index) == ["dp_sgd__eps1__seed0", "dp_sgd__epsinf__seed0"]
    for run, row in audited.iterrows():
        record = json.loads((out / row["dir"] / "audit" / "audit_crafted_canaries60.json").read_text())
        lira = next(a for a in record["attacks"] if a["attack"] == "lira" and a["design"] == "one-run")
        assert row["audit_design"] == "one-run"
        assert row["audit_lira_auc"] == pytest.approx(lira["auc"])
        assert row["audit_lira_eps_lower_bound"] == pytest.approx(lira["eps_lower_bound"])
        assert row["audit_lira_eps_lower_bound"] <= row["audit_claimed_epsilon"]
        confounded = next(a for a in record["attacks"] if a["attack"] == "lira" and a["design"] == "train-vs-test")
        assert row["audit_lira_train_vs_test_auc"] == pytest.approx(confounded["auc"])
    assert row["audit_shadows"] == 2 and len(list((out / "shadows").iterdir())) == 2  # one shadow set per recipe
    # the confounded train-vs-test design never carries an epsilon, in the CSV or the report
    assert not [c for c in results if "train_vs_test" in c and ("eps" in c or "gdp" in c)]
    assert "Empirical privacy audit" in html and "lira AUC [95% CI]" in html
    assert "lira train-vs-test (confounded) AUC [95% CI]" in html
    assert "lira train-vs-test (confounded) ε lower bound" not in html and "lira ε lower bound" in html


def test_utility_table_matches_results(report):
    out, html, _ = report
    results = pd.read_csv(out / "results.csv")
    row = results[results["run"] == "lower_lr__eps4__seed0"].iloc[0]
    cells = ["lower_lr", "4", f"{row.total_epsilon:.3f}", "yes", f"{row.test_auroc:.3f}"]
    assert "".join(f"<td>{c}</td>" for c in cells) in html


def test_report_of_a_folder_that_is_not_a_study_says_what_to_do(tmp_path, capsys):
    with pytest.raises(PrivmedError) as err:
        write_report(tmp_path)
    assert str(err.value) == NOT_A_STUDY.format(path=tmp_path, file="study.yaml")
    assert main(["report", str(tmp_path)]) == 2


def test_html_tables_escape_and_format():
    html = to_html("t", [Table(pd.DataFrame({"a": ["<b>"], "b": [float("inf")], "c": [float("nan")], "d": [0.12345]}))])
    assert "&lt;b&gt;" in html and "<td>∞</td>" in html and "<td></td>" in html and "<td>0.123</td>" in html
    assert format_value(True) == "yes"


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    out, html, _ = report
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    page = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="chart"') == 4 and dom.count("<svg") >= 4
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1200,1600", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).reshape(-1, 3).astype(int)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # matplotlib's first two line colours
    assert (np.abs(pixels - blue).sum(1) < 30).sum() > 200, "no rendered chart line (blue) in the screenshot"
    assert (np.abs(pixels - orange).sum(1) < 30).sum() > 200, "no second strategy line (orange) in the screenshot"
