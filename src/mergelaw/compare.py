"""Comparing merge methods: posterior contrasts per domain and size, pooled, and by LOO.

``contrasts`` pairs the families of two methods that share arch and eval domain and gives, per
draw, the difference A - B of the floor, the tail amplitude, the expected loss at each k and the
experts needed for a target; each with its interval, P(A < B) (lower is better, but for the
amplitude, a shape) and a region of practical equivalence (ROPE): P(A lower by more than rope),
P(|A - B| <= rope), P(B lower by more than rope). Pooled rows average the difference over
domains (per size, and over sizes too). ``method_effects_loo`` compares, by PSIS-LOO, a fit with
one law per method against a fit of the same rows with the methods pooled (``pool_methods``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mergelaw.answer import Answer, SortedDraws, check_level, frame, summarize
from mergelaw.bayes.posterior import Posterior
from mergelaw.errors import MergelawError
from mergelaw.parallel import run_each
from mergelaw.plan import experts_needed

POOLED = "pooled"


def method_pairs(post: Posterior, method_a: str, method_b: str) -> pd.DataFrame:
    """Families of ``method_a`` and ``method_b`` matched on (arch, eval_domain): columns
    domain (the eval domain, prefixed 'arch/' when the fit has several archs), label_a, label_b."""
    families = {c: post.families[c].tolist() for c in ("arch", "eval_domain", "method", "label")}
    methods = sorted(set(families["method"]))
    for method in (method_a, method_b):
        if method not in methods:
            raise MergelawError(
                f"method {method!r} is not in this fit (methods: {', '.join(methods)})"
            )
    if method_a == method_b:
        raise MergelawError(f"compare two different methods (got {method_a!r} twice)")
    label_a, label_b = (_labels_by_domain(families, method) for method in (method_a, method_b))
    shared = [key for key in label_a if key in label_b]  # in method_a's order
    if not shared:
        raise MergelawError(f"methods {method_a!r} and {method_b!r} share no (arch, eval domain)")
    one_arch = len({arch for arch, _ in shared}) == 1
    return pd.DataFrame(
        {
            "domain": [domain if one_arch else f"{arch}/{domain}" for arch, domain in shared],
            "label_a": [label_a[key] for key in shared],
            "label_b": [label_b[key] for key in shared],
        }
    )


def _labels_by_domain(families: dict[str, list], method: str) -> dict[tuple[str, str], str]:
    """(arch, eval_domain) -> label of ``method``'s families (columns of the families table as
    lists), refusing a method with several parameter settings for one domain (which of them
    would be compared?)."""
    labels: dict[tuple[str, str], str] = {}
    rows = zip(families["arch"], families["eval_domain"], families["method"], families["label"])
    for arch, domain, _, label in (row for row in rows if row[2] == method):
        if (arch, domain) in labels:
            raise MergelawError(
                f"method {method!r} has several parameter settings for {arch}/{domain}: compare "
                "fits with one setting per method"
            )
        labels[(arch, domain)] = label
    return labels


def contrasts(
    post: Posterior,
    method_a: str,
    method_b: str,
    *,
    sizes_b: Sequence[float] | None = None,
    k: Sequence[float] | None = None,
    target: float | None = None,
    rope: float = 0.005,
    rope_experts: float = 0.0,
    prob: float = 0.95,
    level: float = 0.9,
) -> Answer:
    """Posterior contrasts A - B per (domain, size), pooled over domains per size, and pooled
    over domains and sizes. ``sizes_b`` default: the fit's sizes; ``k`` default: 1 and the
    table's largest k; ``rope`` in nats (floor, amplitude, loss), ``rope_experts`` in experts.

    The decision: per quantity pooled over everything, 'A better' / 'B better' ('A lower' /
    'B lower' for the tail amplitude, a shape: SHAPE_QUANTITIES) when the probability of a
    difference beyond the ROPE in that direction is at least ``prob``,
    'practically equivalent' when P(|A - B| <= rope) >= prob, else 'undecided'.
    """
    level, prob = check_level(level), check_level(prob, "probability")
    if rope < 0 or rope_experts < 0:
        raise MergelawError("a region of practical equivalence cannot be negative")
    pairs = method_pairs(post, method_a, method_b)
    sizes = [float(n) for n in (sizes_b if sizes_b is not None else post.sizes_b)]
    ks = [float(x) for x in (k if k is not None else sorted({1.0, post.k_anchor}))]
    both = post.select([*pairs["label_a"], *pairs["label_b"]])  # columns taken once
    quantities = _quantities(ks, target)
    draws = _row_draws(both, sizes, ks, target, len(quantities))  # (quantities, rows, S)
    domains, n_pairs = list(pairs["domain"]), len(pairs)
    # the rows of a quantity: per size its domains then their pool; last, the pool of everything
    context = {
        "scope": (["domain"] * n_pairs + ["pooled over domains"]) * len(sizes)
        + ["pooled over domains and sizes"],
        "domain": [*domains, POOLED] * len(sizes) + [f"{POOLED}, all N"],
        "n_b": [n for n in sizes for _ in range(n_pairs + 1)] + [math.nan],
    }
    columns = _numbers(draws, quantities, rope, rope_experts, level)
    n_rows = draws.shape[1]
    blocks = [
        context
        | {"quantity": [q] * n_rows, "stat": [_stat_of(q)] * n_rows, "level": [level] * n_rows}
        | columns[q]
        for q in quantities
    ]
    table = frame(blocks)
    decision = {"method_a": method_a, "method_b": method_b, "rope": rope, "prob": prob}
    # the verdict of a quantity is its last row's: pooled over domains and sizes
    decision["verdicts"] = {
        quantity: _verdict(
            quantity, {key: value[-1] for key, value in columns[quantity].items()}, prob
        )
        for quantity in quantities
    }
    words = tuple(
        f"{quantity} (pooled): {verdict}  (A = {method_a}, B = {method_b}, ROPE {rope:g})"
        for quantity, verdict in decision["verdicts"].items()
    )
    return Answer("method comparison", table, post.flag, dict(post.provenance), decision, (), words)


def _quantities(ks: list[float], target: float | None) -> list[str]:
    """What a comparison contrasts, in table order (the median-estimated counts last)."""
    names = ["floor", "tail amplitude", *(f"loss at k={kk:g}" for kk in ks)]
    return names + ([f"experts for target {target:g}"] if target is not None else [])


def _differences(
    post: Posterior, n_b: float, ks: list[float], target: float | None, out: np.ndarray
) -> None:
    """A - B per pair at ``n_b`` of every quantity (``_quantities``), written into ``out``
    (quantities, pairs, S), of a posterior holding the pairs' A families, then their B
    families (``Posterior.select``)."""
    curves = post.curves(n_b)
    half = len(post.labels) // 2

    def a_minus_b(values: np.ndarray, i: int) -> None:
        np.subtract(values[:, :half], values[:, half:], out=out[i].T)

    a_minus_b(curves.floor, 0)
    a_minus_b(curves.amplitude, 1)
    for i, kk in enumerate(ks, start=2):
        a_minus_b(curves.mean(kk), i)
    if target is not None:
        needed = experts_needed(target, curves)
        with np.errstate(invalid="ignore"):  # inf - inf where both never reach it: equal
            a_minus_b(needed, len(out) - 1)
        both_never = np.isinf(needed[:, :half]) & np.isinf(needed[:, half:])
        out[-1].T[both_never] = 0.0


def _row_draws(
    post: Posterior, sizes: list[float], ks: list[float], target: float | None, n_quantities: int
) -> np.ndarray:
    """Draws (quantities, rows, S) of every row of the table: per quantity, per size its pairs
    (``_differences``) then their pool, and last the pool over sizes. Written into one array,
    each row's draws contiguous (they are sorted next): copies and strided sorts were most of
    a comparison's time (plan_bench)."""
    n_pairs = len(post.labels) // 2
    width = len(sizes) * (n_pairs + 1) + 1
    out = np.empty((n_quantities, width, post.n_draws))
    grid = out[:, :-1].reshape(n_quantities, len(sizes), n_pairs + 1, post.n_draws)  # a view

    def one_size(z: int) -> None:
        _differences(post, sizes[z], ks, target, grid[:, z, :n_pairs])
        grid[:, z, n_pairs] = _pool(grid[:, z, :n_pairs])

    run_each(one_size, range(len(sizes)), out.size)  # each size writes its own rows
    # every size has every pair: the mean over sizes of their pools pools everything
    out[:, -1] = _pool(grid[:, :, n_pairs])
    return out


