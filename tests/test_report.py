"""privmed report: a study's HTML and Markdown report, and that it renders in headless Chromium."""

from __future__ import annotations

import io
import json
import os
from html import escape as html_escape
from html import unescape as html_unescape
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_has_the_utility_and_fairness_charts_inline(report):
    out, html, md = report
    charts = re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', html)
    assert charts == ["utility_test", "utility_other_site", "subgroup_auroc_breast_density", "parity_breast_density"]
    assert "<script" not in html and "<link" not in html  # self-contained: nothing fetched, nothing run
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    for name in charts:
        assert (out / "report_files" / f"{name}.svg").is_file() and f"report_files/{name}.svg" in md


@pytest.mark.slow
def test_report_suppresses_small_subgroups(report):
    out, html, _ = report
    fairness = pd.read_csv(out / "fairness.csv")
    assert fairness["suppressed"].any(), "the tiny phantom should have a density group under 10 test samples"
    assert html_escape(SUPPRESSED) in html


@pytest.mark.slow
def test_external_test_sets_get_their_own_columns_and_curve(report):
    out, html, _ = report
    results = pd.read_csv(out / "results.csv")
    assert results["other_site_auroc"].notna().all() and (results["other_site_n"] > 0).all()
    run = out / results["dir"].iloc[0]
    assert (run / "evaluations" / "other_site" / "test" / "metrics.json").is_file()
    assert "external test set &#x27;other_site&#x27; (test)" in html


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_audit_says_when_it_has_too_little_power(report):
    out, html, _ = report
    results = pd.read_csv(out / "results.csv")
    ceiling = results["audit_max_showable_bound"].dropna()
    assert len(ceiling) == 2 and (ceiling > 0).all()
    assert f"even a perfect attack could show at most ε ≥ {ceiling.max():.2f}" in html
    bounds = results.filter(like="_eps_lower_bound").dropna()
    if (bounds.to_numpy() <= 0).all():
        assert "the non-private run&#x27;s included" in html and "not evidence of privacy" in html


@pytest.mark.slow
def test_pearson_tables_need_three_epsilon_values(report):
    out, html, _ = report
    trends = pd.read_csv(out / "fairness_trends.csv")
    per_epsilon = trends[trends["x"] == "epsilon"]
    assert len(per_epsilon) and (per_epsilon["n_points"] == 2).all()  # two finite epsilons in this study
    few = trends[(trends["attribute"] == "breast_density") & (trends["n_points"] < 3)]
    shown = trends[(trends["attribute"] == "breast_density") & (trends["n_points"] >= 3)]
    assert f"needs ≥ 3 ε values (DP-SGD runs) per strategy and group; {len(few)} of {len(few) + len(shown)}" in html
    pearson = html.split("Pearson&#x27;s r across the DP-SGD runs")[1:]
    assert all("<td>epsilon</td>" not in table.split("</table>")[0] for table in pearson)  # no 2-point r shown


@pytest.mark.slow
def test_interval_cells_never_wrap_and_the_runs_table_has_one_ci_column(report):
    _, html, _ = report
    assert '<td class="ci">' in html and "td.ci{white-space:nowrap}" in html
    assert "test AUROC [95% CI]" in html and "test_auroc_ci_low" not in html.split("<h2>Runs</h2>")[1].split("</table>")[0]


@pytest.mark.slow
def test_utility_chart_caption_says_what_is_drawn(report):
    _, html, _ = report
    caption = re.search(r'data-chart="utility_test">.*?<figcaption>(.*?)</figcaption>', html, re.S).group(1)
    assert "at their total ε" in caption and "non-private" in caption
    assert "Dashed" not in caption  # every strategy here is private: no dashed line is drawn, none is described
    assert "total ε" in html.split('data-chart="utility_test">')[1].split("</svg>")[0]  # the x axis says it


def _utility_figure(monkeypatch, summary):
    import privmed.report.charts as charts

    figures = []
    monkeypatch.setattr(charts, "_svg", lambda fig: figures.append(fig) or "")
    charts.utility_chart(summary, metric="AUROC", title="t", reference=None, reference_label="")
    return figures[0].axes[0]


