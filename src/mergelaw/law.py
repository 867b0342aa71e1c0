"""The merging law of Wang et al. (2025) and its closed forms, as pure vectorised functions.

    E[L | N, k] = L_inf(N) + A(N) / (k + b)^alpha   (alpha = 1 in the paper)
    L_inf(N)    = L_star + B * N**(-beta)      (the floor, falls with base size N)
    A(N)        = A0 * N**(-gamma)             (the tail amplitude; negative for a rising curve)

and what measured curves add to it (DESIGN.md): a subset holding the evaluated domain's own
expert sits ``gap * k**-decay`` away from one without it, and merged models scatter around their
stratum's mean with variance sigma^2 * spread(k, M) + nugget^2.

N is the base size in billions of parameters (the paper's unit; see ``size_in_billions``), k the
number of experts merged. Every function broadcasts over its arguments. The arithmetic of the
model (mean, membership offset, noise scale, anchored parameters) is written with operators only,
so numpy, jax.numpy and pytensor tensors all run it: the Bayesian model, its predictive checks,
the posterior's queries and the few-point update share one copy.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np

ArrayLike = Any  # numpy or jax array, or a Python scalar

PARAMS_PER_BILLION = 1e9


def _xp(*arrays: ArrayLike):
    """The array namespace of the inputs: jax.numpy if any input is a jax array, else numpy."""
    jax = sys.modules.get("jax")
    if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
        import jax.numpy as jnp

        return jnp
    return np


def size_in_billions(n_params: ArrayLike) -> ArrayLike:
    """Base size N in the law's unit (billions of parameters) from a raw parameter count."""
    return n_params / PARAMS_PER_BILLION


class LawParams(NamedTuple):
    """Parameters of the joint law over base sizes for one (domain, method) curve family."""

    L_star: ArrayLike
    B: ArrayLike
    beta: ArrayLike
    A0: ArrayLike
    gamma: ArrayLike
    b: ArrayLike

    def floor(self, n: ArrayLike) -> ArrayLike:
        return floor_loss(n, self.L_star, self.B, self.beta)

    def amplitude(self, n: ArrayLike) -> ArrayLike:
        return tail_amplitude(n, self.A0, self.gamma)

    def mean_loss(self, n: ArrayLike, k: ArrayLike) -> ArrayLike:
        return curve_loss(k, self.floor(n), self.amplitude(n), self.b)


LAW_PARAM_NAMES: tuple[str, ...] = LawParams._fields
CURVE_PARAM_NAMES: tuple[str, ...] = ("floor", "amplitude", "b")


def size_power(n: ArrayLike, exponent: ArrayLike) -> ArrayLike:
    """N^-exponent. For one size and numpy draws of the exponent, exp(-exponent·log N): the same
    number to a few ulps, at half the cost of numpy's elementwise pow (planning evaluates it
    for thousands of draws x families at every size it is asked about; plan_bench)."""
    if isinstance(n, (int, float)) and isinstance(exponent, np.ndarray) and n > 0:
        return np.exp(exponent * -math.log(n))
    return n ** (-exponent)


def floor_loss(n: ArrayLike, L_star: ArrayLike, B: ArrayLike, beta: ArrayLike) -> ArrayLike:
    """L_inf(N) = L_star + B * N^-beta: the loss approached as k grows without bound."""
    return L_star + B * size_power(n, beta)


def tail_amplitude(n: ArrayLike, A0: ArrayLike, gamma: ArrayLike) -> ArrayLike:
    """A(N) = A0 * N^-gamma: how far above the floor a single expert sits (times 1 + b)."""
    return A0 * size_power(n, gamma)


def tail_shape(k: ArrayLike, b: ArrayLike, alpha: ArrayLike = 1.0) -> ArrayLike:
    """(k + b)^-alpha: how the tail thins with k (1 / (k + b) at the theory's alpha = 1)."""
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        return 1.0 / (k + b)
    return (k + b) ** (-alpha)


def offset_off_family(b: ArrayLike, deviation: ArrayLike, exp=np.exp) -> ArrayLike:
    """A curve's offset b where its log(1 + b) sits ``deviation`` off its family's (``exp``:
    the array namespace's, so pytensor runs it too)."""
    return (1.0 + b) * exp(deviation) - 1.0


