"""``privmed report OUT``: a study's privacy–utility–fairness report, HTML and Markdown.

Sections: what the epsilons mean (which runs are not private and why, what was chosen
with validation data); privacy–utility curves for the test split and every external test
set; the runs table; fairness per attribute (subgroup AUROC and parity difference against
epsilon, their tables, fairlearn's gaps, Pearson's r); the synthetic images used; each
run's privacy ledger.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import pandas as pd

import privmed
from privmed import atomic, rundir
from privmed.config import load_yaml
from privmed.errors import PrivmedError, error_kind
from privmed.evaluation.fairness import SUPPRESSED
from privmed.study.config import StudyConfig, study_from_dict
from privmed.study.results import StudyTables, collect
from privmed.study.state import STUDY_FILE, TIMING

from .charts import mean_over_seeds, subgroup_chart, utility_caption, utility_chart
from .shortcuts import shortcut_section
from .document import FILES, Bullets, Chart, Details, Heading, Paragraph, Table, to_html, to_markdown
from .synthetic import synthetic_section

HTML = "report.html"
MARKDOWN = "report.md"
NOT_A_STUDY = "'{path}' is not a study folder (no {file}); run `privmed study STUDY.yaml --out {path}` first."
UNIT_WORDS = {"patient": "one patient and all of their images", "image": "one image"}
MIN_TREND_POINTS = 3  # Pearson's r of two points is ±1 by construction, of fewer undefined
FREE_INPUTS_HEADING = "Inputs that add nothing to ε (made without patient data, or declared public by the user):"


def write_report(out: str | Path, *, tables: StudyTables | None = None) -> tuple[Path, Path]:
    """Write ``OUT/report.html`` and ``OUT/report.md``; ``tables`` are the study's as
    :func:`~privmed.study.run_study` just gathered them (default: gather them from ``OUT`` now)."""
    out = Path(out)
    if not (out / STUDY_FILE).is_file():
        raise PrivmedError(NOT_A_STUDY.format(path=out, file=STUDY_FILE))
    atomic.check_folder(out)  # a read-only study folder: one message before the report is made
    study = study_from_dict(load_yaml(out / STUDY_FILE))
    tables = tables if tables is not None else collect(study, out)
    blocks = report_blocks(study, tables, out)
    title = f"privmed study: {study.name}"
    html, markdown = to_html(title, blocks), to_markdown(title, blocks, out / FILES)
    atomic.write_together({out / HTML: html, out / MARKDOWN: markdown})  # both replaced, or neither
    return out / HTML, out / MARKDOWN


def report_blocks(study: StudyConfig, tables: StudyTables, out: Path) -> list:
    """The report's content, in order."""
    results = tables.results
    done = results[results["status"] == "finished"]
    blocks: list = _overview(study, results, out)
    blocks += _honesty(study, done, out)
    if done.empty:
        return blocks + [Paragraph("No run has finished yet: nothing to plot.", "warning")]
    blocks += _utility(study, done)
    blocks += shortcut_section(study, done)
    blocks += _runs(study, results)
    blocks += _audit(done)
    blocks += _fairness(study, tables)
    blocks += synthetic_section(study, out)
    blocks += _ledgers(done, out)
    return blocks


# --------------------------------------------------------------------------- sections


def dataset_name(path: str | None) -> str:
    """The data set's name for a report: its folder's (a manifest, ``<folder>/<file>``), never the path that
    says where the private data lives."""
    if not path:
        return "built-in phantom"
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.suffix.lower() == ".csv" and p.parent.name else p.name


