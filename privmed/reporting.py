"""Plain-text tables for the terminal, as lines: the command line prints them (the library never prints)."""

from __future__ import annotations

from pathlib import Path

from privmed import rundir
from privmed.errors import IMAGE_BOOTSTRAP, SMALL_SPLIT
from privmed.evaluation.metrics import METRIC_NAMES
from privmed.evaluation.shortcut import FIGURES as SHORTCUT_FIGURES, shortcut_sentences


def format_ci(ci: dict) -> str:
    """'0.712 [0.661, 0.760]'."""
    return f"{float(ci['value']):.3f} [{float(ci['ci_low']):.3f}, {float(ci['ci_high']):.3f}]"


def metric_rows(split_metrics: dict, label_names: list[str]) -> list[tuple[str, dict]]:
    """(row name, {metric: ci}) for a binary split or each label + mean of a multi-label one."""
    if len(label_names) == 1:
        return [(label_names[0], split_metrics)]
    return [(name, split_metrics[name]) for name in [*label_names, "mean"]]


#: below this many samples of the rarest class a split's metrics are flagged as unreliable
MIN_PER_CLASS = 10


def metrics_table(metrics: dict, *, title: str, splits: list[str] | None = None) -> list[str]:
    """Each split's metrics with 95% CIs, and a warning under a split too small to show much."""
    lines = [title]
    for split in splits or list(metrics["splits"]):
        sm = metrics["splits"][split]
        unit = sm.get("bootstrap_unit")  # absent in runs recorded before it was
        lines.append(f"  {split} (n={sm['n']}" + (f", CIs resample {unit}s)" if unit else ")"))
        for name, row in metric_rows(sm, metrics["label_names"]):
            cells = "  ".join(f"{m}={format_ci(row[m])}" for m in METRIC_NAMES)
            lines.append(f"    {name}: {cells}")
        line = shortcut_line(sm)
        if line:
            lines.append(f"    {line}")
        if unit == "image":
            lines.append(f"    note: {IMAGE_BOOTSTRAP}")
        sentences = [small_split_warning(split, sm), *shortcut_sentences(split, sm)]
        lines += [f"    warning: {sentence}" for sentence in sentences if sentence]
    return lines


def shortcut_line(split_metrics: dict) -> str | None:
    """'shortcut check: acquisition baseline=... deconfounded=... lesion masked=...' (None without them)."""
    cells = [f"{name}={format_ci(split_metrics[key])}" for key, name in SHORTCUT_FIGURES.items()
             if isinstance(split_metrics.get(key), dict)]
    return "shortcut check: " + "  ".join(cells) if cells else None


def small_split_warning(split: str, split_metrics: dict) -> str | None:
    """SMALL_SPLIT when the split has fewer than MIN_PER_CLASS samples of a class (None otherwise)."""
    smallest = split_metrics.get("smallest_class_n")
    if smallest is None or smallest >= MIN_PER_CLASS:
        return None
    return SMALL_SPLIT.format(split=split, n=smallest, minimum=MIN_PER_CLASS)


def run_summary(run: Path) -> list[str]:
    """What a finished run achieved and what it cost in privacy."""
    metrics = rundir.read_json(Path(run) / rundir.METRICS)
    privacy = rundir.read_record(Path(run))
    return [*metrics_table(metrics, title=f"run {run}", splits=["val", "test"]),
            f"  privacy: {privacy.stated_summary}", *(f"  note: {choice}" for choice in privacy.validation_choices)]


def comparison(result: dict) -> list[str]:
    """Paired bootstrap comparison of two runs."""
    lines = [f"{result['run_a']} vs {result['run_b']} on {result['dataset']} [{result['split']}], "
             f"{result['n_resamples']} paired bootstrap resamples"]
    lines += [f"  {letter.upper()} = {result[f'run_{letter}']}: {privacy_line(Path(result[f'run_{letter}']))}"
              for letter in ("a", "b")]
    lines += [f"  {metric}: A={r['a']:.3f} B={r['b']:.3f} A-B={r['difference']:+.3f} "
              f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] p={r['p_value']:.4f}"
              for metric, r in result["metrics"].items()]
    return lines


def privacy_line(run: Path) -> str:
    """The run's ledger in one sentence: 'private: (epsilon=..., delta=...)-DP ...' or 'NOT PRIVATE: why'."""
    if not (Path(run) / rundir.PRIVACY).is_file():
        return "privacy unknown (no privacy.json)"
    privacy = rundir.read_record(Path(run))
    return f"private: {privacy.stated_summary}" if privacy.private else privacy.stated_summary


def audit_lines(result: dict) -> list[str]:
    """Attack results beside the accountant's epsilon; an epsilon bound only for randomised designs."""
    claimed = result["claimed_epsilon"]
    claimed = claimed if claimed == "inf" else f"{claimed:.3g}"
    lines = [f"membership audit of {result['run']} (claimed epsilon={claimed}, unit of privacy: {result['unit']}): "
             f"target = {result['target']}; {result['shadows']} shadow models"]
    for a in result["attacks"]:
        auc_low, auc_high = a["auc_ci"]
        line = (f"  [{a['design']}] {a['attack']:5s} AUC={a['auc']:.3f} [{auc_low:.3f}, {auc_high:.3f}]  "
                f"TPR@1%FPR={a['tpr_at_1pct_fpr']:.3f}  TPR@0.1%FPR={a['tpr_at_01pct_fpr']:.3f}  ")
        if a["randomised"]:
            guesses = (f"{a['correct_guesses']}/{a['guesses']} guesses right" if a["guesses"]
                       else "no number of guesses shows anything")
            line += (f"eps lower bound={a['eps_lower_bound']:.3f} ({a['confidence']:.1%}, {guesses}, "
                     f"{a['n_members'] + a['n_non_members']} canaries)  "
                     f"GDP estimate mu={a['gdp_mu']:.2f}, eps~{a['gdp_epsilon']:.2f}")
        else:
            line += "no eps bound (confounded by split differences)"
        lines.append(line)
    return [*lines, f"  {result['note']}"]