def bent_curve(
    floor: ArrayLike,
    amplitude: ArrayLike,
    b: ArrayLike,
    curve_b: ArrayLike,
    k_low: ArrayLike,
    k_anchor: ArrayLike,
    alpha: ArrayLike = 1.0,
) -> tuple[ArrayLike, ArrayLike]:
    """Floor and amplitude of a curve bending with its own offset ``curve_b`` in place of its
    family's ``b``, keeping its loss at k_anchor and its drop from k_low: where a curve bends
    is then free of how far it falls over the measured k (which the size laws give)."""
    curve_amplitude = amplitude * (
        drop_per_amplitude(k_low, k_anchor, b, alpha)
        / drop_per_amplitude(k_low, k_anchor, curve_b, alpha)
    )
    curve_floor = (
        floor
        + amplitude * tail_shape(k_anchor, b, alpha)
        - curve_amplitude * tail_shape(k_anchor, curve_b, alpha)
    )
    return curve_floor, curve_amplitude


def curve_off_size_laws(
    floor: ArrayLike,
    amplitude: ArrayLike,
    b: ArrayLike,
    alpha: ArrayLike = 1.0,
    *,
    anchors: tuple[float, float] = (1.0, 1.0),
    b_dev: ArrayLike | None = None,
    floor_dev: ArrayLike | None = None,
    tail_dev: ArrayLike | None = None,
    exp=np.exp,
) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """Floor, amplitude and b of one (family, size) curve from its family's size laws and the
    curve's own deviations (None: none): it bends with log(1 + b) moved by ``b_dev``, keeping
    its loss at k_anchor and its drop from k_low (``anchors`` = (k_low, k_anchor)), and its
    floor and amplitude move by ``floor_dev`` and ``tail_dev``. The model, the predictive
    draws and the posterior's curves all compose a curve here."""
    if b_dev is not None:
        curve_b = offset_off_family(b, b_dev, exp)
        floor, amplitude = bent_curve(floor, amplitude, b, curve_b, *anchors, alpha)
        b = curve_b
    if floor_dev is not None:
        floor = floor + floor_dev
    if tail_dev is not None:
        amplitude = amplitude + tail_dev
    return floor, amplitude, b


def curve_loss(
    k: ArrayLike, floor: ArrayLike, amplitude: ArrayLike, b: ArrayLike, alpha: ArrayLike = 1.0
) -> ArrayLike:
    """Expected merged loss at k experts for one base size, averaged over the pool's k-subsets:
    floor + A (k + b)^-alpha."""
    return floor + amplitude * tail_shape(k, b, alpha)


def own_expert_gap(k: ArrayLike, gap: ArrayLike, decay: ArrayLike = 1.0) -> ArrayLike:
    """Mean loss of k-subsets holding the evaluated domain's own expert minus that of subsets
    without it: gap * k^-decay (an equal merge weights the own expert c/k, so decay = 1 is the
    natural start; TIES's disjoint mean keeps it at full weight, a decay near 0)."""
    if isinstance(decay, (int, float)) and decay == 1.0:
        return gap / k
    return gap * k ** (-decay)


def in_domain_share(k: ArrayLike, pool_size: ArrayLike) -> ArrayLike:
    """Share of all k-subsets of an M-expert pool that hold one given expert: k / M."""
    return k / pool_size


def stratum_offset(
    k: ArrayLike,
    in_domain: ArrayLike,
    pool_size: ArrayLike,
    gap: ArrayLike,
    decay: ArrayLike = 1.0,
) -> ArrayLike:
    """A subset's mean minus the curve's (the average over all k-subsets): (1 - k/M) * gap(k) for a
    subset holding the own expert, -(k/M) * gap(k) for one without it. Averages to 0 over
    subsets, so the curve stays the law the planner uses; ``in_domain`` is 0/1 (or a share)."""
    return (in_domain - in_domain_share(k, pool_size)) * own_expert_gap(k, gap, decay)


