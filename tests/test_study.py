"""privmed study: the study file, the grid runner (skip, resume, failures), results and fairness tables."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from privmed import rundir
from privmed.cli import main
from privmed.errors import PrivmedError
from privmed.report import write_report
from privmed.report.study import FREE_INPUTS_HEADING
from privmed.evaluation.fairness import parity_differences
from privmed.study import collect, run_study, study_from_dict
from privmed.study.config import GENERATOR_KINDS, NEEDS_LIST, UNKNOWN_GENERATOR
from privmed.study.runner import GENERATOR_MAKERS
from privmed.study.results import _groups, _trends
from privmed.training.trainer import train

TINY = {
    "name": "tiny",
    "base": {"data": {"phantom_samples": 300, "image_size": 32},
             "training": {"epochs": 2, "batch_size": 64, "bootstrap_resamples": 100}},
    "strategies": {"dp_sgd": {}},
    "epsilons": [2, "inf"],
    "seeds": [0],
    "fairness": {"attributes": ["breast_density", "age_group"]},
}


def tiny(**changes) -> dict:
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return raw


def interrupt_after_first_epoch(config) -> None:
    """Train ``config`` and stop it as Ctrl-C would, after its first checkpoint."""
    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, on_epoch_end=stop)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("study")
    study = study_from_dict(TINY)
    run_study(study, TINY, out=out, progress=lambda _: None)
    return out, study


# --------------------------------------------------------------------------- the study file


def test_cells_span_the_grid_with_per_strategy_epsilons():
    raw = tiny(strategies={"a": {}, "b": {"training": {"lr": 0.05}}, "c": {"epsilons": ["inf"]}}, seeds=[0, 1])
    cells = study_from_dict(raw).cells(Path("OUT"))
    assert len(cells) == 2 * 2 * 2 + 1 * 2
    assert {c.run_id for c in cells} >= {"a__eps2__seed0", "b__epsinf__seed1", "c__epsinf__seed0"}
    b = next(c for c in cells if c.run_id == "b__eps2__seed1")
    assert b.config.training.lr == 0.05 and b.config.privacy.epsilon == 2 and b.config.training.seed == 1
    assert b.config.out == str(Path("OUT") / "runs" / "b__eps2__seed1")
    assert math.isinf(next(c for c in cells if c.run_id == "a__epsinf__seed0").config.privacy.epsilon)


def test_unknown_keys_are_rejected_at_every_level():
    with pytest.raises(PrivmedError, match="unknown study key"):
        study_from_dict(tiny(grid={}))
    with pytest.raises(PrivmedError, match="unknown strategies.a key"):
        study_from_dict(tiny(strategies={"a": {"privcy": {}}}))
    with pytest.raises(PrivmedError, match="unknown training key"):  # the run config's own check, per cell
        study_from_dict(tiny(strategies={"a": {"training": {"epoch": 3}}}))


def test_external_test_sets_are_a_list_and_a_mapping_is_refused_with_what_was_given():
    raw = tiny(external={"bcdr": "data/bcdr"})
    with pytest.raises(PrivmedError) as err:
        study_from_dict(raw)
    assert str(err.value) == NEEDS_LIST.format(key="external", value={"bcdr": "data/bcdr"})
    study = study_from_dict(tiny(external=[{"name": "bcdr", "path": "data/bcdr"}]))
    assert [(e.name, e.path, e.split) for e in study.external] == [("bcdr", "data/bcdr", "test")]


def test_a_bad_cell_is_reported_before_anything_runs():
    raw = tiny(strategies={"only": {"synthetic": {"path": "x", "use": "only"}}})
    with pytest.raises(PrivmedError, match=r"study cell only__eps2__seed0: .*epsilons: \[inf\]"):
        study_from_dict(raw)


def test_strategy_naming_an_unknown_generator_is_an_error():
    with pytest.raises(PrivmedError) as err:
        study_from_dict(tiny(strategies={"a": {"generator": "g"}}))
    assert str(err.value) == UNKNOWN_GENERATOR.format(strategy="a", generator="g", known=[])


def test_audit_picks_real_data_strategies_and_the_first_seed_by_default():
    raw = tiny(strategies={"real": {}, "synth": {"synthetic": {"path": "x", "use": "augment"}}}, seeds=[3, 4],
               audit={"shadows": 2})
    study = study_from_dict(raw)
    audited = [c.run_id for c in study.cells(Path("OUT")) if study.audited(c)]
    assert audited == ["real__eps2__seed3", "real__epsinf__seed3"]
    with pytest.raises(PrivmedError, match="membership audits of such runs are not supported"):
        study_from_dict({**raw, "audit": {"strategies": ["synth"]}})
    with pytest.raises(PrivmedError, match="use 0 .* or at least 2 shadow models"):
        study_from_dict({**raw, "audit": {"shadows": 1}})


def test_generator_samples_become_the_strategys_synthetic_data():
    raw = tiny(generators={"g": {"privacy": {"epsilon": 3}, "gan": {"epochs": 1}, "data": {"image_size": 64}}},
               strategies={"a": {"generator": "g", "synthetic": {"use": "pretrain"}}})
    study = study_from_dict(raw)
    cell = study.cells(Path("OUT"))[0]
    assert cell.config.synthetic.path == str(Path("OUT") / "generators" / "g" / "samples")
    assert study.generators[0].config.data.image_size == 64 and study.generators[0].config.privacy.epsilon == 3
    assert study.generators[0].config.data.phantom_samples == 300  # the rest of data comes from the base


def test_a_phantom_generator_takes_the_studys_image_size_and_nothing_to_train():
    raw = tiny(generators={"ph": {"kind": "phantom", "samples": 120}},
               strategies={"a": {"generator": "ph", "synthetic": {"use": "pretrain"}}})
    spec = study_from_dict(raw).generators[0]
    assert (spec.kind, spec.samples, spec.config.data.image_size) == ("phantom", 120, 32)
    assert set(GENERATOR_MAKERS) == set(GENERATOR_KINDS)
    with pytest.raises(PrivmedError, match="from no patient data, so it takes no 'privacy' or 'gan'; leave them out"):
        study_from_dict(tiny(generators={"ph": {"kind": "phantom", "privacy": {"epsilon": 1}, "gan": {}}}))
    with pytest.raises(PrivmedError, match=r"generators.ph.kind 'vae' is not one of \['gan', 'phantom'\]"):
        study_from_dict(tiny(generators={"ph": {"kind": "vae"}}))


@pytest.mark.parametrize("bad, message", [
    ({"epsilons": [0]}, "must be > 0"), ({"seeds": []}, "non-empty list"), ({"name": "a b"}, "names folders"),
    ({"base": {"out": "x"}}, "must not set 'out'"),
    ({"fairness": {"attributes": ["age"], "bins": {"sex": [0, 1, 2]}}}, "not in fairness.attributes"),
])
def test_bad_study_values_say_what_to_fix(bad, message):
    with pytest.raises(PrivmedError, match=message):
        study_from_dict(tiny(**bad))


def test_study_command_reports_a_bad_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {}\nstrategies: {a: {}}\nepsilons: [1]\nseeds: [0]\nworkres: 2\n")
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("privmed: error: unknown study key(s) ['workres']") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_demo_study_is_valid():
    from importlib.resources import files

    import yaml

    raw = yaml.safe_load(files("privmed.study").joinpath("demo.yaml").read_text())
    study = study_from_dict(raw)
    assert len(study.cells(Path("demo"))) == 6 and study.generators[0].config.privacy.private


# --------------------------------------------------------------------------- running


@pytest.mark.slow
def test_results_table_has_one_row_per_cell_with_the_ledgers_epsilon(finished_study):
    out, study = finished_study
    results = pd.read_csv(out / "results.csv")
    assert list(results["run"]) == [c.run_id for c in study.cells(out)]
    assert (results["status"] == "finished").all()
    for row in results.itertuples():
        privacy = rundir.read_json(out / row.dir / rundir.PRIVACY)
        metrics = rundir.read_json(out / row.dir / rundir.METRICS)
        assert row.private == privacy["private"]
        assert row.total_epsilon == (privacy["epsilon"] if privacy["private"] else math.inf)
        assert row.test_auroc == pytest.approx(metrics["splits"]["test"]["auroc"]["value"])
        assert row.test_auroc_ci_low <= row.test_auroc <= row.test_auroc_ci_high
    assert results.set_index("run").loc["dp_sgd__eps2__seed0", "total_epsilon"] == pytest.approx(2, abs=0.01)


@pytest.mark.slow
def test_rerunning_a_finished_study_trains_nothing(finished_study):
    out, study = finished_study
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")}
    outcomes = run_study(study, TINY, out=out, progress=lambda _: None).outcomes
    assert {o.status for o in outcomes} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")} == before
    assert len(rundir.read_json(out / "timing.json")["invocations"]) == 2


@pytest.mark.slow
def test_a_finished_run_whose_cell_changed_is_not_mixed_into_the_results(finished_study, tmp_path):
    out, _ = finished_study
    changed = tiny(base={**TINY["base"], "training": {**TINY["base"]["training"], "lr": 0.01}})
    outcomes = run_study(study_from_dict(changed), changed, out=out, progress=lambda _: None).outcomes
    assert {o.status for o in outcomes} == {"failed"}
    assert all("training.lr: 0.1 -> 0.01" in o.error and "new --out" in o.error for o in outcomes)
    assert (pd.read_csv(out / "results.csv")["status"] == "failed").all()
    run_study(study_from_dict(TINY), TINY, out=out, progress=lambda _: None)  # the original study: all finished again
    assert (pd.read_csv(out / "results.csv")["status"] == "finished").all()


@pytest.mark.slow
def test_an_interrupted_run_resumes_without_resetting_its_spend(tmp_path):
    raw = tiny(epsilons=[2], fairness={})
    study = study_from_dict(raw)
    cell = study.cells(tmp_path)[0]
    interrupt_after_first_epoch(cell.config)
    outcomes = run_study(study, raw, out=tmp_path, progress=lambda _: None).outcomes
    assert [o.status for o in outcomes] == ["finished"]
    run = Path(cell.config.out)
    assert "resumed after epoch 1" in (run / rundir.LOG).read_text()
    reference = train(dataclasses.replace(cell.config, out=str(tmp_path / "reference")))
    resumed, uninterrupted = (rundir.read_json(r / rundir.PRIVACY) for r in (run, reference))
    assert resumed["stages"] == uninterrupted["stages"] and resumed["epsilon"] == uninterrupted["epsilon"]


@pytest.mark.slow
def test_a_phantom_strategy_costs_only_its_dp_sgd_and_says_why(tmp_path):
    raw = tiny(generators={"ph": {"kind": "phantom", "samples": 120}}, epsilons=[2], fairness={},
               strategies={"phantom_pretrain": {"generator": "ph", "synthetic": {"use": "pretrain",
                                                                                 "pretrain_epochs": 1}}})
    study = study_from_dict(raw)
    run_study(study, raw, out=tmp_path, progress=lambda _: None)
    samples = tmp_path / "generators" / "ph" / "samples"
    assert rundir.read_json(samples / rundir.PRIVACY)["data_independent"]
    assert len(pd.read_csv(samples / "metadata.csv")) == 120
    privacy = rundir.read_json(Path(study.cells(tmp_path)[0].config.out) / rundir.PRIVACY)
    assert privacy["private"] and [s["stage"] for s in privacy["stages"]] == ["dp_sgd"]
    assert privacy["epsilon"] == pytest.approx(2, abs=0.01)
    assert "made without patient data" in privacy["free_inputs"][0]
    written = (samples / rundir.PRIVACY).stat().st_mtime_ns
    run_study(study, raw, out=tmp_path, progress=lambda _: None)  # resuming does not redraw the phantom
    assert (samples / rundir.PRIVACY).stat().st_mtime_ns == written
    _, md = write_report(tmp_path)
    assert (f"{FREE_INPUTS_HEADING}\n\n- 1 run(s) (phantom_pretrain__eps2__seed0): "
            f"{privacy['free_inputs'][0]}.") in md.read_text()
    assert "All 1 finished runs are differentially private." in md.read_text()


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    raw = tiny(strategies={"ok": {}, "broken": {"synthetic": {"path": str(tmp_path / "missing"), "use": "augment"}}},
               epsilons=[2], fairness={})
    path = tmp_path / "study.yaml"
    rundir.write_yaml(path, raw)
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--no-report"]) == 1
    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv").set_index("run")
    assert results.loc["ok__eps2__seed0", "status"] == "finished"
    assert results.loc["broken__eps2__seed0", "status"] == "failed"
    # results.csv names the error's kind only (its text can name a path or a patient); failed/ keeps the text
    assert results.loc["broken__eps2__seed0", "error"] == "path missing"
    assert "synthetic data folder" in (out / "failed" / "broken__eps2__seed0.txt").read_text()
    assert "FAILED broken__eps2__seed0" in capsys.readouterr().err


def test_a_study_whose_every_run_failed_still_gets_a_report_that_says_so(tmp_path, capsys):
    raw = tiny(strategies={"broken": {"synthetic": {"path": str(tmp_path / "missing"), "use": "augment"}}},
               epsilons=[2], fairness={})
    path = tmp_path / "study.yaml"
    rundir.write_yaml(path, raw)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "FAILED broken__eps2__seed0" in capsys.readouterr().err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "1 failed" in md and "finished runs are differentially private" not in md
    assert (tmp_path / "out" / "report.html").is_file()


def test_fairness_attributes_missing_from_the_data_stop_the_study_up_front(tmp_path):
    raw = tiny(fairness={"attributes": ["sex"]})
    with pytest.raises(PrivmedError, match=r"fairness attribute\(s\) \['sex'\] are not columns"):
        run_study(study_from_dict(raw), raw, out=tmp_path, progress=lambda _: None)
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- fairness tables


@pytest.mark.slow
def test_fairness_rows_suppress_small_groups_and_carry_parity_differences(finished_study):
    out, study = finished_study
    fairness = pd.read_csv(out / "fairness.csv")
    assert set(fairness["run"]) == {c.run_id for c in study.cells(out)}
    assert set(fairness["attribute"]) == {"breast_density", "age_group"}
    small = fairness[fairness["suppressed"]]
    assert len(small) and small[["n", "auroc", "train_n", "auroc_parity_difference"]].isna().all().all()
    shown = fairness[~fairness["suppressed"]]
    assert ((shown["n"] >= 10) | shown["counts_suppressed"]).all()
    for (_, _), table in fairness[~fairness["counts_suppressed"]].groupby(["run", "attribute"]):
        expected = parity_differences(table=table.reset_index(drop=True), metric="auroc").to_numpy()
        np.testing.assert_allclose(table["auroc_parity_difference"].to_numpy(), expected, equal_nan=True)
    hidden = fairness[fairness["counts_suppressed"]]
    assert len(hidden) and hidden[["n", "train_n"]].isna().all().all()  # no count left to subtract from


def test_trends_are_pearson_over_dp_runs_and_loss_against_the_same_seed():
    rows = []
    for seed in (0, 1):
        for eps, parity in (("1", 0.10 + seed), ("4", 0.05), ("8", 0.01 * seed), ("inf", 0.0)):
            for group, n, auroc in (("a", 100, 0.7 + 0.01 * seed), ("b", 20, 0.6)):
                lower = 0.0 if eps == "inf" else 0.02 * float(eps) + (0.1 if group == "b" else 0)
                rows.append({"strategy": "s", "model": "m", "attribute": "x", "label": "y", "group": group,
                             "epsilon": eps, "seed": seed, "private": eps != "inf", "suppressed": False,
                             "train_n": n, "auroc": auroc - lower,
                             "auroc_parity_difference": parity if group == "a" else -parity})
    fairness = pd.DataFrame(rows)
    trends = _trends(fairness).set_index(["group", "x"])
    dp = fairness[fairness["epsilon"] != "inf"]
    a = dp[dp["group"] == "a"]
    r, p = stats.pearsonr(a["epsilon"].astype(float), a["auroc_parity_difference"])
    assert trends.loc[("a", "epsilon"), "r"] == pytest.approx(r)
    assert trends.loc[("a", "epsilon"), "p"] == pytest.approx(p)
    lost = 0.02 * dp["epsilon"].astype(float) + np.where(dp["group"] == "b", 0.1, 0.0)
    r, _ = stats.pearsonr(dp["train_n"], lost)
    assert trends.loc[("all", "train_n"), "r"] == pytest.approx(r)
    assert trends.loc[("all", "train_n"), "n_points"] == len(dp)


def test_numeric_attributes_are_binned_with_the_given_edges():
    frame = pd.DataFrame({"age": [35, 50, 51, 80, None]})
    assert list(_groups(frame, "age", (0, 50, 65, 120))) == ["0-50", "0-50", "50-65", "65-120", None]
    assert list(_groups(frame, "age", None))[:2] == ["35.0", "50.0"]


def test_collect_reports_pending_and_interrupted_cells(tmp_path):
    raw = tiny(epsilons=[2], seeds=[0, 1], fairness={})
    study = study_from_dict(raw)
    interrupt_after_first_epoch(study.cells(tmp_path)[0].config)
    results = collect(study, tmp_path).results.set_index("run")
    assert results.loc["dp_sgd__eps2__seed0", "status"] == "interrupted"
    assert results.loc["dp_sgd__eps2__seed1", "status"] == "pending"


def test_no_fairness_attributes_no_fairness_files_and_results_are_readable_like_the_report(tmp_path, capsys):
    import os
    import stat

    raw = tiny(strategies={"broken": {"synthetic": {"path": str(tmp_path / "missing"), "use": "augment"}}},
               epsilons=[2], fairness={})
    path = tmp_path / "study.yaml"
    rundir.write_yaml(path, raw)
    old = os.umask(0o022)
    try:
        main(["study", str(path), "--out", str(tmp_path / "out")])
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert (out / "results.csv").is_file()
    for name in ("fairness.csv", "fairness_gaps.csv", "fairness_trends.csv"):
        assert not (out / name).exists(), name
    mode = {name: stat.S_IMODE((out / name).stat().st_mode) for name in ("results.csv", "status.json", "report.html")}
    assert mode["results.csv"] == mode["status.json"] == mode["report.html"] == 0o644, mode
