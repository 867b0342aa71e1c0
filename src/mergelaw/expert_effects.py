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
error. A balanced design (each expert in exactly k of M subsets, ``samplers.balanced``) carries
no tilt: its mean is unchanged, and its standard error is the residual's alone, which is much
smaller than the plain standard error where experts differ (the plain one counts the experts'
differences as if a fresh draw of subsets could change them; in a balanced design it cannot).
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
    effects, _, rank, _ = np.linalg.lstsq(design, y - mean_y[level], rcond=None)
    dof = len(y) - len(levels) - rank
    possible = np.array([math.comb(pool, int(kk)) for kk in levels], dtype=float)
    fpc = np.clip((possible - count) / np.maximum(possible - 1.0, 1.0), 0.0, 1.0)
    if dof <= 0:  # no residual to learn from: the plain means
        variance = np.array([np.var(y[level == i], ddof=1) if c > 1 else 0.0
                             for i, c in enumerate(count)])  # fmt: skip
        return _frame(levels, mean_y, np.sqrt(variance / count * fpc), count)
    residual = y - mean_y[level] - design @ effects
    sigma2 = float(residual @ residual) / dof
    tilt = (share - levels[:, None] / pool) / levels[:, None]  # excess holding over its share
    effects_cov = sigma2 * np.linalg.pinv(design.T @ design)
    variance = sigma2 / count * fpc + np.einsum("ie,ef,if->i", tilt, effects_cov, tilt)
    return _frame(levels, mean_y - tilt @ effects, np.sqrt(variance), count)


def _frame(k, mean, se, count) -> pd.DataFrame:
    return pd.DataFrame({"k": k, "mean": mean, "se": se, "count": count.astype(int)})
