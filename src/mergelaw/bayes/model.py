"""The hierarchical merging law as one generative program, written against a tiny backend interface.

``merging_law(spec, data, backend)`` declares every random variable through ``backend`` (normal,
half_normal, deterministic, likelihood) and does its arithmetic with ``mergelaw.law``'s functions
(operators only, so jax.numpy and pytensor tensors run them). The PyMC and NumPyro backends are thin
adapters over that interface, so the two cannot drift apart: the same spec gives the same model in
both.

Per row (one merged model evaluated on one domain) of a table with >= 3 base sizes:

    loss ~ Normal(mu, scale)          (evaluated per cell of rows sharing mu and scale)
    mu    = curve_loss(k; floor(N), A(N), b) + stratum_offset(k, in_domain, M; gap, decay)
    scale = noise_scale(sigma(N), spread(k, M), nugget)

with each family's floor and tail following the size laws L_star + B N^-beta and A0 N^-gamma.
A table of one or two sizes has no size law: floor, amplitude and b are then per (family, size)
curve, partially pooled across all curves. A per-k means table has no membership term (its means
average over subsets) and its scale is sqrt(se^2 + nugget^2).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

from mergelaw import law
from mergelaw.bayes.data import ModelData, merge_methods, method_index
from mergelaw.bayes.spec import ModelSpec, ParamPrior
from mergelaw.errors import MergelawError

#: Law parameters reported per family in the paper's units (N in billions), whatever the spec.
REPORTED = (
    "L_star", "B", "beta", "A0", "gamma", "b", "alpha", "gap", "decay", "floor_dev", "tail_dev",
    "b_dev", "noise_dev",
)  # fmt: skip


class Backend(Protocol):
    math: Any

    def normal(self, name: str, loc, scale, dims: tuple[str, ...] = ()) -> Any: ...
    def half_normal(self, name: str, scale, dims: tuple[str, ...] = ()) -> Any: ...
    def gamma(self, name: str, shape: float, rate: float, dims: tuple[str, ...] = ()) -> Any: ...
    def deterministic(self, name: str, value, dims: tuple[str, ...] = ()) -> Any: ...
    def likelihood(self, name: str, loc, scale, observed) -> Any: ...
    def potential(self, name: str, log_density) -> Any: ...
    def segment_sum(self, values, index: np.ndarray, n: int) -> Any: ...


#: Parameters given per (family, size) curve when the table has no size law.
PER_CURVE_WITHOUT_SIZE_LAW = ("level", "drop", "b", "L_star", "A0", "gap")


def param_scope(spec: ModelSpec, name: str, size_law: bool = True) -> str:
    """'curve' for parameters given to each (family, size) curve, 'merge_method' for those of a
    merge method (the own expert's decay: how the method weights it), else 'family'."""
    if name == "gap":
        return "curve"
    if name == "decay":
        return "merge_method"
    if not size_law and name in PER_CURVE_WITHOUT_SIZE_LAW:
        return "curve"
    if name == "b" and spec.offset == "curve":
        return "curve"
    if name == "alpha" and spec.exponent_scope == "curve":
        return "curve"
    return "family"


def required_params(spec: ModelSpec, data: ModelData) -> list[str]:
    return spec.required_params(size_law=data.size_law, form=data.form)


def check_spec_fits_data(spec: ModelSpec, data: ModelData) -> None:
    if data.size_law and spec.parameterisation == "anchored":
        scoped = {p: param_scope(spec, p) for p in required_params(spec, data)}
        if scoped.get("b") == "curve" or scoped.get("alpha") == "curve":
            raise MergelawError(
                f"spec {spec.name!r}: the anchored parameterisation needs b and alpha per family "
                "(offset and exponent_scope = 'family')"
            )


def group_method(scope: str, families: pd.DataFrame, curves: pd.DataFrame) -> np.ndarray:
    """The merge method (index into ``merge_methods(families)``) of each group of a scope, for
    the model and for a fitted population's groups alike."""
    if scope == "curve":
        return method_index(families)[curves["family"].to_numpy(int)]
    if scope == "merge_method":
        return np.arange(len(merge_methods(families)))
    return method_index(families)


def group_parameters(spec: ModelSpec, data: ModelData, backend: Backend) -> dict[str, Any]:
    """Each group parameter: transform(raw), raw centred or not (``is_centred``: 'auto' counts
    the table's rows, so ``data`` is the rows, not their cells), partially pooled or not (the
    population distribution is ``ParamPrior``'s, in the spec module)."""
    values = {}
    for name in required_params(spec, data):
        prior = spec.params[name]
        dims = (param_scope(spec, name, data.size_law),)
        if spec.is_pooled(name):
            by_method = prior.population == "method"
            mean = backend.normal(
                f"{name}_mean",
                prior.prior_mean,
                prior.prior_sd,
                dims=("merge_method",) if by_method else (),
            )
            scale = backend.half_normal(f"{name}_scale", prior.pool_scale)
            if by_method:
                mean = mean[group_method(dims[0], data.families, data.curves)]
        else:
            mean, scale = prior.prior_mean, prior.prior_sd
        if is_centred(prior, data):
            raw = backend.normal(f"{name}_raw", mean, scale, dims=dims)
        else:
            raw = mean + scale * backend.normal(f"{name}_z", 0.0, 1.0, dims=dims)
        value = prior.to_value(raw, backend.math)
        values[name] = backend.deterministic(name, value, dims=dims)
    if has_offset_deviations(spec, data):  # non-centred: the k <= 5 rows pin it loosely
        z = backend.normal("b_dev_z", 0.0, 1.0, dims=("curve",))
        if spec.offset_deviation_scale == "fixed":
            deviation = spec.offset_deviation_prior_sd * z
        else:
            scale = backend.half_normal(
                "b_dev_scale", spec.offset_deviation_prior_sd, dims=("merge_method",)
            )
            deviation = scale[group_method("curve", data.families, data.curves)] * z
        values["b_dev"] = backend.deterministic("b_dev", deviation, dims=("curve",))
    return values


#: Fewest merged models holding a curve's own expert (median over curves) for 'auto' to sample
#: the membership gaps centred. Each curve's gap is pinned by those rows: at 4 a curve (the
#: paper's tables at k = 1, 2, 4, 5 subsets each: benchmarks/plan_holdout.py's k check) centred
#: gaps made a funnel with their population's scale (R-hat 1.025, ESS 243; non-centred: flag ok,
#: 257 s); at 21 (the paper's tables, k = 1..9) and 37 (the lab's) centred ones mix, and on the lab
#: table non-centred ones took 4x as long (881 s against 217 s).
CENTRED_GAP_MIN_OWN_ROWS = 10


def is_centred(prior: ParamPrior, data: ModelData) -> bool:
    """Whether a group parameter's raw values are sampled directly (see ParamPrior.centred)."""
    if prior.centred != "auto":
        return bool(prior.centred)
    own = np.bincount(data.curve, weights=data.in_domain, minlength=len(data.curves))
    return bool(np.median(own) >= CENTRED_GAP_MIN_OWN_ROWS)


def has_offset_deviations(spec: ModelSpec, data: ModelData) -> bool:
    """Whether each curve's offset b may sit off its family's: curves of one family bend at
    different k at different sizes (a b shared across the lab's three sizes made k <= 5 fits
    forecast k = 6..9 too confidently), with log(1 + b_c) = log(1 + b_g) + dev_c,
    dev_c ~ N(0, s_m) per merge method m. A table of < 3 sizes has a b per curve already."""
    return data.size_law and spec.offset_deviation_prior_sd > 0


def _pick(value, scope: str, data: ModelData):
    if scope == "merge_method":
        return value[data.family_method[data.family]]
    return value[data.family] if scope == "family" else value[data.curve]


def mean_curve(spec: ModelSpec, data: ModelData, p: dict[str, Any], backend: Backend):
    """E[L] per observation, and the paper's parameters (reported as deterministics)."""

    def per_obs(name: str, default: float):
        if name not in p:
            return default
        return _pick(p[name], param_scope(spec, name, data.size_law), data)

    b, alpha = per_obs("b", 0.0), per_obs("alpha", 1.0)
    if spec.parameterisation == "anchored":
        scope = param_scope(spec, "level", data.size_law)
        sizes = {}
        if data.size_law:
            sizes = {"n_ref": data.n_ref, "ratio_lo": data.ratio_lo, "ratio_hi": data.ratio_hi}
            sizes |= {name: p[name] for name in ("floor_drop", "beta", "gamma")}
        derived = law.anchored_law(
            p["level"],
            p["drop"],
            k_anchor=data.k_anchor,
            k_low=spec.drop_from_k,
            b=p.get("b", 0.0),
            alpha=p.get("alpha", 1.0),
            **sizes,
        )
        for name in ("L_star", "B", "A0"):
            if name == "B" and not data.size_law:
                continue
            backend.deterministic(name, derived[name], dims=(scope,))
        p = {**p, **derived}
    if data.size_law:
        n = data.n_b
        floor = law.floor_loss(n, per_obs("L_star", 0.0), per_obs("B", 0.0), per_obs("beta", 1.0))
        amplitude = law.tail_amplitude(n, per_obs("A0", 0.0), per_obs("gamma", 0.0))
        if "b_dev" in p:  # the curve's own bend (its floor and drop deviations: integrated)
            floor, amplitude, b = law.curve_off_size_laws(
                floor, amplitude, b, alpha, anchors=(spec.drop_from_k, data.k_anchor),
                b_dev=p["b_dev"][data.curve], exp=backend.math.exp,
            )  # fmt: skip
    else:
        floor, amplitude = per_obs("L_star", 0.0), per_obs("A0", 0.0)
    mu = law.curve_loss(data.k, floor, amplitude, b, alpha)
    if "gap" in p:
        mu = mu + law.stratum_offset(
            data.k, data.in_domain, data.pool_size, per_obs("gap", 0.0), per_obs("decay", 1.0)
        )
    return mu


def has_floor_deviations(spec: ModelSpec, data: ModelData) -> bool:
    """Whether each curve's floor may sit off its family's size law (under-trained bases do not
    lower the floor as a power law says): dev_c ~ N(0, tau), one per (family, size) curve."""
    return data.size_law and spec.floor_deviation_prior_sd > 0


def has_tail_deviations(spec: ModelSpec, data: ModelData) -> bool:
    """Whether each curve's drop may sit off its family's size law as well: the lab's TIES
    drops jump between sizes (medical: 0.36, 0.02, 0.27 nats of rise at the three sizes), so a
    size law shared across them made k <= 5 fits forecast k = 6..9 too confidently."""
    return has_floor_deviations(spec, data) and spec.tail_deviation_prior_sd > 0


class DeviationSums(NamedTuple):
    """Per curve, what its rows say about its (floor, amplitude) deviation: the precision-weighted
    sums of 1, x, x^2, r and x r over its cells, with x the tail's shape at the cell's k (the
    amplitude deviation's regressor) and r the residual at zero deviation."""

    w: Any
    wx: Any
    wxx: Any
    wr: Any
    wxr: Any


def deviation_sums(weight, residual, regressor, curve: np.ndarray, n_curves: int, segment_sum):
    """``DeviationSums`` of every curve from its cells' weights (count / scale^2), residuals and
    regressors (None: no amplitude deviation, its sums are 0)."""
    w = segment_sum(weight, curve, n_curves)
    wr = segment_sum(weight * residual, curve, n_curves)
    if regressor is None:
        return DeviationSums(w, 0.0 * w, 0.0 * w, wr, 0.0 * w)
    wx = weight * regressor
    return DeviationSums(
        w,
        segment_sum(wx, curve, n_curves),
        segment_sum(wx * regressor, curve, n_curves),
        wr,
        segment_sum(wx * residual, curve, n_curves),
    )


def _deviation_precision(sums: DeviationSums, tau_floor, tau_tail):
    """The 2 x 2 posterior precision of a curve's (floor, amplitude) deviation and its
    determinant."""
    p00 = sums.w + tau_floor**-2
    p01 = sums.wx
    p11 = sums.wxx + tau_tail**-2
    return p00, p01, p11, p00 * p11 - p01**2


def deviation_evidence(sums: DeviationSums, tau_floor, tau_tail, math):
    """Per curve, what integrating its deviations out adds to the log density of its rows at
    zero deviation: log E[exp(d'h - d'Sd / 2)] over d = (floor, amplitude) ~ N(0, diag(tau^2)),
    with S and h its rows' ``DeviationSums``. Both shift the curve's rows linearly, so they are
    normal given the rest and integrate out exactly: no funnel between their scales, the nugget
    and 216 pairs of deviations. With no amplitude deviation (its sums 0, any tau_tail), this is
    the floor's alone."""
    p00, p01, p11, det = _deviation_precision(sums, tau_floor, tau_tail)
    h0, h1 = sums.wr, sums.wxr
    quadratic = (p11 * h0**2 - 2.0 * p01 * h0 * h1 + p00 * h1**2) / det
    return 0.5 * quadratic - 0.5 * math.log(det * tau_floor**2 * tau_tail**2)


def deviation_conditional(sums: DeviationSums, tau_floor, tau_tail):
    """Mean (2 arrays) and covariance (3: var floor, cov, var amplitude) of a curve's deviations
    given everything else (the draws a fit keeps of them are made from these after sampling)."""
    p00, p01, p11, det = _deviation_precision(sums, tau_floor, tau_tail)
    h0, h1 = sums.wr, sums.wxr
    mean = ((p11 * h0 - p01 * h1) / det, (p00 * h1 - p01 * h0) / det)
    return mean, (p11 / det, -p01 / det, p00 / det)


def tail_deviation_terms(spec: ModelSpec, data: ModelData, b, alpha, scale, b_dev=None, exp=np.exp):
    """Per row, the regressor of its curve's amplitude deviation (the tail's shape at its k);
    per curve, the deviation's prior sd in amplitude units: its merge method's drop scale
    ``scale`` (nats between k = drop_from_k and k_anchor) over the drop per unit amplitude.
    ``b`` and ``alpha`` per family, ``scale`` per merge method, ``b_dev`` per curve, each along
    its last axis (a leading axis of draws is kept), or a number (None) where the spec has
    none."""
    family = data.curves["family"].to_numpy(int)
    b_curve, alpha_curve = _along_last(b, family), _along_last(alpha, family)
    if b_dev is not None:
        b_curve = law.offset_off_family(b_curve, b_dev, exp)
    regressor = law.tail_shape(
        data.k, _along_last(b_curve, data.curve), _along_last(alpha_curve, data.curve)
    )
    scale = _along_last(scale, data.family_method[family])
    return regressor, law.amplitude_for_drop(
        scale, spec.drop_from_k, data.k_anchor, b_curve, alpha_curve
    )


def _along_last(value, index: np.ndarray):
    return value if isinstance(value, (int, float)) else value[..., index]


def _nugget(spec: ModelSpec, data: ModelData, backend: Backend):
    """The noise floor of every observation: evaluation noise and the law's lack of fit, which
    the finite-pool spread leaves alone at k = M (one subset). The table identifies it poorly
    below the spread at k = M - 1, so its prior keeps it off zero: at zero the anchor level's
    precision would scale with it (a funnel). Gamma(2, 1/mode) has zero density at 0; the
    log-normal (nugget_log_sd > 0) keeps it within a factor of a few of the mode unless the data
    say otherwise. One per merge method where the spec says so: TIES's spread does not shrink
    with k, Average's does."""
    dims = ("merge_method",) if spec.nugget == "method" else ()
    mode = spec.nugget_prior_mode
    if spec.nugget_log_sd > 0:
        nugget = _log_normal(backend, "nugget", mode, spec.nugget_log_sd, dims)
    else:
        nugget = backend.gamma("nugget", 2.0, 1.0 / mode, dims=dims)
    return nugget[data.family_method[data.family]] if dims else nugget


def _log_normal(backend: Backend, name: str, median: float, log_sd: float, dims=()):
    """A positive scale sampled on the log scale (``name``_log ~ Normal(log median, log_sd)):
    zero density at 0, so a scale the table barely identifies keeps a plain geometry instead of
    a half-normal's pile-up at zero."""
    raw = backend.normal(f"{name}_log", float(np.log(median)), log_sd, dims=dims)
    return backend.deterministic(name, backend.math.exp(raw), dims=dims)


#: Parameters of a family's floor law, L* + B N^-beta: with no more base sizes than these, a
#: family's floors fit its law exactly whatever they are, and their spread off it is not learnt.
FLOOR_LAW_PARAMETERS = 3


def _floor_deviation_scale(spec: ModelSpec, data: ModelData, backend: Backend):
    """tau, the spread of curves' floors off their family's size law: fixed, or learnt under a
    half-normal or (floor_deviation_log_sd > 0) a log-normal around floor_deviation_prior_sd;
    'auto' learns it only where every family has more base sizes than FLOOR_LAW_PARAMETERS.
    Three sizes leave it to the prior (learnt there, it mixed slowly on the lab table); more pin
    it, down to the floors' own precision on a table that follows the law. Per family, not per
    table: the lab's two archs have six sizes between them but three each (learnt, that table's
    fit failed: R-hat 1.6, a quarter of the draws at the maximum tree depth)."""
    tau = spec.floor_deviation_prior_sd
    sizes_per_family = data.curves.groupby("family")["n_params"].nunique()
    learnt = spec.floor_deviation_scale == "learnt" or (
        spec.floor_deviation_scale == "auto" and sizes_per_family.min() > FLOOR_LAW_PARAMETERS
    )
    if not learnt:
        return tau
    if spec.floor_deviation_log_sd > 0:
        return _log_normal(backend, "floor_dev_scale", tau, spec.floor_deviation_log_sd)
    return backend.half_normal("floor_dev_scale", tau)


def cell_log_likelihood(count, mean, ss, mu, scale, math):
    """log prod_i Normal(y_i | mu, scale) over each cell's rows, summed over cells, from the
    cell's count, mean and within-cell sum of squares: exactly the rows' log density."""
    return math.sum(
        -count * (math.log(scale) + 0.5 * np.log(2.0 * np.pi))
        - (ss + count * (mean - mu) ** 2) / (2.0 * scale**2)
    )


def _noise(spec: ModelSpec, data: ModelData, p: dict[str, Any], backend: Backend):
    """The noise sd of every observation: the spread across subsets and the nugget, times each
    curve's noise factor where the spec has one (some curves scatter more than their family
    and method: the lab's TIES Spanish curve at the middle size twice as much). A table of one
    size has one curve per family, whose sigma is then the curve's own: a factor on top would
    be a ridge (it made a funnel in sigma's population scale: ESS 76, BFMI 0.12)."""
    nugget = _nugget(spec, data, backend)
    if data.form == "means":
        return law.noise_scale(data.se, 1.0, nugget)
    sigma = p["sigma"][data.family]
    if data.n_sizes > 1:  # how the spread changes with N: no such question on one size
        slope = backend.normal("sigma_slope", 0.0, spec.sigma_slope_prior_sd)
        sigma = law.sigma_at_size(sigma, slope, data.size_ratio)
    curve_factor = 1.0
    if spec.noise_curve_prior_sd > 0 and data.n_sizes > 1:  # one size: sigma is the curve's
        spread = spec.noise_curve_prior_sd
        if spec.noise_curve_scale == "learnt":
            spread = backend.half_normal("noise_dev_scale", spread)
        deviation = backend.normal("noise_dev", 0.0, spread, dims=("curve",))
        curve_factor = backend.math.exp(deviation)[data.curve]
    factor = law.spread_factor(spec.spread, data.k, data.pool_size)
    return law.noise_scale(sigma, factor, nugget, curve_factor)


def merging_law(spec: ModelSpec, data: ModelData, backend: Backend, y=None):
    """Declare the whole model on ``backend``, conditioned on losses ``y`` (None: unobserved, for
    prior predictive draws, one 'loss' per row). The table's structure comes from ``data``, the
    losses from ``y``. The law is evaluated once per cell (rows of one curve, k and stratum
    share their mean and scale); observed, the rows enter through their cells' sufficient
    statistics (``cell_log_likelihood``), the floor and tail deviations are integrated out
    (``deviation_evidence``), and the pointwise log-likelihood and the deviations' draws
    are made after sampling (``mergelaw.bayes.fit``)."""
    check_spec_fits_data(spec, data)
    cells, at = data.cells, data.at_cells()
    p = group_parameters(spec, data, backend)
    mu = mean_curve(spec, at, p, backend)
    scale = _noise(spec, at, p, backend)
    deviates = has_floor_deviations(spec, data)
    if deviates:
        tau = _floor_deviation_scale(spec, data, backend)
    regressor, tau_tail = None, 1.0
    if has_tail_deviations(spec, data):
        drop_scale = np.full(len(merge_methods(data.families)), spec.tail_deviation_prior_sd)
        if spec.tail_deviation_scale == "learnt":
            drop_scale = backend.half_normal(
                "tail_dev_scale", spec.tail_deviation_prior_sd, dims=("merge_method",)
            )
        regressor, tau_tail = tail_deviation_terms(
            spec, at, p.get("b", 0.0), p.get("alpha", 1.0), drop_scale, p.get("b_dev"),
            backend.math.exp,
        )  # fmt: skip
    if y is None:
        if deviates:
            mu = mu + backend.normal("floor_dev", 0.0, tau, dims=("curve",))[at.curve]
        if regressor is not None:
            z = backend.normal("tail_dev_z", 0.0, 1.0, dims=("curve",))
            tail = backend.deterministic("tail_dev", z * tau_tail, dims=("curve",))
            mu = mu + tail[at.curve] * regressor
        return backend.likelihood("loss", mu[cells.index], scale[cells.index], None)
    mean, ss = cells.stats(y)
    log_density = cell_log_likelihood(cells.count, mean, ss, mu, scale, backend.math)
    if deviates:
        sums = deviation_sums(
            cells.count / scale**2, mean - mu, regressor, at.curve, len(data.curves),
            backend.segment_sum,
        )  # fmt: skip
        evidence = deviation_evidence(sums, tau, tau_tail, backend.math)
        log_density = log_density + backend.math.sum(evidence)
    return backend.potential("loss", log_density)
