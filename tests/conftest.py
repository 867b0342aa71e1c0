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
    """One short real fit of ``plan_table``, shared by the plan, compare and CLI tests."""
    from mergelaw.bayes.fit import fit

    return fit(plan_table, seed=5, draws=300, tune=300, chains=2)


@pytest.fixture(scope="session")
def plan_fit_path(plan_fit, tmp_path_factory):
    """``plan_fit`` saved once, for the tests that read a fit file (CLI, report)."""
    path = tmp_path_factory.mktemp("plan_fit") / "fit.nc"
    plan_fit.save(path)
    return path
