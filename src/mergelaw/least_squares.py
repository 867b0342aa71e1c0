"""The paper's weighted least-squares fit of the merging law: the baseline for every posterior.

The paper fits subset-averaged losses with weights proportional to k and bounds beta, gamma, b >= 0
(we also keep L_star, B, A0 and the per-curve floor and amplitude non-negative). The law is linear
in (L_star, B, A0) once (beta, gamma, b) are fixed, so a global search over a grid of the nonlinear
parameters, with the linear ones solved exactly at each grid point, finds the basin of the best
fit; bounded trust-region refinement (scipy's trf) from the best few grid points then polishes it.
This multi-start does not stop in the first local minimum the way a single start does.
Intervals come from a bootstrap over subsets: within each (size, k) cell the measured subsets are
resampled with replacement (deviations rescaled by sqrt(n/(n-1))) and the fit is repeated; the
interval is the bias-corrected percentile interval of the replicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import ndtr, ndtri

from mergelaw.curves import CURVE_COLUMNS, FAMILY_COLUMNS
from mergelaw.errors import MergelawError
from mergelaw.law import CURVE_PARAM_NAMES, LAW_PARAM_NAMES, curve_loss, mean_loss, size_in_billions

Weighting = Literal["k", "none"]
Scope = Literal["joint", "curve"]
IntervalMethod = Literal["bc", "percentile"]


@dataclass(frozen=True)
class _LawShape:
    """What the solver needs to know about one form of the law."""

    names: tuple[str, ...]
    linear: tuple[int, ...]  # positions of the linear parameters in ``names``
    nonlinear: tuple[int, ...]
    lower: np.ndarray
    upper: np.ndarray
    grid: np.ndarray  # (G, len(nonlinear)) values of the nonlinear parameters
    design: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # grid, n, k -> (G, P, L)
    predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # theta, n, k -> (P,)
    jacobian: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # -> (P, len(names))


_B_GRID = np.array(
    [0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 35, 60, 100], dtype=float
)
_BETA_GRID = np.concatenate([np.linspace(0.0, 2.0, 21), [3.0]])
_GAMMA_GRID = np.array([0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2], dtype=float)
_B_MAX = 1000.0
_EXPONENT_MAX = 4.0


def _joint_design(grid: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    beta, gamma, b = grid[:, 0:1], grid[:, 1:2], grid[:, 2:3]
    ones = np.ones((len(grid), len(n)))
    return np.stack([ones, n ** (-beta), n ** (-gamma) / (k + b)], axis=-1)


def _joint_predict(theta: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return mean_loss(n, k, *theta)


def _joint_jacobian(theta: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    _, B, beta, A0, gamma, b = theta
    log_n = np.log(n)
    floor_term = n ** (-beta)
    tail_term = n ** (-gamma) / (k + b)
    return np.stack(
        [
            np.ones_like(n),
            floor_term,
            -B * log_n * floor_term,
            tail_term,
            -A0 * log_n * tail_term,
            -A0 * tail_term / (k + b),
        ],
        axis=-1,
    )


def _curve_design(grid: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    b = grid[:, 0:1]
    return np.stack([np.ones((len(grid), len(k))), 1.0 / (k + b)], axis=-1)


def _curve_predict(theta: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return curve_loss(k, *theta)


def _curve_jacobian(theta: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    _, amplitude, b = theta
    inv = 1.0 / (k + b)
    return np.stack([np.ones_like(k), inv, -amplitude * inv**2], axis=-1)


JOINT = _LawShape(
    names=LAW_PARAM_NAMES,
    linear=(0, 1, 3),
    nonlinear=(2, 4, 5),
    lower=np.zeros(6),
    upper=np.array([np.inf, np.inf, _EXPONENT_MAX, np.inf, _EXPONENT_MAX, _B_MAX]),
    grid=np.array(np.meshgrid(_BETA_GRID, _GAMMA_GRID, _B_GRID, indexing="ij")).reshape(3, -1).T,
    design=_joint_design,
    predict=_joint_predict,
    jacobian=_joint_jacobian,
)
CURVE = _LawShape(
    names=CURVE_PARAM_NAMES,
    linear=(0, 1),
    nonlinear=(2,),
    lower=np.zeros(3),
    upper=np.array([np.inf, np.inf, _B_MAX]),
    grid=np.concatenate([[0.0], np.logspace(-2, np.log10(_B_MAX), 80)])[:, None],
    design=_curve_design,
    predict=_curve_predict,
    jacobian=_curve_jacobian,
)


@dataclass(frozen=True)
class LeastSquaresFit:
    """Best weighted least-squares fit of one curve or curve family."""

    params: dict[str, float]
    r2: float  # 1 - SS_res/SS_tot on the subset-averaged points, unweighted (as the paper reports)
    r2_weighted: float  # the same with the fit's weights
    weighted_sse: float
    n_points: int
    at_bound: tuple[str, ...]

    @property
    def theta(self) -> np.ndarray:
        return np.array(list(self.params.values()))


class _Solver:
    """Fits one law shape at fixed (n, k, weights) to any losses y: the grid's pseudo-inverse, which
    does not depend on y, is computed once and shared by all bootstrap replicates."""

    def __init__(self, shape: _LawShape, n: np.ndarray, k: np.ndarray, w: np.ndarray):
        self.shape, self.n, self.k = shape, n, k
        self.root_w = np.sqrt(w)
        self.design = shape.design(shape.grid, n, k) * self.root_w[None, :, None]
        self.pinv = np.linalg.pinv(self.design)
        self.lin_lo = shape.lower[list(shape.linear)]
        self.lin_hi = shape.upper[list(shape.linear)]

    def grid_starts(self, y: np.ndarray, n_starts: int) -> list[np.ndarray]:
        """Best grid points, with the linear parameters solved exactly (then clipped feasible)."""
        y_w = y * self.root_w
        coef = np.clip(np.einsum("gpk,k->gp", self.pinv, y_w), self.lin_lo, self.lin_hi)
        sse = np.sum((np.einsum("gkp,gp->gk", self.design, coef) - y_w) ** 2, axis=1)
        starts = []
        for g in np.argsort(sse)[:n_starts]:
            theta = np.empty(len(self.shape.names))
            theta[list(self.shape.linear)] = coef[g]
            theta[list(self.shape.nonlinear)] = self.shape.grid[g]
            starts.append(theta)
        return starts

    def solve(
        self, y: np.ndarray, n_starts: int, extra_starts: tuple[np.ndarray, ...] = ()
    ) -> np.ndarray:
        """Bounded refinement from the given starts and the best grid points; lowest cost wins."""
        shape, n, k, root_w = self.shape, self.n, self.k, self.root_w

        def residuals(theta):
            return root_w * (shape.predict(theta, n, k) - y)

        def jacobian(theta):
            return root_w[:, None] * shape.jacobian(theta, n, k)

        best, best_cost = None, np.inf
        for start in [*extra_starts, *self.grid_starts(y, n_starts)]:
            result = least_squares(
                residuals,
                np.clip(start, shape.lower, shape.upper),
                jac=jacobian,
                bounds=(shape.lower, shape.upper),
                method="trf",
                x_scale="jac",
                xtol=1e-10,
                ftol=1e-12,
                gtol=1e-12,
                max_nfev=200,
            )
            if result.cost < best_cost:
                best, best_cost = result.x, result.cost
        return _snap_to_bounds(best, shape)


BOUND_TOLERANCE = 1e-9
#: Below this many replicates the bias correction's z0 rests on too few draws to trust.
MIN_BOOT_BC = 50


def _snap_to_bounds(theta: np.ndarray, shape: _LawShape) -> np.ndarray:
    """Put values within BOUND_TOLERANCE of a bound exactly on it.

    trf stays strictly inside the box, so a parameter whose optimum is the bound comes back as
    1e-20 or so; snapping makes "on the bound" exact, which the bootstrap's tie counting relies on.
    """
    tol = BOUND_TOLERANCE * np.maximum(1.0, np.abs(theta))
    theta = np.where(theta - shape.lower <= tol, shape.lower, theta)
    return np.where(shape.upper - theta <= tol, shape.upper, theta)


def _weights(k: np.ndarray, weighting: Weighting) -> np.ndarray:
    if weighting == "k":
        return k.astype(float)
    if weighting == "none":
        return np.ones_like(k, dtype=float)
    raise MergelawError(f"unknown weighting {weighting!r} (expected 'k' or 'none')")


def _summarise(shape, theta, n, k, y, w) -> LeastSquaresFit:
    fitted = shape.predict(theta, n, k)
    resid = y - fitted
    r2 = 1.0 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2)
    y_w = np.sum(w * y) / np.sum(w)
    r2_weighted = 1.0 - np.sum(w * resid**2) / np.sum(w * (y - y_w) ** 2)
    at_bound = tuple(
        name
        for name, value, lo, hi in zip(shape.names, theta, shape.lower, shape.upper)
        if value in (lo, hi)
    )
    return LeastSquaresFit(
        params={name: float(v) for name, v in zip(shape.names, theta)},
        r2=float(r2),
        r2_weighted=float(r2_weighted),
        weighted_sse=float(np.sum(w * resid**2)),
        n_points=len(y),
        at_bound=at_bound,
    )


def _check_points(shape: _LawShape, n: np.ndarray, k: np.ndarray) -> None:
    if shape is JOINT and len(np.unique(n)) < 3:
        raise MergelawError(
            f"the joint law needs >= 3 base sizes to separate L_star, B and beta; got "
            f"{len(np.unique(n))} (fit per curve instead)"
        )
    if len(np.unique(k)) < 3:
        raise MergelawError(
            f"a curve needs losses at >= 3 distinct k to fit floor, amplitude and b; got k = "
            f"{sorted(set(k.tolist()))}"
        )


def _fit(
    shape: _LawShape, n, k, mean, weighting: Weighting, n_starts: int
) -> tuple[LeastSquaresFit, _Solver]:
    n, k, mean = (np.asarray(a, dtype=float) for a in (n, k, mean))
    _check_points(shape, n, k)
    w = _weights(k, weighting)
    solver = _Solver(shape, n, k, w)
    return _summarise(shape, solver.solve(mean, n_starts), n, k, mean, w), solver


def fit_curve(
    k: np.ndarray, mean: np.ndarray, *, weighting: Weighting = "k", n_starts: int = 4
) -> LeastSquaresFit:
    """Fit floor + A/(k+b) to one curve's subset-averaged losses."""
    return _fit(CURVE, np.ones_like(k, dtype=float), k, mean, weighting, n_starts)[0]


