"""The model program: its mean is the law at the true parameters, in both parameterisations,
and PyMC and NumPyro define the same log density from the same spec."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw import law
from mergelaw.bayes.data import prepare
from mergelaw.bayes.model import mean_curve
from mergelaw.bayes.spec import load_spec
from mergelaw.curves import aggregate_curves
from mergelaw.errors import MergelawError
from mergelaw.law import spread_factor
from mergelaw.paper import paper_law_params
from mergelaw.simulate import simulate_curves


class NumpyMath:
    math = np

    def deterministic(self, name, value, dims=()):
        return value


@pytest.fixture(scope="module")
def data():
    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0), domains=("code", "biology"), methods=("average", "ties"), seed=0
    )
    return prepare(table)


def _truth(data):
    truth = paper_law_params().set_index(["method", "domain"])
    fam = data.families
    return {
        n: np.array([truth.loc[(m, d), n] for m, d in zip(fam.method, fam.eval_domain)])
        for n in law.LAW_PARAM_NAMES
    }


def test_anchored_mean_equals_law_at_truth(data):
    t = _truth(data)
    k_anchor, n_ref = data.k_anchor, data.n_ref
    amplitude_ref = t["A0"] * n_ref ** (-t["gamma"])
    gap = t["B"] * n_ref ** (-t["beta"])
    anchored = {
        "level": t["L_star"] + gap + amplitude_ref / (k_anchor + t["b"]),
        "drop": amplitude_ref * (1 / (1 + t["b"]) - 1 / (k_anchor + t["b"])),
        "floor_drop": gap * (np.exp(-t["beta"] * data.x_lo) - np.exp(-t["beta"] * data.x_hi)),
        "beta": t["beta"],
        "gamma": t["gamma"],
        "b": t["b"],
    }
    exact = dataclasses.replace(load_spec("default"), floor_deviation_prior_sd=0.0)
    mu = mean_curve(exact, data, anchored, NumpyMath())
    expected = law.mean_loss(
        np.exp(data.log_n), data.k, *[t[n][data.family] for n in law.LAW_PARAM_NAMES]
    )
    np.testing.assert_allclose(mu, expected, rtol=1e-12)


def test_natural_mean_equals_law_at_truth(data):
    t = _truth(data)
    per_curve_b = t["b"][data.curves["family"].to_numpy()]
    natural = {**t, "b": per_curve_b, "alpha": np.ones(len(data.curves))}
    mu = mean_curve(load_spec("naive"), data, natural, NumpyMath())
    expected = law.mean_loss(
        np.exp(data.log_n), data.k, *[t[n][data.family] for n in law.LAW_PARAM_NAMES]
    )
    np.testing.assert_allclose(mu, expected, rtol=1e-12)


def test_spread_factor_closed_forms():
    k = np.array([1.0, 3.0, 9.0])
    np.testing.assert_allclose(spread_factor("finite_pool", k, np.full(3, 9.0)), [1, 6 / 24, 0])
    np.testing.assert_allclose(spread_factor("inverse_k", k, np.full(3, 9.0)), 1 / k)
    np.testing.assert_allclose(spread_factor("homoscedastic", k, np.full(3, 9.0)), 1.0)
    assert spread_factor("finite_pool", np.array([1.0]), np.array([1.0]))[0] == 0.0


def test_data_indexing(data):
    assert len(data.families) == 4 and len(data.curves) == 12
    assert data.k_anchor == 9 and data.n_ref == pytest.approx((0.5 * 3 * 14) ** (1 / 3))
    labels = data.families["label"][data.family]
    assert all(label.split("/")[1] in ("average", "ties") for label in labels)
    first = data.curves.iloc[data.curve[0]]
    assert first["family"] == data.family[0]


def test_means_form_and_size_errors():
    table = simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=("code",), methods=("average",))
    means = aggregate_curves(table).rename(columns={"se_fpc": "se_given"})
    means["se"] = means["se_given"].fillna(0.0)
    data = prepare(means)
    assert data.form == "means" and len(data.y) == 27 and data.se is not None
    bad = means.copy()
    bad.loc[3, "se"] = -1.0
    with pytest.raises(MergelawError, match="column 'se' row 3"):
        prepare(bad)

    over = means.copy()
    over.loc[5, "k"] = 12
    with pytest.raises(MergelawError, match="row 5: k = 12 exceeds pool_size = 9"):
        prepare(over)


def test_means_form_samples_no_spread_it_does_not_use():
    """A per-k means table's scale is sqrt(se^2 + nugget^2): no sigma, no sigma_slope, no
    membership sites (the funnel of an unused sigma)."""
    from mergelaw.bayes import numpyro_backend

    table = simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=("code",), methods=("average",))
    means = aggregate_curves(table).rename(columns={"se_fpc": "se_given"})
    means["se"] = means["se_given"].fillna(0.0)
    _, dims = numpyro_backend.model_fn(load_spec("default"), prepare(means))
    assert not {"sigma", "sigma_raw", "sigma_slope", "gap", "decay"} & set(dims)
    assert {"level", "drop", "b", "nugget"} <= set(dims)


def test_one_or_two_sizes_drop_the_size_laws():
    from mergelaw.bayes import numpyro_backend

    for sizes in ((3.0,), (0.5, 3.0)):
        table = simulate_curves(sizes_b=sizes, domains=("code", "physics"), methods=("average",))
        data = prepare(table)
        assert not data.size_law and data.n_sizes == len(sizes)
        _, dims = numpyro_backend.model_fn(load_spec("default"), data)
        assert dims["level"] == ["curve"] and dims["drop"] == ["curve"] and dims["b"] == ["curve"]
        assert not {"floor_drop", "beta", "gamma", "B", "floor_dev"} & set(dims)
        assert ("sigma_slope" in dims) == (len(sizes) == 2)  # one size: no spread-size slope


@pytest.mark.parametrize("scale", ["fixed", "learnt"])
@pytest.mark.parametrize(
    ("deviation", "setting", "prior_sd", "log_sd"),
    [
        ("noise_dev", "noise_curve_scale", "noise_curve_prior_sd", None),
        ("floor_dev", "floor_deviation_scale", "floor_deviation_prior_sd", 0.0),
        ("floor_dev", "floor_deviation_scale", "floor_deviation_prior_sd", 1.0),
    ],
)
def test_per_curve_deviations_have_a_fixed_or_learnt_spread(
    data, scale, deviation, setting, prior_sd, log_sd
):
    """dev_c ~ N(0, s) per curve, for the noise factor and the floor: s is the spec's number
    ("fixed": no population scale to funnel into when curves scatter alike, or, for the floor,
    to mix slowly along its ridge with the family's floor law) or s ~ HalfNormal(that number);
    the floor's learnt s may instead be log-normal around it (floor_deviation_log_sd > 0)."""
    from numpyro.handlers import seed, trace

    from mergelaw.bayes import numpyro_backend

    changes = {setting: scale}
    if log_sd is not None:
        changes["floor_deviation_log_sd"] = log_sd
    spec = dataclasses.replace(load_spec("default"), **changes)
    model, _ = numpyro_backend.model_fn(spec, data)
    sites = trace(seed(model, 0)).get_trace()  # unobserved: the floor deviations are sampled
    spread = sites[deviation]["fn"].base_dist.scale  # Normal(0, s) expanded over curves
    assert sites[deviation]["value"].shape == (len(data.curves),)
    if scale == "fixed":
        assert f"{deviation}_scale" not in sites
        np.testing.assert_allclose(spread, getattr(spec, prior_sd))
        return
    if log_sd:  # log s ~ Normal(log prior_sd, log_sd), s its exp
        raw = sites[f"{deviation}_scale_log"]
        assert raw["fn"].loc == pytest.approx(np.log(getattr(spec, prior_sd)))
        assert raw["fn"].scale == log_sd
        np.testing.assert_allclose(sites[f"{deviation}_scale"]["value"], np.exp(raw["value"]))
    else:
        assert sites[f"{deviation}_scale"]["fn"].scale == getattr(spec, prior_sd)
    np.testing.assert_allclose(spread, sites[f"{deviation}_scale"]["value"])


def test_a_population_per_merge_method_centres_each_family_on_its_methods_mean(data):
    """population = "method" (method_offset's b): one population mean per merge method, one
    scale, each family's raw value drawn around its own method's mean."""
    from numpyro.handlers import seed, trace

    from mergelaw.bayes import numpyro_backend
    from mergelaw.bayes.spec import LOG1P_B_CAP

    spec = load_spec("method_offset")
    assert spec.params["b"].population == "method" and not spec.params["b"].centred
    model, dims = numpyro_backend.model_fn(spec, data)
    sites = trace(seed(model, 1)).get_trace()
    mean, scale, z = (sites[f"b_{s}"]["value"] for s in ("mean", "scale", "z"))
    assert mean.shape == (2,) and dims["b_mean"] == ["merge_method"]
    raw = np.asarray(mean)[data.family_method] + float(scale) * np.asarray(z)
    expected = np.expm1(LOG1P_B_CAP - np.logaddexp(0.0, LOG1P_B_CAP - raw))  # held below the cap
    np.testing.assert_allclose(sites["b"]["value"], expected, rtol=1e-6)
    assert sorted(set(data.family_method)) == [0, 1]  # both methods' means are used


def test_membership_and_floor_deviation_enter_the_mean(data):
    """mean = the law + (in_domain - k/M) gap_c / k^decay, computed independently."""
    t = _truth(data)
    spec = dataclasses.replace(load_spec("default"), floor_deviation_prior_sd=0.0)
    rng = np.random.default_rng(0)
    gap = rng.normal(-0.3, 0.1, len(data.curves))
    decay = rng.uniform(0.3, 1.2, 2)  # one per merge method (average, ties)
    natural = {**t, "gap": gap, "decay": decay}
    spec = dataclasses.replace(spec, parameterisation="natural")
    mu = mean_curve(spec, data, natural, NumpyMath())
    curve = law.mean_loss(
        np.exp(data.log_n), data.k, *[t[n][data.family] for n in law.LAW_PARAM_NAMES]
    )
    share = data.k / data.pool_size
    method = np.array([0 if m == "average" else 1 for m in data.families["method"]])
    offset = (data.in_domain - share) * gap[data.curve] * data.k ** (-decay[method[data.family]])
    np.testing.assert_allclose(mu, curve + offset, rtol=1e-12)
    assert set(np.unique(data.in_domain)) == {0.0, 1.0}


def test_family_labels_carry_method_settings_only_where_needed():
    from mergelaw.bayes.data import family_labels

    families = pd.DataFrame(
        {
            "arch": ["llama"] * 3,
            "method": ["ties", "ties", "average"],
            "method_params": ['{"density": 0.2}', '{"density": 0.5}', "{}"],
            "eval_domain": ["code"] * 3,
        }
    )
    assert family_labels(families) == [
        "llama/ties[density=0.2]/code", "llama/ties[density=0.5]/code", "llama/average/code"
    ]  # fmt: skip


def test_family_labels_name_only_the_parameters_that_tell_settings_apart():
    """A curves table stores every resolved parameter; the label keeps the ones that differ."""
    from mergelaw.bayes.data import family_labels

    resolved = '{{"c": 1.0, "density": {}, "sign_method": "sum", "trim_min_one": true}}'
    families = pd.DataFrame(
        {
            "arch": ["llama"] * 4,
            "method": ["ties", "ties", "dare", "dare"],
            "method_params": [
                resolved.format(0.2),
                resolved.format(0.5),
                '{"p": 0.2}',
                '{"p": 0.2, "rescale": "none"}',
            ],
            "eval_domain": ["code"] * 4,
        }
    )
    assert family_labels(families) == [
        "llama/ties[density=0.2]/code", "llama/ties[density=0.5]/code",
        "llama/dare[]/code", "llama/dare[rescale=none]/code",
    ]  # fmt: skip


def _with_learnt_deviations(spec):
    """The default with the spreads of each curve's drop and bend learnt per
    merge method."""
    return dataclasses.replace(spec, tail_deviation_scale="learnt", offset_deviation_scale="learnt")


@pytest.mark.parametrize(
    "spec_name",
    [
        "default",
        "naive",
        "free_exponent",
        "homoscedastic",
        "method_offset",
        "floor_deviations",
        "learnt_deviations",
    ],
)
def test_pymc_and_numpyro_define_the_same_log_density(data, spec_name):
    """Same spec, same point: the two backends' joint log densities agree to float precision."""
    from numpyro.infer.util import log_density

    from mergelaw.bayes import numpyro_backend, pymc_backend

    if spec_name == "learnt_deviations":
        spec = _with_learnt_deviations(load_spec("default"))
    else:
        spec = load_spec(spec_name)
    model = pymc_backend.build_model(spec, data)
    rng = np.random.default_rng(3)
    point = {}
    for rv in model.free_RVs:
        shape = tuple(model.initial_point()[model.rvs_to_values[rv].name].shape)
        point[rv.name] = np.abs(rng.normal(0.3, 0.2, size=shape)) + 0.01
    values = {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        transform = model.rvs_to_transforms[rv]
        values[value.name] = np.log(point[rv.name]) if transform is not None else point[rv.name]
    pymc_logp = model.compile_logp(jacobian=False)(values)
    numpyro_model, _ = numpyro_backend.model_fn(spec, data)
    numpyro_logp, _ = log_density(numpyro_model, (), {"y": data.y}, point)
    assert np.isfinite(pymc_logp)
    assert float(numpyro_logp) == pytest.approx(float(pymc_logp), rel=1e-9)


def test_anchored_spec_refuses_per_curve_offsets(data):
    from mergelaw.bayes import numpyro_backend
    from mergelaw.bayes.spec import ModelSpec

    bad = ModelSpec(**{**load_spec("default").__dict__, "offset": "curve"})
    with pytest.raises(MergelawError, match="anchored parameterisation needs b and alpha"):
        numpyro_backend.model_fn(bad, data)


@pytest.mark.parametrize(
    "spec_name", ["default", "default_v1", "floor_deviations", "learnt_deviations"]
)
def test_the_samplers_likelihood_is_the_rows_log_density(data, spec_name):
    """What the sampler evaluates (rows summarised per cell; each curve's floor and drop
    deviations integrated out) equals scipy's log density of the rows: independent normals at
    the mean and sd the fit's predictive draws compute per row, and with floor deviations one
    multivariate normal per curve, covariance diag(sd^2) + tau^2 (all rows shift together),
    plus tau_c^2 x x' with tail deviations (x = 1/(k + b_c), the curve's own b)."""
    from numpyro.handlers import seed, substitute, trace
    from scipy import stats

    from mergelaw.bayes import numpyro_backend
    from mergelaw.bayes.data import method_index
    from mergelaw.bayes.predictive import Observations, mean_and_scale

    learnt = spec_name == "learnt_deviations"
    spec = _with_learnt_deviations(load_spec("default")) if learnt else load_spec(spec_name)
    deviations = spec.tail_deviation_prior_sd > 0
    model, _ = numpyro_backend.model_fn(spec, data)
    draw = numpyro_backend.prior_draw(model, seed=4)
    draw.pop("loss")
    deviation = draw.pop("floor_dev", None)
    draw.pop("tail_dev", None)
    sites = trace(substitute(seed(model, 0), data=draw)).get_trace(y=data.y)
    sampled = float(sites["loss"]["fn"].log_prob(sites["loss"]["value"]))
    methods = method_index(data.families)
    values = {name: np.asarray(value)[None] for name, value in draw.items()}
    for name in ("nugget", "decay"):
        if name in values and values[name].ndim == 2:
            values[name] = values[name][:, methods]
    anchors = (spec.drop_from_k, data.k_anchor)
    obs = Observations.from_data(data)
    mean, scale = mean_and_scale(values, obs, spec.spread, len(methods), anchors)
    mean, scale = mean[0], scale[0]
    if deviation is None:
        expected = stats.norm.logpdf(data.y, mean, scale).sum()
    else:
        tau = float(draw.get("floor_dev_scale", spec.floor_deviation_prior_sd))
        expected = 0.0
        for c in range(len(data.curves)):
            rows = data.curve == c
            cov = np.diag(scale[rows] ** 2) + tau**2
            if deviations:
                family = int(data.curves["family"].iloc[c])
                b = (1 + float(draw["b"][family])) * np.exp(float(draw["b_dev"][c])) - 1
                x = 1.0 / (data.k[rows] + b)
                per_drop = 1.0 / (1.0 + b) - 1.0 / (data.k_anchor + b)
                fixed = np.full(int(methods.max()) + 1, spec.tail_deviation_prior_sd)
                drop_sd = draw.get("tail_dev_scale", fixed)
                tau_tail = float(drop_sd[methods[family]]) / per_drop
                cov = cov + tau_tail**2 * np.outer(x, x)
            expected += stats.multivariate_normal.logpdf(data.y[rows], mean[rows], cov)
    assert len(data.cells.first) < len(data.y)
    assert sampled == pytest.approx(expected, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    residual=st.lists(st.floats(-0.2, 0.2), min_size=1, max_size=6),
    log_sd=st.floats(np.log(0.002), np.log(0.1)),
    tau=st.floats(0.005, 0.2),
)
def test_floor_deviation_integrates_out_exactly(residual, log_sd, tau):
    """Evidence and conditional moments against numerical integration over the deviation."""
    from scipy import integrate, stats

    from mergelaw.bayes.model import deviation_conditional, deviation_evidence, deviation_sums

    r = np.asarray(residual)
    sd = np.exp(log_sd) * np.linspace(1.0, 2.0, r.size)
    w = 1.0 / sd**2
    at_zero = stats.norm.logpdf(r, 0.0, sd).sum()
    sums = deviation_sums(w, r, None, np.zeros(r.size, int), 1, _segment_sum)
    (centre, _), (variance, _, _) = deviation_conditional(sums, tau, 1.0)
    centre, variance = float(centre[0]), float(variance[0])

    def density(d, power=0):  # relative to its value at the conditional mean: no underflow
        log = stats.norm.logpdf(r, d, sd).sum() + stats.norm.logpdf(d, 0, tau)
        top = stats.norm.logpdf(r, centre, sd).sum() + stats.norm.logpdf(centre, 0, tau)
        return d**power * np.exp(log - top)

    width = 12 * np.sqrt(variance)
    lo, hi = centre - width, centre + width
    mass = integrate.quad(density, lo, hi, epsabs=0, epsrel=1e-11)[0]
    first = integrate.quad(density, lo, hi, args=(1,), epsabs=0, epsrel=1e-11)[0]
    second = integrate.quad(density, lo, hi, args=(2,), epsabs=0, epsrel=1e-11)[0]
    top = stats.norm.logpdf(r, centre, sd).sum() + stats.norm.logpdf(centre, 0, tau)
    evidence = float(deviation_evidence(sums, tau, 1.0, np)[0])
    assert evidence == pytest.approx(top + np.log(mass) - at_zero, abs=1e-8)
    assert first / mass == pytest.approx(centre, rel=1e-6, abs=1e-9)
    assert second / mass - (first / mass) ** 2 == pytest.approx(variance, rel=1e-5)


def _segment_sum(values, index, n):
    return np.bincount(index, weights=values, minlength=n)


@settings(max_examples=25, deadline=None)
@given(
    residual=st.lists(st.floats(-0.2, 0.2), min_size=2, max_size=8),
    log_sd=st.floats(np.log(0.002), np.log(0.1)),
    tau_floor=st.floats(0.005, 0.2),
    tau_tail=st.floats(0.005, 2.0),
    b=st.floats(-0.5, 12.0),
)
def test_floor_and_tail_deviations_integrate_out_exactly(residual, log_sd, tau_floor, tau_tail, b):
    """With a tail deviation (regressor 1/(k + b)) beside the floor's, the evidence is the
    Gaussian marginal's log density ratio and the conditional is the Gaussian regression's
    posterior, both by dense linear algebra on the rows."""
    from scipy import stats

    from mergelaw.bayes.model import deviation_conditional, deviation_evidence, deviation_sums

    r = np.asarray(residual)
    k = np.arange(1, r.size + 1, dtype=float)
    x = 1.0 / (k + b)
    sd = np.exp(log_sd) * np.linspace(1.0, 2.0, r.size)
    w = 1.0 / sd**2
    sums = deviation_sums(w, r, x, np.zeros(r.size, int), 1, _segment_sum)
    design = np.column_stack([np.ones_like(x), x])
    prior = np.diag([tau_floor**2, tau_tail**2])
    marginal = stats.multivariate_normal(
        np.zeros(r.size), np.diag(sd**2) + design @ prior @ design.T
    )
    reference = marginal.logpdf(r) - stats.norm.logpdf(r, 0.0, sd).sum()
    evidence = float(deviation_evidence(sums, tau_floor, tau_tail, np)[0])
    assert evidence == pytest.approx(reference, abs=1e-6)
    precision = design.T @ (w[:, None] * design) + np.linalg.inv(prior)
    covariance = np.linalg.inv(precision)
    centre = covariance @ design.T @ (w * r)
    (m0, m1), (v00, v01, v11) = deviation_conditional(sums, tau_floor, tau_tail)
    np.testing.assert_allclose([m0[0], m1[0]], centre, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        [v00[0], v01[0], v11[0]], covariance[[0, 0, 1], [0, 1, 1]], rtol=1e-6, atol=1e-12
    )


@pytest.mark.parametrize(
    ("sizes", "learnt"), [((0.5, 3.0, 14.0), False), ((0.5, 1.5, 3.0, 14.0), True)]
)
def test_an_auto_floor_spread_is_learnt_only_beyond_the_floor_laws_parameters(sizes, learnt):
    """With three base sizes a family's three floor parameters fit its floors exactly, so their
    spread off the law is the prior's: 'auto' keeps it fixed there and learns it from four."""
    from mergelaw.bayes.model import FLOOR_LAW_PARAMETERS
    from mergelaw.bayes.numpyro_backend import model_fn

    assert FLOOR_LAW_PARAMETERS == 3
    table = simulate_curves(sizes_b=sizes, domains=("code",), methods=("average",),
                            subsets_per_k=2, seed=0)  # fmt: skip
    spec = dataclasses.replace(
        load_spec("default"), floor_deviation_scale="auto", floor_deviation_log_sd=1.0
    )
    sites = model_fn(spec, prepare(table))[1]
    assert ("floor_dev_scale" in sites) is learnt
    fixed = dataclasses.replace(spec, floor_deviation_scale="fixed")
    assert "floor_dev_scale" not in model_fn(fixed, prepare(table))[1]
    # another arch at three sizes of its own: the table has more sizes, but its families have
    # three each, and every family must over-determine its floor law for the spread to be learnt
    other = simulate_curves(sizes_b=(0.7, 2.0, 9.0), domains=("code",), methods=("average",),
                            subsets_per_k=2, seed=1).assign(arch="llama")  # fmt: skip
    both = prepare(pd.concat([table, other], ignore_index=True))
    assert both.n_sizes == len(sizes) + 3 > FLOOR_LAW_PARAMETERS
    assert "floor_dev_scale" not in model_fn(spec, both)[1]