def test_utility_chart_puts_private_runs_at_total_epsilon_and_joins_no_non_private_point(monkeypatch):
    import math

    from privmed.report.charts import utility_caption

    rows = [("dp_sgd", "1", 1.0, True), ("dp_sgd", "8", 8.0, True), ("dp_sgd", "inf", math.inf, False),
            ("dp_gan", "1", 4.14, True), ("dp_gan", "8", 10.2, True), ("dp_gan", "inf", math.inf, False),
            ("mcgan", "1", math.inf, False), ("mcgan", "8", math.inf, False)]
    summary = pd.DataFrame([{"strategy": s, "epsilon": e, "total_epsilon": t, "private_all": p, "value": 0.7,
                             "ci_low": 0.6, "ci_high": 0.8, "seeds": 1} for s, e, t, p in rows])
    ax = _utility_figure(monkeypatch, summary)
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # error-bar containers: label -> data line
    assert list(lines["dp_gan"].get_xdata()) == [4.14, 10.2]  # total ε, not the classifier's 1 and 8
    assert list(lines["dp_sgd"].get_xdata()) == [1.0, 8.0]
    assert lines["mcgan (NOT private, at classifier ε)"].get_linestyle() == "--"
    slot = max(ax.get_xticks())
    for line in ax.lines:  # the non-private slot holds markers only, never a joined line
        if slot in list(line.get_xdata()):
            assert line.get_linestyle() == "None"
    caption = utility_caption(summary, metric="AUROC", what="test split")
    assert "dp_gan at classifier ε 1: total 4.14" in caption and "Dashed lines" in caption


def test_a_collapsed_generator_is_flagged_beside_its_grid():
    from privmed.data.sources import Dataset
    from privmed.report.synthetic import diversity_note as _diversity_note, real_diversity as _real_diversity

    rng = np.random.default_rng(0)
    real = Dataset("real", pd.DataFrame({"sample_id": list("abcdefgh"), "split": "train", "patient_id": np.nan,
                                         "malignant": [0, 1] * 4}), rng.random((8, 16, 16)).astype(np.float32),
                   ("malignant",), ())
    labels = np.array([0, 1] * 8)
    blobs = np.repeat(rng.random((1, 16, 16)), 16, axis=0).astype(np.float32) + rng.normal(0, 0.01, (16, 16, 16))
    reference = _real_diversity(real, 16)
    [note] = _diversity_note(blobs, labels, reference)
    assert note.kind == "warning" and note.text.startswith("Low diversity")
    [fine] = _diversity_note(rng.random((16, 16, 16)).astype(np.float32), labels, reference)
    assert fine.kind == "" and fine.text.startswith("Diversity:")


LAYOUT_PROBE = """<script>
addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll("div.table")].map(d => ({
    right: d.getBoundingClientRect().right, width, overflow: getComputedStyle(d).overflowX,
    scrolls: d.scrollWidth > d.clientWidth, runs: d.previousElementSibling?.textContent.startsWith("Every cell")}));
  const charts = [...document.querySelectorAll("figure.chart")].map(f => ({
    name: f.dataset.chart, caption: (f.querySelector("figcaption")?.textContent || "").trim().length,
    right: f.getBoundingClientRect().right, width}));
  const pre = document.createElement("pre"); pre.id = "layout";
  pre.textContent = JSON.stringify({tables, charts}); document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("PRIVMED_REQUIRE_BROWSER"):
            pytest.fail("PRIVMED_REQUIRE_BROWSER is set (CI) but no Chromium was found: apt-get install chromium")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; CI installs it)")
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]


@pytest.mark.slow
@pytest.mark.parametrize("window", [1200, 760])
def test_report_layout_in_headless_chromium_tables_fit_or_scroll_and_every_chart_has_a_caption(report, tmp_path,
                                                                                                window):
    """The real browser lays the page out (a probe script is added to a copy; the report itself has none)."""
    flags = _chromium(tmp_path)
    out, html, _ = report
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = subprocess.run(flags + [f"--window-size={window},1000", "--virtual-time-budget=5000", "--dump-dom",
                                  page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    layout = json.loads(html_unescape(re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S).group(1)))
    runs = [t for t in layout["tables"] if t["runs"]]
    assert len(runs) == 1, "the runs table was not found"
    for table in layout["tables"]:  # inside the page; wider content scrolls inside its own box
        assert table["right"] <= table["width"] + 1, table
        assert not table["scrolls"] or table["overflow"] in ("auto", "scroll"), table
    assert len(layout["charts"]) == 4
    for chart in layout["charts"]:
        assert chart["caption"] > 20, f"chart {chart['name']} has no caption"
        assert chart["right"] <= chart["width"] + 1, chart


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("PRIVMED_REQUIRE_BROWSER"),
                    reason="headless Chromium is not installed (Debian: apt-get install chromium; CI installs it)")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    out, html, _ = report
    flags = _chromium(tmp_path)
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
