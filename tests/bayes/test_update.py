"""Conditioning on a new pool's points by NUTS: it reproduces importance sampling of its own
prior, agrees with the population where the points look like it, leans on the points where they
do not, and a point-mass family stays put."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mergelaw import law
from mergelaw.bayes.posterior import Posterior
from mergelaw.bayes.spec import load_spec
from mergelaw.bayes.update import (
    CHAINS,
    DRAWS,
    MEANS_MISFIT,
    MIN_CURVATURE,
    PRIOR_DF,
    Points,
    _laplace,
    condition,
    curve_coordinates,
    prior_summary,
)
from mergelaw.errors import MergelawError

LOG_2PI = float(np.log(2.0 * np.pi))

FAMILIES = ["qwen2/average/code"]
TRUTH = {"L_star": 0.28, "B": 0.21, "beta": 0.41, "A0": 0.082, "gamma": 0.137, "b": 0.43}
#: A population of moderate width (raw scale: log for all but gamma), so brute force works.
POPULATION = {
    "level": (np.log(0.45), 0.15),
    "drop": (np.log(0.05), 0.4),
    "floor_drop": (np.log(0.2), 0.3),
    "beta": (np.log(0.4), 0.2),
    "gamma": (0.1, 0.05),
    "b": (np.log(0.4), 0.4),
    "sigma": (np.log(0.03), 0.1),
}


def _posterior(n_draws=2000):
    return Posterior.point_mass(
        FAMILIES,
        TRUTH,
        n_draws=n_draws,
        sigma=0.03,
        nugget=0.003,
        population=POPULATION,
        sizes_b=(0.5, 3.0, 14.0),
        pool_size=9,
        spec="default_v1",  # the population above is on its raw scales (log drop and b)
    )


def _points(ks, n_b=3.0, seed=0, per_k=4):
    rng = np.random.default_rng(seed)
    k = np.repeat(np.asarray(ks, dtype=float), per_k)
    mean = law.mean_loss(n_b, k, *TRUTH.values())
    sd = np.sqrt(0.03**2 * (9 - k) / (k * 8) + 0.003**2)
    return pd.DataFrame({"k": k, "loss": mean + sd * rng.standard_normal(k.size)})


def _brute_force(post, points, n_b, per_draw=200, k_eval=9.0):
    """Population draws weighted by the likelihood: the reference, with no Rao-Blackwellisation."""
    new = post.new_family(per_draw=per_draw, seed=11).curves(n_b)
    p = Points.from_frame(points)
    mu = new.mean(p.k)[:, 0, :]
    var = new.sigma[:, :1] ** 2 * np.maximum((9 - p.k) / (p.k * 8), 0) + new.nugget**2
    log_w = -0.5 * np.sum(LOG_2PI + np.log(var) + (p.y - mu) ** 2 / var, axis=1)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    value = new.mean(k_eval)[:, 0]
    order = np.argsort(value)
    cdf = np.cumsum(w[order])
    quantiles = [value[order][np.searchsorted(cdf, q)] for q in (0.05, 0.5, 0.95)]
    return float(np.sum(w * value)), quantiles, 1.0 / np.sum(w**2)


def _prior_reference(post, points, n_b, size=200_000, k_eval=9.0, seed=4, misfit=MEANS_MISFIT):
    """Draws of the Student-t prior the update summarises the population by (scipy), weighted by
    the likelihood of the points: the posterior NUTS must reproduce."""
    new = post.new_family(per_draw=10, seed=0).curves(n_b)
    p = Points.from_frame(points)
    k_low, k_anchor = p.anchors(post.spec.drop_from_k, post.k_anchor)
    names, fixed, loc, tril = prior_summary(curve_coordinates(new, k_anchor, k_low))
    draws = stats.multivariate_t(loc, tril @ tril.T, df=PRIOR_DF, seed=seed).rvs(size)
    value = {n: np.full(size, v) for n, v in fixed.items()} | dict(zip(names, draws.T))
    b, alpha = np.expm1(value["log1p_b"]), np.exp(value["log_alpha"])
    amplitude = value["drop"] / (1 / (k_low + b) ** alpha - 1 / (k_anchor + b) ** alpha)
    floor = value["level"] - amplitude / (k_anchor + b) ** alpha
    mu = floor[:, None] + amplitude[:, None] / (p.k + b[:, None]) ** alpha[:, None]
    if p.se is None:  # merged models
        var = np.exp(value["log_sigma"])[:, None] ** 2 * (9 - p.k) / (p.k * 8)
        var = var + np.exp(value["log_nugget"])[:, None] ** 2
    else:  # per-k means: their se and the law's misfit
        var = p.se**2 + misfit**2
    log_w = -0.5 * np.sum(np.log(var) + (p.y - mu) ** 2 / var, axis=1)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    target = floor + amplitude / (k_eval + b) ** alpha
    order = np.argsort(target)
    cdf = np.cumsum(w[order])
    return [target[order][np.searchsorted(cdf, q)] for q in (0.05, 0.5, 0.95)]


@pytest.mark.parametrize("ks", [(1, 2, 4), (1,)], ids=["three k", "one k"])
def test_nuts_reproduces_the_posterior_of_its_prior(ks):
    """NUTS against importance sampling of the same Student-t prior (an independent route)."""
    post = _posterior()
    points = _points(ks)
    reference = _prior_reference(post, points, 3.0)
    result = condition(post, points, n_b=3.0, seed=3)
    assert result.ess > 400 and result.rhat < 1.01 and result.divergences == 0
    assert result.note() is None
    value = result.curves.mean(9.0)[:, 0]
    spread = reference[2] - reference[0]
    np.testing.assert_allclose(np.quantile(value, [0.05, 0.5, 0.95]), reference, atol=0.06 * spread)


def _means(ks, n_b=3.0, seed=0):
    """Per-k means of the truth with se from 6 subsets each (0 at k = 1: every expert measured)."""
    k = np.asarray(ks, dtype=float)
    se = np.where(k == 1, 0.0, 0.03 * np.sqrt((9 - k) / (k * 8) / 6))
    noise = se * np.random.default_rng(seed).standard_normal(k.size)
    return pd.DataFrame({"k": k, "mean": law.mean_loss(n_b, k, *TRUTH.values()) + noise, "se": se})


@pytest.mark.parametrize(
    ("ks", "measured"),
    [((1, 2, 4), None), ((2, 4, 6), None), ((1, 2, 4), {"average": 0.004, "ties": 0.02})],
    ids=["1, 2, 4", "2, 4, 6", "1, 2, 4, the fit's misfit"],
)
def test_nuts_on_per_k_means_reproduces_the_posterior_of_its_prior(ks, measured):
    """Per-k means (one exact, at k = 1) read at their own smallest and largest k: NUTS matches
    importance sampling of the same prior with the se² + misfit² likelihood (the misfit the fit
    measured for the points' merge method, else MEANS_MISFIT), without a funnel, and the nugget,
    which means cannot inform, keeps its prior."""
    post = dataclasses.replace(_posterior(), means_misfit=measured)
    means = _means(ks).assign(method="average")
    misfit = MEANS_MISFIT if measured is None else measured["average"]
    reference = _prior_reference(post, means, 3.0, misfit=misfit)
    result = condition(post, means, n_b=3.0, seed=3)
    assert result.misfit == misfit
    assert result.ess > 400 and result.rhat < 1.01 and result.divergences == 0
    value = result.curves.mean(9.0)[:, 0]
    spread = reference[2] - reference[0]
    np.testing.assert_allclose(np.quantile(value, [0.05, 0.5, 0.95]), reference, atol=0.06 * spread)
    prior = post.new_family(per_draw=10, seed=0).curves(3.0).nugget[:, 0]
    np.testing.assert_allclose(np.median(result.curves.nugget), np.median(prior), rtol=0.05)


def test_update_of_points_the_population_expects_matches_the_population():
    """Where the points look like the population, the t summary changes little: the answer
    agrees with plain likelihood weighting of the population's own draws."""
    post = _posterior()
    points = _points((1, 2, 4))
    mean_ref, quantiles_ref, ess_ref = _brute_force(post, points, 3.0)
    assert ess_ref > 300  # the reference itself is trustworthy
    value = condition(post, points, n_b=3.0, seed=3).curves.mean(9.0)[:, 0]
    spread = quantiles_ref[2] - quantiles_ref[0]
    assert abs(value.mean() - mean_ref) < 0.05 * spread
    np.testing.assert_allclose(
        np.quantile(value, [0.05, 0.5, 0.95]), quantiles_ref, atol=0.1 * spread
    )


def test_update_recovers_the_truth_from_precise_points():
    post = _posterior()
    points = _points((1, 2, 4), per_k=40, seed=5)
    result = condition(post, points, n_b=3.0, seed=1)
    value = result.curves.mean(np.arange(5.0, 10.0))[:, 0, :]
    truth = law.mean_loss(3.0, np.arange(5.0, 10.0), *TRUTH.values())
    lower, upper = np.quantile(value, [0.05, 0.95], axis=0)
    assert np.all((lower <= truth) & (truth <= upper))


def test_family_prior_point_mass_is_unchanged():
    post = _posterior(n_draws=50)
    result = condition(post, _points((1, 2)), n_b=3.0, prior="average/code")
    assert result.method == "the prior is a point mass"
    np.testing.assert_allclose(result.curves.mean(7.0), post.curves(3.0).mean(7.0))


def test_means_form_and_bad_points():
    means = pd.DataFrame({"k": [1, 2, 4], "mean": [0.45, 0.43, 0.42], "se": [0.01, 0.01, 0.0]})
    p = Points.from_frame(means)
    assert p.se is not None and p.distinct_k == 3
    result = condition(_posterior(200), means, n_b=3.0)
    assert result.curves.n_draws == CHAINS * DRAWS and result.divergences == 0
    with pytest.raises(MergelawError, match="column 'k' row 1"):
        Points.from_frame(pd.DataFrame({"k": [1, 0], "loss": [0.4, 0.4]}))
    with pytest.raises(MergelawError, match="expected columns k and loss"):
        Points.from_frame(pd.DataFrame({"k": [1], "value": [0.4]}))


def test_merged_models_that_name_their_experts_become_corrected_means():
    """Rows of a curves table (subset, pool_size) enter as per-k means corrected for the
    experts they hold (mergelaw.expert_effects), not as independent merged models."""
    effects = {"a": 0.3, "b": -0.1, "c": -0.1, "d": -0.1}
    subsets = {1: ["a", "b", "c", "d"], 2: ["a|b", "a|c", "b|c"], 3: ["a|b|c", "b|c|d"]}
    rows = pd.DataFrame(
        [{"k": k, "subset": s, "pool_size": 4,
          "loss": 0.4 + 0.1 / k + sum(effects[e] for e in s.split("|")) / k}
         for k, members in subsets.items() for s in members]
    )  # fmt: skip
    p = Points.from_frame(rows)
    assert p.se is not None
    np.testing.assert_allclose(p.y, 0.4 + 0.1 / p.k, atol=1e-12)  # the whole pool's mean
    np.testing.assert_allclose(p.se, 0.0, atol=1e-9)
    with pytest.raises(MergelawError, match="column 'k' row 0"):
        Points.from_frame(rows.assign(k=0))


def test_points_far_from_the_population_lean_on_the_points_and_say_so():
    """Losses three times the population's (scattered as its): the curve goes through them,
    wider than an in-population update, and the answer says the points disagree with the fit."""
    post = _posterior(200)
    ks = np.array([1.0, 2.0, 4.0])
    noise = 0.03 * np.random.default_rng(1).standard_normal(60) / np.sqrt(np.repeat(ks, 20))
    points = pd.DataFrame({"k": np.repeat(ks, 20), "loss": np.repeat([1.2, 0.8, 0.6], 20) + noise})
    far = condition(post, points, n_b=3.0)
    near = condition(post, _points((1, 2, 4), per_k=20), n_b=3.0)
    assert far.divergences == 0 and far.rhat < 1.01
    assert "prior sd from what the fit expects" in far.note()
    np.testing.assert_allclose(far.curves.mean(ks)[:, 0, :].mean(axis=0), [1.2, 0.8, 0.6],
                               atol=0.02)  # fmt: skip
    width = lambda c: np.diff(np.quantile(c.curves.mean(9.0)[:, 0], [0.05, 0.95]))[0]  # noqa: E731
    assert width(far) > 1.5 * width(near)


def test_a_larger_pool_and_k_beyond_it_enter_the_spread():
    """A pool of 16 (the fit's was 9): merged-model rows at k = 9..12 still scatter (with 9
    experts k = 9 is the whole pool), and the forecast's spread at k = 14 is the 16-pool's."""
    post = dataclasses.replace(_posterior(), pool_size=16.0)
    k = np.repeat([1.0, 4.0, 9.0, 12.0], 6)
    rng = np.random.default_rng(2)
    mean = law.mean_loss(3.0, k, *TRUTH.values())
    sd = np.sqrt(0.03**2 * (16 - k) / (k * 15) + 0.003**2)
    points = pd.DataFrame({"k": k, "loss": mean + sd * rng.standard_normal(k.size)})
    result = condition(post, points, n_b=3.0)
    assert result.curves.pool_size == 16.0 and result.divergences == 0
    sd_14 = result.curves.noise_sd(14.0)[:, 0]
    expected = np.sqrt(0.03**2 * 2 / (14 * 15) + 0.003**2)  # with 9 experts: the nugget, 0.003
    assert np.median(sd_14) == pytest.approx(expected, rel=0.15)
    truth = law.mean_loss(3.0, 14.0, *TRUTH.values())
    lower, upper = np.quantile(result.curves.mean(14.0)[:, 0], [0.05, 0.95])
    assert lower <= truth <= upper


def test_the_update_keeps_the_own_expert_gap_its_points_say_nothing_of():
    """Points averaged over subsets do not inform the membership gap: the updated curve keeps
    the population's gap draws, so a random merge's forecast spread still counts whether it
    holds the own expert."""
    spec = load_spec("default")
    population = {name: (spec.params[name].prior_mean, 0.1) for name in POPULATION}
    population |= {"level": (np.log(0.45), 0.15), "drop": (0.05, 0.4), "gap": (-0.2, 0.05)}
    post = Posterior.point_mass(FAMILIES, TRUTH, n_draws=1000, sigma=0.03, nugget=0.003,
                                population=population, sizes_b=(0.5, 3.0, 14.0), pool_size=9,
                                spec=spec)  # fmt: skip
    result = condition(post, _points((1, 2, 4)), n_b=3.0, seed=1)
    gap = result.curves.gap[:, 0]
    assert abs(gap.mean() + 0.2) < 0.01 and abs(gap.std() - 0.05) < 0.01
    random, within = result.curves.noise_sd(4.0), result.curves.in_stratum("with_own").noise_sd(4.0)
    np.testing.assert_allclose(
        random**2 - within**2,
        law.membership_variance(4.0, 9.0, result.curves.gap, result.curves.decay),
    )


def test_the_whitening_finds_the_mode_and_the_curvature():
    """update._laplace on a Gaussian energy 10^10 times stiffer along one direction than along
    another: its mode, and its inverse Hessian with curvatures below MIN_CURVATURE floored (a
    direction the points leave to the prior keeps about the prior's width)."""
    import jax
    import jax.numpy as jnp
    import numpyro

    numpyro.enable_x64()  # as the update's sampler runs
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    curvatures = np.array([1e10, 1.0, 0.01, 3.0])
    precision = jnp.asarray(rotation @ np.diag(curvatures) @ rotation.T)
    mode = jnp.array([0.3, -1.0, 2.0, 0.5])
    energy = lambda z: 0.5 * (z - mode) @ precision @ (z - mode)  # noqa: E731
    found, root = jax.jit(lambda: _laplace(energy, 4))()
    offset = np.asarray(found - mode)
    assert 0.5 * offset @ np.asarray(precision) @ offset < 1e-6
    inverse = np.linalg.inv(np.asarray(root @ root.T))
    floored = np.sort(np.maximum(curvatures, MIN_CURVATURE))
    np.testing.assert_allclose(np.linalg.eigvalsh(inverse), floored, rtol=1e-5)


def test_precise_points_under_a_far_extrapolated_prior_mix():
    """Per-k means 1e-4 apart at a base 1000x below the fitted sizes, where the prior is
    extrapolated to widths 10^4 times the points': in the whitened coordinates the chains mix
    as on a unit normal (unwhitened, NumPyro's regularised mass matrix left ESS 1,984 of 4,000
    here, and trees of ~600 steps a draw on the paper's population asked about lab bases)."""
    post = _posterior()
    n_b = 0.0005
    k = np.array([1.0, 2.0, 4.0])
    means = pd.DataFrame({"k": k, "mean": law.mean_loss(n_b, k, *TRUTH.values()),
                          "se": [0.0, 1e-4, 1e-4]})  # fmt: skip
    result = condition(post, means, n_b=n_b, seed=2)
    assert result.divergences == 0 and result.rhat < 1.01
    assert result.ess > 0.75 * CHAINS * DRAWS
    np.testing.assert_allclose(result.curves.mean(k)[:, 0, :].mean(axis=0), means["mean"],
                               atol=2e-3)  # fmt: skip


@pytest.mark.parametrize(
    "energy",
    [lambda z: -z[0] + 0.5 * z[1] ** 2, lambda z: float("nan") * (z @ z)],
    ids=["falls forever", "nowhere finite"],
)
def test_the_whitening_falls_back_to_the_prior_where_it_finds_no_mode(energy):
    """No mode to find (the energy falls forever along a direction, as the t prior's tails can
    where the points favour b -> infinity) or no finite energy: NUTS runs in the prior's own
    coordinates, centre 0 and scale 1."""
    import jax
    import numpyro

    numpyro.enable_x64()
    centre, root = jax.jit(lambda: _laplace(energy, 2))()
    np.testing.assert_array_equal(centre, 0.0)
    np.testing.assert_array_equal(root, np.eye(2))