def fit_joint(
    n: np.ndarray,
    k: np.ndarray,
    mean: np.ndarray,
    *,
    weighting: Weighting = "k",
    n_starts: int = 4,
) -> LeastSquaresFit:
    """Fit the joint law over base sizes ``n`` (billions) to subset-averaged losses."""
    return _fit(JOINT, n, k, mean, weighting, n_starts)[0]


class _Cells:
    """The subset losses of one group, bucketed per (size, k) cell, for fast bootstrap means."""

    def __init__(self, rows: pd.DataFrame):
        cells = rows.groupby(["n_params", "k"], sort=True)["loss"]
        keys = list(cells.groups.keys())
        self.n = size_in_billions(np.array([key[0] for key in keys], dtype=float))
        self.k = np.array([key[1] for key in keys], dtype=float)
        self.losses = [group.to_numpy(dtype=float) for _, group in cells]
        self.mean = np.array([v.mean() for v in self.losses])

    def resampled_means(self, rng: np.random.Generator, inflate: bool = True) -> np.ndarray:
        """Cell means of a resample of subsets (with replacement) within each cell.

        With ``inflate``, resampled deviations from the cell mean are scaled by sqrt(n/(n-1)), so
        a cell mean's bootstrap variance is s^2/n rather than the naive bootstrap's (n-1)/n s^2/n,
        which matters with the handful of subsets per k that sweeps can afford.
        """
        means = np.empty(len(self.losses))
        for i, (values, centre) in enumerate(zip(self.losses, self.mean)):
            n = len(values)
            draw = values[rng.integers(0, n, n)].mean()
            scale = np.sqrt(n / (n - 1.0)) if inflate and n > 1 else 1.0
            means[i] = centre + scale * (draw - centre)
        return means


