"""One spec, two backends: PyMC and NumPyro posteriors agree (the issue's acceptance check)."""

import numpy as np
import pytest

from mergelaw.bayes.diagnostics import parameter_names
from mergelaw.bayes.fit import fit
from mergelaw.simulate import simulate_curves


@pytest.mark.slow
def test_posterior_means_agree_within_a_tenth_of_a_posterior_sd():
    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0),
        domains=("code", "biology", "physics", "algebra"),
        methods=("average",),
        seed=7,
    )
    settings = {"draws": 2000, "tune": 1000, "chains": 4, "seed": 11}
    by_numpyro = fit(table, "default", "numpyro", **settings)
    by_pymc = fit(table, "default", "pymc", **settings)
    worst = (0.0, "")
    for name in parameter_names(by_numpyro.idata):
        a, b = by_numpyro.draws(name), by_pymc.draws(name)
        sd = np.sqrt((a.var(axis=0) + b.var(axis=0)) / 2)
        gap = np.max(np.abs(a.mean(axis=0) - b.mean(axis=0)) / sd)
        worst = max(worst, (float(gap), name))
    assert worst[0] <= 0.1, f"largest gap {worst[0]:.3f} posterior sd, in {worst[1]}"
