"""Predictive draws and per-curve checks against closed forms: the law's mean, the noise model's
scale, chi-square tails for a single exact draw; a curve bent away from the law is caught."""

import numpy as np
import pytest
from scipy import stats

from mergelaw.bayes.predictive import (
    Observations,
    curve_checks,
    mean_and_scale,
    replicate,
    thin_index,
)
from mergelaw.law import mean_loss, spread_factor

LAW = {"L_star": 0.3, "B": 0.2, "beta": 0.4, "A0": 0.08, "gamma": 0.05, "b": 0.5}


def _observations(n_curves: int = 2, rows_per_k: int = 4, pool: int = 9) -> Observations:
    sizes = np.array([0.5, 7.0])[:n_curves]
    k = np.tile(np.repeat(np.arange(1, pool + 1, dtype=float), rows_per_k), n_curves)
    curve = np.repeat(np.arange(n_curves), pool * rows_per_k)
    log_n = np.log(sizes[curve])
    return Observations(
        family=np.zeros_like(curve),
        curve=curve,
        x=log_n - np.log(np.sqrt(sizes.prod())),
        log_n=log_n,
        k=k,
        pool_size=np.full_like(k, pool),
        se=None,
        y=np.zeros_like(k),
    )


def _draws(n_draws: int = 1, sigma: float = 0.02, slope: float = 0.1, nugget: float = 0.003):
    out = {name: np.full((n_draws, 1), value) for name, value in LAW.items()}
    out["sigma"] = np.full((n_draws, 1), sigma)
    out["sigma_slope"] = np.full(n_draws, slope)
    out["nugget"] = np.full(n_draws, nugget)
    return out


def test_mean_and_scale_are_the_law_and_the_noise_model():
    obs = _observations()
    mean, scale = mean_and_scale(_draws(), obs, "finite_pool", 1)
    expected = mean_loss(np.exp(obs.log_n), obs.k, *LAW.values())
    np.testing.assert_allclose(mean[0], expected, rtol=1e-12)
    sigma = 0.02 * np.exp(-0.1 * obs.x)
    factor = (9 - obs.k) / (obs.k * 8)
    np.testing.assert_allclose(scale[0], np.sqrt(sigma**2 * factor + 0.003**2), rtol=1e-12)
    _, scale_k = mean_and_scale(_draws(), obs, "inverse_k", 1)
    np.testing.assert_allclose(
        scale_k[0], np.sqrt(sigma**2 * spread_factor("inverse_k", obs.k, obs.pool_size) + 9e-6)
    )


def test_means_form_uses_the_standard_errors():
    obs = _observations()
    obs = Observations(**{**obs.__dict__, "se": np.full(obs.k.shape, 0.004)})
    _, scale = mean_and_scale(_draws(), obs, "finite_pool", 1)
    np.testing.assert_allclose(scale, np.sqrt(0.004**2 + 0.003**2))


def test_single_draw_p_values_are_chi_square_tails():
    obs = _observations(n_curves=1, rows_per_k=3)
    mean, scale = mean_and_scale(_draws(sigma=0.05), obs, "inverse_k", 1)
    rng = np.random.default_rng(0)
    y = replicate(mean, scale, rng)[0]
    obs = Observations(**{**obs.__dict__, "y": y})
    checks = curve_checks(mean, scale, obs, ["c0"])
    z = (y - mean[0]) / scale[0]
    assert checks["p_rows"][0] == pytest.approx(stats.chi2.sf(np.sum(z**2), z.size))
    by_k = [(y[obs.k == k] - mean[0][obs.k == k]).mean() for k in range(1, 10)]
    sd_k = [np.sqrt(np.sum(scale[0][obs.k == k] ** 2)) / 3 for k in range(1, 10)]
    t_means = np.sum((np.array(by_k) / np.array(sd_k)) ** 2)
    assert checks["p_means"][0] == pytest.approx(stats.chi2.sf(t_means, 9))
    assert checks["rows"][0] == 27 and not checks["misfit"][0]


def test_checks_pass_data_from_the_model_and_catch_a_bent_curve():
    obs = _observations(n_curves=2, rows_per_k=5)
    mean, scale = mean_and_scale(_draws(n_draws=50), obs, "finite_pool", 1)
    y = replicate(mean[:1], scale[:1], np.random.default_rng(1))[0]
    y[obs.curve == 1] += 0.01 * np.abs(obs.k[obs.curve == 1] - 5)  # a bend the law cannot make
    checks = curve_checks(mean, scale, Observations(**{**obs.__dict__, "y": y}), ["ok", "bent"])
    assert list(checks["misfit"]) == [False, True]
    assert checks["p_means"][1] < 1e-6 < checks["p_means"][0]
    assert 0.75 < checks["coverage_90"][0] <= 1.0
    assert checks.attrs["threshold"] == pytest.approx(0.05 / 4)


def test_thin_index_is_even_and_capped():
    assert list(thin_index(10, 4)) == [0, 3, 6, 9]
    assert list(thin_index(3, 1000)) == [0, 1, 2]


def test_membership_and_per_method_nugget_enter_mean_and_scale():
    """In-domain rows sit (1 - k/M) gap/k above the curve, the others -(k/M) gap/k below; a
    per-method nugget (one column per family here) sets the floor of the scale."""
    base = _observations(n_curves=1)
    obs = Observations(**{**base.__dict__, "in_domain": (base.k % 2 == 0).astype(float)})
    draws = _draws() | {"gap": np.full((1, 1), -0.3), "nugget": np.full((1, 1), 0.004)}
    mean, scale = mean_and_scale(draws, obs, "finite_pool", 1)
    curve = mean_loss(np.exp(obs.log_n), obs.k, *LAW.values())
    offset = np.where(obs.in_domain == 1, 1 - obs.k / 9, -obs.k / 9) * -0.3 / obs.k
    np.testing.assert_allclose(mean[0], curve + offset, rtol=1e-12)
    assert scale[0][obs.k == 9] == pytest.approx(0.004)  # the whole pool: the nugget alone
