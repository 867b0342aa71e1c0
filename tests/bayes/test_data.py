"""Cells: rows that share mean and scale, summarised by count, mean and sum of squares."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.bayes.data import Cells, prepare
from mergelaw.simulate import simulate_curves


@settings(max_examples=50, deadline=None)
@given(
    groups=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_cell_stats_are_group_means_and_sums_of_squares(groups, seed):
    keys = np.asarray(groups)
    _, first, index = np.unique(keys, return_index=True, return_inverse=True)
    cells = Cells(index=index, first=first)
    y = np.random.default_rng(seed).normal(3.0, 0.5, len(keys))
    mean, ss = cells.stats(y)
    frame = pd.DataFrame({"cell": index, "y": y}).groupby("cell")["y"]
    np.testing.assert_allclose(mean, frame.mean().to_numpy(), rtol=1e-12)
    expected_ss = frame.apply(lambda v: ((v - v.mean()) ** 2).sum()).to_numpy()
    np.testing.assert_allclose(ss, expected_ss, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(cells.count, frame.size().to_numpy())


def test_a_cell_is_one_curve_k_and_stratum():
    data = prepare(simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=("code",), seed=1))
    cells = data.cells
    for field in ("curve", "k", "in_domain"):
        values = getattr(data, field)
        np.testing.assert_array_equal(values, values[cells.first][cells.index])
    key = pd.DataFrame({"c": data.curve, "k": data.k, "d": data.in_domain})
    assert len(cells.first) == len(key.drop_duplicates())
    at = data.at_cells()
    assert len(at.y) == len(cells.first) and at.k_anchor == data.k_anchor
