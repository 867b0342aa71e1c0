"""Assemble the posterior report of one saved fit: sections of tables and figures -> one HTML page.

Everything comes from the fit file alone (it keeps the table's structure and losses), so a report
can be written wherever the fit is. The page is self-contained: images are inline PNGs, the
style sheet is inline, nothing is fetched.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mergelaw import __version__, law
from mergelaw.answer import check_level
from mergelaw.bayes import diagnostics as diag
from mergelaw.bayes import predictive
from mergelaw.bayes.fit import Fit
from mergelaw.bayes.posterior import Posterior
from mergelaw.compare import contrasts
from mergelaw.errors import MergelawError, number
from mergelaw.io import atomic_path, check_writable
from mergelaw.law import LAW_PARAM_NAMES
from mergelaw.plan import experts_for_target, stopping
from mergelaw.report import figures

#: Posterior draws used for bands and figures (evenly thinned): enough for stable 5-95% bands.
FIGURE_DRAWS = 400
K_GRID_POINTS = 60


@dataclass(frozen=True)
class Section:
    """One part of the page: a heading, a lead paragraph, then HTML blocks (tables, images)."""

    anchor: str
    title: str
    lead: str
    blocks: list[str]
    failed: bool = False


def build_report(
    fit: Fit,
    *,
    source: str = "fit",
    targets: Sequence[float] | None = None,
    epsilon: float = 0.005,
    size_b: float | None = None,
    level: float = 0.9,
    prob: float = 0.95,
    rope: float = 0.005,
) -> str:
    """The report of ``fit`` as one HTML string. ``targets`` (losses) for the experts-needed
    table (default: one, the median over families of E[L] at k = M/2 at ``size_b``);
    ``epsilon`` (nats) for the stopping rule; ``size_b``: base size of the planning tables
    (default: the fit's largest). The same fit and options give the same bytes."""
    level, prob = check_level(level), check_level(prob, "probability")
    _check_options(targets, epsilon, size_b, rope)
    post = Posterior.from_fit(fit)
    obs = fit.observations()
    size_b = float(size_b if size_b is not None else max(post.sizes_b))
    thin = predictive.thin_index(post.n_draws, FIGURE_DRAWS)
    points = pd.DataFrame(
        {"family": obs.family, "n_b": np.exp(obs.log_n), "k": obs.k, "loss": obs.y}
    )
    # every measured row with its family's arch and method, once for all sections
    labels = post.families[["arch", "method"]].to_numpy()[obs.family]
    points["arch"], points["method"] = labels[:, 0], labels[:, 1]
    loo = _loo(fit)
    sections = [
        _overview(fit, post, points),
        _diagnostics(fit, loo),
        _curves(post, points, thin),
        _forest(fit, post),
        _floor_tail(post, points, thin, level),
        _spread(post, points, thin, level),
        _predictive(fit, post),
        _planning(post, size_b, targets, epsilon, level),
        _comparison(post, level, prob, rope),
    ]
    return _render(fit, post, source, sections)


def write_report(fit_path: str | Path, out: str | Path, **options) -> Path:
    """Load the fit at ``fit_path`` and write its report to ``out`` atomically (``out`` is
    checked for writability first, before the fit is read)."""
    check_writable(out)
    fit = Fit.load(fit_path, spec=None)
    text = build_report(fit, source=Path(fit_path).name, **options)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def _check_options(
    targets: Sequence[float] | None, epsilon: float, size_b: float | None, rope: float
) -> None:
    """Refuse options out of range before any section is computed (one line each)."""
    positive = {"target loss": targets or [], "epsilon": [epsilon], "base size": [size_b or 1.0]}
    for what, values in positive.items():
        for value in values:
            if not (math.isfinite(value) and value > 0):
                raise MergelawError(f"{what} {number(value)} is not a positive number")
    if not (math.isfinite(rope) and rope >= 0):
        raise MergelawError(f"rope {number(rope)} is not a number >= 0")


# ---- sections --------------------------------------------------------------------------------


def _overview(fit: Fit, post: Posterior, points: pd.DataFrame) -> Section:
    families = post.families
    sizes = ", ".join(figures.size_text(n) for n in post.sizes_b)
    facts = {
        "rows fitted": f"{fit.meta.n_obs:,} ({fit.meta.data_form})",
        "families (arch, method, domain)": str(len(families)),
        "curves (family x size)": str(len(fit.meta.curves["label"])),
        "architectures": ", ".join(sorted(families["arch"].unique())),
        "methods": ", ".join(sorted(families["method"].unique())),
        "evaluation domains": ", ".join(sorted(families["eval_domain"].unique())),
        "base sizes": sizes,
        "k": f"1 .. {int(points['k'].max())} (pool of {post.pool_size:g} experts)",
    }
    counts = points.groupby(["method", points["k"].astype(int)]).size().unstack("k", fill_value=0)
    counts.index.name = "rows per (method, k)"
    blocks = [_facts(facts), _table(counts)]
    return Section("data", "Data", "What the fit was made from.", blocks)


def _diagnostics(fit: Fit, loo: dict | None) -> Section:
    checks = fit.diagnostics.checks
    if loo is not None:
        checks.insert(len(checks) - 1, diag.loo_check(loo))  # before the predictive check
    rows = "".join(
        f"<tr class='{'ok' if c.passed else 'fail'}'><td>{html.escape(c.name)}</td>"
        f"<td>{html.escape(c.value)}</td><td>{html.escape(c.threshold)}</td>"
        f"<td>{'pass' if c.passed else 'FAIL'}</td></tr>"
        for c in checks
    )
    blocks = [
        "<table class='data'><thead><tr><th>check</th><th>value</th><th>threshold</th>"
        f"<th></th></tr></thead><tbody>{rows}</tbody></table>"
    ]
    if loo is not None:
        blocks.append(_image(figures.pareto_k(loo["pareto_k"], diag.MAX_PARETO_K),
                             "Pareto k of every observation"))  # fmt: skip
    lead = (
        f"Sampler: {fit.meta.sampler}; settings {fit.meta.settings.describe()}; "
        f"{fit.meta.wall_time_s:.0f} s. Flag carried by every answer: "
        f"<b>{html.escape(fit.flag)}</b>."
    )
    return Section("diagnostics", "Diagnostics", lead, blocks, failed=not fit.diagnostics.ok)


def _curves(post: Posterior, points: pd.DataFrame, thin: np.ndarray) -> Section:
    families = post.families
    k_max = float(points["k"].max())
    grid = np.linspace(1.0, k_max, K_GRID_POINTS)
    bands = {n: post.curves(n).take(thin).mean(grid) for n in post.sizes_b}  # (S, F, K)
    blocks = []
    for (arch, method), group in families.groupby(["arch", "method"], sort=True):
        panels = []
        for index, row in group.iterrows():
            panels.append({
                "title": row["eval_domain"],
                "k_grid": grid,
                "bands": {n: draws[:, index] for n, draws in bands.items()},
                "points": points[points["family"] == index],
            })  # fmt: skip
        fig = figures.curve_bands(f"{arch} / {method}", panels, list(post.sizes_b))
        blocks.append(_image(fig, f"fitted curves, {arch} / {method}"))
    lead = (
        "Posterior of the mean curve E[L | N, k] for every family and base size, over the "
        "measured losses. Points far outside the bands, or per-k means that bend away from the "
        "curve, are where the law does not describe the data."
    )
    return Section("curves", "Fitted curves", lead, blocks)


def _forest(fit: Fit, post: Posterior) -> Section:
    labels = post.labels
    names = [n for n in LAW_PARAM_NAMES if n in post.law]
    params = {}
    for name in names:
        draws = post.law[name]
        q = np.quantile(draws, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        params[name] = pd.DataFrame(
            {"lo90": q[0], "lo50": q[1], "median": q[2], "hi50": q[3], "hi90": q[4]}
        )
    method_colour = _method_colours(post.families["method"])
    colours = [method_colour[m] for m in post.families["method"]]
    fig = figures.forest(params, labels, colours)
    summary = fit.law_summary(0.9)
    wide = summary.pivot_table(index="family", columns="param", values="mean", sort=False)
    wide = wide[[n for n in names if n in wide.columns]]
    lead = (
        "Per-family posterior of the paper's parameters: median (dot), 50% (thick) and 90% "
        "(thin) intervals, coloured by method. N is in billions of parameters, as in the paper."
    )
    blocks = [_image(fig, "parameter forest plot"), _details("posterior means", _table(wide, 4))]
    return Section("parameters", "Parameters", lead, blocks)


def _floor_tail(post: Posterior, points: pd.DataFrame, thin: np.ndarray, level: float) -> Section:
    if not post.size_law:
        lead = (
            f"This fit has {len(post.sizes_b)} base size(s) and no size law: the floor and tail "
            "are fitted per size (see the curves section); there is nothing to plot against N."
        )
        return Section("size", "Floor and tail against N", lead, [])
    sizes = np.array(post.sizes_b)
    grid = np.exp(np.linspace(np.log(sizes.min() / 1.25), np.log(sizes.max() * 1.25), 50))
    p = {name: values[thin][..., None] for name, values in post.law.items()}  # (S, F, 1)
    floor = law.floor_loss(grid, p["L_star"], p["B"], p["beta"])  # (S, F, G)
    tail = law.tail_amplitude(grid, p["A0"], p["gamma"])
    families = post.families
    k_top = points["k"].max()
    top = points[points["k"] == k_top]
    panels = []
    for arch, group in families.groupby("arch", sort=True):
        by_method = dict(list(group.groupby("method", sort=True)))
        floor_lines = {m: floor[:, g.index].mean(axis=1) for m, g in by_method.items()}
        tail_lines = {m: tail[:, g.index].mean(axis=1) for m, g in by_method.items()}
        measured = top[top["arch"] == arch].groupby(["method", "n_b"])["loss"].mean()
        marks = {m: (list(measured[m].index), list(measured[m].to_numpy())) for m in by_method}
        panels.append({"title": f"{arch}: floor L* + B N^-beta (mean over domains)",
                       "ylabel": "floor (nats)", "n_grid": grid, "lines": floor_lines,
                       "points": marks})  # fmt: skip
        panels.append({"title": f"{arch}: tail amplitude A0 N^-gamma (mean over domains)",
                       "ylabel": "amplitude (nats)", "n_grid": grid,
                       "lines": tail_lines})  # fmt: skip
    lead = (
        f"How the floor (the loss as k grows without bound) and the tail amplitude change with "
        f"the base size; bands: {level:.0%} credible. Markers: measured loss at k = {k_top:g} "
        "(mean over domains), which sits above the floor by the remaining tail."
    )
    image = _image(figures.against_size(panels, level), "floor and tail")
    return Section("size", "Floor and tail against N", lead, [image])


def _spread(post: Posterior, points: pd.DataFrame, thin: np.ndarray, level: float) -> Section:
    k_max = float(points["k"].max())
    grid = np.linspace(1.0, k_max, K_GRID_POINTS)
    measured = points.groupby(["family", "method", "n_b", "k"])["loss"].std().rename("sd")
    measured = measured[measured > 0].reset_index()
    curves = {n_b: post.curves(n_b).take(thin) for n_b in post.sizes_b}
    panels = []
    for method, group in post.families.groupby("method", sort=True):
        model = {}
        for n_b, at_size in curves.items():
            sd = at_size.families(group.index.to_numpy()).noise_sd(grid)
            model[n_b] = np.median(sd, axis=1)  # median over the method's families, per draw
        rows = measured[measured["method"] == method]
        median = rows.groupby(["n_b", "k"])["sd"].median().reset_index()
        panels.append({"title": f"{method}: median over domains", "k_grid": grid,
                       "model": model, "measured": median})  # fmt: skip
    lead = (
        "Spread of single subsets' losses around the curve against k: markers are the measured "
        "sd across subsets (median over domains), bands the fit's noise model "
        f"({post.spec.spread} spread, {level:.0%} credible). With subsets drawn without "
        "replacement from a pool of M experts, the spread falls faster than 1/k near k = M."
    )
    return Section("spread", "Spread against k", lead,
                   [_image(figures.spread(panels, level), "spread against k")])  # fmt: skip


def _predictive(fit: Fit, post: Posterior) -> Section:
    checks = fit.curve_checks()
    curves = fit.meta.curve_table
    method = post.families["method"].to_numpy()[curves["family"].to_numpy()]
    threshold = predictive.misfit_threshold(len(checks))
    fig = figures.predictive_p_values(checks, threshold, pd.Series(method))
    worst = checks.assign(p_min=checks[["p_rows", "p_means"]].min(axis=1))
    worst = worst.sort_values("p_min").head(15).drop(columns="p_min").set_index("curve")
    misfit = int(checks["misfit"].sum())
    lead = (
        "Per curve, two posterior predictive p-values: of its rows' standardised residuals and "
        "of its per-k means' (chi-square, exact per draw). A curve below "
        f"{predictive.FAMILYWISE_ALPHA:g} / (2 x {len(checks)} curves) = {threshold:.1e} fails: "
        f"<b>{misfit} of {len(checks)}</b> do."
    )
    blocks = [_image(fig, "predictive p-values"),
              _table(worst, 4, highlight="misfit", caption="the 15 lowest p-values")]  # fmt: skip
    return Section("checks", "Posterior predictive checks", lead, blocks, failed=misfit > 0)


def _planning(post: Posterior, size_b: float, targets, epsilon: float, level: float) -> Section:
    if not targets:
        half = max(1.0, round(post.pool_size / 2))
        targets = [float(np.median(post.curves(size_b).mean(half).mean(axis=0)))]
    blocks = []
    size = figures.size_text(size_b)
    stop = stopping(post, n_b=size_b, epsilon=epsilon, level=level)
    blocks += _answer_blocks(stop, f"when to stop adding experts at {size}, "
                             f"epsilon = {epsilon:g} nats")  # fmt: skip
    for target in targets:
        answer = experts_for_target(post, target, n_b=size_b, level=level)
        blocks += _answer_blocks(answer, f"experts for a loss of {target:.4g} at {size}")
    lead = (
        f"Planning answers at base size {size} with {level:.0%} credible intervals "
        "(estimate [lower, upper]). The stopping rule stops at the first k whose expected gain "
        "from one more expert is below epsilon; k80 / k90 reach 80% / 90% of the k = 1 to M drop. "
        "Base sizes in these tables are in billions of parameters."
    )
    if post.flag != "ok":
        failed = html.escape(post.flag)
        lead += f" <b class='flag'>Made from a fit that failed its checks: {failed}</b>"
    return Section("planning", "Planning", lead, blocks)


def _comparison(post: Posterior, level: float, prob: float, rope: float) -> Section:
    methods = sorted(post.families["method"].unique())
    if len(methods) < 2:
        return Section("compare", "Method comparison",
                       "The fit holds one merge method: nothing to compare.", [])  # fmt: skip
    records = []
    for a, b in itertools.combinations(methods, 2):
        answer = contrasts(post, a, b, rope=rope, prob=prob, level=level)
        overall = answer.table[answer.table["scope"] == "pooled over domains and sizes"]
        for row in overall.itertuples():
            records.append({
                "A - B": f"{a} - {b}",
                "quantity": row.quantity,
                "difference": _interval(row.estimate, row.lower, row.upper),
                "P(A lower)": f"{row.p_a_lower:.3f}",
                "P(equivalent)": f"{row.p_equivalent:.3f}",
                "verdict": answer.decision["verdicts"][row.quantity],
            })  # fmt: skip
    table = pd.DataFrame(records).set_index(["A - B", "quantity"])
    lead = (
        f"Posterior contrasts between every pair of methods, pooled over domains and sizes "
        f"({level:.0%} intervals, in nats; ROPE ±{rope:g} nats). A verdict needs probability "
        f"{prob:g}: 'A better' / 'B better' beyond the ROPE ('A lower' / 'B lower' for the tail "
        "amplitude, a shape: its loss rows say which is better), 'practically equivalent' "
        "within it."
    )
    return Section("compare", "Method comparison", lead, [_table(table)])


# ---- helpers ---------------------------------------------------------------------------------


def _loo(fit: Fit) -> dict | None:
    if "log_likelihood" not in fit.idata.groups():
        return None
    return diag.loo(fit.idata, pointwise=True)


def _settings(settings: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def _method_colours(methods: pd.Series) -> dict[str, str]:
    names = sorted(methods.unique())
    return {m: figures.PALETTE[i % len(figures.PALETTE)] for i, m in enumerate(names)}


def _interval(estimate: float, lower: float, upper: float) -> str:
    def number(x: float) -> str:
        if not math.isfinite(x):
            return "never" if x > 0 else "-inf"
        return f"{x:.4g}"

    return f"{number(estimate)} [{number(lower)}, {number(upper)}]"


def _answer_blocks(answer, caption: str) -> list[str]:
    """An Answer as one row per family, one column per quantity ('estimate [lower, upper]'),
    then its decision in words, sentence by sentence, as the terminal prints them."""
    words = "".join(f"<li>{html.escape(line)}</li>" for line in answer.summary)
    return [_answer_table(answer, caption), *([f"<ul class='words'>{words}</ul>"] if words else [])]


def _answer_table(answer, caption: str) -> str:
    """An Answer as one row per family, one column per quantity: 'estimate [lower, upper]'."""
    t = answer.table
    cells = pd.Series(
        [
            f"{r.estimate:.3g}" if r.stat in ("probability", "decision")
            else _interval(r.estimate, r.lower, r.upper)
            for r in t.itertuples()
        ],
        index=pd.MultiIndex.from_arrays([t["family"], t["quantity"]]),
    )  # fmt: skip
    wide = cells.unstack("quantity")[list(dict.fromkeys(t["quantity"]))]
    wide.index.name = "family"
    return _table(wide, caption=caption)


def _table(
    frame: pd.DataFrame,
    digits: int = 3,
    highlight: str | None = None,
    caption: str | None = None,
) -> str:
    """A DataFrame as an HTML table; rows whose ``highlight`` column is true are marked failed."""

    def cell(value):
        return f"{value:.{digits}g}" if isinstance(value, float) else value

    # the table's id from its content, not pandas' random uuid: the same fit gives the same page
    key = f"{caption}|{highlight}|{frame.to_csv()}".encode()
    styler = frame.style.format(cell, escape="html", na_rep="")
    styler = styler.set_uuid(hashlib.sha256(key).hexdigest()[:10])
    styler = styler.format_index(escape="html").set_table_attributes("class='data'")
    if highlight is not None and highlight in frame.columns:
        styler = styler.apply(
            lambda row: ["background-color: #fde2e1" if row[highlight] else ""] * len(row), axis=1
        )
    cap = f"<p class='caption'>{html.escape(caption)}</p>" if caption else ""
    return f"<div class='table'>{cap}{styler.to_html()}</div>"


def _facts(facts: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items()
    )
    return f"<table class='facts'>{rows}</table>"


def _image(fig, alt: str) -> str:
    return f"<figure><img src='{figures.png_data_uri(fig)}' alt='{html.escape(alt)}'></figure>"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _render(fit: Fit, post: Posterior, source: str, sections: list[Section]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("mergelaw.report", "."), autoescape=select_autoescape(["html"])
    )
    template = env.get_template("template.html")
    return template.render(
        title=f"mergelaw report: {source}",
        source=source,
        flag=fit.flag,
        ok=fit.diagnostics.ok,
        spec=fit.spec.name,
        spec_digest=fit.spec.digest,
        data_hash=fit.meta.data_hash,
        backend=fit.meta.backend,
        versions=_settings(fit.meta.versions),
        mergelaw_version=__version__,
        sections=sections,
    )
