"""The paper's fitted parameter tables (Wang et al. 2025), shipped in ``data/paper/``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd

from mergelaw.errors import MergelawError

PaperTableName = Literal["joint_fits", "variance_fits", "two_stage_average"]

#: Qwen2.5 base sizes of the paper, in billions of parameters.
PAPER_SIZES_B: tuple[float, ...] = (0.5, 1.5, 3.0, 7.0, 14.0, 32.0, 72.0)
PAPER_DOMAINS: tuple[str, ...] = (
    "algebra",
    "analysis",
    "biology",
    "chemistry",
    "code",
    "discrete",
    "geometry",
    "number_theory",
    "physics",
)
PAPER_METHODS: tuple[str, ...] = ("average", "task_arithmetic", "ties")
#: Method settings as the paper states them (TIES trim density is not given).
PAPER_METHOD_PARAMS: dict[str, dict] = {
    "average": {},
    "task_arithmetic": {"c": 0.8},
    "ties": {"lambda": 1.0},
}
PAPER_POOL_SIZE = 9


def paper_data_dir() -> Path:
    """Folder holding the tables: the source tree's data/paper, or the copy inside a wheel."""
    source_tree = Path(__file__).resolve().parents[2] / "data" / "paper"
    if source_tree.is_dir():
        return source_tree
    return Path(__file__).resolve().parent / "_data" / "paper"


@cache
def _read(name: str) -> pd.DataFrame:
    path = paper_data_dir() / f"{name}.csv"
    if not path.exists():
        raise MergelawError(f"{path}: paper table not found (expected one of {_names()})")
    return pd.read_csv(path)


def _names() -> str:
    return ", ".join(PaperTableName.__args__)


def paper_table(name: PaperTableName) -> pd.DataFrame:
    """One of the paper's tables as a DataFrame (a fresh copy; see data/paper/PROVENANCE.md)."""
    if name not in PaperTableName.__args__:
        raise MergelawError(f"unknown paper table {name!r} (expected one of {_names()})")
    return _read(name).copy()


def paper_law_params() -> pd.DataFrame:
    """Joint-law parameters per (method, domain), renamed to LawParams names (b0 -> b)."""
    return paper_table("joint_fits").rename(columns={"b0": "b"})


def paper_spread_params() -> pd.DataFrame:
    """The paper's fits of the across-subset variance per (method, domain)."""
    return paper_table("variance_fits")
