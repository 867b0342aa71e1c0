"""Prior and posterior predictive draws of the losses, and per-curve posterior predictive checks.

The checks ask, curve by curve, whether the measured losses look like draws from the fitted model:
two discrepancies, each a posterior predictive p-value computed exactly per draw (a chi-square
tail, no Monte Carlo noise) and averaged over draws (Gelman, Meng & Stern 1996):
- rows: sum over the curve's rows of squared standardised residuals (the noise model's scale);
- means: the same over the per-k means of the rows (scale / sqrt(rows at k)): the law's shape
  in k, which many noisy rows can hide from the first check.
Posterior predictive p-values are conservative (they pile up near 0.5 when the model is right), so
a p-value below ``0.05 / (2 x curves)`` means a curve the law or the noise model does not describe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mergelaw import law
from mergelaw.bayes.data import ModelData

DEFAULT_CHECK_DRAWS = 1000
FAMILYWISE_ALPHA = 0.05


@dataclass(frozen=True)
class Observations:
    """The observation-level structure of a fitted table (what ``idata.constant_data`` keeps)."""

    family: np.ndarray
    curve: np.ndarray
    x: np.ndarray
    log_n: np.ndarray
    k: np.ndarray
    pool_size: np.ndarray
    se: np.ndarray | None
    y: np.ndarray
    in_domain: np.ndarray | None = None

    @classmethod
    def from_data(cls, data: ModelData) -> Observations:
        return cls(
            data.family,
            data.curve,
            data.x,
            data.log_n,
            data.k,
            data.pool_size,
            data.se,
            data.y,
            data.in_domain,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The structure as named arrays (y excluded: it is the observed data)."""
        out = {
            "family_index": self.family,
            "curve_index": self.curve,
            "x": self.x,
            "log_n": self.log_n,
            "k": self.k,
            "pool_size": self.pool_size,
        }
        if self.in_domain is not None:
            out["in_domain"] = self.in_domain
        if self.se is not None:
            out["se"] = self.se
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], y: np.ndarray) -> Observations:
        return cls(
            family=np.asarray(arrays["family_index"], dtype=int),
            curve=np.asarray(arrays["curve_index"], dtype=int),
            x=np.asarray(arrays["x"], dtype=float),
            log_n=np.asarray(arrays["log_n"], dtype=float),
            k=np.asarray(arrays["k"], dtype=float),
            pool_size=np.asarray(arrays["pool_size"], dtype=float),
            se=np.asarray(arrays["se"], dtype=float) if "se" in arrays else None,
            y=np.asarray(y, dtype=float),
            in_domain=np.asarray(arrays["in_domain"], dtype=float)
            if "in_domain" in arrays
            else None,
        )


