"""The report's figures: pure functions from arrays to matplotlib Figures (no pyplot state).

Every figure is drawn on its own ``Figure`` so that building a report touches no global
matplotlib state; ``png_data_uri`` turns one into an inline image for the self-contained HTML.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Colours per base size (smallest first) and per merge method; colour-blind safe (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")


def png_data_uri(fig: Figure, dpi: int = 110) -> str:
    """The figure as a base64 PNG data URI (the report embeds its images). No metadata is
    written (matplotlib's 'Software' key names its version): the same figure, the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(n: int, ncols: int = 3, width: float = 4.0, height: float = 3.0):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _nearest(value: float, keys) -> float:
    """The key closest to ``value`` in log scale (sizes recomputed from logs differ in the last
    bits from the fit's own)."""
    keys = list(keys)
    return keys[int(np.argmin([abs(math.log(value / k)) for k in keys]))]


def _plain_log_axis(axis) -> None:
    """Log axis with plain numbers (1, 2, 5) instead of overlapping powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def size_text(n_b: float) -> str:
    """A base size given in billions, in the unit that reads best: '0.726M params', '3B params'."""
    return f"{n_b * 1e3:.3g}M params" if n_b < 1 else f"{n_b:.3g}B params"


def _size_label(n_b: float) -> str:
    return f"N = {size_text(n_b)}"


def curve_bands(
    title: str,
    panels: list[dict],
    sizes_b: list[float],
    level_inner: float = 0.5,
    level_outer: float = 0.9,
) -> Figure:
    """Fitted mean curves with inner/outer credible bands over the measured points.

    ``panels``: one dict per panel with 'title', 'k_grid' (K,), 'bands' {n_b: (S, K) draws of
    E[L]}, 'points' (DataFrame: n_b, k, loss: every measured subset loss).
    """
    fig, axes = _grid(len(panels))
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(sizes_b))}
    for ax, panel in zip(axes, panels):
        grid = panel["k_grid"]
        for n_b, draws in panel["bands"].items():
            colour = colours[n_b]
            for level, alpha in ((level_outer, 0.15), (level_inner, 0.3)):
                lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
                ax.fill_between(grid, lo, hi, color=colour, alpha=alpha, linewidth=0)
            ax.plot(grid, np.median(draws, axis=0), color=colour, linewidth=1.2,
                    label=_size_label(n_b))  # fmt: skip
        points = panel["points"]
        for n_b, rows in points.groupby("n_b"):
            colour = colours[_nearest(n_b, colours)]
            ax.scatter(rows["k"], rows["loss"], s=4, color=colour, alpha=0.25, linewidth=0)
            means = rows.groupby("k")["loss"].agg(["mean", "sem"]).reset_index()
            ax.errorbar(means["k"], means["mean"], yerr=means["sem"].fillna(0), fmt="o",
                        markersize=3.5, color=colour, markeredgecolor="white",
                        markeredgewidth=0.5, elinewidth=0.8)  # fmt: skip
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("experts merged, k")
        ax.set_ylabel("held-out loss (nats)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"{title}: median, {level_inner:.0%} and {level_outer:.0%} bands of E[L]; "
        "dots: subsets, circles: per-k means ± se",
        fontsize=11,
    )
    return fig


def forest(params: dict[str, pd.DataFrame], labels: list[str], colours: list[str]) -> Figure:
    """One panel per parameter: per-family posterior median, 50% (thick) and 90% (thin) intervals.

    ``params``: name -> DataFrame with columns median, lo50, hi50, lo90, hi90 (one row per label).
    """
    n = len(labels)
    fig = Figure(figsize=(2.6 * len(params) + 2.5, 1.4 + 0.2 * n), layout="constrained")
    axes = fig.subplots(1, len(params), sharey=True, squeeze=False)[0]
    y = np.arange(n)[::-1]
    for ax, (name, frame) in zip(axes, params.items()):
        ax.hlines(y, frame["lo90"], frame["hi90"], color=colours, linewidth=0.8)
        ax.hlines(y, frame["lo50"], frame["hi50"], color=colours, linewidth=2.6)
        ax.scatter(frame["median"], y, s=8, color="black", zorder=3)
        ax.set_title(name, fontsize=11)
        if (frame["lo90"] > 0).all() and frame["hi90"].max() > 20 * frame["lo90"].min():
            ax.set_xscale("log")  # positive and spread over decades
            ax.set_title(f"{name} (log scale)", fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].set_ylim(-0.7, n - 0.3)
    return fig


def against_size(panels: list[dict], level: float = 0.9) -> Figure:
    """Floor and tail amplitude against N, one panel per (quantity, arch).

    ``panels``: dicts with 'title', 'ylabel', 'n_grid' (G,), 'lines' {method: (S, G) draws},
    optional 'points' {method: (sizes, values)} drawn as markers.
    """
    fig, axes = _grid(len(panels), ncols=2, width=5.0, height=3.4)
    for ax, panel in zip(axes, panels):
        grid = np.asarray(panel["n_grid"]) * 1e3
        for i, (method, draws) in enumerate(panel["lines"].items()):
            colour = PALETTE[i % len(PALETTE)]
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, linewidth=0)
            ax.plot(grid, np.median(draws, axis=0), color=colour, label=method)
            if method in panel.get("points", {}):
                sizes, values = panel["points"][method]
                ax.scatter(np.asarray(sizes) * 1e3, values, color=colour, s=18, zorder=3,
                           edgecolor="white", linewidth=0.5)  # fmt: skip
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
        medians = np.concatenate([np.median(d, axis=0) for d in panel["lines"].values()])
        marks = [np.asarray(v) for _, v in panel.get("points", {}).values()]
        seen = np.concatenate([medians, *marks])
        pad = 0.15 * (seen.max() - seen.min()) + 1e-9
        ax.set_ylim(seen.min() - pad, seen.max() + pad)  # bands may run off: the medians set it
        ax.set_xlabel("base size N (millions of parameters)")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return fig


def spread(panels: list[dict], level: float = 0.9) -> Figure:
    """Spread across subsets against k: measured sd (markers) and the fit's noise sd (bands).

    ``panels``: dicts with 'title', 'k_grid', 'model' {n_b: (S, K) sd draws},
    'measured' DataFrame (n_b, k, sd).
    """
    fig, axes = _grid(len(panels), ncols=2, width=4.6, height=3.2)
    for ax, panel in zip(axes, panels):
        sizes = sorted(panel["model"])
        for i, n_b in enumerate(sizes):
            colour = PALETTE[i % len(PALETTE)]
            draws = panel["model"][n_b]
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
            ax.fill_between(panel["k_grid"], lo, hi, color=colour, alpha=0.2, linewidth=0)
            ax.plot(panel["k_grid"], np.median(draws, axis=0), color=colour,
                    label=_size_label(n_b))  # fmt: skip
            rows = panel["measured"][np.isclose(panel["measured"]["n_b"], n_b)]
            ax.scatter(rows["k"], rows["sd"], color=colour, s=16, zorder=3, edgecolor="white",
                       linewidth=0.5)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("experts merged, k")
        ax.set_ylabel("sd of a subset's loss (nats)")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.1 * panel["measured"]["sd"].min()))
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return fig


def predictive_p_values(checks: pd.DataFrame, threshold: float, groups: pd.Series) -> Figure:
    """Per-curve predictive p-values (rows and per-k means) on a log scale, with the threshold."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(checks))
    names = list(dict.fromkeys(groups))
    colours = groups.map({g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)})
    for ax, column, title in zip(axes, ("p_rows", "p_means"), ("rows", "per-k means")):
        values = np.clip(checks[column].to_numpy(float), 1e-16, 1.0)
        ax.scatter(x, values, s=10, c=list(colours))
        ax.axhline(threshold, color="#D55E00", linestyle="--", linewidth=1,
                   label=f"misfit below {threshold:.1e}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("curve (in fit order)")
        ax.set_title(f"predictive p-value of each curve's {title}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("p-value")
    handles = [
        axes[1].scatter([], [], s=10, color=PALETTE[i % len(PALETTE)], label=g)
        for i, g in enumerate(names)
    ]
    axes[1].legend(handles=[*handles, axes[1].get_lines()[0]], fontsize=8, loc="lower right")
    return fig


def pareto_k(values: np.ndarray, threshold: float) -> Figure:
    """PSIS-LOO Pareto k of every observation, with the reliability threshold."""
    fig = Figure(figsize=(11, 2.8), layout="constrained")
    ax = fig.subplots()
    values = np.asarray(values, dtype=float)
    bad = values > threshold
    ax.scatter(np.flatnonzero(~bad), values[~bad], s=2, color=PALETTE[0], alpha=0.5)
    ax.scatter(np.flatnonzero(bad), values[bad], s=10, color="#D55E00", label=f"k > {threshold}")
    ax.axhline(threshold, color="#D55E00", linestyle="--", linewidth=1)
    ax.set_xlabel("observation")
    ax.set_ylabel("Pareto k")
    ax.set_title(f"PSIS-LOO Pareto k: {int(bad.sum())} of {values.size} above {threshold}",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    return fig
