"""The curves table: the contract between measurement and fitting.

One row per (merged model, evaluation domain): the token-mean cross-entropy of the model made by
merging the experts in ``subset`` with ``method`` onto ``base_model``, on ``eval_domain``'s held-out
text. ``SCHEMA`` documents every column; ``validate_curves`` enforces it with one-line errors;
``read_curves``/``write_curves`` move tables through parquet (or CSV) atomically;
``aggregate_curves`` gives the per-(curve, k) summaries the law is fitted to.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mergelaw.errors import CurvesTableError, first_line
from mergelaw.io import atomic_path
from mergelaw.merge_methods import METHOD_NAMES

SCHEMA_VERSION = "1"
SUBSET_SEPARATOR = "|"

ColumnKind = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    doc: str


SCHEMA: tuple[Column, ...] = (
    Column("arch", "str", "model family of the base, e.g. 'llama', 'qwen2'"),
    Column("base_model", "str", "name of the base checkpoint the experts were fine-tuned from"),
    Column("n_params", "int", "base size N as a raw parameter count (> 0)"),
    Column("method", "str", "merge method, one of KNOWN_METHODS"),
    Column(
        "method_params", "str", "the method's parameters as a JSON object (e.g. '{\"c\": 0.8}')"
    ),
    Column("pool_size", "int", "M, the number of experts the subset was drawn from (>= 1)"),
    Column("k", "int", "number of experts merged, 1 <= k <= pool_size"),
    Column("subset", "str", "the merged experts' ids, sorted, unique, joined by '|'"),
    Column("subset_id", "str", "subset_key(subset): a stable short hash of the subset"),
    Column("seed", "int", "seed of the merge's randomness (DARE drops) or of the simulation"),
    Column("eval_domain", "str", "domain whose held-out text the loss is measured on"),
    Column("in_domain", "bool", "whether the subset holds the eval domain's own expert"),
    Column("loss", "float", "token-mean cross-entropy on the eval text, nats/token (finite, >= 0)"),
    Column("n_tokens", "int", "number of predicted tokens the loss averages over (>= 1)"),
    Column(
        "eval_set_hash", "str", "hash of the tokenized eval text, so losses compare like with like"
    ),
    Column("package_version", "str", "mergelaw version that wrote the row"),
    Column("timestamp", "str", "when the row was measured, ISO 8601"),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA)

#: The merge methods a table may hold: the registry's (``mergelaw.merge_methods``).
KNOWN_METHODS: tuple[str, ...] = METHOD_NAMES

#: A row's identity: a resumed sweep never writes a second row with the same key.
KEY_COLUMNS: tuple[str, ...] = (
    "arch",
    "base_model",
    "method",
    "method_params",
    "subset",
    "seed",
    "eval_domain",
    "eval_set_hash",
)
#: One merge-loss curve: loss against k for one base, method and eval domain.
CURVE_COLUMNS: tuple[str, ...] = (
    "arch",
    "base_model",
    "n_params",
    "method",
    "method_params",
    "eval_domain",
)
#: One curve family: the curves of one (arch, method, domain) across base sizes N.
FAMILY_COLUMNS: tuple[str, ...] = ("arch", "method", "method_params", "eval_domain")

_EXPECTED = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
}


def format_subset(expert_ids) -> str:
    """Canonical subset string: sorted unique expert ids joined by '|'."""
    ids = sorted({str(e) for e in expert_ids})
    for e in ids:
        if not e or SUBSET_SEPARATOR in e:
            raise CurvesTableError(f"expert id {e!r} must be non-empty and free of '|'")
    return SUBSET_SEPARATOR.join(ids)


def subset_members(subset: str) -> list[str]:
    """Expert ids of a subset string."""
    return subset.split(SUBSET_SEPARATOR)


def subset_key(subset: str) -> str:
    """Stable 12-hex-digit id of a canonical subset string."""
    return hashlib.sha1(subset.encode()).hexdigest()[:12]


def canonical_method_params(params: dict) -> str:
    """JSON text of a method's parameters with sorted keys, so equal settings compare equal."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def validate_curves(table: pd.DataFrame, source: str = "curves table") -> pd.DataFrame:
    """Check ``table`` against the schema and return a copy with normalised dtypes.

    Raises CurvesTableError with one line naming ``source``, the column, the row and the value.
    Extra columns are kept as they are.
    """
    if len(table.columns) == 0 or len(table) == 0:
        raise CurvesTableError(f"{source}: the table is empty (expected at least one row)")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise CurvesTableError(
            f"{source}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (expected columns: {', '.join(COLUMNS)})"
        )
    out = table.reset_index(drop=True).copy()
    for column in SCHEMA:
        out[column.name] = _coerce(out[column.name], column, source)
    _check_values(out, source)
    return out


