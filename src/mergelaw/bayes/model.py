"""The hierarchical merging law as one generative program, written against a tiny backend interface.

``merging_law(spec, data, backend)`` declares every random variable through ``backend`` (normal,
half_normal, deterministic, likelihood) and does its arithmetic with ``backend.math`` (jax.numpy or
pytensor.tensor). The PyMC and NumPyro backends are thin adapters over that interface, so the two
cannot drift apart: the same spec gives the same model in both.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from mergelaw.bayes.data import ModelData
from mergelaw.bayes.spec import ModelSpec
from mergelaw.errors import MergelawError

#: Law parameters reported per family in the paper's units (N in billions), whatever the spec.
REPORTED = ("L_star", "B", "beta", "A0", "gamma", "b", "alpha")


class Backend(Protocol):
    math: Any

    def normal(self, name: str, loc, scale, dims: tuple[str, ...] = ()) -> Any: ...
    def half_normal(self, name: str, scale, dims: tuple[str, ...] = ()) -> Any: ...
    def gamma(self, name: str, shape: float, rate: float) -> Any: ...
    def deterministic(self, name: str, value, dims: tuple[str, ...] = ()) -> Any: ...
    def likelihood(self, name: str, loc, scale, observed) -> Any: ...


def param_scope(spec: ModelSpec, name: str) -> str:
    """'curve' for parameters the spec gives each (family, size) curve, else 'family'."""
    if name == "b" and spec.offset == "curve":
        return "curve"
    if name == "alpha" and spec.exponent_scope == "curve":
        return "curve"
    return "family"


def check_spec_fits_data(spec: ModelSpec) -> None:
    if spec.parameterisation == "anchored" and "curve" in {
        param_scope(spec, p) for p in spec.required_params()
    }:
        raise MergelawError(
            f"spec {spec.name!r}: the anchored parameterisation needs b and alpha per family "
            "(offset and exponent_scope = 'family')"
        )


def group_parameters(spec: ModelSpec, backend: Backend) -> dict[str, Any]:
    """Each group parameter: transform(raw), raw centred or not, partially pooled or not."""
    m = backend.math
    values = {}
    for name in spec.required_params():
        prior = spec.params[name]
        dims = (param_scope(spec, name),)
        if spec.pool:
            mean = backend.normal(f"{name}_mean", prior.prior_mean, prior.prior_sd)
            scale = backend.half_normal(f"{name}_scale", prior.pool_scale)
        else:
            mean, scale = prior.prior_mean, prior.prior_sd
        if prior.centred:
            raw = backend.normal(f"{name}_raw", mean, scale, dims=dims)
        else:
            raw = mean + scale * backend.normal(f"{name}_z", 0.0, 1.0, dims=dims)
        value = m.exp(raw) if prior.transform == "log" else raw
        values[name] = backend.deterministic(name, value, dims=dims)
    return values


def _pick(values, scope: str, data: ModelData):
    return values[data.family] if scope == "family" else values[data.curve]


def anchored_law(
    p: dict[str, Any], *, k_anchor: float, n_ref: float, x_lo: float, x_hi: float, math: Any = np
) -> dict[str, Any]:
    """L_star, B and A0 from anchored group parameters (level, drop, floor_drop, beta, gamma and
    b, alpha where the spec has them), given the table's anchors. Pure arithmetic on ``math``
    (numpy, jax.numpy or pytensor.tensor), so the planning queries reuse it on posterior draws."""
    m = math
    b = p.get("b", 0.0)
    alpha = p.get("alpha", 1.0)
    shape_k1 = (1.0 + b) ** (-alpha)
    shape_anchor = (k_anchor + b) ** (-alpha)
    amplitude_ref = p["drop"] / (shape_k1 - shape_anchor)
    floor_ref = p["level"] - amplitude_ref * shape_anchor
    gap = p["floor_drop"] / (m.exp(-p["beta"] * x_lo) - m.exp(-p["beta"] * x_hi))
    log_n_ref = float(np.log(n_ref))
    return {
        "L_star": floor_ref - gap,
        "B": gap * m.exp(p["beta"] * log_n_ref),
        "A0": amplitude_ref * m.exp(p["gamma"] * log_n_ref),
    }


def mean_curve(spec: ModelSpec, data: ModelData, p: dict[str, Any], backend: Backend):
    """E[L] per observation, and the paper's parameters per family (reported as deterministics)."""
    m = backend.math
    b = p.get("b", 0.0)
    alpha = p.get("alpha", 1.0)
    if spec.parameterisation == "anchored":
        family_law = anchored_law(
            p, k_anchor=data.k_anchor, n_ref=data.n_ref, x_lo=data.x_lo, x_hi=data.x_hi, math=m
        )
    else:
        family_law = {"L_star": p["L_star"], "B": p["B"], "A0": p["A0"]}
    for name in ("L_star", "B", "A0"):
        if name not in p:
            backend.deterministic(name, family_law[name], dims=("family",))
    f = data.family
    floor = family_law["L_star"][f] + family_law["B"][f] * m.exp(-p["beta"][f] * data.log_n)
    amplitude = family_law["A0"][f] * m.exp(-p["gamma"][f] * data.log_n)
    b_obs = _pick(b, param_scope(spec, "b"), data) if "b" in p else 0.0
    alpha_obs = _pick(alpha, param_scope(spec, "alpha"), data) if "alpha" in p else 1.0
    return floor + amplitude * (data.k + b_obs) ** (-alpha_obs)


def spread_factor(spread: str, k: np.ndarray, pool_size: np.ndarray) -> np.ndarray:
    """How the across-subset variance scales with k: the finite-pool form, 1/k, or constant."""
    if spread == "finite_pool":
        return np.where(pool_size > 1, (pool_size - k) / (k * np.maximum(pool_size - 1, 1)), 0.0)
    if spread == "inverse_k":
        return 1.0 / k
    return np.ones_like(k)


def merging_law(spec: ModelSpec, data: ModelData, backend: Backend, y=None):
    """Declare the whole model on ``backend``, conditioned on losses ``y`` (None: unobserved, for
    prior predictive draws). The table's structure comes from ``data``, the losses from ``y``."""
    check_spec_fits_data(spec)
    m = backend.math
    p = group_parameters(spec, backend)
    mu = mean_curve(spec, data, p, backend)
    # Gamma(2, 1/mode): zero density at 0, so the sampler never enters the funnel a vanishing
    # nugget would open (every measurement has some evaluation noise and lack of fit).
    nugget = backend.gamma("nugget", 2.0, 1.0 / spec.nugget_prior_mode)
    if data.form == "subsets":
        slope = backend.normal("sigma_slope", 0.0, spec.sigma_slope_prior_sd)
        sigma = p["sigma"][data.family] * m.exp(-slope * data.x)
        factor = spread_factor(spec.spread, data.k, data.pool_size)
        scale = m.sqrt(sigma**2 * factor + nugget**2)
    else:
        scale = m.sqrt(data.se**2 + nugget**2)
    return backend.likelihood("loss", mu, scale, y)