@dataclass(frozen=True)
class BootstrapResult:
    fit: LeastSquaresFit
    draws: np.ndarray  # (n_boot, n_params)
    shape: _LawShape

    @property
    def names(self) -> tuple[str, ...]:
        return self.shape.names

    def on_bound_share(self) -> np.ndarray:
        """Per parameter, the share of bootstrap fits that sat exactly on a bound."""
        on_bound = (self.draws == self.shape.lower) | (self.draws == self.shape.upper)
        return on_bound.mean(axis=0)

    def interval(
        self, level: float, method: IntervalMethod = "bc"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap interval per parameter: plain percentile, or bias-corrected percentile (BC).

        BC shifts the percentiles by the bootstrap's median bias z0 = Phi^-1(P*(theta* < theta_hat))
        (ties count half, which matters for parameters that sit on a bound). Efron (1987).
        """
        tail = (1.0 - level) / 2.0
        if method == "percentile":
            lo_q = np.full(self.draws.shape[1], tail)
            hi_q = np.full(self.draws.shape[1], 1.0 - tail)
        elif method == "bc":
            estimate = self.fit.theta
            below = np.mean(self.draws < estimate, axis=0)
            ties = np.mean(self.draws == estimate, axis=0)
            share = np.clip(
                below + 0.5 * ties, 1.0 / (2 * len(self.draws)), 1 - 1.0 / (2 * len(self.draws))
            )
            z0 = ndtri(share)
            lo_q = ndtr(2 * z0 + ndtri(tail))
            hi_q = ndtr(2 * z0 + ndtri(1.0 - tail))
        else:
            raise MergelawError(
                f"unknown interval method {method!r} (expected 'bc' or 'percentile')"
            )
        lower = np.array([np.quantile(d, q) for d, q in zip(self.draws.T, lo_q)])
        upper = np.array([np.quantile(d, q) for d, q in zip(self.draws.T, hi_q)])
        return lower, upper


def bootstrap_group(
    rows: pd.DataFrame,
    *,
    scope: Scope,
    n_boot: int,
    rng: np.random.Generator,
    weighting: Weighting = "k",
    inflate: bool = True,
) -> BootstrapResult:
    """Fit one group's subset rows and bootstrap the fit by resampling subsets within cells."""
    cells = _Cells(rows)
    shape = JOINT if scope == "joint" else CURVE
    fit, solver = _fit(shape, cells.n, cells.k, cells.mean, weighting, n_starts=4)
    draws = np.empty((n_boot, len(shape.names)))
    for i in range(n_boot):
        means = cells.resampled_means(rng, inflate=inflate)
        # Warm start from the full-data fit, plus the best grid points, so no replicate stalls.
        draws[i] = solver.solve(means, n_starts=2, extra_starts=(fit.theta,))
    return BootstrapResult(fit=fit, draws=draws, shape=shape)


def fit_least_squares(
    table: pd.DataFrame,
    *,
    scope: Scope = "joint",
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
    weighting: Weighting = "k",
    interval: IntervalMethod = "bc",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Fit every curve family (scope='joint') or curve (scope='curve') of a validated curves table.

    Returns one row per (group, parameter): estimate; bootstrap interval at ``level``
    (bias-corrected percentile by default: the estimates of A0 and b are biased upward when b
    sits near its bound, and plain percentile intervals inherit that bias); the share of
    bootstrap fits that sat on a bound; the group's R² (unweighted and weighted); point count.
    The same seed gives the same table.
    """
    if not 0.0 < level < 1.0:
        raise MergelawError(f"level {level} is not strictly between 0 and 1")
    if n_boot < 1:
        raise MergelawError(f"n_boot {n_boot} is below 1")
    if interval == "bc" and n_boot < MIN_BOOT_BC:
        raise MergelawError(
            f"bias-corrected intervals need >= {MIN_BOOT_BC} bootstrap fits, got n_boot {n_boot} "
            "(raise it, or ask for percentile intervals)"
        )
    group_columns = list(FAMILY_COLUMNS if scope == "joint" else CURVE_COLUMNS)
    rng = np.random.default_rng(seed)
    groups = list(table.groupby(group_columns, sort=True))
    records = []
    for i, (key, rows) in enumerate(groups):
        result = bootstrap_group(rows, scope=scope, n_boot=n_boot, rng=rng, weighting=weighting)
        lower, upper = result.interval(level, interval)
        on_bound = result.on_bound_share()
        for j, name in enumerate(result.names):
            records.append(
                {
                    **dict(zip(group_columns, key)),
                    "param": name,
                    "estimate": result.fit.params[name],
                    "lower": float(lower[j]),
                    "upper": float(upper[j]),
                    "level": level,
                    "interval": interval,
                    "boot_on_bound": float(on_bound[j]),
                    "r2": result.fit.r2,
                    "r2_weighted": result.fit.r2_weighted,
                    "n_points": result.fit.n_points,
                    "n_boot": n_boot,
                    "seed": seed,
                }
            )
        if progress is not None:
            progress(i + 1, len(groups))
    return pd.DataFrame.from_records(records)