def _stat_of(quantity: str) -> str:
    """Experts needed are counts (and may be infinite): their estimate is the median."""
    return "median" if quantity.startswith("experts") else "mean"


def _pool(rows: np.ndarray) -> np.ndarray:
    """Mean difference over the second-last axis (pairs, or sizes) of (..., m, S) draws; an
    infinite difference makes the mean infinite, and both signs of it NaN."""
    with np.errstate(invalid="ignore"):
        return rows.mean(axis=-2)


def _numbers(
    draws: np.ndarray, quantities: list[str], rope: float, rope_experts: float, level: float
) -> dict[str, dict[str, list]]:
    """Per quantity, the numbers of its rows (``_contrast_numbers``) from their draws
    (quantities, rows, S), each stat's quantities sorted together, in place."""
    n_rows = draws.shape[1]
    columns = {}
    for stat in ("mean", "median"):
        chosen = [i for i, q in enumerate(quantities) if _stat_of(q) == stat]
        if not chosen:
            continue  # a stat's quantities sit side by side (counts last): one view
        diffs = draws[chosen[0] : chosen[-1] + 1].reshape(-1, draws.shape[2])
        width = np.full(len(diffs), rope_experts if stat == "median" else rope)
        sorted_diffs = SortedDraws(diffs, overwrite=True, draws_last=True)
        numbers = _contrast_numbers(sorted_diffs, width, level, stat)
        for j, i in enumerate(chosen):
            rows = slice(j * n_rows, (j + 1) * n_rows)
            columns[quantities[i]] = {key: value[rows].tolist() for key, value in numbers.items()}
    return columns


