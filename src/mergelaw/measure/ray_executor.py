"""Run a sweep's units of work on a Ray cluster: one actor per worker, one GPU each where there are.

``RayExecutor.map(fn, units)`` starts one Ray actor per worker, hands each the unit function once
(for a sweep, ``SweepWork``: the spec and the tokenized eval text, never the loaded model), and
keeps a couple of units in flight on every worker. A worker loads the base and the task vectors
onto its device at its first unit and reuses them for every later one. Results come back to the
driver in completion order, and the sweep runner writes each into the resumable store as it
arrives.

A worker that dies (killed, out of memory, node lost) is restarted up to ``retries`` times and its
in-flight units are run again on it; nothing from a dead worker is ever yielded, so nothing
half-done is stored. When the retries are used up the map stops with a one-line error; the units
already yielded are stored, and rerunning the sweep measures only what is missing.

Ray is imported only when ``map`` runs: ``pip install 'mergelaw[ray]'``.
"""

from __future__ import annotations

import math
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from mergelaw.errors import MergelawError, first_line

U = TypeVar("U")
R = TypeVar("R")


class RayExecutor:
    """Map units over Ray actors: GPU-aware, context built once per worker, results as they finish.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); ``None``
    joins the cluster this process is already connected to, else ``RAY_ADDRESS``, else starts Ray
    on this machine (shut down again when the map ends).
    workers: how many actors (default: as many as the cluster's resources fit, at most one per
    unit). gpus_per_worker: ``None`` = 1 when the cluster has GPUs, else 0. cpus_per_worker: the
    CPUs each actor reserves (torch uses that many threads). retries: restarts per worker, each
    rerunning its in-flight units; 0 fails at the first death. depth: units in flight per worker.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1.0,
        retries: int = 3,
        depth: int = 2,
    ) -> None:
        if workers is not None and workers < 1:
            raise MergelawError(f"workers = {workers} (expected at least 1 Ray worker)")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise MergelawError(f"gpus per worker = {gpus_per_worker} (expected 0 or more)")
        if cpus_per_worker <= 0:
            raise MergelawError(f"cpus per worker = {cpus_per_worker} (expected more than 0)")
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.retries = max(0, int(retries))
        self.depth = max(1, int(depth))
        self.hosts: list[tuple[str, int]] = []  # (host, pid) of each worker up in the last map

    def map(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R]]:
        """Yield (unit, fn(unit)) for every unit, in the order the workers finish them."""
        units = list(units)
        if not units:
            return
        ray = _import_ray()
        owns = self._connect(ray)
        try:
            yield from self._run(ray, fn, units)
        finally:
            if owns:
                ray.shutdown()

    # ------------------------------------------------------------------------------------------

    def _connect(self, ray: Any) -> bool:
        """Connect (or start Ray here); True when this call started it and must shut it down."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"log_to_driver": False}
        if self.address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False
        try:
            ray.init(address=self.address, **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError, ...
            raise MergelawError(
                f"ray: cannot connect to a cluster at {self.address!r} ({first_line(exc)}); "
                "start one with `ray start --head`, or leave out --address to run Ray here"
            ) from None
        return True

    def _shape(self, ray: Any, n_units: int) -> tuple[int, float, float]:
        """(workers, gpus, cpus per worker) from the alive nodes' resources."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if any(n.get("GPU", 0) >= 1 for n in nodes) else 0.0
        cpus = self.cpus_per_worker
        fit = sum(_fit(n, gpus, cpus) for n in nodes)
        if fit == 0:
            have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
            raise MergelawError(
                f"ray: a worker needs {cpus:g} CPU and {gpus:g} GPU but no node has that "
                f"(nodes: {have or 'none'}); expected --cpus-per-worker/--gpus-per-worker "
                "that fit one node"
            )
        workers = self.workers if self.workers is not None else fit
        return max(1, min(workers, n_units)), gpus, cpus

    def _run(self, ray: Any, fn: Callable, units: list) -> Iterator[tuple[Any, Any]]:
        n_workers, gpus, cpus = self._shape(ray, len(units))
        self.hosts = []
        worker_cls = ray.remote(_Worker).options(
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=self.retries,
            max_task_retries=self.retries,
        )
        fn_box = [ray.put(fn)]  # one copy in the object store; boxed: each worker fetches it once
        actors = [worker_cls.remote() for _ in range(n_workers)]
        queue = deque(units)
        pending: dict[Any, tuple[Any, Any]] = {}  # ref -> (actor, unit; None for "ready")
        for actor in actors:
            pending[actor.ready.remote()] = (actor, None)
        done = 0

        def submit(actor: Any) -> None:
            if queue:
                unit = queue.popleft()
                pending[actor.run.remote(fn_box, unit)] = (actor, unit)

        try:
            while done < len(units):  # a worker that never fits the cluster is not waited for
                [ref], _ = ray.wait(list(pending), num_returns=1)
                actor, unit = pending.pop(ref)
                value = self._get(ray, ref, done, len(units))
                if unit is None:  # the worker is up: fill its pipeline
                    self.hosts.append(value)
                    for _ in range(self.depth):
                        submit(actor)
                    continue
                done += 1
                yield unit, value
                submit(actor)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _get(self, ray: Any, ref: Any, done: int, total: int) -> Any:
        """ray.get, with a worker's own error re-raised as itself and a death as one line."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # fn raised: that error, not Ray's wrapper
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:  # the worker died and its retries are used up
            raise MergelawError(
                f"ray: a worker died ({type(exc).__name__}: {first_line(exc)}) after {done} of "
                f"{total} units finished; finished units are kept, rerun to measure the rest"
            ) from None


class _Worker:
    """One Ray actor: holds the unit function (and so its loaded context) for its lifetime.

    The function arrives boxed in a list with the first unit (a restarted worker fetches it again)
    rather than as a constructor argument, which Ray warns about for restartable actors.
    """

    def __init__(self) -> None:
        self.fn: Callable | None = None

    def ready(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def run(self, fn_box: list, unit: Any) -> Any:
        if self.fn is None:
            import ray

            self.fn = ray.get(fn_box[0])
        return self.fn(unit)


def _fit(node: dict, gpus: float, cpus: float) -> int:
    """How many workers of ``gpus`` GPUs and ``cpus`` CPUs fit on a node (cpus > 0)."""
    by_cpu = math.floor(node.get("CPU", 0) / cpus + 1e-9)
    return by_cpu if gpus == 0 else min(by_cpu, math.floor(node.get("GPU", 0) / gpus + 1e-9))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MergelawError(
            "--executor ray needs Ray on this machine (expected `pip install 'mergelaw[ray]'`)"
        ) from None
    return ray
