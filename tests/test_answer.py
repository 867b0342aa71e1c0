"""Answer tables: blocks of columns stack into the tidy table row dicts would have made."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.answer import expand, frame, rows, summarize, value_rows


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