def _coerce(values: pd.Series, column: Column, source: str) -> pd.Series:
    null = values.isna().to_numpy()
    if null.any():
        _fail(source, column, int(np.argmax(null)), values.iloc[int(np.argmax(null))])
    if column.kind == "str":
        is_text = values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not is_text.all():
            row = int(np.argmin(is_text))
            _fail(source, column, row, values.iloc[row])
        empty = (values.str.len() == 0).to_numpy()
        if empty.any():
            raise CurvesTableError(
                f"{source}: column '{column.name}' row {int(np.argmax(empty))}: "
                "empty text (expected a non-empty value)"
            )
        return values.astype(str)
    if column.kind == "bool":
        return _coerce_bool(values, column, source)
    if pd.api.types.is_bool_dtype(values.dtype):
        _fail(source, column, 0, values.iloc[0])
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        _fail(source, column, int(np.argmax(bad)), values.iloc[int(np.argmax(bad))])
    numbers = numbers.astype(float)
    if column.kind == "int":
        finite = np.isfinite(numbers.to_numpy())
        whole = finite & (numbers.to_numpy() == np.round(numbers.to_numpy()))
        if not whole.all():
            row = int(np.argmin(whole))
            _fail(source, column, row, values.iloc[row])
        return numbers.astype("int64")
    return numbers


