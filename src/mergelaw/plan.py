"""Planning queries over posterior draws: experts for a target, when to stop, budget, forecasts.

Each query takes a ``Posterior`` (``Posterior.from_fit(Fit.load(path))``) and returns an
``Answer``: a tidy table of estimates with central credible intervals, the fit's diagnostics flag
and provenance, and the decision in words. Every quantity is computed per draw with the law's
closed forms (numpy over all draws at once), so its posterior is exact up to Monte Carlo error.
The curve is the law's mean over k-subsets, floor + A·(k+b)^-alpha at a base size N (billions);
"loss at k" means that expected loss, "observed loss" adds the fit's subset-to-subset noise.
A family is named by its label ('qwen2/ties/code', or a unique part such as 'ties/code'), or
'new' for a domain or method the fit has not seen (drawn from the fitted population).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mergelaw import law
from mergelaw.answer import (
    Answer,
    Block,
    SortedDraws,
    check_level,
    frame,
    rows,
    value_rows,
)
from mergelaw.bayes.posterior import NEW_FAMILY, CurveDraws, Posterior
from mergelaw.bayes.update import Points, condition, describe_update
from mergelaw.errors import MergelawError
from mergelaw.parallel import run_on_row_slices

#: Largest k or base size (billions) the searches consider; beyond it, the answer is "never".
K_CAP = 2.0**40
N_RANGE_B = (1e-4, 1e7)


# ---- closed forms with the tail exponent alpha (alpha = 1: exactly law.py's) -----------------


def k_for_target(target: float, curves: CurveDraws) -> np.ndarray:
    """Continuous k where the mean curve reaches ``target``, per draw; inf at or below the floor.
    A rising curve (negative amplitude) is at its lowest at k = 1: 1 if that meets the target,
    else inf (adding experts only moves away from it)."""
    if curves.unit_alpha:
        k = law.k_for_target(target, curves.floor, curves.amplitude, curves.b)
    else:
        gap = target - curves.floor
        safe = np.where(gap > 0, gap, 1.0)
        ratio = np.where(gap > 0, curves.amplitude / safe, 1.0)
        k = np.where(gap > 0, np.abs(ratio) ** (1.0 / curves.alpha) - curves.b, np.inf)
    rising = curves.amplitude < 0
    return np.where(rising, np.where(curves.mean(1.0) <= target, 1.0, np.inf), k)


def experts_needed(target: float, curves: CurveDraws) -> np.ndarray:
    """Whole experts (>= 1) with expected loss at or below ``target``, per draw; inf if never."""
    return law._ceil_at_least_one(k_for_target(target, curves))


def first_k_gain_below(threshold: float, curves: CurveDraws) -> np.ndarray:
    """Smallest whole k >= 1 where one more expert gains less than ``threshold``, per draw."""
    if curves.unit_alpha:
        return law.first_k_gain_below(threshold, curves.amplitude, curves.b)
    shape = curves.floor.shape
    return smallest_whole_k(
        lambda k: curves.marginal_gain(k) < threshold, np.zeros(shape), np.full(shape, K_CAP)
    )


def experts_for_fraction(fraction: float, curves: CurveDraws, k_max: float) -> np.ndarray:
    """Whole k reaching ``fraction`` of the k=1 -> k_max loss drop, per draw (k80: 0.8)."""
    if curves.unit_alpha:
        return law.experts_for_gain_fraction(fraction, curves.b, k_max)
    s1, s_max = curves.tail_shape(1.0), curves.tail_shape(float(k_max))
    level = s1 - fraction * (s1 - s_max)
    return law._ceil_at_least_one(level ** (-1.0 / curves.alpha) - curves.b)


def smallest_whole_k(holds, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Smallest whole k >= 1 in (lo, hi] where the monotone predicate ``holds`` (false, then
    true, as k grows) is true, elementwise by bisection over all elements at once; inf where it
    is false even at hi. ``holds(lo)`` must be false, or lo = 0."""
    never = ~holds(hi)
    while np.any(hi - lo > 1.0):
        mid = np.maximum(np.floor((lo + hi) / 2.0), 1.0)
        true = holds(mid)
        hi = np.where(true, mid, hi)
        lo = np.where(true, lo, mid)
    return np.where(never, np.inf, hi)