def membership_variance(
    k: ArrayLike, pool_size: ArrayLike, gap: ArrayLike, decay: ArrayLike = 1.0
) -> ArrayLike:
    """Variance of ``stratum_offset`` over all k-subsets of a pool holding the evaluated domain's
    own expert: share (1 - share) gap(k)², share = k/M. A random merge's loss scatters about the
    curve by this as well as by the fit's noise model, which is about the subset's stratum."""
    share = np.clip(in_domain_share(k, pool_size), 0.0, 1.0)
    return share * (1.0 - share) * own_expert_gap(k, gap, decay) ** 2


def spread_factor(spread: str, k: np.ndarray, pool_size: np.ndarray) -> np.ndarray:
    """How the across-subset variance scales with k (numpy, on the table's structure): the
    finite-pool form (M - k) / (k (M - 1)), 1/k, or constant."""
    k = np.asarray(k, dtype=float)
    pool_size = np.broadcast_to(np.asarray(pool_size, dtype=float), k.shape)
    if spread == "finite_pool":
        factor = (pool_size - k) / (k * np.maximum(pool_size - 1, 1))
        return np.where(pool_size > 1, np.maximum(factor, 0.0), 0.0)
    if spread == "inverse_k":
        return 1.0 / k
    return np.ones_like(k)


def noise_scale(
    sigma: ArrayLike, factor: ArrayLike, nugget: ArrayLike, curve_factor: ArrayLike = 1.0
) -> ArrayLike:
    """Sd of one observation around its mean: curve_factor * sqrt(sigma^2 * factor + nugget^2).
    For a merged model, sigma is the single-expert spread and factor spread(k, M); for a per-k
    mean, sigma is its standard error and factor 1. curve_factor: how much noisier one curve is
    than its family and method say (exp of its noise deviation; 1 where the spec has none)."""
    scale = (sigma**2 * factor + nugget**2) ** 0.5
    if isinstance(curve_factor, (int, float)) and curve_factor == 1.0:
        return scale  # no pass over a large array to multiply by 1
    return curve_factor * scale


def sigma_at_size(sigma_ref: ArrayLike, slope: ArrayLike, size_ratio: ArrayLike) -> ArrayLike:
    """Single-expert spread at base size N from its value at N_ref: sigma_ref (N/N_ref)^-slope."""
    return sigma_ref * size_power(size_ratio, slope)


def drop_per_amplitude(
    k_low: ArrayLike, k_anchor: ArrayLike, b: ArrayLike, alpha: ArrayLike = 1.0
) -> ArrayLike:
    """L(k_low) - L(k_anchor) per unit of tail amplitude: what turns a drop (nats between two k,
    the anchored parameterisation's unit) into an amplitude and back."""
    return tail_shape(k_low, b, alpha) - tail_shape(k_anchor, b, alpha)


def amplitude_for_drop(
    drop: ArrayLike, k_low: ArrayLike, k_anchor: ArrayLike, b: ArrayLike, alpha: ArrayLike = 1.0
) -> ArrayLike:
    """The tail amplitude that makes the curve fall by ``drop`` from k_low to k_anchor."""
    return drop / drop_per_amplitude(k_low, k_anchor, b, alpha)


def amplitude_spread_for_drop(
    drop_sd: ArrayLike,
    b: ArrayLike,
    alpha: ArrayLike = 1.0,
    *,
    anchors: tuple[float, float],
    b_dev: ArrayLike | None = None,
) -> ArrayLike:
    """The sd of a curve's tail amplitude whose drop from k_low to k_anchor (``anchors``) sits
    off its size law by ``drop_sd`` nats, under the curve's own b (its family's ``b`` moved by
    ``b_dev``; None: the family's)."""
    if b_dev is not None:
        b = offset_off_family(b, b_dev)
    return amplitude_for_drop(drop_sd, *anchors, b, alpha)