def _coerce_bool(values: pd.Series, column: Column, source: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(bool)
    lookup = {"true": True, "false": False, "1": True, "0": False}
    parsed = values.map(lambda v: lookup.get(str(v).strip().lower()))
    bad = parsed.isna().to_numpy()
    if bad.any():
        _fail(source, column, int(np.argmax(bad)), values.iloc[int(np.argmax(bad))])
    return parsed.astype(bool)


def _fail(source: str, column: Column, row: int, value: object) -> None:
    raise CurvesTableError(
        f"{source}: column '{column.name}' row {row}: {_show(value)} is not "
        f"{_EXPECTED[column.kind]} (column '{column.name}' is {column.doc})"
    )


def _show(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "missing value (NaN)"
    if value is None or value is pd.NA or value is pd.NaT:
        return "missing value"
    return repr(value.item() if hasattr(value, "item") else value)


def _row_error(source: str, column: str, row: int, value: object, expected: str) -> None:
    raise CurvesTableError(f"{source}: column '{column}' row {row}: {_show(value)} {expected}")


def _first(mask: pd.Series | np.ndarray) -> int | None:
    mask = np.asarray(mask, dtype=bool)
    return int(np.argmax(mask)) if mask.any() else None


def _check_values(t: pd.DataFrame, source: str) -> None:
    row = _first(~t["method"].isin(KNOWN_METHODS))
    if row is not None:
        _row_error(
            source,
            "method",
            row,
            t["method"][row],
            f"is not a known merge method (expected one of: {', '.join(KNOWN_METHODS)})",
        )
    for row, text in enumerate(t["method_params"]):
        if not _is_json_object(text):
            _row_error(
                source,
                "method_params",
                row,
                text,
                'is not a JSON object (expected e.g. {"c": 0.8})',
            )
    checks = [
        ("n_params", t["n_params"] <= 0, "is not a positive parameter count"),
        ("pool_size", t["pool_size"] < 1, "is not a pool size >= 1"),
        ("k", t["k"] < 1, "is below 1 (expected at least one expert merged)"),
        ("loss", t["loss"].isna(), "is not a finite loss (expected nats/token >= 0)"),
        ("loss", np.isinf(t["loss"]), "is not a finite loss (expected nats/token >= 0)"),
        ("loss", t["loss"] < 0, "is negative (expected a cross-entropy in nats/token >= 0)"),
        ("n_tokens", t["n_tokens"] < 1, "is not a token count >= 1"),
    ]
    for column, mask, expected in checks:
        row = _first(mask)
        if row is not None:
            _row_error(source, column, row, t[column][row], expected)
    row = _first(t["k"] > t["pool_size"])
    if row is not None:
        _row_error(
            source,
            "k",
            row,
            t["k"][row],
            f"exceeds the pool size {t['pool_size'][row]} (expected 1 <= k <= pool_size)",
        )
    _check_subsets(t, source)
    _check_sizes_consistent(t, source)
    duplicated = t.duplicated(list(KEY_COLUMNS), keep="first").to_numpy()
    row = _first(duplicated)
    if row is not None:
        key = tuple(t.loc[row, list(KEY_COLUMNS)])
        key_ids = t.groupby(list(KEY_COLUMNS), sort=False).ngroup().to_numpy()
        first = int(np.flatnonzero(key_ids == key_ids[row])[0])
        raise CurvesTableError(
            f"{source}: row {row} repeats the key of row {first} "
            f"({', '.join(KEY_COLUMNS)} = {key!r}); expected each merged model and eval domain once"
        )


def _check_subsets(t: pd.DataFrame, source: str) -> None:
    members = t["subset"].map(subset_members)
    sizes = members.map(len)
    row = _first(sizes != t["k"])
    if row is not None:
        _row_error(
            source,
            "subset",
            row,
            t["subset"][row],
            f"holds {sizes[row]} experts but k is {t['k'][row]} "
            "(expected k expert ids joined by '|')",
        )
    canonical = members.map(lambda ids: ids == sorted(set(ids)) and all(ids))
    row = _first(~canonical)
    if row is not None:
        _row_error(
            source,
            "subset",
            row,
            t["subset"][row],
            "is not canonical (expected sorted, unique, non-empty expert ids joined by '|')",
        )
    expected_ids = t["subset"].map(subset_key)
    row = _first(expected_ids != t["subset_id"])
    if row is not None:
        _row_error(
            source,
            "subset_id",
            row,
            t["subset_id"][row],
            f"does not match its subset (expected {expected_ids[row]!r} = subset_key(subset))",
        )


def _check_sizes_consistent(t: pd.DataFrame, source: str) -> None:
    sizes = t.groupby("base_model", sort=False)["n_params"].transform("first")
    row = _first(sizes != t["n_params"])
    if row is not None:
        _row_error(
            source,
            "n_params",
            row,
            t["n_params"][row],
            f"differs from {sizes[row]} given earlier for base_model {t['base_model'][row]!r} "
            "(expected one size per base model)",
        )


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


_CSV_TEXT_DTYPES = {c.name: str for c in SCHEMA if c.kind == "str"}


def read_curves(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a curves table from .parquet or .csv."""
    path = Path(path)
    if not path.exists():
        raise CurvesTableError(f"{path}: no such file (expected a curves table, .parquet or .csv)")
    if path.is_dir():
        raise CurvesTableError(f"{path}: is a folder (expected a curves table, .parquet or .csv)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        elif suffix == ".csv":
            table = pd.read_csv(path, dtype=_CSV_TEXT_DTYPES, keep_default_na=False, na_values=[""])
        else:
            raise CurvesTableError(
                f"{path}: unknown file type {suffix or '(none)'!r} (expected .parquet or .csv)"
            )
    except CurvesTableError:
        raise
    except Exception as exc:  # pyarrow and pandas raise many kinds; all mean "unreadable"
        why = first_line(exc)
        raise CurvesTableError(f"{path}: cannot be read as {suffix[1:]}: {why}") from exc
    return validate_curves(table, source=str(path))


def write_curves(table: pd.DataFrame, path: str | os.PathLike[str]) -> pd.DataFrame:
    """Validate ``table`` and write it to ``path`` (.parquet or .csv) atomically; return it."""
    path = Path(path)
    table = validate_curves(table, source=str(path))
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise CurvesTableError(
            f"{path}: unknown file type {suffix or '(none)'!r} (expected .parquet or .csv)"
        )
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            metadata = dict(arrow.schema.metadata or {})
            metadata[b"mergelaw.schema_version"] = SCHEMA_VERSION.encode()
            pq.write_table(arrow.replace_schema_metadata(metadata), tmp)
    return table


def table_hash(table: pd.DataFrame) -> str:
    """Content hash of a curves table, independent of row order: identifies the data a fit saw."""
    ordered = table.sort_values(list(KEY_COLUMNS)).reset_index(drop=True)
    columns = [*KEY_COLUMNS, "n_params", "pool_size", "k", "loss", "n_tokens"]
    hashed = pd.util.hash_pandas_object(ordered[columns], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


AGGREGATE_COLUMNS: tuple[str, ...] = ("mean", "var", "count", "se", "se_fpc")


def aggregate_curves(
    table: pd.DataFrame, by: tuple[str, ...] | list[str] = CURVE_COLUMNS
) -> pd.DataFrame:
    """Per-(group, k) summaries of the loss across subsets.

    Columns: ``by``, k, pool_size, mean, var (across subsets, ddof=1; NaN for one subset), count,
    se = sqrt(var/count), and se_fpc, the standard error with the finite-population correction for
    subsets drawn without replacement from the C(M, k) possible ones (0 when all were measured).
    """
    keys = [*by, "k"]
    grouped = table.groupby(keys, sort=True, observed=True)
    out = grouped["loss"].agg(mean="mean", var="var", count="count").reset_index()
    out["pool_size"] = grouped["pool_size"].max().to_numpy()
    out["se"] = np.sqrt(out["var"] / out["count"])
    possible = np.array([math.comb(int(m), int(k)) for m, k in zip(out["pool_size"], out["k"])])
    fpc = np.clip((possible - out["count"]) / np.maximum(possible - 1, 1), 0.0, 1.0)
    out["se_fpc"] = np.where(possible <= out["count"], 0.0, out["se"] * np.sqrt(fpc))
    return out[[*keys, "pool_size", *AGGREGATE_COLUMNS]]


def read_fit_input(path: str | os.PathLike[str]) -> pd.DataFrame:
    """What a fit reads: a curves table, or (a .csv with 'mean' and no 'loss' column) a per-k
    means table, which ``mergelaw.bayes.data.prepare`` validates."""
    path = Path(path)
    if path.suffix == ".csv" and path.is_file():
        try:
            head = pd.read_csv(path, nrows=1)
            if "mean" in head.columns and "loss" not in head.columns:
                return pd.read_csv(path)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise CurvesTableError(f"{path}: cannot be read as CSV ({first_line(exc)})") from None
    return read_curves(path)


def keep_only(
    table: pd.DataFrame, column: str, wanted: list[str] | None, source: str | os.PathLike[str]
) -> pd.DataFrame:
    """The rows whose ``column`` is one of ``wanted`` (None or empty: all); a value the table
    does not hold is refused, naming the values it does."""
    if not wanted:
        return table
    present = sorted(table[column].astype(str).unique())
    missing = [w for w in wanted if w not in present]
    if missing:
        raise CurvesTableError(
            f"{source}: column {column!r} has no value {missing[0]!r} (values: "
            f"{', '.join(present)})"
        )
    return table[table[column].isin(wanted)].reset_index(drop=True)
