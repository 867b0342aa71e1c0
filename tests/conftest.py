"""Test environment, set before jax/pytensor are imported: `pytest` alone acts like `make test`."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault(
    "PYTENSOR_FLAGS", f"compiledir={Path(__file__).resolve().parents[1] / '.cache' / 'pytensor'}"
)


@pytest.fixture(scope="session")
def plan_table():
    """A small simulated table (3 sizes x 2 domains x 2 methods) for the planning tests."""
    from mergelaw.simulate import simulate_curves

    return simulate_curves(
        sizes_b=(0.5, 3.0, 14.0),
        domains=("code", "biology"),
        methods=("average", "ties"),
        seed=4,
    )


@pytest.fixture(scope="session")
def plan_fit(plan_table):
    """One short real NUTS fit of ``plan_table``: the end-to-end tests that judge a posterior
    (do its answers cover the truth?) use it."""
    from mergelaw.bayes.fit import fit

    return fit(plan_table, seed=5, draws=300, tune=300, chains=2)


@pytest.fixture(scope="session")
def fake_fit(plan_table):
    """A fit of ``plan_table`` made without sampling (``fakes.fake_fit``: the model's posterior
    mode and draws around it), for the tests of what reads fits: CLI, report, queries."""
    from fakes import fake_fit as make

    return make(plan_table, seed=5)


@pytest.fixture(scope="session")
def fake_fit_path(fake_fit, tmp_path_factory):
    """``fake_fit`` saved once, for the tests that read a fit file (CLI, report, API)."""
    path = tmp_path_factory.mktemp("fake_fit") / "fit.nc"
    fake_fit.save(path)
    return path
