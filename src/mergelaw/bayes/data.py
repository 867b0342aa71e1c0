"""From a curves table to the arrays the model needs: indices, sizes, k, observations.

Two forms are accepted: subset rows (the curves table of ``mergelaw.curves``), and per-k means with
standard errors (the paper's form: FAMILY columns, n_params, k, pool_size, mean, se).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd

from mergelaw.curves import FAMILY_COLUMNS, table_hash, validate_curves
from mergelaw.errors import MergelawError, shown
from mergelaw.law import size_in_billions

MEANS_COLUMNS = (*FAMILY_COLUMNS, "n_params", "k", "pool_size", "mean", "se")


@dataclass(frozen=True)
class ModelData:
    form: Literal["subsets", "means"]
    family: np.ndarray  # (n_obs,) family index of each observation
    curve: np.ndarray  # (n_obs,) curve index (family x size)
    x: np.ndarray  # (n_obs,) log(N / N_ref)
    log_n: np.ndarray  # (n_obs,) log N, N in billions
    k: np.ndarray  # (n_obs,) experts merged
    pool_size: np.ndarray  # (n_obs,) M
    in_domain: np.ndarray  # (n_obs,) 1.0 where the subset holds the eval domain's expert
    y: np.ndarray  # (n_obs,) subset loss, or per-k mean loss
    se: np.ndarray | None  # (n_obs,) standard error of a mean (means form only)
    families: pd.DataFrame  # one row per family: FAMILY_COLUMNS, label
    curves: pd.DataFrame  # one row per curve: family index, n_params, label
    n_ref: float  # reference base size, billions (geometric mean of the sizes)
    x_lo: float
    x_hi: float
    k_anchor: float  # the largest k in the table
    data_hash: str
    n_sizes: int = 3

    @cached_property
    def cells(self) -> Cells:
        """The rows grouped by what fixes their mean and noise scale: (curve, k, stratum) for
        subset rows; each row alone for a means table (its se is its own)."""
        if self.form == "means":
            keys = np.arange(len(self.y))
        else:
            keys = np.stack([self.curve, self.k, self.in_domain], axis=1)
        _, first, index = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        return Cells(index=index.reshape(-1), first=first)

    def at_cells(self) -> ModelData:
        """This table's structure with one observation per cell (y: the cell means)."""
        cells, take = self.cells, self.cells.first
        mean, _ = cells.stats(self.y)
        return dataclasses.replace(
            self,
            family=self.family[take],
            curve=self.curve[take],
            x=self.x[take],
            log_n=self.log_n[take],
            k=self.k[take],
            pool_size=self.pool_size[take],
            in_domain=self.in_domain[take],
            y=mean,
            se=None if self.se is None else self.se[take],
        )

    @property
    def size_law(self) -> bool:
        """Whether the table has the >= 3 base sizes the floor's and tail's size laws need."""
        return self.n_sizes >= MIN_SIZES_FOR_SIZE_LAW

    @property
    def family_method(self) -> np.ndarray:
        """Index (into coords['merge_method']) of each family's merge method."""
        return method_index(self.families)

    @property
    def curve_log_n(self) -> np.ndarray:
        """log N (billions) of every curve."""
        return np.log(size_in_billions(self.curves["n_params"].to_numpy(float)))

    @property
    def n_b(self) -> np.ndarray:
        """Base size of every observation, billions."""
        return np.exp(self.log_n)

    @property
    def size_ratio(self) -> np.ndarray:
        """N / N_ref of every observation."""
        return np.exp(self.x)

    @property
    def ratio_lo(self) -> float:
        return float(np.exp(self.x_lo))

    @property
    def ratio_hi(self) -> float:
        return float(np.exp(self.x_hi))

    @property
    def coords(self) -> dict[str, list[str]]:
        return {
            "family": list(self.families["label"]),
            "curve": list(self.curves["label"]),
            "merge_method": merge_methods(self.families),
            "obs": [str(i) for i in range(len(self.y))],
        }


MIN_SIZES_FOR_SIZE_LAW = 3


