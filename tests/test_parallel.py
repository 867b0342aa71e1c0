"""Threads for large numpy passes: every task runs once, and a task's error reaches the caller."""

import numpy as np
import pytest

from mergelaw.parallel import (
    MIN_PARALLEL_VALUES,
    run_each,
    run_on_row_slices,
    slices_for,
    usable_cores,
)


def test_every_task_runs_once_and_writes_its_own_slice():
    out = np.zeros(50)

    def task(i):
        out[i] += i

    run_each(task, range(50), MIN_PARALLEL_VALUES)
    np.testing.assert_array_equal(out, np.arange(50))
    run_each(task, range(50), 10)  # small work: one thread, the same result
    np.testing.assert_array_equal(out, 2 * np.arange(50))
    run_each(task, [], MIN_PARALLEL_VALUES)  # nothing to do
    assert slices_for(10) == 1
    assert slices_for(MIN_PARALLEL_VALUES) == min(usable_cores(), 8) >= 1


def test_a_tasks_error_reaches_the_caller():
    def task(i):
        if i == 3:
            raise ValueError("task 3")

    with pytest.raises(ValueError, match="task 3"):
        run_each(task, range(6), MIN_PARALLEL_VALUES)


def test_row_slices_cover_every_row_once():
    seen = np.zeros(1003)

    def task(rows):
        seen[rows] += 1

    run_on_row_slices(task, len(seen), MIN_PARALLEL_VALUES)
    run_on_row_slices(task, len(seen), 1)  # small work: one slice
    np.testing.assert_array_equal(seen, 2.0)
