"""Conditioning on a new pool's points: the Rao-Blackwellised update agrees with brute-force
likelihood weighting of population draws, and a point-mass family stays put."""

import numpy as np
import pandas as pd
import pytest

from mergelaw import law
from mergelaw.bayes.posterior import Posterior
from mergelaw.bayes.update import LOG_2PI, Points, condition
from mergelaw.errors import MergelawError

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


@pytest.mark.parametrize("ks", [(1, 2, 4), (1,)], ids=["three k", "one k"])
def test_population_update_agrees_with_brute_force(ks):
    post = _posterior()
    points = _points(ks)
    mean_ref, quantiles_ref, ess_ref = _brute_force(post, points, 3.0)
    assert ess_ref > 300  # the reference itself is trustworthy
    result = condition(post, points, n_b=3.0, n_proposals=40_000, seed=3)
    assert result.ess > 2000 and result.note() is None
    value = result.curves.mean(9.0)[:, 0]
    spread = quantiles_ref[2] - quantiles_ref[0]
    assert abs(value.mean() - mean_ref) < 0.05 * spread
    np.testing.assert_allclose(
        np.quantile(value, [0.05, 0.5, 0.95]), quantiles_ref, atol=0.08 * spread
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
    assert result.ess == pytest.approx(50)
    np.testing.assert_allclose(result.curves.mean(7.0), post.curves(3.0).mean(7.0))


def test_means_form_and_bad_points():
    means = pd.DataFrame({"k": [1, 2, 4], "mean": [0.45, 0.43, 0.42], "se": [0.01, 0.01, 0.0]})
    p = Points.from_frame(means)
    assert p.se is not None and p.distinct_k == 3
    result = condition(_posterior(200), means, n_b=3.0)
    assert result.curves.n_draws == 200
    with pytest.raises(MergelawError, match="column 'k' row 1"):
        Points.from_frame(pd.DataFrame({"k": [1, 0], "loss": [0.4, 0.4]}))
    with pytest.raises(MergelawError, match="expected columns k and loss"):
        Points.from_frame(pd.DataFrame({"k": [1], "value": [0.4]}))


def test_far_points_are_flagged_by_a_tiny_ess():
    post = _posterior(200)
    points = pd.DataFrame({"k": [1.0, 2.0, 4.0] * 20, "loss": [1.2, 0.8, 0.6] * 20})
    result = condition(post, points, n_b=3.0, n_proposals=2000)
    assert result.ess < 50 and "unreliable" in result.note()