def anchored_law(
    level: ArrayLike,
    drop: ArrayLike,
    *,
    k_anchor: float,
    k_low: float = 1.0,
    b: ArrayLike = 0.0,
    alpha: ArrayLike = 1.0,
    floor_drop: ArrayLike = 0.0,
    beta: ArrayLike = 1.0,
    gamma: ArrayLike = 0.0,
    n_ref: float = 1.0,
    ratio_lo: float = 1.0,
    ratio_hi: float = 1.0,
) -> dict[str, ArrayLike]:
    """L_star, B and A0 from what a table pins down directly (see models/default.toml): level =
    mean loss at (N_ref, k_anchor), drop = L(k_low) - L(k_anchor) at N_ref (negative: a rising
    curve), floor_drop = floor(N_lo) - floor(N_hi), with N_lo/N_ref = ratio_lo and N_hi/N_ref =
    ratio_hi. One base size (ratio_lo = ratio_hi): no size law, L_star is the floor, B = 0."""
    amplitude_ref = amplitude_for_drop(drop, k_low, k_anchor, b, alpha)
    floor_ref = level - amplitude_ref * tail_shape(k_anchor, b, alpha)
    if ratio_lo == ratio_hi:
        return {"L_star": floor_ref, "B": 0.0 * floor_ref, "A0": amplitude_ref}
    gap = floor_drop / (ratio_lo ** (-beta) - ratio_hi ** (-beta))
    return {
        "L_star": floor_ref - gap,
        "B": gap * n_ref**beta,
        "A0": amplitude_ref * n_ref**gamma,
    }


def mean_loss(
    n: ArrayLike,
    k: ArrayLike,
    L_star: ArrayLike,
    B: ArrayLike,
    beta: ArrayLike,
    A0: ArrayLike,
    gamma: ArrayLike,
    b: ArrayLike,
) -> ArrayLike:
    """E[L | N, k] of the joint law."""
    return curve_loss(k, floor_loss(n, L_star, B, beta), tail_amplitude(n, A0, gamma), b)


def k_for_target(
    target: ArrayLike, floor: ArrayLike, amplitude: ArrayLike, b: ArrayLike
) -> ArrayLike:
    """Continuous k at which the mean curve reaches ``target``; +inf where target <= floor.

    A target at or below the floor is never reached by adding experts: only a larger base (a lower
    floor) can reach it, so the answer is infinity rather than an error.
    """
    xp = _xp(target, floor, amplitude, b)
    gap = xp.asarray(target - floor, dtype=float)
    safe_gap = xp.where(gap > 0, gap, 1.0)
    return xp.where(gap > 0, amplitude / safe_gap - b, xp.inf)


def experts_for_target(
    target: ArrayLike, floor: ArrayLike, amplitude: ArrayLike, b: ArrayLike
) -> ArrayLike:
    """Whole number of experts (>= 1) whose mean loss is at or below ``target``; inf if never."""
    return _ceil_at_least_one(k_for_target(target, floor, amplitude, b))


def marginal_gain(
    k: ArrayLike, amplitude: ArrayLike, b: ArrayLike, alpha: ArrayLike = 1.0
) -> ArrayLike:
    """Expected loss drop from adding one more expert: L(k) - L(k+1) = A / ((k+b)(k+b+1)) at
    alpha = 1 (one division, exact where the difference of two shapes would cancel), else
    A ((k+b)^-alpha - (k+b+1)^-alpha)."""
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        return amplitude / ((k + b) * (k + b + 1))
    return amplitude * (tail_shape(k, b, alpha) - tail_shape(k + 1.0, b, alpha))


