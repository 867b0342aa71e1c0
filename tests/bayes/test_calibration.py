"""Calibration machinery: the rank-uniformity test separates uniform from biased ranks, and a
tiny end-to-end run produces ranks and coverage of the right shape."""

import numpy as np
import pandas as pd
import pytest

from mergelaw.bayes.calibration import (
    SBC_SETTINGS,
    SBC_SPEC,
    SLOW_TEST_SIMS,
    CalibrationResult,
    calibrate,
    population_names,
)
from mergelaw.bayes.data import prepare
from mergelaw.bayes.spec import load_spec
from mergelaw.simulate import sbc_template, simulate_curves


def _result(ranks: np.ndarray, n_draws: int) -> CalibrationResult:
    frame = pd.DataFrame({"sim": range(len(ranks)), "param": "x", "rank": ranks})
    return CalibrationResult(frame, pd.DataFrame(), n_draws, 0.0)


def test_uniformity_test_accepts_uniform_and_rejects_biased_ranks():
    rng = np.random.default_rng(0)
    uniform = _result(rng.integers(0, 100, 2000), 99).uniformity()
    assert uniform["p_value"].iloc[0] > 0.01
    # a posterior that is too narrow puts the truth in the extreme ranks
    extremes = np.concatenate([rng.integers(0, 10, 1000), rng.integers(90, 100, 1000)])
    assert _result(extremes, 99).uniformity()["p_value"].iloc[0] < 1e-6


def test_population_names_follow_the_spec():
    from mergelaw.bayes.numpyro_backend import model_fn

    data = prepare(sbc_template())
    names = population_names(model_fn(load_spec("default"), data)[1])
    assert {"level_mean", "gap_scale", "nugget", "sigma_slope"} <= set(names)
    fixed_spreads = {"noise_dev_scale", "floor_dev_scale", "tail_dev_scale", "b_dev_scale"}
    assert not fixed_spreads & set(names)
    assert "b_mean" not in names and "drop_mean" not in names  # not pooled
    learnt_floors = population_names(model_fn(load_spec("floor_deviations"), data)[1])
    assert {"floor_dev_scale", "drop_mean"} <= set(learnt_floors)
    unpooled = population_names(model_fn(load_spec("unpooled"), data)[1])
    assert sorted(unpooled) == ["nugget", "sigma_slope"]


def test_calibrate_runs_end_to_end():
    template = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0),
        domains=("code", "biology"),
        methods=("average",),
        pool_size=4,
        subsets_per_k=2,
        seed=0,
    )
    spec = load_spec("default")
    result = calibrate(spec, prepare(template), n_sims=2, draws=40, tune=40, chains=2, thin=2)
    assert result.n_draws == 40
    assert "nugget" in set(result.ranks["param"]) and "gap_mean" in set(result.ranks["param"])
    assert result.ranks["rank"].between(0, result.n_draws).all()
    assert set(result.coverage["param"]) == {"L_star", "B", "beta", "A0", "gamma", "b"}
    assert len(result.coverage) == 2 * 2 * 6  # sims x families x parameters


def test_a_shorter_run_is_a_prefix_of_a_longer_one():
    """Each simulation has its own seeds: the slow test's run is the benchmark's first tables."""
    spec = load_spec("default")
    data = prepare(sbc_template())
    short = calibrate(spec, data, n_sims=1, draws=30, tune=30, chains=2, thin=2)
    longer = calibrate(spec, data, n_sims=2, draws=30, tune=30, chains=2, thin=2)
    pd.testing.assert_frame_equal(short.ranks, longer.first(1).ranks)
    pd.testing.assert_frame_equal(short.coverage, longer.first(1).coverage)


@pytest.mark.slow
@pytest.mark.parametrize(
    "one_size",
    [
        pytest.param(False, id="three_sizes"),  # about 21 min on 2 cores: in CI
        # about 10 min more: a study (benchmarks/results/sbc_one_size.txt is its record)
        pytest.param(True, id="one_size", marks=pytest.mark.study),
    ],
)
def test_sbc_ranks_are_uniform_and_group_intervals_cover(one_size):
    """The SLOW_TEST_SIMS tables of benchmarks/sbc.py (same seeds and settings; the benchmark
    prints this test's numbers; --one-size for the one-size template): population ranks
    uniform, 90% intervals of the group parameters covering 85-95% of the truths."""
    template = prepare(sbc_template(one_size=one_size))
    result = calibrate(load_spec(SBC_SPEC), template, n_sims=SLOW_TEST_SIMS, **SBC_SETTINGS)
    assert result.uniformity()["p_value"].min() > 0.001
    assert 0.85 <= result.coverage["covered"].mean() <= 0.95