def _contrast_numbers(
    diff: SortedDraws, width: np.ndarray, level: float, stat: str
) -> dict[str, np.ndarray]:
    """Per column of sorted differences A - B: estimate and interval, and the probabilities
    of A lower, of A lower by more than ``width`` (the ROPE), of equivalence within it, and of
    B lower by more than it."""
    within = diff.share_below(width, inclusive=True)  # -rope <= A - B <= rope: equivalent
    beyond_lower = diff.share_below(-width)
    return summarize(diff, level, stat) | {
        "p_a_lower": diff.share_below(0.0),
        "p_a_lower_beyond_rope": beyond_lower,
        "p_equivalent": within - beyond_lower,
        "p_b_lower_beyond_rope": diff.share_above(width),
    }


#: Contrasts where lower is not better: a curve's shape, not its loss. A smaller tail amplitude
#: is a flatter curve (a rising curve's is negative), better or worse only through the loss rows.
SHAPE_QUANTITIES = ("tail amplitude",)


def _verdict(quantity: str, numbers: dict[str, float], prob: float) -> str:
    better = "lower" if quantity in SHAPE_QUANTITIES else "better"
    if numbers["p_a_lower_beyond_rope"] >= prob:
        return f"A {better}"
    if numbers["p_b_lower_beyond_rope"] >= prob:
        return f"B {better}"
    if numbers["p_equivalent"] >= prob:
        return "practically equivalent"
    return "undecided"


