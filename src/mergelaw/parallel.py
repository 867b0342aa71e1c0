"""Threads for the planning queries' large numpy passes: numpy releases the GIL in its sorts and
array loops, so independent slices of one result computed side by side use the machine's cores.
Each task writes its own slice, so the result does not depend on how many threads ran it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

#: Most threads a query uses: a planning query's passes are a few MB each.
MAX_THREADS = 8
#: Values below which one thread does the work: starting threads costs more than they save.
MIN_PARALLEL_VALUES = 1 << 16


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def slices_for(n_values: int) -> int:
    """How many slices to share ``n_values`` values of work out in: one per usable core (at
    most MAX_THREADS), or one where the work is small."""
    if n_values < MIN_PARALLEL_VALUES:
        return 1
    return min(usable_cores(), MAX_THREADS)


def run_each(task: Callable[[int], object], items: Iterable[int], n_values: int) -> None:
    """``task(item)`` for every item, on up to ``slices_for(n_values)`` threads (``n_values``:
    the values all the tasks work on); the tasks must not depend on each other. A pool per
    call: a pool kept across calls would not survive a fork."""
    items = list(items)
    workers = min(slices_for(n_values), len(items))
    if workers < 2:
        for item in items:
            task(item)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(task, items):  # re-raises a task's error here
            pass


def run_on_row_slices(task: Callable[[slice], object], n_rows: int, n_values: int) -> None:
    """``task(rows)`` for slices of ``range(n_rows)`` that together cover it, one slice per
    thread ``run_each`` would use for ``n_values`` values of work (one slice where it is small)."""
    parts = slices_for(n_values)
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    run_each(lambda i: task(slice(bounds[i], bounds[i + 1])), range(parts), n_values)
