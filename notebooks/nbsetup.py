"""Shared set-up of the notebooks: the checkout's root, fast mode and the sampler settings.

Imported first by every notebook (they run with cwd = notebooks/): it sets XLA_FLAGS before jax
is imported, so NUTS chains run in parallel. ``MERGELAW_NOTEBOOK_FAST=1`` (tests, CI) asks for
short, deliberately under-converged chains and fewer bootstrap fits.
"""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import pandas as pd


def find_root(start: Path) -> Path:
    """The repository root: the first folder upwards holding pyproject.toml and data/curves."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "data" / "curves").is_dir():
            return folder
    raise FileNotFoundError(f"no mergelaw checkout above {start}")


ROOT = find_root(Path.cwd().resolve())
FAST = os.environ.get("MERGELAW_NOTEBOOK_FAST") == "1"
SAMPLER = (
    dict(chains=2, tune=300, draws=200, max_tree_depth=8)
    if FAST
    else dict(chains=4, tune=1000, draws=1000, max_tree_depth=10)
)
N_BOOT = 50 if FAST else 400
SEED = 0
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