def first_k_gain_below(threshold: ArrayLike, amplitude: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Smallest whole k >= 1 whose marginal gain L(k) - L(k+1) is strictly below ``threshold``.

    The stopping rule: at this k, one more expert buys less than ``threshold``. Solves
    (k+b)(k+b+1) > A/threshold for k in closed form.
    """
    xp = _xp(threshold, amplitude, b)
    ratio = xp.maximum(amplitude / threshold, 0.0)  # a rising curve gains nothing from k = 1
    x_star = (-1.0 + xp.sqrt(1.0 + 4.0 * ratio)) / 2.0  # (x)(x+1) = ratio at x = x_star
    return xp.maximum(xp.floor(x_star - b) + 1.0, 1.0)


def k_epsilon(epsilon: ArrayLike, amplitude: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Continuous k_eps = A/eps - b: experts needed to come within ``epsilon`` of the floor."""
    return amplitude / epsilon - b


def experts_within_epsilon(epsilon: ArrayLike, amplitude: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Whole number of experts (>= 1) that brings the mean loss within ``epsilon`` of the floor.

    The paper's worked example: eps = 0.01 gives 8 experts for code at 0.5B and 5 at 32B.
    """
    return _ceil_at_least_one(k_epsilon(epsilon, amplitude, b))


def gain_fraction(k: ArrayLike, b: ArrayLike, k_max: ArrayLike = np.inf) -> ArrayLike:
    """Share of the k=1 -> k_max loss drop already reached at k: (L(1)-L(k)) / (L(1)-L(k_max)).

    Independent of the floor and amplitude. ``k_max = inf`` measures against the floor itself.
    """
    total = 1.0 / (1.0 + b) - 1.0 / (k_max + b)
    return (1.0 / (1.0 + b) - 1.0 / (k + b)) / total


def k_for_gain_fraction(fraction: ArrayLike, b: ArrayLike, k_max: ArrayLike = np.inf) -> ArrayLike:
    """Continuous k at which ``fraction`` of the k=1 -> k_max gain is reached (gain_fraction^-1)."""
    total = 1.0 / (1.0 + b) - 1.0 / (k_max + b)
    return 1.0 / (1.0 / (1.0 + b) - fraction * total) - b


def experts_for_gain_fraction(
    fraction: ArrayLike, b: ArrayLike, k_max: ArrayLike = np.inf
) -> ArrayLike:
    """Whole k reaching ``fraction`` of the gain: k80 = experts_for_gain_fraction(0.8, b, 9)."""
    return _ceil_at_least_one(k_for_gain_fraction(fraction, b, k_max))


class ThreePointSolution(NamedTuple):
    floor: ArrayLike
    amplitude: ArrayLike
    b: ArrayLike


def three_point_solution(
    loss_k1: ArrayLike,
    loss_k2: ArrayLike,
    loss_k4: ArrayLike,
    ks: tuple[float, float, float] = (1.0, 2.0, 4.0),
) -> ThreePointSolution:
    """The curve floor + A/(k+b) passing exactly through the mean losses at three k (the paper's
    k = 1, 2, 4 unless ``ks`` says otherwise, in increasing order).

    With d1 = L(k1) - L(k2) = A (k2-k1) / ((k1+b)(k2+b)) and d2 = L(k2) - L(k3) likewise, the ratio
    r = d1/d2 = (k2-k1)(k3+b) / ((k3-k2)(k1+b)) gives b = ((k2-k1) k3 - r (k3-k2) k1) /
    (r (k3-k2) - (k2-k1)). Points that are not strictly decreasing, or whose ratio implies
    b <= -k1, have no such curve: all three outputs are NaN.
    """
    xp = _xp(loss_k1, loss_k2, loss_k4)
    k1, k2, k3 = (float(k) for k in ks)
    d1 = xp.asarray(loss_k1 - loss_k2, dtype=float)
    d2 = xp.asarray(loss_k2 - loss_k4, dtype=float)
    ok = (d1 > 0) & (d2 > 0)
    ratio = d1 / xp.where(ok, d2, 1.0)
    denominator = ratio * (k3 - k2) - (k2 - k1)
    ok = ok & (denominator > 0)  # the ratio's limit as b grows without bound
    b = ((k2 - k1) * k3 - ratio * (k3 - k2) * k1) / xp.where(ok, denominator, 1.0)
    ok = ok & (b > -k1)
    amplitude = d1 * (k1 + b) * (k2 + b) / (k2 - k1)
    floor = loss_k1 - amplitude / (k1 + b)
    nan = xp.nan
    return ThreePointSolution(
        xp.where(ok, floor, nan), xp.where(ok, amplitude, nan), xp.where(ok, b, nan)
    )


def _ceil_at_least_one(k: ArrayLike) -> ArrayLike:
    xp = _xp(k)
    k = xp.asarray(k)
    # A relative tolerance keeps k = 5.0000001 (rounding noise on an exact 5) from becoming 6;
    # float32 (jax's default) needs a wider one than float64.
    rel = 1e-9 if k.dtype == xp.float64 else 1e-5
    tolerance = xp.where(xp.isfinite(k), rel * xp.maximum(xp.abs(k), 1.0), 0.0)
    return xp.maximum(xp.ceil(k - tolerance), 1.0)
