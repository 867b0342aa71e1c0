"""Conditioning a curve on a new pool's measured losses, by importance resampling over draws.

The prior is either a fitted family's posterior (each draw weighted by the likelihood of the new
points) or the population (a family the fit has not seen). For the population the mean at one
base size is linear in the anchors (level, drop) given the shapes, so those two are drawn from the
Gaussian the new points imply and weighted by their population density times the likelihood
integrated over them (Rao-Blackwellised importance sampling): a few precise points then still
leave thousands of effective draws, where plain likelihood weighting leaves a handful.
The noise model is the fit's: sigma(N)²·spread(k, M) + nugget² per merged model, or se² + nugget²
per per-k mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mergelaw import law
from mergelaw.bayes.posterior import NEW_FAMILY, CurveDraws, Posterior, fresh_noise_factor
from mergelaw.errors import MergelawError, shown

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class Points:
    """Measured losses of one new curve: per merged model (se None) or per-k means with se."""

    k: np.ndarray
    y: np.ndarray
    se: np.ndarray | None

    @classmethod
    def from_frame(cls, points: pd.DataFrame, source: str = "points") -> Points:
        """Columns k and loss (one row per merged model), or k, mean and se (per-k means)."""
        if "loss" in points.columns:
            value, se = "loss", None
        elif {"mean", "se"} <= set(points.columns):
            value, se = "mean", "se"
        else:
            raise MergelawError(
                f"{source}: expected columns k and loss (one row per merged model), or k, mean "
                f"and se (per-k means); got {', '.join(map(str, points.columns))}"
            )
        if "k" not in points.columns or len(points) == 0:
            raise MergelawError(f"{source}: expected a column k and at least one row")
        columns = {"k": "k", value: value} | ({se: se} if se else {})
        arrays = {}
        for column in columns:
            values = pd.to_numeric(points[column], errors="coerce").to_numpy(float)
            bad = ~np.isfinite(values) | ((values < 1) if column == "k" else (values < 0))
            if bad.any():
                row = int(np.argmax(bad))
                expected = "k >= 1" if column == "k" else "a finite non-negative number"
                raise MergelawError(
                    f"{source}: column '{column}' row {row}: {shown(points[column].iloc[row])} "
                    f"(expected {expected})"
                )
            arrays[column] = values
        return cls(arrays["k"], arrays[value], arrays[se] if se else None)

    @property
    def distinct_k(self) -> int:
        return int(np.unique(self.k).size)

    def per_k_means(self) -> pd.Series:
        return pd.Series(self.y).groupby(self.k).mean()


@dataclass(frozen=True)
class Conditioned:
    """The new curve's draws after the update, and how well importance sampling went."""

    curves: CurveDraws  # (n_draws, 1)
    ess: float
    n_proposals: int
    method: str

    def note(self) -> str | None:
        """A warning when the effective sample size is too small to trust the intervals."""
        if self.ess < 50:
            return (
                f"effective sample size {self.ess:.0f} of {self.n_proposals} proposals: the new "
                "points are far from what the prior expects; intervals are unreliable"
            )
        if self.ess < 400:
            return (
                f"effective sample size {self.ess:.0f} of {self.n_proposals}: intervals are rough"
            )
        return None