@dataclass(frozen=True)
class Cells:
    """Rows that share their mean and noise scale. Given the law, the rows of a cell are
    independent normals, so their likelihood depends on the losses only through the count, the
    mean and the within-cell sum of squares: the sampler evaluates the law once per cell (the
    lab table's 15768 rows are 3672 cells)."""

    index: np.ndarray  # (n_obs,) the cell of each row
    first: np.ndarray  # (n_cells,) one row of each cell

    @property
    def count(self) -> np.ndarray:
        return np.bincount(self.index, minlength=len(self.first)).astype(float)

    def stats(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cell: the mean loss and the sum of squared deviations from it."""
        y = np.asarray(y, dtype=float)
        n = len(self.first)
        mean = np.bincount(self.index, weights=y, minlength=n) / self.count
        ss = np.bincount(self.index, weights=(y - mean[self.index]) ** 2, minlength=n)
        return mean, ss


def merge_methods(families: pd.DataFrame) -> list[str]:
    """The 'merge_method' coordinate of per-method parameters: the families' methods, sorted."""
    return sorted(families["method"].unique())


def method_index(families: pd.DataFrame) -> np.ndarray:
    """Each family's merge method as an index into ``merge_methods``."""
    methods = merge_methods(families)
    return np.array([methods.index(m) for m in families["method"]], dtype=int)


def setting_label(method: str, method_params: str | None, keys: set[str]) -> str:
    """A method with those of its parameters named in ``keys``: 'ties[density=0.2]'."""
    params = json.loads(method_params or "{}")
    return method + "[" + ",".join(f"{k}={params[k]}" for k in sorted(keys & params.keys())) + "]"


def distinguishing_params(table: pd.DataFrame) -> dict[str, set[str]]:
    """For each method a table holds with more than one parameter setting, the parameters whose
    values differ between its settings (a curves table stores every resolved parameter)."""
    found = {}
    for method, params in table.groupby("method")["method_params"]:
        settings = [json.loads(p or "{}") for p in params.dropna().unique()]
        if len(settings) > 1:
            keys = set().union(*settings)
            found[method] = {k for k in keys if len({repr(s.get(k)) for s in settings}) > 1}
    return found


def setting_labels(table: pd.DataFrame) -> list[str]:
    """Each row's method, with the parameters that tell its settings apart where the table holds
    it at several ('ties[density=0.5]')."""
    several = distinguishing_params(table)
    return [
        setting_label(m, p, several[m]) if m in several else m
        for m, p in zip(table["method"], table["method_params"])
    ]


def family_labels(families: pd.DataFrame) -> list[str]:
    """Unique labels 'arch/method/eval_domain' of distinct family rows (FAMILY_COLUMNS): the
    method with the parameters that tell its settings apart, where the table holds several."""
    methods = setting_labels(families)
    return [f"{a}/{m}/{d}" for a, m, d in zip(families["arch"], methods, families["eval_domain"])]


def size_law_note(n_sizes: int) -> str | None:
    """The one-line note said when a table is too small for the size laws, else None."""
    if n_sizes >= MIN_SIZES_FOR_SIZE_LAW:
        return None
    return (
        f"{n_sizes} base size(s): no size law (floor, tail amplitude and b per family and size, "
        "pooled across families); queries at another size refuse"
    )


def prepare(table: pd.DataFrame, source: str = "curves table") -> ModelData:
    """Index a curves table (subset rows) or a per-k means table for the model."""
    if "loss" in table.columns:
        table = validate_curves(table, source=source)
        form, y, se = "subsets", table["loss"].to_numpy(float), None
        data_hash = table_hash(table)
    elif "mean" in table.columns:
        table = _validate_means(table, source)
        form, y, se = "means", table["mean"].to_numpy(float), table["se"].to_numpy(float)
        data_hash = _means_hash(table)
    else:
        raise MergelawError(
            f"{source}: neither subset rows (a 'loss' column) nor per-k means ('mean' and 'se')"
        )
    families = table[list(FAMILY_COLUMNS)].drop_duplicates().sort_values(list(FAMILY_COLUMNS))
    families = families.reset_index(drop=True)
    families["label"] = family_labels(families)
    family = table.merge(families.reset_index(), on=list(FAMILY_COLUMNS), how="left")["index"]
    curves = (
        pd.DataFrame({"family": family.to_numpy(), "n_params": table["n_params"].to_numpy()})
        .drop_duplicates()
        .sort_values(["family", "n_params"])
        .reset_index(drop=True)
    )
    curves["label"] = [
        f"{families['label'][f]}@{size_in_billions(n):g}B"
        for f, n in zip(curves["family"], curves["n_params"])
    ]
    curve = pd.DataFrame({"family": family.to_numpy(), "n_params": table["n_params"].to_numpy()})
    curve = curve.merge(curves.reset_index(), on=["family", "n_params"], how="left")["index"]
    sizes = size_in_billions(table["n_params"].to_numpy(float))
    distinct = np.unique(sizes)
    in_domain = (
        table["in_domain"].to_numpy(float) if "in_domain" in table.columns else np.zeros(len(y))
    )
    n_ref = float(np.exp(np.mean(np.log(distinct))))
    x = np.log(sizes / n_ref)
    return ModelData(
        form=form,
        family=family.to_numpy(int),
        curve=curve.to_numpy(int),
        x=x,
        log_n=np.log(sizes),
        k=table["k"].to_numpy(float),
        pool_size=table["pool_size"].to_numpy(float),
        in_domain=in_domain,
        y=y,
        se=se,
        families=families,
        curves=curves,
        n_ref=n_ref,
        x_lo=float(x.min()),
        x_hi=float(x.max()),
        k_anchor=float(table["k"].max()),
        data_hash=data_hash,
        n_sizes=len(distinct),
    )


def _validate_means(table: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in MEANS_COLUMNS if c not in table.columns]
    if missing:
        raise MergelawError(
            f"{source}: missing column '{missing[0]}' (a per-k means table needs: "
            f"{', '.join(MEANS_COLUMNS)})"
        )
    table = table.reset_index(drop=True)
    for column in ("mean", "se", "k", "pool_size", "n_params"):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        zero_ok = column == "se"  # a cell measured exhaustively has no sampling error
        bad = ~np.isfinite(values) | ((values < 0) if zero_ok else (values <= 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise MergelawError(
                f"{source}: column '{column}' row {row}: {shown(table[column][row])} is not a "
                f"finite {'non-negative' if zero_ok else 'positive'} number"
            )
    over = np.flatnonzero(table["k"].to_numpy(float) > table["pool_size"].to_numpy(float))
    if over.size:
        row = int(over[0])
        raise MergelawError(
            f"{source}: row {row}: k = {table['k'][row]} exceeds pool_size = "
            f"{table['pool_size'][row]} (expected 1 <= k <= pool_size)"
        )
    return table


def _means_hash(table: pd.DataFrame) -> str:
    ordered = table.sort_values([*FAMILY_COLUMNS, "n_params", "k"]).reset_index(drop=True)
    hashed = pd.util.hash_pandas_object(ordered[list(MEANS_COLUMNS)], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
