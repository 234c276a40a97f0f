"""Charts of a study as self-contained SVG text (matplotlib, no browser scripts, no fonts to fetch).

Epsilon runs along a log axis; the non-private level (epsilon = inf) sits at the right end
under the tick label "∞". Lines are means over seeds; error bars are the mean bootstrap CI.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "privmed", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})


def utility_chart(summary: pd.DataFrame, *, metric: str, title: str, reference: float | None,
                  reference_label: str) -> str:
    """``summary``: one row per strategy and epsilon with ``value, ci_low, ci_high, private_all``."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    positions = _positions(summary["epsilon"])
    for strategy, part in summary.groupby("strategy", sort=False):
        part = part.assign(x=part["epsilon"].map(positions)).sort_values("x")
        dp_sgd = part[part["epsilon"] != "inf"]  # epsilon = inf is non-private by definition
        private = bool(dp_sgd["private_all"].all()) if len(dp_sgd) else True
        label = strategy if private else f"{strategy} (not private)"
        ax.errorbar(part["x"], part["value"], yerr=[part["value"] - part["ci_low"], part["ci_high"] - part["value"]],
                    marker="o", capsize=3, linestyle="-" if private else "--", label=label,
                    markerfacecolor=None if private else "white")
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1.2, label=reference_label)
    _epsilon_axis(ax, positions)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best", frameon=False)
    return _svg(fig)


def subgroup_chart(table: pd.DataFrame, *, value: str, title: str, zero_line: bool = False) -> str:
    """Small multiples, one panel per strategy: ``value`` per group against epsilon.
    ``table``: one row per strategy, epsilon and group (suppressed groups already left out)."""
    strategies = list(dict.fromkeys(table["strategy"]))
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.2 * len(strategies) + 0.6, 3.2), sharey=True,
                             squeeze=False)
    positions = _positions(table["epsilon"])
    for ax, strategy in zip(axes[0], strategies):
        part = table[table["strategy"] == strategy]
        for group, g in part.groupby("group", sort=True):
            g = g.assign(x=g["epsilon"].map(positions)).sort_values("x")
            ax.plot(g["x"], g[value], marker="o", label=str(group))
        if zero_line:
            ax.axhline(0.0, color="grey", linewidth=0.8)
        _epsilon_axis(ax, positions)
        ax.set_title(strategy, fontsize=9)
    axes[0][0].set_ylabel(value.replace("_", " "))
    axes[0][-1].legend(fontsize=8, frameon=False, title="group", title_fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return _svg(fig)


def _positions(epsilons: pd.Series) -> dict[str, float]:
    finite = sorted({float(e) for e in epsilons if e != "inf"})
    top = finite[-1] * 4 if finite else 1.0
    return {**{label: float(label) for label in set(epsilons) if label != "inf"}, "inf": top}


def _epsilon_axis(ax, positions: dict[str, float]) -> None:
    ax.set_xscale("log")
    ticks = sorted(positions.items(), key=lambda kv: kv[1])
    ax.set_xticks([x for _, x in ticks], ["∞" if k == "inf" else k for k, _ in ticks])
    ax.minorticks_off()
    ax.set_xlabel("ε (classifier)")
    ax.grid(alpha=0.3)


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inlined into HTML


def mean_over_seeds(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean of ``columns`` per ``keys`` (order of first appearance kept)."""
    grouped = frame.groupby(keys, sort=False)[columns].mean().reset_index()
    grouped["seeds"] = frame.groupby(keys, sort=False).size().to_numpy()
    return grouped


__all__ = ["utility_chart", "subgroup_chart", "mean_over_seeds"]