def size_for_floor(target: float, post: Posterior, index: np.ndarray) -> np.ndarray:
    """Base size (billions) from which the floor is below ``target``, per draw; inf if never."""
    p = post.law_at(index)
    return _floor_size(target, p["L_star"], p["B"], p["beta"])


def _floor_size(target: float, L_star: np.ndarray, B: np.ndarray, beta: np.ndarray) -> np.ndarray:
    gap = target - L_star
    ok = (gap > 0) & (B > 0) & (beta > 0)
    safe = np.where(ok, gap, 1.0)
    n = np.where(ok, (np.where(ok, B, 1.0) / safe) ** (1.0 / np.where(ok, beta, 1.0)), np.inf)
    return np.where(gap > 0, np.where(B <= 0, 0.0, n), np.inf)


def _falling_until(q: dict[str, np.ndarray], lo_end: float, hi_end: float) -> np.ndarray:
    """Per draw, the x = log N up to which L(x) falls: hi_end when gamma >= 0 (or no tail), else
    the minimum of the convex L, where beta B e^(-beta x) = -gamma C e^(-gamma x)."""
    B, beta, C, gamma = q["B"], q["beta"], q["C"], q["gamma"]
    rising_tail = (gamma < 0) & (C > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_min = np.log(beta * B / np.where(rising_tail, -gamma * C, 1.0)) / (beta - gamma)
    x_min = np.where(B > 0, x_min, lo_end)  # no floor term: the rising tail alone, min at the left
    return np.where(rising_tail, np.clip(np.nan_to_num(x_min, nan=lo_end), lo_end, hi_end), hi_end)


def _log_or_minus_inf(coef: np.ndarray) -> np.ndarray:
    """log(coef), -inf where coef <= 0: e^(log + exponent) is then coef * e^exponent without
    0 * inf = nan (0 where coef is 0, inf where a steep exponent at a tiny size overflows), and
    the logs are taken once for all the search's steps."""
    with np.errstate(divide="ignore"):
        return np.log(np.where(coef > 0, coef, 0.0))


def _excess(x: np.ndarray, t: dict[str, np.ndarray], target: float):
    """L(x) - target and its slope in x = log N, for the draws whose curve terms are ``t``
    (see size_for_target)."""
    with np.errstate(over="ignore"):
        e_floor = np.exp(t["log_B"] + t["minus_beta"] * x)
        e_tail = np.exp(t["log_C"] + t["minus_gamma"] * x)
    return t["L"] + e_floor + e_tail - target, t["minus_beta"] * e_floor - t["gamma"] * e_tail


def size_for_target(target: float, k: float, post: Posterior, index: np.ndarray) -> np.ndarray:
    """Smallest base size (billions) whose expected loss with ``k`` experts is at or below
    ``target``, per draw; inf if even N_RANGE_B's top misses it.

    Safeguarded Newton in x = log N on L(x) = L* + B e^(-beta x) + C e^(-gamma x): from the left
    of the root (where the floor alone meets the target) Newton steps on this convex, falling
    curve approach the root from the left; a step leaving the bracket bisects instead. With
    gamma < 0 (a tail that grows with N, as measured on small lab bases) L is convex but not
    monotone: the search is confined to the falling side, left of its minimum, and 'never'
    means even the minimum misses the target.
    """
    p = post.law_at(index)
    tail = p["A0"] * law.tail_shape(k, p["b"], p["alpha"])
    out = np.empty(tail.shape)

    def search(rows: slice) -> None:  # each draw's search is its own: slices of draws side by side
        law_rows = {name: p[name][rows] for name in ("L_star", "B", "beta", "gamma")}
        out[rows] = _target_size(target, law_rows, tail[rows])

    run_on_row_slices(search, len(out), out.size)
    return out


def _target_size(target: float, p: dict[str, np.ndarray], tail: np.ndarray) -> np.ndarray:
    """size_for_target on law draws ``p`` (L_star, B, beta, gamma) and the tail's coefficient
    at that k, ``tail`` (A0 (k + b)^-alpha)."""
    shape = tail.shape
    lo_end, hi_end = np.log(N_RANGE_B[0]), np.log(N_RANGE_B[1])
    with np.errstate(divide="ignore"):  # a floor that does not fall with N: size 0, log -inf
        start = np.log(_floor_size(target, p["L_star"], p["B"], p["beta"]))
    x = np.clip(np.where(np.isfinite(start), start, lo_end), lo_end, hi_end).ravel()
    q = {n: v.ravel() for n, v in (("L", p["L_star"]), ("B", p["B"]), ("beta", p["beta"]),
                                   ("C", tail), ("gamma", p["gamma"]))}  # fmt: skip
    # The curve's terms as the steps use them, flat; logs taken once (see _log_or_minus_inf).
    terms = {"L": q["L"], "log_B": _log_or_minus_inf(q["B"]), "minus_beta": -q["beta"],
             "log_C": _log_or_minus_inf(q["C"]), "minus_gamma": -q["gamma"],
             "gamma": q["gamma"]}  # fmt: skip
    right = _falling_until(q, lo_end, hi_end)
    x = np.minimum(x, right)
    never = _excess(right, terms, target)[0] > 0
    already = _excess(np.full(x.size, lo_end), terms, target)[0] <= 0
    # Work on the draws still searching only, compacted as draws converge.
    todo = np.flatnonzero(~(never | already))
    active = {n: v[todo] for n, v in terms.items()}
    lo, hi, xs = np.full(todo.size, lo_end), right[todo], x[todo]
    for _ in range(100):
        if todo.size == 0:
            break
        f, slope = _excess(xs, active, target)
        hi = np.where(f <= 0, xs, hi)
        lo = np.where(f > 0, xs, lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = xs - f / slope
        inside = (slope < 0) & (newton >= lo) & (newton <= hi)
        xs = np.where(inside, newton, (lo + hi) / 2.0)
        x[todo] = xs
        going = ~(inside & (np.abs(f / slope) <= 1e-12 * np.maximum(1.0, np.abs(xs))))
        going &= hi - lo > 1e-12
        if not going.all():
            todo, lo, hi, xs = todo[going], lo[going], hi[going], xs[going]
            active = {n: v[going] for n, v in active.items()}
    n = np.exp(x)
    n[never] = np.inf
    n[already] = N_RANGE_B[0]
    return n.reshape(shape)


# ---- the queries -------------------------------------------------------------------------------


def experts_for_target(
    post: Posterior,
    target: float,
    *,
    n_b: float | None = None,
    family: str | Sequence[str] | None = None,
    prob: float = 0.9,
    k_max: float | None = None,
    level: float = 0.9,
) -> Answer:
    """Experts needed for an expected loss of ``target`` at base size ``n_b``, per family.

    Rows: the posterior of the whole number of experts needed (inf: never at this size); the
    smallest k with P(L(k) <= target) >= ``prob``; P(reachable with <= k_max experts) and with
    any number; and the base size from which it is reachable (with any k, and with <= k_max).
    The decision per family says 'reachable', 'beyond the pool' (more than k_max experts) or
    'unreachable at this size', with the base size that would make it reachable.
    """
    n_b = post.planning_size(n_b)
    level, prob = check_level(level), check_level(prob, "probability")
    if not (math.isfinite(target) and target > 0):
        raise MergelawError(f"target loss {float(target):g} is not a positive loss (nats/token)")
    k_max = float(k_max if k_max is not None else post.pool_size)
    source, curves, index = post.family_curves(n_b, family)
    needed = experts_needed(target, curves)
    nothing = np.full_like(needed, np.nan)  # no size law (a fit of < 3 sizes): no size to name
    n_any = size_for_floor(target, source, index) if source.size_law else nothing
    n_pool = size_for_target(target, k_max, source, index) if source.size_law else nothing
    needed, n_any, n_pool = (SortedDraws(n) for n in (needed, n_any, n_pool))
    decided = _quantile_inverted(needed, prob)
    context = {"family": curves.labels, "n_b": curves.n_b, "target": target}
    reachable = needed.share_below(k_max, inclusive=True)
    blocks = [
        rows(context, "experts for target", needed, level, "median"),
        value_rows(context, f"P(reachable, <= {k_max:g} experts)", reachable, "probability", level),
        value_rows(context, "P(reachable, any k)", needed.share_below(np.inf),
                   "probability", level),
        value_rows(context, f"smallest k: P(L(k) <= target) >= {prob:g}", decided, "decision",
                   level),
    ]  # fmt: skip
    if source.size_law:
        blocks += [
            rows(context, "base size (B) for target, any k", n_any, level, "median"),
            rows(context, f"base size (B) for target, <= {k_max:g} experts", n_pool, level,
                 "median"),
        ]  # fmt: skip
    size_any, size_pool = (_quantile_inverted(n, prob) for n in (n_any, n_pool))
    decision = {}
    for j, label in enumerate(curves.labels):
        k = float(decided[j])
        if k <= k_max:
            status = "reachable"
        elif np.isfinite(k):
            status = "beyond the pool"
        else:
            status = "unreachable at this size"
        decision[label] = {
            "status": status,
            "k": k,
            "prob": prob,
            "k_max": k_max,
            "n_b_for_target_any_k": float(size_any[j]),
            "n_b_for_target_k_max": float(size_pool[j]),
        }
    words = [_target_words(f"{label} @ {n_b:g}B", target, d) for label, d in decision.items()]
    return _answer(post, "experts for target", blocks, decision, summary=words)


def _target_words(where: str, target: float, d: dict) -> str:
    prob = d["prob"]
    if d["status"] == "reachable":
        return f"{where}: {d['k']:.0f} experts reach loss {target:g} with P >= {prob:g}"
    reason = (
        f"needs {d['k']:.0f} experts (more than {d['k_max']:g})"
        if d["status"] == "beyond the pool"
        else "unreachable at this size"
    )
    return (
        f"{where}: {reason} with P >= {prob:g}; reachable from a base of "
        f"{_size_words(d['n_b_for_target_k_max'])} with <= {d['k_max']:g} experts "
        f"({_size_words(d['n_b_for_target_any_k'])} with any number)"
    )


def _size_words(n_b: float) -> str:
    return "no size (never)" if not math.isfinite(n_b) else f"{n_b:.3g}B"


def stopping(
    post: Posterior,
    *,
    n_b: float | None = None,
    epsilon: float,
    family: str | Sequence[str] | None = None,
    cost_per_expert: float | None = None,
    fractions: Sequence[float] = (0.8, 0.9),
    k_max: float | None = None,
    level: float = 0.9,
) -> Answer:
    """When to stop adding experts at base size ``n_b``.

    One more expert is worth it while its expected loss drop is at least ``epsilon`` (nats), or
    ``epsilon`` per unit of ``cost_per_expert`` when that is given. Rows: the posterior of the
    first k whose gain is below the threshold; the Bayes stopping point (first k whose posterior
    expected gain is below it: the decision); and k80/k90 (experts reaching that fraction of the
    k=1 -> k_max drop, k_max the table's largest k unless given).
    """
    n_b = post.planning_size(n_b)
    level = check_level(level)
    threshold = _threshold(epsilon, cost_per_expert)
    k_max = float(k_max if k_max is not None else post.k_anchor)
    curves = post.curves(n_b, family)
    context = {"family": curves.labels, "n_b": curves.n_b, "threshold": threshold}
    per_draw = first_k_gain_below(threshold, curves)
    stop = expected_gain_stop(threshold, curves, per_draw)
    blocks = [
        rows(context, "first k with gain < threshold", per_draw, level, "median"),
        value_rows(context, "stop at k (expected gain < threshold)", stop, "decision", level),
    ]
    for fraction in fractions:
        name = f"k{round(fraction * 100):d} (to k={k_max:g})"
        at_fraction = experts_for_fraction(fraction, curves, k_max)
        blocks.append(rows(context, name, at_fraction, level, "median"))
    p_rising = np.mean(curves.amplitude < 0, axis=0)
    blocks.append(
        value_rows(context, "P(adding experts makes it worse)", p_rising, "probability", level)
    )
    decision = {
        label: {"stop_at_k": float(stop[j]), "adding_experts": _direction(p_rising[j])}
        for j, label in enumerate(curves.labels)
    }
    words = [
        f"{label} @ {n_b:g}B: adding experts makes it worse (P >= 0.9): stop at k = 1"
        if d["adding_experts"] == "makes it worse"
        else f"{label} @ {n_b:g}B: stop at k = {d['stop_at_k']:.0f} (the next expert's "
        f"expected gain is below {threshold:.4g})"
        for label, d in decision.items()
    ]
    return _answer(post, "stopping rule", blocks, decision, summary=words)


def _direction(p_rising: float, prob: float = 0.9) -> str:
    """What adding experts does to the expected loss, where the posterior is sure enough."""
    if p_rising >= prob:
        return "makes it worse"
    return "helps" if p_rising <= 1.0 - prob else "undecided"


def expected_gain_stop(
    threshold: float, curves: CurveDraws, per_draw: np.ndarray | None = None
) -> np.ndarray:
    """Per family, the first whole k whose posterior expected marginal gain is below
    ``threshold`` (the Bayes stopping rule under a linear utility). It lies between the smallest
    and largest per-draw answers (``per_draw``, first_k_gain_below), which bracket the search."""
    per_draw = first_k_gain_below(threshold, curves) if per_draw is None else per_draw
    lo = np.maximum(per_draw.min(axis=0) - 1.0, 0.0)  # the mean gain is not below yet
    hi = np.where(np.isfinite(per_draw.max(axis=0)), per_draw.max(axis=0), K_CAP)

    def below(k):  # k: (n_fam,), one per family for every draw
        return np.mean(curves.marginal_gain(k[None, :]), axis=0) < threshold

    return smallest_whole_k(below, lo, hi)


def sequential_stop(
    post: Posterior,
    points: pd.DataFrame | Points,
    *,
    n_b: float | None = None,
    epsilon: float,
    prior: str = NEW_FAMILY,
    cost_per_expert: float | None = None,
    level: float = 0.9,
    seed: int = 0,
) -> Answer:
    """Stop or continue, given the losses measured so far on a new pool at base size ``n_b``.

    The curve's draws are updated with the points (``prior``: 'new' for the population, or a
    family of the fit), then: continue while the posterior expected gain of the next expert is at
    least the threshold (``epsilon``, per unit of ``cost_per_expert`` if given).
    """
    n_b = post.planning_size(n_b)
    level = check_level(level)
    points = points if isinstance(points, Points) else Points.from_frame(points)
    threshold = _threshold(epsilon, cost_per_expert)
    updated = condition(post, points, n_b=n_b, prior=prior, seed=seed)
    curves = updated.curves
    k_now = float(points.k.max())
    gain = curves.marginal_gain(k_now)
    context = {"family": prior, "n_b": curves.n_b, "k_measured": k_now, "threshold": threshold}
    blocks = [
        rows(context, f"gain of expert {k_now + 1:g}", gain, level),
        value_rows(context, "P(gain < threshold)", np.mean(gain < threshold, axis=0),
                   "probability", level),
        rows(context, f"loss at k={k_now + 1:g}", curves.mean(k_now + 1.0), level),
        rows(context, "first k with gain < threshold", first_k_gain_below(threshold, curves),
             level, "median"),
    ]  # fmt: skip
    expected = float(gain.mean())
    action = "continue" if expected >= threshold else "stop"
    decision = {
        "action": action,
        "k_measured": k_now,
        "expected_gain": expected,
        "threshold": threshold,
    } | updated.summary()
    words = [
        f"{action.upper()}: the expected gain of expert {k_now + 1:g} is {expected:.4g} nats "
        f"({'>=' if action == 'continue' else '<'} threshold {threshold:.4g}); update "
        f"{describe_update(decision)}"
    ]
    note = updated.note()
    return _answer(post, "sequential stopping", blocks, decision, [note] if note else [], words)


@dataclass(frozen=True)
class CostModel:
    """What an option costs: the base (per size, billions -> cost), each expert's training (one
    number, or per size) and merging (per expert)."""

    base: Mapping[float, float]
    per_expert: float | Mapping[float, float]
    per_merge: float = 0.0

    def __post_init__(self) -> None:
        per_expert = self.per_expert
        given = {
            "base cost": list(self.base.values()),
            "per-expert cost": list(per_expert.values())
            if isinstance(per_expert, Mapping)
            else [per_expert],
            "merge cost": [self.per_merge],
        }
        for what, values in given.items():
            bad = [float(v) for v in values if not (math.isfinite(v) and v >= 0)]
            if bad:
                raise MergelawError(f"{what} {bad[0]:g} is not a number >= 0")
        sizes = [*self.base, *(per_expert if isinstance(per_expert, Mapping) else [])]
        bad = [float(n) for n in sizes if not (math.isfinite(n) and n > 0)]
        if bad:
            raise MergelawError(f"base size {bad[0]:g} is not a positive number of billions")

    def total(self, n_b: float, k: float) -> float:
        per_expert = (
            self.per_expert[n_b] if isinstance(self.per_expert, Mapping) else self.per_expert
        )
        return float(self.base[n_b] + k * (per_expert + self.per_merge))


def budget(
    post: Posterior,
    costs: CostModel,
    limit: float,
    *,
    family: str | Sequence[str] | None = None,
    k_max: float | None = None,
    level: float = 0.9,
) -> Answer:
    """The (N, k) with the lowest expected loss among those costing at most ``limit``.

    Options: every base size in ``costs.base`` and k = 1..k_max (default: the pool size). The
    loss of an option is the expected loss averaged over the named families (all by default).
    Each row has the posterior of that loss and the probability that the option is the best.
    """
    level = check_level(level)
    k_max = int(k_max if k_max is not None else post.pool_size)
    if isinstance(costs.per_expert, Mapping):
        missing = [n for n in costs.base if n not in costs.per_expert]
        if missing:
            raise MergelawError(f"no per-expert cost for base size {missing[0]:g}B")
    options = [
        (float(n), k, costs.total(n, k))
        for n in sorted(costs.base)
        for k in range(1, k_max + 1)
        if costs.total(n, k) <= limit
    ]
    if not options:
        cheapest = min(costs.total(n, 1) for n in costs.base)
        raise MergelawError(
            f"no (N, k) fits budget {limit:g}: the cheapest option costs {cheapest:g}"
        )
    source = post if family != NEW_FAMILY else post.new_family()
    names = None if family in (None, NEW_FAMILY) else family
    losses = {}
    for n in {n for n, _, _ in options}:
        curves = source.curves(n, names)
        ks = np.arange(1, k_max + 1, dtype=float)
        losses[n] = curves.mean(ks).mean(axis=1)  # (S, K): averaged over families
    draws = np.stack([losses[n][:, k - 1] for n, k, _ in options], axis=1)  # (S, O)
    best = np.bincount(np.argmin(draws, axis=1), minlength=len(options)) / draws.shape[0]
    context = {
        "n_b": [n for n, _, _ in options],
        "k": [k for _, k, _ in options],
        "cost": [c for _, _, c in options],
    }
    block = rows(context, "expected loss", draws, level) | {"p_best": best.tolist()}
    table = frame([block]).sort_values("estimate", kind="stable").reset_index(drop=True)
    top = table.iloc[0]
    decision = {
        "n_b": float(top["n_b"]),
        "k": int(top["k"]),
        "cost": float(top["cost"]),
        "expected_loss": float(top["estimate"]),
        "p_best": float(top["p_best"]),
        "families": "all" if family is None else family,
    }
    words = [
        f"best within {limit:g}: N = {decision['n_b']:g}B with k = {decision['k']} (cost "
        f"{decision['cost']:g}, expected loss {decision['expected_loss']:.4f}, P(best) "
        f"{decision['p_best']:.2f})"
    ]
    return _answer(post, "budget", table, decision, summary=words)


def forecast(
    post: Posterior,
    *,
    n_b: float | None = None,
    family: str | Sequence[str] | None = None,
    k: Sequence[float] | None = None,
    n_subsets: int | Sequence[int] = 1,
    level: float = 0.9,
    seed: int = 0,
    pool: str | None = None,
) -> Answer:
    """Posterior predictive curve at base size ``n_b`` (any size: a new one extrapolates the size
    laws) for fitted families or a new one ('new'). Rows per k: the expected loss (credible
    interval) and the observed loss of a merge, or the mean of ``n_subsets`` merges (predictive
    interval; one count, or one per k). ``pool``: the curve of merges that hold the evaluated
    domain's own expert ('with_own') or not ('without_own'), at a fitted size; None: the average
    over all k-subsets of the pool (the law)."""
    n_b = post.planning_size(n_b)
    level = check_level(level)
    curves = post.curves(n_b, family)
    curves = curves.in_stratum(pool)
    ks = _k_grid(k, post)
    if pool == "without_own":
        ks = [kk for kk in ks if kk < curves.pool_size]  # the whole pool holds the own expert
    blocks = forecast_rows(curves, ks, n_subsets, level, np.random.default_rng(seed))
    decision = {"n_b": curves.n_b, "k": list(ks), "pool": pool or "all subsets"}
    return _answer(post, "forecast", blocks, decision)


def forecast_from_points(
    post: Posterior,
    points: pd.DataFrame | Points,
    *,
    n_b: float | None = None,
    k: Sequence[float] | None = None,
    prior: str = NEW_FAMILY,
    n_subsets: int | Sequence[int] = 1,
    level: float = 0.9,
    seed: int = 0,
) -> Answer:
    """The few-point forecast: losses measured at a few k (the paper's k = 1, 2, 4) on a new
    setting at base size ``n_b`` update the fitted population (or a family, ``prior``); the
    curve is then forecast at ``k`` with intervals. The decision holds the paper's exact
    three-point curve (through the per-k means at 1, 2, 4) for reference, where one exists."""
    n_b = post.planning_size(n_b)
    level = check_level(level)
    points = points if isinstance(points, Points) else Points.from_frame(points)
    updated = condition(post, points, n_b=n_b, prior=prior, seed=seed)
    ks = _k_grid(k, post)
    rng = np.random.default_rng(seed + 1)
    blocks = forecast_rows(updated.curves, ks, n_subsets, level, rng)
    decision = updated.summary()
    means = points.per_k_means()
    if {1.0, 2.0, 4.0} <= set(means.index):
        three = law.three_point_solution(means[1.0], means[2.0], means[4.0])
        decision["three_point"] = {
            "floor": float(three.floor),
            "amplitude": float(three.amplitude),
            "b": float(three.b),
            "loss": [float(law.curve_loss(kk, *three)) for kk in ks],
        }
    note = updated.note()
    measured = ", ".join(f"{kk:g}" for kk in np.unique(points.k))
    words = [f"updated from the points at k = {measured}: {describe_update(decision)}"]
    return _answer(post, "few-point forecast", blocks, decision, [note] if note else [], words)


def forecast_rows(
    curves: CurveDraws,
    ks: Sequence[float],
    n_subsets: int | Sequence[int],
    level: float,
    rng: np.random.Generator,
) -> list[Block]:
    """Expected loss and observed loss (mean of ``n_subsets`` merges: one count, or one per k)
    at each k, per family.

    The observed loss of every family takes the same standard-normal noise draw per posterior
    draw and k (common random numbers): each row is the marginal predictive of one (family, k),
    which sharing leaves as it is, and drawing one number per draw and k instead of one per
    draw, family and k is most of the cost a forecast of many families saves (plan_bench)."""
    ks = np.asarray(ks, dtype=float)
    mean = curves.mean(ks, draws_last=True)  # (F, K, S): each row's draws contiguous
    counts = np.broadcast_to(np.asarray(n_subsets, dtype=float), ks.shape)
    if np.any(counts < 1):
        raise MergelawError(f"n_subsets {n_subsets} must be >= 1")
    observed = curves.noise_sd(ks, counts, draws_last=True)
    observed *= rng.standard_normal((curves.n_draws, 1, ks.size)).transpose(1, 2, 0)
    observed += mean
    context = {
        "family": np.repeat(curves.labels, ks.size),
        "n_b": curves.n_b,
        "k": np.tile(ks, len(mean)),
    }
    what = f"mean of {counts[0]:g}" if np.all(counts == counts[0]) else "mean of n_subsets"
    expected, observed = (  # both ours: sorted in place
        SortedDraws(draws.reshape(-1, curves.n_draws), overwrite=True, draws_last=True)
        for draws in (mean, observed)
    )
    return [
        rows(context, "expected loss", expected, level),
        rows(context, f"observed loss ({what})", observed, level),
    ]


# ---- helpers -----------------------------------------------------------------------------------


def _quantile_inverted(draws: SortedDraws, prob: float) -> np.ndarray:
    """Smallest value v with P(draw <= v) >= prob (order statistic; inf allowed)."""
    return draws.quantiles([prob], "inverted_cdf")[0]


def _threshold(epsilon: float, cost_per_expert: float | None) -> float:
    if not epsilon > 0:
        raise MergelawError(f"epsilon {epsilon} is not a positive loss drop (nats)")
    if cost_per_expert is not None and not cost_per_expert > 0:
        raise MergelawError(f"cost per expert {cost_per_expert} is not positive")
    return float(epsilon * (cost_per_expert if cost_per_expert is not None else 1.0))


def _k_grid(k: Sequence[float] | None, post: Posterior) -> list[float]:
    ks = list(k) if k is not None else list(range(1, int(post.k_anchor) + 1))
    bad = [float(kk) for kk in ks if not kk >= 1]
    if not ks or bad:
        raise MergelawError(f"k value {bad[0] if bad else 'list'} is not >= 1")
    return [float(kk) for kk in ks]


def _answer(
    post: Posterior,
    query: str,
    blocks: list[Block] | pd.DataFrame,
    decision: dict,
    notes: Sequence[str] = (),
    summary: Sequence[str] = (),
) -> Answer:
    table = blocks if isinstance(blocks, pd.DataFrame) else frame(blocks)
    return Answer(
        query, table, post.flag, dict(post.provenance), decision, tuple(notes), tuple(summary)
    )
