"""Calibration machinery: the rank-uniformity test separates uniform from biased ranks, and a
tiny end-to-end run produces ranks and coverage of the right shape."""

import numpy as np
import pandas as pd

from mergelaw.bayes.calibration import CalibrationResult, calibrate, population_names
from mergelaw.bayes.data import prepare
from mergelaw.bayes.spec import load_spec
from mergelaw.simulate import simulate_curves


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
    assert "level_mean" in population_names(load_spec("default"))
    assert population_names(load_spec("unpooled")) == ["nugget", "sigma_slope"]


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
    assert set(result.ranks["param"]) == set(population_names(spec))
    assert result.ranks["rank"].between(0, result.n_draws).all()
    assert set(result.coverage["param"]) == {"L_star", "B", "beta", "A0", "gamma", "b"}
    assert len(result.coverage) == 2 * 2 * 6  # sims x families x parameters
