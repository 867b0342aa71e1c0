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

from mergelaw.answer import Answer, Block, check_level, expand, frame, summarize
from mergelaw.bayes.posterior import Posterior
from mergelaw.errors import MergelawError
from mergelaw.plan import experts_needed

POOLED = "pooled"


def method_pairs(post: Posterior, method_a: str, method_b: str) -> pd.DataFrame:
    """Families of ``method_a`` and ``method_b`` matched on (arch, eval_domain): columns
    domain (the eval domain, prefixed 'arch/' when the fit has several archs), label_a, label_b."""
    families = post.families
    methods = sorted(families["method"].unique())
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


def _labels_by_domain(families: pd.DataFrame, method: str) -> dict[tuple[str, str], str]:
    """(arch, eval_domain) -> label of ``method``'s families, refusing a method with several
    parameter settings for one domain (which of them would be compared?)."""
    side = families.loc[families["method"] == method, ["arch", "eval_domain", "label"]]
    labels: dict[tuple[str, str], str] = {}
    for arch, domain, label in side.itertuples(index=False):
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
    per_size = {n: _differences(post, pairs, n, ks, target) for n in sizes}
    blocks = []
    for quantity in per_size[sizes[0]]:
        width = rope_experts if quantity.startswith("experts") else rope
        stat = "median" if quantity.startswith("experts") else "mean"
        for n in sizes:
            diff = per_size[n][quantity]  # (S, n_pairs)
            context = {"scope": "domain", "domain": list(pairs["domain"]), "n_b": n}
            blocks.append((context, quantity, diff, width, stat))
            context = {"scope": "pooled over domains", "domain": POOLED, "n_b": n}
            blocks.append((context, quantity, _pool(diff, axis=1), width, stat))
        everything = _pool(np.concatenate([per_size[n][quantity] for n in sizes], axis=1), axis=1)
        context = {
            "scope": "pooled over domains and sizes",
            "domain": f"{POOLED}, all N",
            "n_b": math.nan,
        }
        blocks.append((context, quantity, everything, width, stat))
    table = frame(_contrast_rows(blocks, level))
    decision = {"method_a": method_a, "method_b": method_b, "rope": rope, "prob": prob}
    overall = table[table["scope"] == "pooled over domains and sizes"]
    decision["verdicts"] = {row.quantity: _verdict(row, prob) for row in overall.itertuples()}
    words = tuple(
        f"{quantity} (pooled): {verdict}  (A = {method_a}, B = {method_b}, ROPE {rope:g})"
        for quantity, verdict in decision["verdicts"].items()
    )
    return Answer("method comparison", table, post.flag, dict(post.provenance), decision, (), words)


def _differences(
    post: Posterior, pairs: pd.DataFrame, n_b: float, ks: list[float], target: float | None
) -> dict[str, np.ndarray]:
    # every family's curves first: a new size's deviations are drawn for all of them at once
    index = [post.family_index(f) for f in (*pairs["label_a"], *pairs["label_b"])]
    both = post.curves(n_b).families(np.array(index))  # A's columns, then B's
    out = {"floor": _a_minus_b(both.floor), "tail amplitude": _a_minus_b(both.amplitude)}
    for kk in ks:
        out[f"loss at k={kk:g}"] = _a_minus_b(both.mean(kk))
    if target is not None:
        needed = experts_needed(target, both)
        half = needed.shape[1] // 2
        both_never = np.isinf(needed[:, :half]) & np.isinf(needed[:, half:])
        with np.errstate(invalid="ignore"):  # inf - inf where both never reach it: equal
            out[f"experts for target {target:g}"] = np.where(both_never, 0.0, _a_minus_b(needed))
    return out


def _a_minus_b(values: np.ndarray) -> np.ndarray:
    """A - B per pair, of values over the pairs' A families then their B families (S, 2m)."""
    half = values.shape[1] // 2
    return values[:, :half] - values[:, half:]


def _pool(diff: np.ndarray, axis: int) -> np.ndarray:
    """Mean difference over pairs; a pair with an infinite difference makes the mean infinite."""
    with np.errstate(invalid="ignore"):
        return diff.mean(axis=axis)[:, None]


def _contrast_rows(blocks: list[tuple], level: float) -> list[Block]:
    """Rows of every block (context, quantity, differences (S, m), rope, stat), in block order:
    summaries and probabilities computed once over all blocks of a stat."""
    numbers: list[dict[str, list]] = [{} for _ in blocks]  # per block: column -> its rows
    for stat in ("mean", "median"):
        chosen = [i for i, block in enumerate(blocks) if block[4] == stat]
        if not chosen:
            continue
        diff = np.concatenate([blocks[i][2] for i in chosen], axis=1)
        width = np.concatenate([np.full(blocks[i][2].shape[1], blocks[i][3]) for i in chosen])
        summary = summarize(diff, level, stat)
        with np.errstate(invalid="ignore"):
            summary |= {
                "p_a_lower": np.mean(diff < 0, axis=0),
                "p_a_lower_beyond_rope": np.mean(diff < -width, axis=0),
                "p_equivalent": np.mean(np.abs(diff) <= width, axis=0),
                "p_b_lower_beyond_rope": np.mean(diff > width, axis=0),
            }
        widths = [blocks[i][2].shape[1] for i in chosen]
        stops = np.cumsum(widths)
        for i, start, stop in zip(chosen, stops - widths, stops):
            numbers[i] = {k: v[start:stop].tolist() for k, v in summary.items()}
    out = []
    for (context, quantity, diff, _, stat), columns in zip(blocks, numbers):
        m = diff.shape[1]
        labels = {"quantity": [quantity] * m, "stat": [stat] * m, "level": [level] * m}
        out.append(expand(context, m) | labels | columns)
    return out


#: Contrasts where lower is not better: a curve's shape, not its loss. A smaller tail amplitude
#: is a flatter curve (a rising curve's is negative), better or worse only through the loss rows.
SHAPE_QUANTITIES = ("tail amplitude",)


def _verdict(row, prob: float) -> str:
    better = "lower" if row.quantity in SHAPE_QUANTITIES else "better"
    if row.p_a_lower_beyond_rope >= prob:
        return f"A {better}"
    if row.p_b_lower_beyond_rope >= prob:
        return f"B {better}"
    if row.p_equivalent >= prob:
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
