"""Per-k means corrected for the experts the measured subsets hold, checked against the mean over
every subset of the pool, enumerated."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.curves import format_subset
from mergelaw.errors import MergelawError
from mergelaw.expert_effects import EFFECT_DECAYS, per_k_means
from mergelaw.measure.samplers import balanced

EXPERTS = [f"e{i}" for i in range(9)]


def _pool(seed: int, noise: float, m: int = 9, power: float = 0.0, decay: float = 1.0):
    """Every subset of an m-expert pool: loss = mu_k + sum of its experts' effects / k^decay +
    eps, eps's sd noise * k^(-power / 2)."""
    rng = np.random.default_rng(seed)
    effects = dict(zip(EXPERTS[:m], rng.normal(0, 0.2, m)))
    rows = []
    for k in range(1, m + 1):
        for subset in itertools.combinations(EXPERTS[:m], k):
            loss = 3.0 + 0.5 / k + sum(effects[e] for e in subset) / k**decay
            loss += rng.normal(0, noise * k ** (-power / 2))
            rows.append({"k": k, "subset": format_subset(subset), "loss": loss, "pool_size": m})
    return pd.DataFrame(rows)


def _measured(pool: pd.DataFrame, per_k: int, rng) -> pd.DataFrame:
    """Up to ``per_k`` subsets drawn without replacement at each k."""
    parts = [g.sample(min(per_k, len(g)), random_state=rng) for _, g in pool.groupby("k")]
    return pd.concat(parts, ignore_index=True)


def test_additive_losses_give_the_whole_pool_mean_exactly():
    pool = _pool(seed=0, noise=0.0)
    sample = _measured(pool, per_k=6, rng=np.random.default_rng(1))
    raw = sample.groupby("k")["loss"].mean()
    truth = pool.groupby("k")["loss"].mean()
    means = per_k_means(sample).set_index("k")
    np.testing.assert_allclose(means["mean"], truth.loc[means.index], atol=1e-10)
    assert np.abs(raw - truth).max() > 0.01  # the draw was tilted; the correction removed it
    np.testing.assert_allclose(means["se"], 0.0, atol=1e-8)


def test_intervals_cover_the_whole_pool_mean():
    """90% intervals of the corrected means cover the mean over all subsets (noise included)
    about 90% of the time, over pools and draws."""
    inside = []
    for seed in range(60):
        pool = _pool(seed, noise=0.02)
        truth = pool.groupby("k")["loss"].mean()
        sample = _measured(pool, per_k=5, rng=np.random.default_rng(seed + 1000))
        means = per_k_means(sample).set_index("k")
        interior = means.index[(means.index > 1) & (means.index < 8)]  # not all measured
        z = (means.loc[interior, "mean"] - truth.loc[interior]) / means.loc[interior, "se"]
        inside.extend(np.abs(z) <= 1.645)
    assert 0.85 <= np.mean(inside) <= 0.95


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_intervals_follow_a_spread_that_shrinks_with_k(power):
    """Where the residual's variance falls like k^-power (the law's spread across subsets), the
    intervals cover about 90% at small and at large k alike: one variance pooled over k would
    be too narrow at k = 2 and too wide at k = 7."""
    inside = {"small k": [], "large k": []}
    for seed in range(200):
        pool = _pool(seed, noise=0.04, power=power)
        truth = pool.groupby("k")["loss"].mean()
        sample = _measured(pool, per_k=5, rng=np.random.default_rng(seed + 1000))
        means = per_k_means(sample).set_index("k")
        for name, ks in {"small k": [2, 3], "large k": [6, 7]}.items():
            z = (means.loc[ks, "mean"] - truth.loc[ks]) / means.loc[ks, "se"]
            inside[name].extend(np.abs(z) <= 1.645)
    for name, hits in inside.items():
        assert 0.8 <= np.mean(hits) <= 0.97, (name, np.mean(hits))


def test_effects_that_thin_slower_than_one_over_k():
    """TIES keeps much of each expert's weight (an effect over k^0.3, not k): the decay is
    fitted, and the intervals cover about 90% with errors a fraction of those the 1/k of an
    equal merge leaves (its tilt's correction is off by a share of the experts' spread)."""
    inside, errors = [], {"fitted": [], "held at 1/k": []}
    for seed in range(60):
        pool = _pool(seed, noise=0.02, decay=0.3)
        truth = pool.groupby("k")["loss"].mean()
        sample = _measured(pool, per_k=5, rng=np.random.default_rng(seed + 1000))
        for name, decays in {"fitted": EFFECT_DECAYS, "held at 1/k": np.array([1.0])}.items():
            means = per_k_means(sample, decays=decays).set_index("k")
            interior = means.index[(means.index > 1) & (means.index < 8)]
            error = means.loc[interior, "mean"] - truth.loc[interior]
            errors[name].extend(error)
            if name == "fitted":
                inside.extend(np.abs(error / means.loc[interior, "se"]) <= 1.645)
    assert 0.85 <= np.mean(inside) <= 0.95
    rms = {name: np.sqrt(np.mean(np.square(e))) for name, e in errors.items()}
    assert rms["fitted"] < 0.4 * rms["held at 1/k"], rms


@settings(max_examples=25, deadline=None)
@given(m=st.integers(3, 9), seed=st.integers(0, 10_000))
def test_a_balanced_design_keeps_its_means(m, seed):
    """Each expert in exactly k of the m subsets at every k: no tilt to correct."""
    rng = np.random.default_rng(seed)
    effects = dict(zip(EXPERTS[:m], rng.normal(0, 0.2, m)))
    rows = []
    for k, subsets in balanced(EXPERTS[:m], range(1, m + 1), n=1, seed=seed).items():
        for subset in subsets:
            loss = 3.0 + sum(effects[e] for e in subset) / k + rng.normal(0, 0.05)
            rows.append({"k": k, "subset": format_subset(subset), "loss": loss, "pool_size": m})
    rows = pd.DataFrame(rows)
    means = per_k_means(rows).set_index("k")
    np.testing.assert_allclose(means["mean"], rows.groupby("k")["loss"].mean(), atol=1e-10)


def test_too_few_rows_give_the_plain_means():
    pool = _pool(seed=3, noise=0.02)
    sample = pool[pool["k"].isin([1, 2])].groupby("k").head(2)  # 4 rows, 2 levels, 3 effects
    means = per_k_means(sample).set_index("k")
    np.testing.assert_allclose(means["mean"], sample.groupby("k")["loss"].mean())
    plain = sample.groupby("k")["loss"].std() / np.sqrt(2) * np.sqrt([7 / 8, 34 / 35])
    np.testing.assert_allclose(means["se"], plain)


def test_missing_columns_are_named():
    with pytest.raises(MergelawError, match=r"points: expected columns .* missing subset"):
        per_k_means(pd.DataFrame({"k": [1], "loss": [3.0], "pool_size": [9]}))
