"""How far the law itself misses a curve's per-k means beyond their own error, per merge method.

A forecast from a few per-k means (``mergelaw.bayes.update``) weighs each by its se and by this
misfit: the part of a mean that floor + A/(k+b) cannot follow. It is measured on a fitted table:
each curve's per-k means (corrected for the experts their subsets hold, ``expert_effects``) are
fitted alone by the law (signed A, b > -1), and a method's misfit² is the mean over its curves of
the residual's mean square per degree of freedom less the means' own mean se². On the lab table:
Average, DARE and TA 0-0.0003 nats, TIES 0.003; one misfit of 0.001 for all made the Average
forecasts of benchmarks/transfer.py from k = 2, 4, 6 cover 1.00 and TIES's 0.74-0.84.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from mergelaw import expert_effects, law
from mergelaw.bayes.spec import LOG1P_B_CAP
from mergelaw.curves import CURVE_COLUMNS

#: The smallest misfit a method is given: a mean over every subset of a pool has se 0, and with
#: no misfit the law would have to pass through it exactly.
MISFIT_FLOOR = 0.0003

#: Starting values of log(1 + b) for each curve's fit: a bend at k ~ 1 to a near-linear rise.
_B_STARTS = (-0.5, 0.5, 2.0, 5.0)


def per_method(table: pd.DataFrame) -> dict[str, float]:
    """Each merge method's misfit (nats, at least MISFIT_FLOOR), from a curves table (subset
    rows) or a per-k means table (columns mean and se). Methods whose curves have too few per-k
    means for a residual (fewer than four) are left out."""
    excess: dict[str, list[float]] = {}
    keys = [c for c in CURVE_COLUMNS if c in table.columns]
    for key, rows in table.groupby(keys, sort=True, dropna=False):
        method = str(dict(zip(keys, key))["method"])
        means = expert_effects.per_k_means(rows) if "loss" in rows.columns else rows
        k, y = means["k"].to_numpy(float), means["mean"].to_numpy(float)
        if np.unique(k).size < 4:
            continue
        residual = curve_residual(k, y)
        mean_square = float(residual @ residual) / (k.size - 3)
        excess.setdefault(method, []).append(mean_square - float(np.mean(means["se"] ** 2)))
    return {m: max(MISFIT_FLOOR, float(np.sqrt(max(np.mean(v), 0.0)))) for m, v in excess.items()}


def curve_residual(k: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals of the law fitted to one curve's means (``signed_curve_fit``)."""
    floor, amplitude, b = signed_curve_fit(k, y)
    return law.curve_loss(k, floor, amplitude, b) - y


def signed_curve_fit(k: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(floor, A, b) of the law floor + A/(k+b) fitted to one curve's means by least squares, the
    best of a few starts: A signed (TIES's curves rise) and b > -1, which the paper's bounds
    (A, b >= 0; ``least_squares.fit_curve``) do not allow."""
    best = None
    for start in _B_STARTS:
        fit = least_squares(
            lambda p: law.curve_loss(k, p[0], p[1], np.expm1(p[2])) - y,
            [y[-1], y[0] - y[-1], start],
            bounds=([-np.inf, -np.inf, -5.0], [np.inf, np.inf, LOG1P_B_CAP]),
        )
        if best is None or fit.cost < best.cost:
            best = fit
    floor, amplitude, log1p_b = best.x
    return float(floor), float(amplitude), float(np.expm1(log1p_b))
