"""What a fit records beside its draws, typed: the sampler and its settings, the table's shape
(families, curves, anchors), provenance (data hash, spec file, versions) and the predictive
checks. Saved inside the fit's netCDF as JSON; ``FitMeta.from_dict`` also reads fits saved
before a field existed (it takes the field's default)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SamplerSettings:
    """How NUTS was run."""

    draws: int
    tune: int
    chains: int
    seed: int
    target_accept: float
    max_tree_depth: int = 10

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in asdict(self).items())


@dataclass(frozen=True)
class FitMeta:
    """A fit's record. ``families`` and ``curves`` are their tables as column lists (JSON-ready);
    the ``family_table`` and ``curve_table`` properties give them as DataFrames."""

    backend: str
    sampler: str
    settings: SamplerSettings
    data_hash: str
    data_form: str  # 'subsets' (one row per merged model) or 'means' (per-k means with se)
    n_obs: int
    n_ref: float  # the reference base size (geometric mean of the table's, in parameters)
    k_anchor: float  # the table's largest k, where each curve's level is anchored
    pool_size: float
    x_lo: float  # log size range of the table, relative to n_ref
    x_hi: float
    families: dict[str, list]
    curves: dict[str, list]
    wall_time_s: float
    versions: dict[str, str]
    n_sizes: int = 3
    size_law: bool = True
    notes: tuple[str, ...] = ()
    spec_source: str = ""  # the spec file's resolved path ('' for a spec built in code)
    curve_checks: dict[str, list] | None = None  # per-curve predictive checks, once run
    means_misfit: dict[str, float] | None = None  # per merge method, mergelaw.law_misfit

    @property
    def family_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.families)

    @property
    def curve_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.curves)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FitMeta:
        """From ``to_dict``'s JSON; keys a newer version no longer writes are dropped, and a fit
        saved before pool_size was recorded takes its largest k (the pool it was measured on)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["settings"] = SamplerSettings(
            **{k: v for k, v in raw["settings"].items() if k in _SETTING_NAMES}
        )
        values["notes"] = tuple(raw.get("notes", ()))
        values.setdefault("pool_size", raw["k_anchor"])
        values.setdefault("n_sizes", len(set(raw["curves"]["n_params"])))
        return cls(**values)


_SETTING_NAMES = {f.name for f in fields(SamplerSettings)}
