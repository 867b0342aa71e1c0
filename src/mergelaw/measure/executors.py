"""Executors map the unit of work over units and yield (unit, rows) as units finish.

The sweep runner only needs ``map(fn, units)``; ``fn`` is a picklable ``SweepWork`` that loads
its context (base, task vectors, eval batches) on first use in whichever process runs it.
``SerialExecutor`` runs units here; ``mergelaw.measure.ray_executor.RayExecutor`` ships ``fn`` once
to each Ray worker and yields results as they complete, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

U = TypeVar("U")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R]]: ...


class SerialExecutor:
    """Run units one after another in this process (CPU or one GPU)."""

    def map(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R]]:
        for unit in units:
            yield unit, fn(unit)