def condition(
    post: Posterior,
    points: Points | pd.DataFrame,
    *,
    n_b: float,
    prior: str = NEW_FAMILY,
    n_proposals: int = 20_000,
    seed: int = 0,
) -> Conditioned:
    """Draws of the curve at base size ``n_b`` given ``points`` measured on it; ``prior`` is a
    family of the fit or 'new' (the population). Returns as many draws as the posterior has."""
    points = points if isinstance(points, Points) else Points.from_frame(points)
    rng = np.random.default_rng(seed)
    if prior == NEW_FAMILY and post.spec.parameterisation == "anchored":
        return _condition_population(post, points, n_b, n_proposals, rng)
    if prior == NEW_FAMILY:
        per_draw = max(1, -(-n_proposals // post.n_draws))
        proposals = post.new_family(per_draw, seed=seed).curves(n_b)
        method = "population draws weighted by the likelihood"
    else:
        proposals = post.curves(n_b, [prior])
        method = f"draws of {proposals.labels[0]} weighted by the likelihood"
    mu = proposals.mean(points.k)[:, 0, :]
    log_w = _log_likelihood(points, mu, _variance(points, proposals)[:, 0, :])
    return _resample(proposals, log_w, post.n_draws, rng, method)


def _variance(points: Points, curves: CurveDraws) -> np.ndarray:
    """Per-point noise variance under the fit's noise model: (S, F, R)."""
    return _noise_variance(points, curves.sigma, curves.nugget, curves.spread, curves.pool_size)


def _noise_variance(points: Points, sigma, nugget, spread: str, pool_size: float) -> np.ndarray:
    nugget = np.asarray(nugget)[..., None]
    if points.se is not None:
        return law.noise_scale(points.se, 1.0, nugget) ** 2
    factor = law.spread_factor(spread, points.k, pool_size)
    return law.noise_scale(np.asarray(sigma)[..., None], factor, nugget) ** 2


def _log_likelihood(points: Points, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(LOG_2PI + np.log(var) + (points.y - mu) ** 2 / var, axis=-1)


def _condition_population(
    post: Posterior, points: Points, n_b: float, n_proposals: int, rng: np.random.Generator
) -> Conditioned:
    per_draw = max(1, -(-n_proposals // post.n_draws))
    values, source = post.population_draws(per_draw, rng)
    if not post.size_law and post.fitted_size(n_b) is None:
        post.require_size_law(f"a curve at {n_b:g}B (not a fitted size)")
    # The mean at k is linear in (level, drop): mean = level + drop * c(k) + offset, where c
    # and offset come from the law at level = 0, drop = 1 and at level = drop = 0.
    unit = post.law_of(values | {"level": np.zeros(source.size), "drop": np.ones(source.size)})
    zero = post.law_of(values | {"level": np.zeros(source.size), "drop": np.zeros(source.size)})

    def mean_at(p) -> np.ndarray:  # (P, len(points.k))
        floor, amplitude = p["L_star"], p["A0"]
        if post.size_law:
            floor = law.floor_loss(n_b, p["L_star"], p["B"], p["beta"])
            amplitude = law.tail_amplitude(n_b, p["A0"], p["gamma"])
        return law.curve_loss(points.k[None, :], floor[:, None], amplitude[:, None],
                              p["b"][:, None], p["alpha"][:, None])  # fmt: skip

    offset = mean_at(zero)
    c = mean_at(unit) - offset
    n = source.size
    sigma = law.sigma_at_size(
        values.get("sigma", np.zeros(n)), post.sigma_slope[source], n_b / post.n_ref
    )
    scale = None if post.noise_dev_scale is None else post.noise_dev_scale[source]
    curve_factor = fresh_noise_factor(scale, (n,), rng)
    sigma, nugget = sigma * curve_factor, post._new_family_nugget(source) * curve_factor
    var = _noise_variance(points, sigma, nugget, post.spec.spread, post.pool_size)

    linear = ["level", "drop"] if points.distinct_k >= 2 else ["level"]
    if len(linear) == 1:
        offset += values["drop"][:, None] * c
    theta, log_z = _gaussian_draw(points.y - offset, c, 1.0 / var, len(linear), rng)
    log_w = log_z - 0.5 * np.sum(np.log(var), axis=-1)
    for i, name in enumerate(linear):
        values[name] = theta[i]
        log_w = log_w + _log_population_density(post, name, theta[i], source)

    p = post.law_of(values)
    floor, amplitude = p["L_star"], p["A0"]
    if post.size_law:
        floor = law.floor_loss(n_b, p["L_star"], p["B"], p["beta"])
        amplitude = law.tail_amplitude(n_b, p["A0"], p["gamma"])
    proposals = CurveDraws(
        labels=[NEW_FAMILY],
        n_b=float(n_b),
        floor=np.asarray(floor, dtype=float)[:, None],
        amplitude=np.asarray(amplitude, dtype=float)[:, None],
        b=np.asarray(p["b"], dtype=float)[:, None],
        alpha=np.asarray(p["alpha"], dtype=float)[:, None],
        sigma=sigma[:, None],
        nugget=nugget[:, None],
        spread=post.spec.spread,
        pool_size=post.pool_size,
    )
    method = (
        f"population draws, ({', '.join(linear)}) drawn from the new points (Rao-Blackwellised)"
    )
    return _resample(proposals, log_w, post.n_draws, rng, method)


def _gaussian_draw(
    residual: np.ndarray, c: np.ndarray, weight: np.ndarray, n_linear: int, rng
) -> tuple[list[np.ndarray], np.ndarray]:
    """For residual = theta_1 + theta_2 c + noise (weights 1/var; theta_2 only if n_linear is 2),
    one draw of theta from the normalised likelihood, and its log integral over theta (without
    the -0.5 sum log var term). Closed-form 1x1 and 2x2 algebra over all proposals at once."""
    r = residual.shape[-1] - n_linear
    a = weight.sum(axis=-1)
    r1 = (weight * residual).sum(axis=-1)
    if n_linear == 1:
        mean = r1 / a
        rss = (weight * (residual - mean[:, None]) ** 2).sum(axis=-1)
        log_z = -0.5 * r * LOG_2PI - 0.5 * np.log(a) - 0.5 * rss
        return [mean + rng.standard_normal(a.shape) / np.sqrt(a)], log_z
    wc = weight * c
    b, cc, r2 = wc.sum(axis=-1), (wc * c).sum(axis=-1), (wc * residual).sum(axis=-1)
    det = a * cc - b**2
    usable = det > 1e-12 * a * cc
    det = np.where(usable, det, 1.0)
    mean1, mean2 = (cc * r1 - b * r2) / det, (a * r2 - b * r1) / det
    rss = (weight * (residual - mean1[:, None] - mean2[:, None] * c) ** 2).sum(axis=-1)
    log_z = -0.5 * r * LOG_2PI - 0.5 * np.log(det) - 0.5 * rss
    # Cholesky factor of the covariance [[cc, -b], [-b, a]] / det.
    l11 = np.sqrt(cc / det)
    l21 = -b / det / l11
    l22 = np.sqrt(np.maximum(a / det - l21**2, 0.0))
    z1, z2 = rng.standard_normal(a.shape), rng.standard_normal(a.shape)
    theta = [mean1 + l11 * z1, mean2 + l21 * z1 + l22 * z2]
    return theta, np.where(usable, log_z, -np.inf)


def _log_population_density(
    post: Posterior, name: str, value: np.ndarray, source: np.ndarray
) -> np.ndarray:
    """Log density of a new family's ``name`` under the population of each proposal's draw."""
    mean, scale = (a[source] for a in post.population[name])
    return post.spec.params[name].log_density(value, mean, scale)


def _resample(
    proposals: CurveDraws,
    log_w: np.ndarray,
    n_out: int,
    rng: np.random.Generator,
    method: str,
) -> Conditioned:
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.isfinite(log_w).any():
        raise MergelawError(
            "the new points have zero likelihood under every prior draw (check their units: "
            "losses in nats per token, k the number of experts merged)"
        )
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = float(1.0 / np.sum(w**2))
    positions = (rng.random() + np.arange(n_out)) / n_out  # systematic resampling
    index = np.minimum(np.searchsorted(np.cumsum(w), positions), w.size - 1)
    return Conditioned(proposals.take(index), ess, int(w.size), method)