def mean_and_scale(
    draws: dict[str, np.ndarray],
    obs: Observations,
    spread: str,
    n_families: int,
    anchors: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """E[L] and the noise sd of every observation under each draw: two (S, n_obs) arrays.

    ``draws`` maps the law's parameters (L_star, B, beta, A0, gamma; b, alpha, gap, decay where
    the spec has them) to (S, F) or (S, C) arrays (per family or per curve), sigma and a
    per-family nugget to (S, F), sigma_slope and a global nugget to (S,). A table of one size
    has as many curves as families, in the same order, so either indexing is right there.
    ``anchors``: (drop_from_k, k_anchor), where a curve bending off its family's b (b_dev)
    keeps its level and drop."""

    def per_obs(name: str, default: float):
        return _per_obs(draws.get(name), obs, n_families, default)

    floor = law.floor_loss(np.exp(obs.log_n), per_obs("L_star", 0.0), per_obs("B", 0.0),
                           per_obs("beta", 0.0))  # fmt: skip
    amplitude = law.tail_amplitude(np.exp(obs.log_n), per_obs("A0", 0.0), per_obs("gamma", 0.0))
    alpha = per_obs("alpha", 1.0)
    deviations = {  # per curve: off its family's size laws (where the fit has them)
        name: draws[name][:, obs.curve]
        for name in ("b_dev", "floor_dev", "tail_dev")
        if name in draws
    }
    floor, amplitude, b = law.curve_off_size_laws(
        floor, amplitude, per_obs("b", 0.0), alpha, anchors=anchors, **deviations
    )
    mean = law.curve_loss(obs.k, floor, amplitude, b, alpha)
    if "gap" in draws and obs.in_domain is not None:
        mean = mean + law.stratum_offset(
            obs.k, obs.in_domain, obs.pool_size, per_obs("gap", 0.0), per_obs("decay", 1.0)
        )
    nugget = draws["nugget"]
    nugget = nugget[:, obs.family] if nugget.ndim == 2 else nugget[:, None]
    if obs.se is not None:
        return mean, law.noise_scale(obs.se, 1.0, nugget)
    slope = draws.get("sigma_slope", np.zeros(len(nugget)))[:, None]
    sigma = law.sigma_at_size(draws["sigma"][:, obs.family], slope, np.exp(obs.x))
    factor = law.spread_factor(spread, obs.k, obs.pool_size)
    curve_factor = np.exp(draws["noise_dev"][:, obs.curve]) if "noise_dev" in draws else 1.0
    return mean, law.noise_scale(sigma, factor, nugget, curve_factor)


def _per_obs(values: np.ndarray | None, obs: Observations, n_families: int, default: float):
    """A parameter given per family, or per curve, for every row (its default where absent)."""
    if values is None:
        return default
    if values.ndim == 1:
        return values[:, None]
    return values[:, obs.family] if values.shape[1] == n_families else values[:, obs.curve]


def replicate(mean: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One replicated table per draw: mean + scale x standard normal."""
    return mean + scale * rng.standard_normal(mean.shape)


def curve_checks(
    mean: np.ndarray, scale: np.ndarray, obs: Observations, curve_labels: list[str]
) -> pd.DataFrame:
    """Per curve: rows, 90% predictive coverage of its rows, and the two predictive p-values."""
    z2 = ((obs.y - mean) / scale) ** 2  # (S, n)
    inside = np.mean(np.abs(obs.y - mean) <= stats.norm.ppf(0.95) * scale, axis=0)
    frame = pd.DataFrame({"curve": obs.curve, "k": obs.k, "inside": inside})
    rows = []
    for c, label in enumerate(curve_labels):
        members = np.flatnonzero(obs.curve == c)
        if members.size == 0:
            continue
        t_rows = z2[:, members].sum(axis=1)
        p_rows = float(np.mean(stats.chi2.sf(t_rows, members.size)))
        t_means, n_k = _means_discrepancy(mean, scale, obs, members)
        p_means = float(np.mean(stats.chi2.sf(t_means, n_k)))
        rows.append(
            {
                "curve": label,
                "rows": int(members.size),
                "coverage_90": float(frame["inside"].to_numpy()[members].mean()),
                "p_rows": p_rows,
                "p_means": p_means,
            }
        )
    checks = pd.DataFrame(rows)
    threshold = misfit_threshold(len(checks))
    checks["misfit"] = (checks["p_rows"] < threshold) | (checks["p_means"] < threshold)
    checks.attrs["threshold"] = threshold
    return checks


def misfit_threshold(n_curves: int) -> float:
    """The p-value below which a curve fails: FAMILYWISE_ALPHA over both p-values of every curve
    (Bonferroni), so a well-fitted table of any size fails with probability about 0.05."""
    return FAMILYWISE_ALPHA / (2 * max(n_curves, 1))


def _means_discrepancy(mean, scale, obs: Observations, members: np.ndarray):
    """Sum over k of squared standardised per-k means (rows at one k share their mean)."""
    ks, group = np.unique(obs.k[members], return_inverse=True)
    counts = np.bincount(group).astype(float)
    resid = obs.y[members] - mean[:, members]  # (S, m)
    var = scale[:, members] ** 2
    sum_resid = np.stack([resid[:, group == g].sum(axis=1) for g in range(len(ks))], axis=1)
    sum_var = np.stack([var[:, group == g].sum(axis=1) for g in range(len(ks))], axis=1)
    # mean residual at k over its rows: variance sum(var) / n^2
    t = (sum_resid / counts) ** 2 / (sum_var / counts**2)
    return t.sum(axis=1), len(ks)


def thin_index(n_draws: int, keep: int) -> np.ndarray:
    """Evenly spaced draw indices, at most ``keep`` of them."""
    return np.unique(np.linspace(0, n_draws - 1, min(keep, n_draws)).round().astype(int))
