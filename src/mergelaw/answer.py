"""The one result type of every planning and comparison query, and the summaries it is made of.

An ``Answer`` is a tidy table (one row per quantity and setting: estimate, lower, upper, level and
what the estimate is: a posterior mean, a median, a probability or a decision), the diagnostics
flag of the fit it came from, its provenance (data hash, spec), the decision in words where the
query makes one, and notes (warnings such as a tiny effective sample size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mergelaw.errors import MergelawError
from mergelaw.io import write_json

#: Columns every answer table ends with, in this order.
VALUE_COLUMNS = ("quantity", "stat", "estimate", "lower", "upper", "level")


@dataclass(frozen=True)
class Answer:
    """A query's result: ``table`` (tidy), ``flag`` ('ok' or why the fit failed diagnostics),
    ``provenance``, ``decision`` (query-specific, JSON-ready), ``notes`` and ``summary``: the
    decision in words, one sentence per family or verdict, as the terminal, the report and the
    JSON all show it."""

    query: str
    table: pd.DataFrame
    flag: str
    provenance: dict
    decision: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    summary: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.flag == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes null, infinity the string 'inf'."""
        records = [
            {k: _jsonable(v) for k, v in row.items()} for row in self.table.to_dict("records")
        ]
        return {
            "query": self.query,
            "flag": self.flag,
            "provenance": self.provenance,
            "decision": _jsonable(self.decision),
            "summary": list(self.summary),
            "notes": list(self.notes),
            "table": records,
        }

    def write_json(self, path: str | Path) -> None:
        """Write ``to_dict()`` atomically."""
        write_json(self.to_dict(), path)


def check_level(level: float, what: str = "level") -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise MergelawError(f"{what} {level} is not between 0 and 1")
    return level


def summarize(draws: np.ndarray, level: float, stat: str = "mean") -> dict[str, np.ndarray]:
    """Estimate and central ``level`` interval over axis 0 of ``draws``.

    ``stat`` 'mean' (continuous quantities) or 'median' (counts and sizes, which may be +inf:
    then quantiles are order statistics, never inf - inf). The median is only computed where it
    is the estimate (a selection over every column is most of a summary's time).
    """
    draws = np.asarray(draws, dtype=float)
    if stat not in ("mean", "median"):
        raise ValueError(f"stat {stat!r}")
    tail = (1.0 - level) / 2.0
    finite = bool(np.isfinite(draws).all())
    method = "linear" if finite else "inverted_cdf"
    if stat == "median":
        lower, estimate, upper = np.quantile(draws, [tail, 0.5, 1.0 - tail], axis=0, method=method)
    else:
        lower, upper = np.quantile(draws, [tail, 1.0 - tail], axis=0, method=method)
        estimate = draws.mean(axis=0)
    return {"estimate": estimate, "lower": lower, "upper": upper}


#: A block of table rows: column -> one value per row (``rows``, ``value_rows``; ``frame``
#: stacks blocks into a table). Columns, not row dicts: a table is built in a few list joins.
Block = dict[str, list]


def rows(
    context: dict[str, Any],
    quantity: str,
    draws: np.ndarray,
    level: float,
    stat: str = "mean",
) -> Block:
    """Table rows for ``draws`` (S, ...): one per trailing element, with ``context`` columns
    whose array values run along the trailing elements."""
    summary = summarize(draws, level, stat)
    n = int(np.size(summary["estimate"]))
    return {
        **expand(context, n),
        "quantity": [quantity] * n,
        "stat": [stat] * n,
        "level": [level] * n,
        **{k: np.ravel(v).tolist() for k, v in summary.items()},
    }


def value_rows(
    context: dict[str, Any], quantity: str, values: np.ndarray, stat: str, level: float
) -> Block:
    """Rows of a quantity with no interval (a probability or a decision)."""
    values = np.ravel(np.asarray(values, dtype=float))
    n = values.size
    return {
        **expand(context, n),
        "quantity": [quantity] * n,
        "stat": [stat] * n,
        "estimate": values.tolist(),
        "lower": [math.nan] * n,
        "upper": [math.nan] * n,
        "level": [level] * n,
    }


def frame(blocks: Sequence[Block]) -> pd.DataFrame:
    """A tidy table of blocks of rows, in order: setting columns, then the value columns, then
    probabilities (p_*); a column a block lacks is NaN in its rows."""
    blocks = [block for block in blocks if _length(block)]
    names = list(dict.fromkeys(name for block in blocks for name in block))
    table = pd.DataFrame(
        {
            name: [
                value for block in blocks for value in block.get(name, [math.nan] * _length(block))
            ]
            for name in names
        },
        columns=names,
    )
    probabilities = [c for c in table.columns if c.startswith("p_")]
    settings = [c for c in table.columns if c not in VALUE_COLUMNS and c not in probabilities]
    values = [c for c in VALUE_COLUMNS if c in table.columns]
    return table[settings + values + probabilities]


def expand(context: dict[str, Any], n: int) -> Block:
    """``n`` rows of context columns: a sequence of length n runs along the rows, anything else
    is every row's value."""
    return {k: _column(v, n) for k, v in context.items()}


def _column(value: Any, n: int) -> list:
    if isinstance(value, np.ndarray) and len(value) == n:
        return value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == n:
        return [v.item() if hasattr(v, "item") else v for v in value]
    return [value] * n


def _length(block: Block) -> int:
    return len(next(iter(block.values()), []))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value
