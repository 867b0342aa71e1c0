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
from mergelaw.parallel import run_on_row_slices

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


def summarize(
    draws: np.ndarray | SortedDraws, level: float, stat: str = "mean"
) -> dict[str, np.ndarray]:
    """Estimate and central ``level`` interval over axis 0 of ``draws``.

    ``stat`` 'mean' (continuous quantities) or 'median' (counts and sizes, which may be +inf:
    then quantiles are order statistics, never inf - inf).
    """
    if stat not in ("mean", "median"):
        raise ValueError(f"stat {stat!r}")
    ordered = draws if isinstance(draws, SortedDraws) else SortedDraws(draws)
    tail = (1.0 - level) / 2.0
    method = "linear" if ordered.finite else "inverted_cdf"
    if stat == "median":
        lower, estimate, upper = ordered.quantiles([tail, 0.5, 1.0 - tail], method)
    else:
        lower, upper = ordered.quantiles([tail, 1.0 - tail], method)
        estimate = ordered.mean
    return {"estimate": estimate, "lower": lower, "upper": upper}


class SortedDraws:
    """Draws sorted, once, for the quantiles and shares of every column: the summaries of
    thousands of columns are most of a planning query's time (plan_bench), and numpy sorts all
    columns about twice as fast as np.quantile selects each probability's order statistics.
    Quantiles are np.quantile's, value for value (a column holding NaN gives NaN); shares are
    np.mean of the comparison (NaN compares false). Kept as one contiguous row of draws per
    column: sorting rows is half again as fast as sorting down strided columns."""

    def __init__(
        self, draws: np.ndarray, overwrite: bool = False, draws_last: bool = False
    ) -> None:
        """``draws`` (S, ...), or (..., S) where ``draws_last``; ``overwrite``: sort a C-ordered
        (..., S) ``draws`` in place, the caller giving it up."""
        draws = np.asarray(draws, dtype=float)
        if draws_last:
            self.n, self.shape = draws.shape[-1], draws.shape[:-1]
            rows = draws.reshape(-1, self.n)
            rows = rows if overwrite and rows.flags.c_contiguous else rows.copy()
        else:
            self.n, self.shape = draws.shape[0], draws.shape[1:]
            rows = np.array(draws.reshape(self.n, -1).T, order="C")  # always a copy
        with np.errstate(invalid="ignore"):  # inf - inf: a NaN mean, as np.mean gives
            self.mean = rows.mean(axis=1).reshape(self.shape)
        self.finite = bool(np.isfinite(self.mean).all())  # an inf or NaN anywhere reaches it
        self.sorted = sort_rows(rows)
        self.has_nan = np.isnan(self.sorted[:, -1]) if self.n else np.zeros(len(rows), bool)

    def quantiles(self, probs: Sequence[float], method: str = "linear") -> np.ndarray:
        """``np.quantile(draws, probs, axis=<the draws'>, method=method)``, 'linear' or
        'inverted_cdf': (len(probs), ...)."""
        probs = np.asarray(probs, dtype=float)
        n, ordered = self.n, self.sorted
        if method == "inverted_cdf":  # the smallest draw whose share at or below it reaches p
            index = n * probs - 1.0
            below = np.floor(index)
            pick = np.where(index == below, below, below + 1.0)
            values = ordered[:, np.clip(pick, 0, n - 1).astype(int)]
        elif method == "linear":
            index = (n - 1) * probs
            below = np.clip(np.floor(index), 0, n - 1).astype(int)
            above = np.minimum(below + 1, n - 1)
            weight = index - below
            low, high = ordered[:, below], ordered[:, above]
            with np.errstate(invalid="ignore"):  # inf - inf, as np.quantile meets it
                step = high - low
                # numpy's lerp: from the nearer end, so that a weight of 1 gives the upper value
                values = np.where(weight >= 0.5, high - step * (1.0 - weight), low + step * weight)
        else:
            raise ValueError(f"method {method!r}")
        values[self.has_nan] = np.nan
        return values.T.reshape(len(probs), *self.shape)

    def share_below(self, values: np.ndarray | float, inclusive: bool = False) -> np.ndarray:
        """Per column, the share of draws < ``values`` (<= where ``inclusive``): one value, or
        one per column. A binary search in each sorted row, all rows at once."""
        ordered = self.sorted
        rows = np.arange(len(ordered))
        values = np.broadcast_to(np.asarray(values, dtype=float), rows.shape)
        lo, hi = np.zeros(rows.size, dtype=int), np.full(rows.size, self.n)
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            at = ordered[rows, np.minimum(mid, self.n - 1)]
            below = (at <= values) if inclusive else (at < values)
            active = lo < hi
            lo = np.where(active & below, mid + 1, lo)
            hi = np.where(active & ~below, mid, hi)
        return (lo / max(self.n, 1)).reshape(self.shape)

    def share_above(self, values: np.ndarray | float) -> np.ndarray:
        """Per column, the share of draws > ``values`` (NaN draws are not)."""
        not_nan = self.share_below(np.inf, inclusive=True)
        return not_nan - self.share_below(values, inclusive=True)


def sort_rows(rows: np.ndarray) -> np.ndarray:
    """Sort each row of (m, S) ``rows`` in place, the rows shared out over the cores
    (parallel.run_on_row_slices; each row is sorted alone, so the result is the same whatever the
    split)."""
    run_on_row_slices(lambda part: rows[part].sort(axis=1), len(rows), rows.size)
    return rows


#: A block of table rows: column -> one value per row (``rows``, ``value_rows``; ``frame``
#: stacks blocks into a table). Columns, not row dicts: a table is built in a few list joins.
Block = dict[str, list]


def rows(
    context: dict[str, Any],
    quantity: str,
    draws: np.ndarray | SortedDraws,
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
