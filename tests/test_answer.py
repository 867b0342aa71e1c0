"""Answer tables: blocks of columns stack into the tidy table row dicts would have made."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.answer import (
    SortedDraws,
    expand,
    frame,
    rows,
    sort_rows,
    summarize,
    value_rows,
)
from mergelaw.parallel import MIN_PARALLEL_VALUES


def test_blocks_stack_into_the_table_of_their_rows():
    """The table of rows built one dict at a time (setting columns first, then the value
    columns, then probabilities; NaN where a row lacks a column) is the table of the blocks."""
    draws = np.random.default_rng(0).standard_normal((50, 3))
    context = {"family": ["a", "b", "c"], "n_b": 3.0, "k": np.array([1.0, 2.0, 4.0])}
    budget = rows(context, "expected loss", draws, 0.9) | {"p_best": [0.5, 0.25, 0.25]}
    table = frame([budget, value_rows(context, "P(x)", [0.1, 0.2, 0.3], "probability", 0.9)])
    summary = summarize(draws, 0.9)
    by_hand = [
        {"family": f, "n_b": 3.0, "k": k, "quantity": "expected loss", "stat": "mean",
         "level": 0.9, "estimate": summary["estimate"][i], "lower": summary["lower"][i],
         "upper": summary["upper"][i], "p_best": [0.5, 0.25, 0.25][i]}
        for i, (f, k) in enumerate(zip("abc", (1.0, 2.0, 4.0)))
    ] + [
        {"family": f, "n_b": 3.0, "k": k, "quantity": "P(x)", "stat": "probability",
         "estimate": p, "lower": math.nan, "upper": math.nan, "level": 0.9}
        for f, k, p in zip("abc", (1.0, 2.0, 4.0), (0.1, 0.2, 0.3))
    ]  # fmt: skip
    expected = pd.DataFrame(by_hand)[
        ["family", "n_b", "k", "quantity", "stat", "estimate", "lower", "upper", "level",
         "p_best"]
    ]  # fmt: skip
    pd.testing.assert_frame_equal(table, expected, check_exact=True)


def test_context_values_run_along_rows_only_when_one_per_row():
    block = expand({"grid": [1, 2], "pair": (1, 2, 3), "name": "x", "k": np.arange(2)}, 2)
    assert block == {"grid": [1, 2], "pair": [(1, 2, 3)] * 2, "name": ["x", "x"], "k": [0, 1]}
    assert frame([rows({"k": [1.0]}, "q", np.zeros((4, 0)), 0.9)]).empty


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 300),
    level=st.floats(0.5, 0.99),
    never=st.floats(0.0, 0.5),
    seed=st.integers(0, 1000),
)
def test_summaries_are_the_quantiles_of_the_draws(n, level, never, seed):
    """The interval is the same with or without the median computed alongside it."""
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((n, 3))
    counts = np.where(
        rng.uniform(size=(n, 3)) < never, np.inf, np.ceil(10 * rng.uniform(size=(n, 3)))
    )
    tail = (1.0 - level) / 2.0
    for values, stat, method in ((draws, "mean", "linear"), (counts, "median", "inverted_cdf")):
        if stat == "median" and np.isfinite(values).all():
            method = "linear"
        lower, median, upper = np.quantile(values, [tail, 0.5, 1 - tail], axis=0, method=method)
        summary = summarize(values, level, stat)
        np.testing.assert_array_equal(summary["lower"], lower)
        np.testing.assert_array_equal(summary["upper"], upper)
        if stat == "median":
            np.testing.assert_array_equal(summary["estimate"], median)
    with pytest.raises(ValueError, match="stat"):
        summarize(draws, level, "mode")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 200),
    columns=st.integers(1, 4),
    special=st.floats(0.0, 0.3),
    seed=st.integers(0, 10_000),
)
def test_sorted_draws_read_numpys_quantiles_and_shares(n, columns, special, seed):
    """Quantiles are np.quantile's value for value (a column holding NaN gives NaN), shares are
    np.mean of the comparison (NaN compares false), with infinities and ties in the draws."""
    rng = np.random.default_rng(seed)
    draws = np.round(rng.standard_normal((n, columns)), 1)  # ties
    pick = rng.uniform(size=draws.shape)
    draws[pick < special] = np.inf
    draws[pick < special / 2] = -np.inf
    draws[pick < special / 6] = np.nan
    ordered = SortedDraws(draws)
    probs = [0.0, 0.05, 0.5, 0.95, 1.0]
    for method in ("linear", "inverted_cdf"):
        with np.errstate(invalid="ignore"):
            expected = np.quantile(draws, probs, axis=0, method=method)
        np.testing.assert_array_equal(ordered.quantiles(probs, method), expected)
    thresholds = rng.choice([-0.5, 0.0, 0.2, np.inf, -np.inf], size=columns)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(
            ordered.share_below(thresholds), np.mean(draws < thresholds, 0)
        )
        np.testing.assert_array_equal(
            ordered.share_below(thresholds, inclusive=True), np.mean(draws <= thresholds, 0)
        )
        np.testing.assert_allclose(
            ordered.share_above(thresholds), np.mean(draws > thresholds, 0), atol=1e-12
        )
    with pytest.raises(ValueError, match="method"):
        ordered.quantiles(probs, "nearest")


def test_sorting_on_threads_is_numpys_sort():
    """Big enough to be shared out over the cores; draws first or last, in place when asked."""
    draws = np.random.default_rng(3).standard_normal((MIN_PARALLEL_VALUES // 4000 + 7, 4000))
    kept = draws.copy()
    assert sort_rows(draws) is draws
    np.testing.assert_array_equal(draws, np.sort(kept, axis=1))
    kept = np.random.default_rng(4).standard_normal((3, 5, 200))
    given = kept.copy()
    ordered = SortedDraws(given, draws_last=True)
    np.testing.assert_array_equal(given, kept)  # a copy unless told to overwrite
    np.testing.assert_array_equal(ordered.quantiles([0.1, 0.9]), np.quantile(kept, [0.1, 0.9], -1))
    np.testing.assert_allclose(ordered.mean, kept.mean(axis=-1))
    in_place = SortedDraws(given, overwrite=True, draws_last=True)
    np.testing.assert_array_equal(given, np.sort(kept, axis=-1))
    np.testing.assert_array_equal(in_place.share_below(0.0), np.mean(kept < 0, axis=-1))
    column = kept[0, 0][:, None]  # one column, (S, 1): its draws are not sorted where they lie
    SortedDraws(column)
    np.testing.assert_array_equal(column[:, 0], kept[0, 0])
