"""Per-k means of one curve, corrected for which experts its measured subsets hold.

The law describes the mean loss over all C(M, k) subsets of a pool. A handful of measured
subsets estimates it with two kinds of error: which experts they happen to hold (a strong
expert in more of them than its share k/M tilts the mean), and what is left once each expert's
own effect is accounted for. Merging averages the experts' task vectors, so to first order an
expert shifts a merged model's loss by its effect over k (over k^d: TIES's sign election thins
an expert's weight less than an equal merge's 1/k):

    loss(S) = mu_k + k^-d * sum_{e in S} a_e + eps_S

with one effect a_e per expert, shared across k, and eps_S the part no expert explains. This module
fits that by least squares within k and returns mu_k (the sample's mean minus the tilt its
composition carries) with a standard error that counts the residual's sampling (finite-population
corrected: subsets are drawn without replacement) and the effects' estimation error. The effects'
decay d (1 for an equal merge; 0-0.7 on the TIES curves of the lab and SmolLM2) and the power of
the residual's variance in k (var ~ k^-p, p in [0, 4]) are fitted to the curve's own rows by
restricted likelihood: on the lab curves Average's residual sd falls 2.7x from k = 2 to 7 and p is
3-4 (TIES's 0-3.5); one variance pooled over k put the se of a mean at k = 7 at 3-4x its error
(benchmarks/transfer.py, k = 7..9 from k = 2, 4, 6). With 5 of the 9 subsets at k = 8, the
corrected mean's error against all 9 is 0.00024 nats (Average, DARE, TA; the plain mean of the 5,
0.007) and its se 0.0003 (benchmarks/results/per_k_means_holdout.txt); with 5 of the 9 single
experts, 0.013 and 0.016 (p capped at 2: se 0.0009 at k = 8, 0.006 at k = 1). The finite-pool shape
((M - k) / (k (M - 1)))^q was tried in the power's place: it weighed k = 2 less and the k = 1, 2, 4
forecasts' error rose by a third. A balanced design (each expert in exactly k of M subsets,
``samplers.balanced``) carries no tilt: its mean is unchanged, and its standard error is the
residual's alone, which is much smaller than the plain standard error where experts differ (the
plain one counts the experts' differences as if a fresh draw of subsets could change them; in a
balanced design it cannot).
Too few rows to estimate the effects (no residual degrees of freedom): the plain per-k means
with finite-population standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mergelaw.curves import subset_members
from mergelaw.errors import MergelawError

MEANS_COLUMNS: tuple[str, ...] = ("k", "mean", "se", "count")

#: The powers p of the residual's variance in k (var ~ k^-p) that are compared: constant, the
#: 1/k² of a mean of k independent parts, up to the 1/k⁴ of what the effects leave of a loss
#: second order in the averaged task vectors (each expert's own square thins like 1/k², not 1/k).
#: On the lab curves REML picks 3.1-4 for Average, DARE and TA (median 3.9) and 0-3.5 for TIES;
#: capped at 2, the se of a corrected mean at k = 8 (5 of its 9 subsets measured) was 1.8x its
#: error against all 9, and at k = 1 half of it (benchmarks/results/per_k_means_holdout.txt).
RESIDUAL_POWERS = np.linspace(0.0, 4.0, 33)

#: The decays d of an expert's effect on a merge of k (a_e / k^d) that are compared: an equal
#: merge thins each expert's weight like 1/k (d = 1: Average, DARE and TA pick 1.0 on the lab
#: curves), and TIES's sign election keeps much of an expert's weight (the spec's own-expert
#: decay is ~0.3). Held at 1/k, TIES's corrected means missed the mean over all subsets by 0.063
#: nats at k = 1 (5 of the 9 single experts measured) and 0.008 at k = 8; with its decay fitted,
#: by 0.005 and 0.003, inside their se (benchmarks/results/per_k_means_holdout.txt).
EFFECT_DECAYS = np.linspace(0.0, 1.5, 16)
#: How much more restricted log-likelihood another decay needs over d = 1 (half the chi-square's
#: 95% point on one degree of freedom: a likelihood-ratio test).
DECAY_EVIDENCE = 1.92


def per_k_means(
    rows: pd.DataFrame,
    source: str = "points",
    *,
    decays: np.ndarray = EFFECT_DECAYS,
    powers: np.ndarray = RESIDUAL_POWERS,
) -> pd.DataFrame:
    """Columns k, mean, se, count for one curve's subset rows (columns k, loss, subset,
    pool_size), the means corrected for the experts the measured subsets hold; ``decays`` and
    ``powers`` are the effect decays and residual variance powers compared."""
    missing = {"k", "loss", "subset", "pool_size"} - set(rows.columns)
    if missing:
        raise MergelawError(
            f"{source}: expected columns k, loss, subset and pool_size; missing "
            f"{', '.join(sorted(missing))}"
        )
    k = rows["k"].to_numpy(float)
    y = rows["loss"].to_numpy(float)
    pool = int(rows["pool_size"].max())
    members = [subset_members(str(s)) for s in rows["subset"]]
    experts = sorted({e for m in members for e in m})
    held = np.zeros((len(rows), len(experts)))
    column = {e: i for i, e in enumerate(experts)}
    for i, m in enumerate(members):
        held[i, [column[e] for e in m]] = 1.0
    levels, level = np.unique(k, return_inverse=True)
    count = np.bincount(level).astype(float)
    mean_y = np.bincount(level, weights=y) / count
    share = np.stack([np.bincount(level, weights=held[:, j]) / count for j in range(len(experts))],
                     axis=1)  # fmt: skip
    indicator = (level[:, None] == np.arange(levels.size)).astype(float)

    def design(decay: float) -> np.ndarray:  # level means, then within-k centred effects
        return np.hstack([indicator, (held - share[level]) / k[:, None] ** decay])

    x = design(1.0)
    dof = len(y) - np.linalg.matrix_rank(x)
    possible = np.array([math.comb(pool, int(kk)) for kk in levels], dtype=float)
    if dof <= 0:  # no residual to learn from: the plain means
        fpc = np.clip((possible - count) / np.maximum(possible - 1.0, 1.0), 0.0, 1.0)
        variance = np.array([np.var(y[level == i], ddof=1) if c > 1 else 0.0
                             for i, c in enumerate(count)])  # fmt: skip
        return _frame(levels, mean_y, np.sqrt(variance / count * fpc), count)
    decay, power = effect_shape(levels, level, y, design, decays, powers)
    x = design(decay)
    weight = levels**-power  # residual variance / sigma2
    root = np.sqrt(weight[level])
    solve = np.linalg.pinv(x / root[:, None])  # weighted least squares: y / root -> coefficients
    coefficients = solve @ (y / root)
    residual = y / root - (x / root[:, None]) @ coefficients
    sigma2 = float(residual @ residual) / dof
    tilt = (share - levels[:, None] / pool) / levels[:, None] ** decay  # excess over its share
    corrected = np.hstack([np.eye(levels.size), -tilt])  # coefficients -> corrected means
    # the error against the mean over all C(M, k) subsets: the estimate's variance less the
    # part the measured rows share with that mean (rows drawn without replacement)
    spread = np.einsum("ij,jn,in->i", corrected, solve @ solve.T, corrected)
    variance = sigma2 * np.maximum(spread - weight / possible, 0.0)
    return _frame(levels, mean_y - tilt @ coefficients[levels.size :], np.sqrt(variance), count)


def effect_shape(
    levels, level, y, design, decays=EFFECT_DECAYS, powers=RESIDUAL_POWERS
) -> tuple[float, float]:
    """The decay d of an expert's effect (a_e / k^d) and the power p of the residual's variance
    (k^-p) by restricted likelihood (REML: it counts what the level means and the effects take,
    and the effects are pinned mostly by k = 1, whose design is k times larger; a per-level mean
    square read a true p of 2 as 0.75). An equal merge's d = 1 stands unless another decay beats
    it clearly (DECAY_EVIDENCE): a d picked freely follows the noise, and the se does not count
    that (tests/test_expert_effects.py's 90% intervals on pools of d = 1 cover 0.847 with d
    picked freely, 0.864 so, 0.869 with d held at 1). ``design(d)`` is the model's design matrix
    at decay d (where ``decays`` lacks 1, its decay nearest 1 stands in for it)."""
    shapes = [(restricted_fit(levels, level, y, design(d), powers), d) for d in decays]
    (best, power), decay = max(shapes, key=lambda shape: shape[0][0])
    (at_one, power_at_one), one = min(shapes, key=lambda shape: abs(shape[1] - 1.0))
    if np.isinf(at_one) or best - at_one < DECAY_EVIDENCE:  # inf: exact at d = 1
        return float(one), power_at_one
    return float(decay), power


def restricted_fit(levels, level, y, x, powers=RESIDUAL_POWERS) -> tuple[float, float]:
    """The largest restricted log-likelihood over ``powers`` of the design ``x``, and its
    power."""
    best, best_power = -np.inf, 0.0
    for power in powers:
        weight = levels[level] ** -power
        root = np.sqrt(weight)
        xw, yw = x / root[:, None], y / root
        u, singular, _ = np.linalg.svd(xw, full_matrices=False)  # the fit, its rank and det
        kept = singular > singular[0] * max(xw.shape) * np.finfo(float).eps
        residual = yw - u[:, kept] @ (u[:, kept].T @ yw)
        rss = float(residual @ residual)
        if rss <= 1e-300:  # an exact fit: nothing to tell shapes apart
            return np.inf, 0.0
        restricted = -0.5 * ((len(y) - kept.sum()) * np.log(rss) + np.sum(np.log(weight))
                             + 2.0 * np.sum(np.log(singular[kept])))  # fmt: skip
        if restricted > best:
            best, best_power = restricted, float(power)
    return best, best_power


def _frame(k, mean, se, count) -> pd.DataFrame:
    return pd.DataFrame({"k": k, "mean": mean, "se": se, "count": count.astype(int)})
