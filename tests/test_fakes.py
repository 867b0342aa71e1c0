"""The fit made without sampling (tests/fakes.py) is a real fit's double: the same variables with
the same dimensions and coordinates in every group, the same record, and it sits where the
posterior does."""

import numpy as np


def test_the_fake_has_every_variable_of_a_real_fit_in_its_shape(fake_fit, plan_fit):
    for group in ("posterior", "observed_data", "log_likelihood", "constant_data"):
        real, fake = getattr(plan_fit.idata, group), getattr(fake_fit.idata, group)
        assert set(fake.data_vars) == set(real.data_vars), group
        for name in real.data_vars:
            assert fake[name].dims == real[name].dims, (group, name)
            for dim in real[name].dims:
                if dim not in ("chain", "draw"):
                    assert list(fake[dim].values) == list(real[dim].values), (group, dim)
    assert fake_fit.meta.data_hash == plan_fit.meta.data_hash
    assert set(fake_fit.meta.to_dict()) == set(plan_fit.meta.to_dict())
    assert fake_fit.flag == "ok" and fake_fit.meta.sampler.startswith("fake")


def test_the_fake_sits_where_the_posterior_does(fake_fit, plan_fit):
    """Its law (the posterior mode, jittered) lies within the real posterior's spread."""
    real, fake = plan_fit.law_summary(), fake_fit.law_summary()
    merged = real.merge(fake, on=["family", "param"], suffixes=("_real", "_fake"))
    width = merged["upper_real"] - merged["lower_real"]
    off = np.abs(merged["mean_fake"] - merged["mean_real"]) / width
    assert len(merged) == len(real) and off.median() < 0.5, merged.assign(off=off)