def _overview(study: StudyConfig, results: pd.DataFrame, out: Path) -> list:
    counts = results["status"].value_counts()
    timing = rundir.read_json(out / TIMING) if (out / TIMING).is_file() else {}
    wall = timing.get("wall_seconds")
    last = (timing.get("invocations") or [{}])[-1]
    base = study.cells(out)[0].config
    facts = [
        f"Data: {dataset_name(base.data.path)} at {base.data.image_size} px; model(s): "
        f"{', '.join(study.models)}; strategies: {', '.join(s.name for s in study.strategies)}; classifier ε: "
        f"{', '.join(_eps(e) for e in study.epsilons)}; seeds: {', '.join(map(str, study.seeds))}.",
        f"Runs: {len(results)} in the grid; " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        (f"Study wall time: {wall / 60:.1f} min over {len(timing.get('invocations', []))} invocation(s) "
         f"(last: {last.get('workers')} worker(s) on {last.get('cpu_count')} CPU cores)." if wall is not None
         else "Study wall time: not recorded."),
        f"privmed {privmed.__version__}, Python {platform.python_version()}, {platform.machine()}; "
        f"report written {time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    blocks: list = [Paragraph(study.description)] if study.description else []
    return blocks + [Bullets(tuple(facts))]


def _honesty(study: StudyConfig, done: pd.DataFrame, out: Path) -> list:
    blocks: list = [Heading("What the ε values mean")]
    blocks.append(Paragraph(
        "ε in the tables is the classifier's target (the grid's value); total ε is what the accountant gives "
        "for everything that touched the private training data in that run (feature centring, a generator's "
        "DP-SGD, the classifier's DP-SGD), composed, at the run's δ."))
    if "unit" in done and len(done):
        blocks.append(Paragraph(_unit_sentence(done)))
    not_private = done[~done["private"].astype(bool)]
    if len(not_private):
        reasons = not_private.groupby("not_private_because", sort=False)["run"].apply(list)
        items = tuple(f"{len(runs)} run(s) NOT private ({_short(runs)}): {reason}" for reason, runs in
                      reasons.items())
        blocks += [Paragraph(f"{len(not_private)} of {len(done)} finished runs are not differentially private; "
                             f"their total ε is ∞.", "warning"), Bullets(items)]
    elif len(done):
        blocks.append(Paragraph(f"All {len(done)} finished runs are differentially private."))
    private = done[done["private"].astype(bool)]  # a run that is not private has nothing to keep free
    with_free = private[private["free_inputs"] != ""] if "free_inputs" in private else private.iloc[:0]
    if len(with_free):
        free = with_free.groupby("free_inputs", sort=False)["run"].apply(list)
        blocks += [Paragraph(FREE_INPUTS_HEADING),
                   Bullets(tuple(f"{len(runs)} run(s) ({_short(runs)}): {sentences}" for sentences, runs in
                                 free.items()))]
    choices = list(study.validation_choices)
    choices.append(_validation_sentence(done, out))
    blocks += [Paragraph("Choices made by looking at the private validation data (not covered by ε):"),
               Bullets(tuple(choices))]
    return blocks


def _unit_sentence(done: pd.DataFrame) -> str:
    """Whom the ε values protect: one patient with all of their images, or one image."""
    counts = done["unit"].value_counts()
    parts = [f"{UNIT_WORDS.get(unit, unit)} in {n} run(s)" for unit, n in counts.items()]
    caveat = (" A patient with m images is protected only at m·ε (group privacy) where the unit is one image."
              if "image" in counts else "")
    return f"Unit of privacy (whom ε protects): {'; '.join(parts)}.{caveat}"


def _utility(study: StudyConfig, done: pd.DataFrame) -> list:
    blocks: list = [Heading("Privacy–utility")]
    sets = [("test", "test split")] + [(e.name, f"external test set '{e.name}' ({e.split})") for e in study.external]
    baseline = study.strategies[0].name
    for prefix, what in sets:
        column = f"{prefix}_auroc"
        if column not in done:
            continue
        summary = _utility_summary(done, prefix)
        ref = summary[(summary["strategy"] == baseline) & (summary["epsilon"] == "inf")]["value"]
        chart = utility_chart(summary, metric="AUROC", title=f"AUROC on the {what}",
                              reference=float(ref.iloc[0]) if len(ref) else None,
                              reference_label=f"{baseline}, non-private")
        caption = utility_caption(summary, metric="AUROC", what=what)
        if len(ref):
            caption += f" Dotted grey line: {baseline} without DP."
        blocks.append(Chart(f"utility_{prefix}", chart, caption))
        table = summary.rename(columns={"value": "AUROC", "ci_low": "CI low", "ci_high": "CI high",
                                        "total_epsilon": "total ε (mean)", "private_all": "private"})
        blocks.append(Table(table[["strategy", "epsilon", "total ε (mean)", "private", "AUROC", "CI low", "CI high",
                                   "seeds"]], f"AUROC on the {what}, mean over seeds"))
    return blocks


def _utility_summary(done: pd.DataFrame, prefix: str) -> pd.DataFrame:
    cols = [f"{prefix}_auroc", f"{prefix}_auroc_ci_low", f"{prefix}_auroc_ci_high", "total_epsilon"]
    summary = mean_over_seeds(done.assign(private=done["private"].astype(float)), ["strategy", "epsilon"],
                              cols + ["private"])
    summary = summary.rename(columns={cols[0]: "value", cols[1]: "ci_low", cols[2]: "ci_high"})
    summary["private_all"] = summary["private"] == 1.0
    return summary.drop(columns="private")


def _runs(study: StudyConfig, results: pd.DataFrame) -> list:
    columns = ["run", "strategy"] + (["model"] if len(study.models) > 1 else [])
    columns += ["epsilon", "total_epsilon", "private", "seed", "status", "val_auroc", "test AUROC [95% CI]"]
    columns += [c for e in study.external for c in (f"{e.name}_auroc",) if c in results]
    columns += [c for c in ("train_seconds", "error") if c in results]
    if "test_auroc" in results:
        results = results.assign(**{"test AUROC [95% CI]": [
            _ci(*v) for v in results[["test_auroc", "test_auroc_ci_low", "test_auroc_ci_high"]].to_numpy(float)]})
    frame = results[[c for c in columns if c in results]]
    if "error" in frame:  # an error's text may name a patient, a file or a path: only its kind is reported
        frame = frame.assign(error=[error_kind(e) if isinstance(e, str) else "" for e in frame["error"]])
    return [Heading("Runs"), Paragraph(f"Every cell of the grid ({len(results)} runs), one row each; the same table "
                                       f"is results.csv with every metric and its CI. Errors are given by kind; "
                                       f"their text is in the study folder's failed/ files."), Table(frame)]


def _audit(done: pd.DataFrame) -> list:
    if "audit_design" not in done:
        return []
    audited = done[done["audit_design"].notna()]
    attacks = [c[len("audit_"):-len("_auc")] for c in audited.columns
               if c.startswith("audit_") and c.endswith("_auc")]
    table = audited[["run", "audit_claimed_epsilon"]].rename(columns={"audit_claimed_epsilon": "claimed ε"})
    for attack in attacks:
        label = attack.replace("_train_vs_test", " train-vs-test (confounded)")
        auc = audited[[f"audit_{attack}_auc", f"audit_{attack}_auc_ci_low", f"audit_{attack}_auc_ci_high"]]
        table[f"{label} AUC [95% CI]"] = [_ci(*v) for v in auc.to_numpy()]
        table[f"{label} TPR@0.1% FPR"] = audited[f"audit_{attack}_tpr_at_0.1pct_fpr"]
        if f"audit_{attack}_eps_lower_bound" in audited:  # randomised designs only
            table[f"{label} ε lower bound"] = audited[f"audit_{attack}_eps_lower_bound"]
            table[f"{label} GDP ε estimate"] = audited[f"audit_{attack}_gdp_epsilon"]
    checked = audited["audit_bound_holds"].notna()
    if checked.any():
        table["bound ≤ claimed"] = audited["audit_bound_holds"].map({True: True, False: False})
    broken = table[checked & (audited["audit_bound_holds"] == False)]  # noqa: E712 -- NaN is not False
    canaries = int(audited["audit_canaries"].max())
    blocks: list = [Heading("Empirical privacy audit"), Paragraph(
        "Membership inference against each audited run (loss attack; LiRA when shadow models were trained). "
        "The accountant's ε is an upper bound on what any attack can show. "
        + (f"ε lower bounds come from {canaries} canaries, each put into a retrained target (same recipe) by a "
           f"fair coin: the one-run bound of Steinke, Nasr & Jagielski (2023) at 95% confidence, so the claimed "
           f"ε is that target's; the Gaussian-DP ε is an estimate, not a bound. " if canaries else
           "No ε bound: no canaries were used. ")
        + "Columns marked train-vs-test (confounded) attack the training split against the test split: "
          "membership there was not randomised and the splits differ, so that AUC mixes memorisation with split "
          "differences and gives no ε bound.")]
    if len(broken):
        blocks.append(Paragraph(f"The empirical lower bound exceeds the claimed ε for {', '.join(broken['run'])}: "
                                f"the privacy claim of these runs is contradicted.", "warning"))
    blocks += _audit_power(audited, attacks)
    return blocks + [Table(table)]


def _audit_power(audited: pd.DataFrame, attacks: list[str]) -> list:
    """Say when the audit could not have shown anything: the largest bound its sample size allows, and
    whether every bound is 0 (the non-private run's included)."""
    if "audit_max_showable_bound" not in audited or audited["audit_max_showable_bound"].isna().all():
        return []
    ceiling = float(audited["audit_max_showable_bound"].max())
    columns = [c for c in (f"audit_{a}_eps_lower_bound" for a in attacks) if c in audited]
    bounds = audited[columns].to_numpy(dtype=float)
    sentence = (f"Power: with this many canaries, even a perfect attack could show at most ε ≥ {ceiling:.2f}; "
                f"a claimed ε above that cannot be contradicted by this audit.")
    if len(bounds) and (bounds <= 0).all():
        non_private = audited[audited["audit_claimed_epsilon"] == math.inf]
        sentence += (" Every bound here is 0" + (", the non-private run's included" if len(non_private) else "")
                     + ": the attacks found no evidence at this power, which is not evidence of privacy. "
                       "Audit with canaries (audit: {canaries: 500}) for a sensitive test.")
        return [Paragraph(sentence, "warning")]
    return [Paragraph(sentence)]


def _fairness(study: StudyConfig, tables: StudyTables) -> list:
    if not study.fairness.attributes or tables.fairness.empty:
        return []
    blocks: list = [Heading("Fairness"), Paragraph(
        f"Test-split subgroup metrics with patient-level bootstrap CIs; groups with fewer than "
        f"{study.fairness.min_group_size} test patients are suppressed (no number shown), however many images they "
        f"hold. Parity difference "
        f"(Tayebi Arasteh et al. 2024): a group's AUROC minus the sample-size-weighted mean AUROC of the other "
        f"groups (for two groups, the plain difference). Means over seeds.")]
    for attribute in study.fairness.attributes:
        part = tables.fairness[tables.fairness["attribute"] == attribute]
        blocks += _attribute_section(study, attribute, part, tables)
    return blocks


def _attribute_section(study: StudyConfig, attribute: str, part: pd.DataFrame, tables: StudyTables) -> list:
    blocks: list = [Heading(f"By {attribute}", 3)]
    shown = part[~part["suppressed"].astype(bool)]
    blocks += _privileged_sentence(attribute, study.fairness.privileged.get(attribute), sorted(set(shown["group"])))
    cols = ["auroc", "auroc_ci_low", "auroc_ci_high", "accuracy", "sensitivity", "specificity", "positive_rate",
            "auroc_parity_difference", "n", "train_n", "total_epsilon", "private"]
    shown = shown.assign(private=shown["private"].astype(float))  # the share of private runs, after the mean
    mean = mean_over_seeds(shown, ["strategy", "epsilon", "group"], cols)
    if len(mean):
        blocks.append(Chart(f"subgroup_auroc_{attribute}",
                            subgroup_chart(mean, value="auroc", title=f"Subgroup AUROC by {attribute}",
                                           ci=("auroc_ci_low", "auroc_ci_high")),
                            f"Test AUROC of each {attribute} group against the run's total ε, per strategy (mean "
                            f"over seeds); error bars: mean patient-level 95% bootstrap CI; groups drawn side by "
                            f"side; diamonds in the 'non-private' slot: ε = ∞, joined to no line."))
        blocks.append(Chart(f"parity_{attribute}", subgroup_chart(mean, value="auroc_parity_difference",
                                                                  title=f"AUROC parity difference by {attribute}",
                                                                  zero_line=True),
                            f"AUROC parity difference of each {attribute} group against the run's total ε "
                            f"(0 = parity; mean over seeds, no interval); diamonds in the 'non-private' slot: "
                            f"ε = ∞."))
    suppressed = part[part["suppressed"].astype(bool)][["strategy", "epsilon", "group"]].drop_duplicates()
    table = pd.concat([mean.assign(hidden=False), suppressed.assign(n=math.nan, hidden=True)], ignore_index=True)
    table["AUROC [95% CI]"] = [SUPPRESSED if r.hidden else _ci(r.auroc, r.auroc_ci_low, r.auroc_ci_high)
                               for r in table.itertuples()]
    for count in ("n", "train_n"):
        table[count] = table[count].round().astype("Int64")  # counts, as integers (missing when suppressed)
    table = table[["strategy", "epsilon", "group", "n", "train_n", "AUROC [95% CI]", "accuracy", "sensitivity",
                   "specificity", "positive_rate", "auroc_parity_difference"]]
    blocks.append(Table(table, f"Subgroups by {attribute} (test split; n = test samples, train_n = training samples; "
                        f"when a group is suppressed no group's counts are shown, so that none can be derived "
                        f"by subtraction)"))
    gaps = tables.gaps[tables.gaps["attribute"] == attribute]
    if len(gaps):
        blocks.append(Table(mean_over_seeds(gaps, ["strategy", "epsilon"], ["demographic_parity_difference",
                                                                            "equal_opportunity_difference",
                                                                            "equalized_odds_difference"]),
                            f"fairlearn gaps between shown {attribute} groups at the decision threshold"))
    trends = tables.trends[tables.trends["attribute"] == attribute] if len(tables.trends) else tables.trends
    few = trends[trends["n_points"] < MIN_TREND_POINTS] if len(trends) else trends
    trends = trends[trends["n_points"] >= MIN_TREND_POINTS] if len(trends) else trends
    if len(few):
        blocks.append(Paragraph(f"Pearson's r by {attribute}: needs ≥ {MIN_TREND_POINTS} ε values (DP-SGD runs) per "
                                f"strategy and group; {len(few)} of {len(few) + len(trends)} have fewer and are not "
                                f"shown."))
    if len(trends):
        blocks.append(Table(trends[["strategy", "group", "x", "y", "r", "p", "n_points"]],
                            f"Pearson's r across the DP-SGD runs (finite ε) of each strategy, by {attribute}: ε vs "
                            f"each group's AUROC parity difference, and group training size vs the AUROC it lost "
                            f"to DP (vs the same seed at ε = ∞)"))
    return blocks


def _privileged_sentence(attribute: str, privileged: str | None, groups: list[str]) -> list:
    if privileged:
        return [Paragraph(f"Privileged (reference) group for {attribute}: {privileged}.")]
    if len(groups) == 2:
        return [Paragraph(f"{attribute} has two groups ({groups[0]}, {groups[1]}): each group's parity difference is "
                          f"the plain difference to the other. No privileged group is stated in the study file "
                          f"(fairness.privileged), so both signs are shown.")]
    return []


def _ledgers(done: pd.DataFrame, out: Path) -> list:
    blocks: list = [Heading("Privacy ledgers")]
    for row in done.itertuples():
        record, verdict = rundir.read_record(out / row.dir), rundir.verify_run(out / row.dir)
        text = record.stated_summary if record.private else "NOT private: " + " ".join(record.non_private_reasons)
        if not verdict.verified and verdict.words() not in text:
            text += f" [records {verdict.words()}]"
        inner: list = [Paragraph(text, "" if record.private and verdict.verified else "warning")]
        if record.stages:
            inner.append(Table(pd.DataFrame([s.to_dict() for s in record.stages])))
        blocks.append(Details(f"{row.run}: " + (f"ε = {record.epsilon:.3g}" if record.private else "not private")
                              + ("" if verdict.verified else " (unverified)"), tuple(inner)))
    return blocks


# --------------------------------------------------------------------------- helpers


def _validation_sentence(done: pd.DataFrame, out: Path) -> str:
    if done.empty:
        return "No run has finished yet."
    choices = rundir.read_record(out / done["dir"].iloc[0]).validation_choices
    generic = ("In every run the checkpoint was the epoch with the best AUROC on the private validation split, "
               "and decision thresholds (Youden) were chosen on it.")
    return generic + (f" Example ({done['run'].iloc[0]}): {choices[0]}" if choices else "")


def _short(runs: list[str], limit: int = 4) -> str:
    return ", ".join(runs[:limit]) + (f", … {len(runs) - limit} more" if len(runs) > limit else "")


def _ci(value: float, low: float, high: float) -> str:
    return "" if pd.isna(value) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _eps(epsilon: float) -> str:
    return "∞" if math.isinf(epsilon) else f"{epsilon:g}"
