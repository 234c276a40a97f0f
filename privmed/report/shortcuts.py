"""The report's shortcut section: each strategy's AUROC beside what acquisition statistics alone score on the same
split, its AUROC within strata of that score (deconfounded) and with the lesion masked
(:mod:`privmed.evaluation.shortcut`), for the test split and every external test set; and a sentence wherever a
model is not above the acquisition baseline or below chance."""

from __future__ import annotations

import pandas as pd

from privmed.evaluation.shortcut import BELOW_CHANCE_WHY, FIGURES
from privmed.study.config import StudyConfig

from .charts import mean_over_seeds
from .document import Heading, Paragraph, Table

EXPLAIN = ("The acquisition baseline is how well whole-image grey-level statistics alone (quantiles, spread, noise; "
           "nothing about the lesion) predict the label on the same split, cross-fitted over patient-grouped folds; "
           "the deconfounded AUROC counts only positive-negative pairs within a fifth of that baseline's score, so "
           "it is what the model knows beyond the scanner; the lesion-masked AUROC scores images whose central "
           "lesion region is replaced by its surround (near 0.5: the model reads the lesion). Means over seeds.")
NAMES = {"auroc": "AUROC", **FIGURES}


def shortcut_section(study: StudyConfig, done: pd.DataFrame) -> list:
    """Heading, explanation, one table per evaluated set, and the sentences the figures call for."""
    sets = [("test", "test split")] + [(e.name, f"external test set '{e.name}'") for e in study.external]
    blocks: list = []
    for prefix, what in sets:
        columns = [f"{prefix}_{m}" for m in ("auroc", *FIGURES) if f"{prefix}_{m}" in done]
        if len(columns) < 2:
            continue
        summary = mean_over_seeds(done, ["strategy", "epsilon"], columns)
        table = summary.rename(columns={c: NAMES[c[len(prefix) + 1:]] for c in columns})
        blocks.append(Table(table.round(3), f"Shortcut check on the {what}"))
        blocks += _sentences(summary, prefix, what)
    if not blocks:
        return []
    return [Heading("Lesion or scanner?"), Paragraph(EXPLAIN), *blocks]


def _sentences(summary: pd.DataFrame, prefix: str, what: str) -> list:
    out = []
    baseline = f"{prefix}_acquisition_baseline_auroc"
    for row in summary.itertuples(index=False):
        values = row._asdict()
        auroc = values.get(f"{prefix}_auroc")
        name = f"{values['strategy']} at ε {values['epsilon']}"
        if baseline in values and auroc is not None and auroc <= values[baseline]:
            out.append(f"{name}: AUROC {auroc:.3f} on the {what} is not above what acquisition statistics alone "
                       f"score ({values[baseline]:.3f}); it may read the scanner rather than the lesion.")
        if auroc is not None and auroc < 0.5:
            out.append(f"{name}: mean AUROC {auroc:.3f} over seeds on the {what} lies below chance: "
                       f"{BELOW_CHANCE_WHY}.")
    return [Paragraph(" ".join(out), "warning")] if out else []
