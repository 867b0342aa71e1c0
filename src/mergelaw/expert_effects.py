"""Per-k means of one curve, corrected for which experts its measured subsets hold.

The law describes the mean loss over all C(M, k) subsets of a pool. A handful of measured
subsets estimates it with two kinds of error: which experts they happen to hold (a strong
expert in more of them than its share k/M tilts the mean), and what is left once each expert's
own effect is accounted for. Merging averages the experts' task vectors, so to first order an
expert shifts a merged model's loss by its effect over k:

    loss(S) = mu_k + (1/k) * sum_{e in S} a_e + eps_S

with one effect a_e per expert, shared across k, and eps_S the part no expert explains. This
module fits that by least squares within k and returns mu_k (the sample's mean minus the tilt
its composition carries) with a standard error that counts the residual's sampling
(finite-population corrected: subsets are drawn without replacement) and the effects' estimation
error. The residual's variance falls with k as a power fitted to the curve's own residuals
(var ~ k^-p, p in [0, 2], by restricted likelihood): on the lab curves Average's residual sd
falls 2.7x from k = 2 to 7 and the fitted p is 2 for most curves, TIES's included; one variance
pooled over k put the se of a mean at k = 7 at 3-4x its error (benchmarks/transfer.py, k = 7..9
from k = 2, 4, 6), and with 5 of the 9 subsets at k = 8 the corrected mean's error against all
9 fell from 0.0008 to 0.0003 nats (Average, DARE, TA; TIES 0.0094 to 0.0058). The
finite-pool shape ((M - k) / (k (M - 1)))^q was tried in the power's place: it weighed k = 2 less
and the k = 1, 2, 4 forecasts' error rose by a third. A balanced design (each expert in exactly
k of M subsets, ``samplers.balanced``) carries no tilt: its mean is unchanged, and its standard
error is the residual's alone, which is much smaller than the plain standard error where experts
differ (the plain one counts the experts' differences as if a fresh draw of subsets could change
them; in a balanced design it cannot).
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


def per_k_means(rows: pd.DataFrame, source: str = "points") -> pd.DataFrame:
    """Columns k, mean, se, count for one curve's subset rows (columns k, loss, subset,
    pool_size), the means corrected for the experts the measured subsets hold."""
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
    design = (held - share[level]) / k[:, None]  # within-k centred, effect over k
    x = np.hstack([(level[:, None] == np.arange(levels.size)).astype(float), design])
    dof = len(y) - np.linalg.matrix_rank(x)
    possible = np.array([math.comb(pool, int(kk)) for kk in levels], dtype=float)
    if dof <= 0:  # no residual to learn from: the plain means
        fpc = np.clip((possible - count) / np.maximum(possible - 1.0, 1.0), 0.0, 1.0)
        variance = np.array([np.var(y[level == i], ddof=1) if c > 1 else 0.0
                             for i, c in enumerate(count)])  # fmt: skip
        return _frame(levels, mean_y, np.sqrt(variance / count * fpc), count)
    weight = levels ** -residual_power(levels, level, y, x)  # residual variance / sigma2
    root = np.sqrt(weight[level])
    solve = np.linalg.pinv(x / root[:, None])  # weighted least squares: y / root -> coefficients
    coefficients = solve @ (y / root)
    residual = y / root - (x / root[:, None]) @ coefficients
    sigma2 = float(residual @ residual) / dof
    tilt = (share - levels[:, None] / pool) / levels[:, None]  # excess holding over its share
    corrected = np.hstack([np.eye(levels.size), -tilt])  # coefficients -> corrected means
    # the error against the mean over all C(M, k) subsets: the estimate's variance less the
    # part the measured rows share with that mean (rows drawn without replacement)
    spread = np.einsum("ij,jn,in->i", corrected, solve @ solve.T, corrected)
    variance = sigma2 * np.maximum(spread - weight / possible, 0.0)
    return _frame(levels, mean_y - tilt @ coefficients[levels.size :], np.sqrt(variance), count)


#: The powers p of the residual's variance in k (var ~ k^-p) that are compared: constant to the
#: 1/k² of a mean of k independent parts.
RESIDUAL_POWERS = np.linspace(0.0, 2.0, 17)


def residual_power(levels, level, y, x) -> float:
    """The p of var(residual at k) ~ k^-p that maximises the restricted likelihood of the
    within-k effects model (REML: it counts what the level means and the effects take, and the
    effects are pinned mostly by k = 1, whose design is k times larger; a per-level mean square
    read a true p of 2 as 0.75)."""
    best, best_power = -np.inf, 0.0
    for power in RESIDUAL_POWERS:
        weight = levels[level] ** -power
        root = np.sqrt(weight)
        xw, yw = x / root[:, None], y / root
        u, singular, _ = np.linalg.svd(xw, full_matrices=False)  # the fit, its rank and det
        kept = singular > singular[0] * max(xw.shape) * np.finfo(float).eps
        residual = yw - u[:, kept] @ (u[:, kept].T @ yw)
        rss = float(residual @ residual)
        if rss <= 1e-300:  # an exact fit: nothing to tell powers apart
            return 0.0
        restricted = -0.5 * ((len(y) - kept.sum()) * np.log(rss) + np.sum(np.log(weight))
                             + 2.0 * np.sum(np.log(singular[kept])))  # fmt: skip
        if restricted > best:
            best, best_power = restricted, float(power)
    return best_power


def _frame(k, mean, se, count) -> pd.DataFrame:
    return pd.DataFrame({"k": k, "mean": mean, "se": se, "count": count.astype(int)})