# ---- model-level comparison ----------------------------------------------------------------------


def pool_methods(table: pd.DataFrame) -> pd.DataFrame:
    """The same rows with one law per arch x domain: every row gets the table's first method name
    (a curves table accepts known method names only) and no method parameters; the original
    method is kept in ``pooled_from``. Fit this and compare with the per-method fit by
    ``method_effects_loo``. Row order is kept (LOO pairs the points by position), and each row's
    seed is made unique per original method so that the table keeps one row per key."""
    out = table.reset_index(drop=True).copy()
    codes, methods = pd.factorize(
        out["method"].astype(str) + "|" + out["method_params"].astype(str), sort=True
    )
    out["pooled_from"] = out["method"]
    out["method"] = sorted(out["method"].astype(str).unique())[0]
    out["method_params"] = "{}"
    out["seed"] = out["seed"].astype("int64") * len(methods) + codes
    return out


def method_effects_loo(with_methods, without_methods) -> Answer:
    """PSIS-LOO of a fit with one law per method against a fit of the same rows with the methods
    pooled. The elpd difference (with - without) above zero favours method effects; its interval
    is the normal one from the paired standard error."""
    from mergelaw.bayes import diagnostics as diag

    y_with = _observed(with_methods)
    y_without = _observed(without_methods)
    if y_with.shape != y_without.shape or not np.array_equal(y_with, y_without):
        raise MergelawError(
            "the two fits were not made on the same rows in the same order (fit the table and "
            "pool_methods(table) of it)"
        )
    scores = {
        "method effects": diag.loo(with_methods.idata),
        "no method effects": diag.loo(without_methods.idata),
    }
    comparison = diag.compare(
        {"method effects": with_methods.idata, "no method effects": without_methods.idata}
    )
    elpd_diff = scores["method effects"]["elpd_loo"] - scores["no method effects"]["elpd_loo"]
    dse = float(comparison["dse"].max())
    z = 1.6448536269514722  # 90% normal interval
    records = [
        {
            "model": name,
            "quantity": "elpd_loo",
            "stat": "loo",
            "estimate": s["elpd_loo"],
            "lower": s["elpd_loo"] - z * s["se"],
            "upper": s["elpd_loo"] + z * s["se"],
            "level": 0.9,
            "eff_par": s["p_loo"],
            "k>0.7": s["n_high_pareto_k"],
        }
        for name, s in scores.items()
    ]
    records.append(
        {
            "model": "method effects - none",
            "quantity": "elpd difference",
            "stat": "loo",
            "estimate": elpd_diff,
            "lower": elpd_diff - z * dse,
            "upper": elpd_diff + z * dse,
            "level": 0.9,
        }
    )
    if elpd_diff - 2 * dse > 0:
        preferred = "method effects"
    elif elpd_diff + 2 * dse < 0:
        preferred = "no method effects"
    else:
        preferred = "no clear difference (|elpd difference| < 2 se)"
    flags = {"method effects": with_methods.flag, "no method effects": without_methods.flag}
    flag = (
        "ok"
        if all(f == "ok" for f in flags.values())
        else "; ".join(f"{name}: {f}" for name, f in flags.items() if f != "ok")
    )
    provenance = {
        "data_hash": with_methods.meta.data_hash,
        "data_hash_pooled": without_methods.meta.data_hash,
        "spec": with_methods.spec.name,
    }
    decision = {"preferred": preferred, "elpd_difference": elpd_diff, "se": dse}
    words = (f"PSIS-LOO prefers: {preferred} (elpd difference {elpd_diff:.1f} ± {dse:.1f})",)
    table = frame([{k: [v] for k, v in record.items()} for record in records])
    return Answer("method effects (LOO)", table, flag, provenance, decision, (), words)


def _observed(fit) -> np.ndarray:
    return np.asarray(fit.idata.observed_data["loss"].to_numpy(), dtype=float)
