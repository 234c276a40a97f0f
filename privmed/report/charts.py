"""Charts of a study as self-contained SVG text (matplotlib, no browser scripts, no fonts to fetch).

Epsilon runs along a log axis; non-private runs (epsilon = inf) sit apart in a "non-private"
slot at the right, as their own marker, joined to no line. The privacy–utility chart places
private runs at their total epsilon (a DP generator's stages included). Lines are means over
seeds; error bars are the mean bootstrap CI. Legends sit outside the axes.
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


NON_PRIVATE_TICK = "non-\nprivate"


def utility_chart(summary: pd.DataFrame, *, metric: str, title: str, reference: float | None,
                  reference_label: str) -> str:
    """``summary``: one row per strategy and epsilon with ``value, ci_low, ci_high, total_epsilon, private_all``.

    Private points sit at their total ε (everything that touched the private data, a DP
    generator included) and are joined per strategy by a solid line; non-private runs
    (ε = ∞) are a separate diamond in the "non-private" slot at the right, joined to nothing;
    strategies that are not private overall (e.g. a non-DP generator) are dashed with hollow
    markers at the classifier's ε, since their total ε is ∞. :func:`utility_caption` says which
    of these the chart holds.
    """
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    finite = [x for x in _utility_x(summary) if math.isfinite(x)]
    slot = _non_private_slot(finite)
    for k, (strategy, part) in enumerate(summary.groupby("strategy", sort=False)):
        colour = f"C{k}"
        part = part.assign(x=_utility_x(part)).sort_values("x")
        dp = part[part["epsilon"] != "inf"]
        inf = part[part["epsilon"] == "inf"]
        private = bool(dp["private_all"].all()) if len(dp) else True
        if len(dp):
            _errorbar(ax, dp["x"], dp, colour=colour, marker="o", linestyle="-" if private else "--",
                      hollow=not private, label=strategy if private else f"{strategy} (NOT private, at classifier ε)")
        if len(inf):
            _errorbar(ax, [slot] * len(inf), inf, colour=colour, marker="D", linestyle="none", hollow=True,
                      label=f"{strategy}, non-private" if not len(dp) else None)
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1.2, label=reference_label)
    _log_axis(ax, finite, slot, label="total ε (composed over every stage that saw the private data)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _svg(fig)


def utility_caption(summary: pd.DataFrame, *, metric: str, what: str) -> str:
    """The caption of :func:`utility_chart`: says what is drawn, and only that."""
    parts = [f"{metric} on the {what}, mean over seeds; error bars: mean 95% bootstrap CI."]
    dp = summary[summary["epsilon"] != "inf"]
    private = dp[dp["private_all"]]
    if len(private):
        parts.append("Solid lines join the private runs of a strategy at their total ε (the accountant's "
                     "composition of every stage that touched the private data, a DP generator included).")
        moved = private[(private["total_epsilon"] - private["epsilon"].astype(float)).abs()
                        > 0.01 * private["epsilon"].astype(float)]
        if len(moved):
            examples = ", ".join(f"{r.strategy} at classifier ε {r.epsilon}: total {r.total_epsilon:.3g}"
                                 for r in moved.head(3).itertuples())
            parts.append(f"Points whose total ε exceeds the classifier's are shifted right ({examples}).")
    if (summary["epsilon"] == "inf").any():
        parts.append("Hollow diamonds in the 'non-private' slot are runs without DP-SGD (ε = ∞), joined to no line.")
    if len(dp) and not dp["private_all"].all():
        parts.append("Dashed lines with hollow circles are strategies that are NOT private overall (total ε = ∞), "
                     "placed at the classifier's ε.")
    return " ".join(parts)


def subgroup_chart(table: pd.DataFrame, *, value: str, title: str, zero_line: bool = False,
                   ci: tuple[str, str] | None = None) -> str:
    """Small multiples, one panel per strategy: ``value`` per group against the run's total ε, as the utility
    chart places it (:func:`_utility_x`; non-private in its own slot, joined to nothing); ``ci``: columns of the
    interval drawn as error bars. ``table``: one row per strategy, epsilon and group (suppressed groups already
    left out), with ``total_epsilon`` and ``private`` (the share of private runs) when known."""
    strategies = list(dict.fromkeys(table["strategy"]))
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.3 * len(strategies) + 1.6, 3.4), sharey=True,
                             squeeze=False)
    if "total_epsilon" in table and "private" in table:
        table = table.assign(private_all=table["private"] == 1.0)
        table = table.assign(x=_utility_x(table))
    else:
        table = table.assign(x=[math.inf if e == "inf" else float(e) for e in table["epsilon"]])
    finite = sorted({x for x in table["x"] if math.isfinite(x)})
    slot = _non_private_slot(finite)
    groups = sorted(set(table["group"].astype(str)))
    for ax, strategy in zip(axes[0], strategies):
        part = table[table["strategy"] == strategy]
        for k, group in enumerate(groups):
            g = part[part["group"].astype(str) == group]
            g = g.assign(x=[slot if not math.isfinite(x) else x for x in g["x"]]).sort_values("x")
            shift = 1 + 0.04 * (k - (len(groups) - 1) / 2)  # groups side by side, so error bars do not hide
            for rows, style in ((g[g["epsilon"] != "inf"], "-"), (g[g["epsilon"] == "inf"], "none")):
                if len(rows):
                    yerr = None if ci is None else [rows[value] - rows[ci[0]], rows[ci[1]] - rows[value]]
                    ax.errorbar(rows["x"] * shift, rows[value], yerr=yerr, marker="o" if style == "-" else "D",
                                linestyle=style, capsize=2, color=f"C{k}", label=group if style == "-" else None,
                                markersize=4)
        if zero_line:
            ax.axhline(0.0, color="grey", linewidth=0.8)
        _log_axis(ax, finite, slot, label="ε (total)")
        ax.set_title(strategy, fontsize=9)
    axes[0][0].set_ylabel(value.replace("_", " "))
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[0][-1].legend(handles, labels, fontsize=8, frameon=False, title="group", title_fontsize=8,
                       loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    return _svg(fig)


def _utility_x(summary: pd.DataFrame) -> list[float]:
    """Where each row sits: its total ε when private, its classifier ε when not private overall, inf for ε = ∞."""
    xs = []
    for row in summary.itertuples():
        if row.epsilon == "inf":
            xs.append(math.inf)
        elif row.private_all and math.isfinite(row.total_epsilon):
            xs.append(float(row.total_epsilon))
        else:
            xs.append(float(row.epsilon))
    return xs


def _non_private_slot(finite: list[float]) -> float:
    return max(finite) * 4 if finite else 1.0


def _errorbar(ax, x, rows: pd.DataFrame, *, colour: str, marker: str, linestyle: str, hollow: bool,
              label: str | None) -> None:
    ax.errorbar(list(x), rows["value"], yerr=[rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]],
                marker=marker, capsize=3, linestyle=linestyle, color=colour, label=label,
                markerfacecolor="white" if hollow else colour, markeredgecolor=colour)


def _log_axis(ax, finite: list[float], slot: float, *, label: str) -> None:
    """Log ε axis with a tick at every finite value drawn and a separate, marked non-private slot."""
    ax.set_xscale("log")
    ticks = _spread_ticks(sorted(set(finite)))
    ax.set_xticks([*ticks, slot], [*(f"{t:.3g}" for t in ticks), NON_PRIVATE_TICK])
    ax.minorticks_off()
    if finite:
        ax.axvline(math.sqrt(max(finite) * slot), color="grey", linewidth=0.8, linestyle=(0, (1, 3)))
        ax.set_xlim(min(finite) / 1.6, slot * 1.6)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _spread_ticks(values: list[float], min_ratio: float = 1.25) -> list[float]:
    """Tick values at least ``min_ratio`` apart on the log axis, so labels do not overlap."""
    ticks: list[float] = []
    for v in values:
        if not ticks or v / ticks[-1] >= min_ratio:
            ticks.append(v)
    return ticks


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inlined into HTML


def mean_over_seeds(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean of ``columns`` per ``keys`` (order of first appearance kept)."""
    grouped = frame.groupby(keys, sort=False)[columns].mean().reset_index()
    grouped["seeds"] = frame.groupby(keys, sort=False).size().to_numpy()
    return grouped


__all__ = ["utility_chart", "utility_caption", "subgroup_chart", "mean_over_seeds"]
