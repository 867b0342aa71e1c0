"""mergelaw: plan model merging with a hierarchical Bayesian merging law.

The Python API, the same verbs as the ``mergelaw`` command::

    import mergelaw as ml

    curves = ml.read_curves("curves.parquet")          # read and validate (validate_curves)
    curves = ml.measure_curves("sweep.yaml", "out/")   # or measure them (needs mergelaw[measure])
    fit = ml.fit(curves, draws=1000)                    # NUTS; fit.flag says if it failed checks
    fit.save("fit.nc"); fit = ml.load_fit("fit.nc")
    ml.stopping(fit, n_b=7, epsilon=0.005)              # plan queries take a fit (or its path)
    ml.experts_for_target(fit, 0.9, n_b=7)
    ml.compare_methods(fit, "average", "ties")          # posterior contrasts of two methods
    ml.write_report(fit, "report.html")

Every query returns an ``Answer`` (a tidy table, the fit's flag, provenance, the decision).
Importing ``mergelaw`` loads nothing heavy: each name imports its module on first use, and
measuring imports torch only when it runs.
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mergelaw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from mergelaw.answer import Answer
    from mergelaw.bayes.fit import Fit
    from mergelaw.bayes.posterior import Posterior
    from mergelaw.bayes.spec import ModelSpec

#: Names re-exported from their modules, imported on first use (``mergelaw.X``).
_LAZY: dict[str, str] = {
    "read_curves": "mergelaw.curves",
    "validate_curves": "mergelaw.curves",
    "write_curves": "mergelaw.curves",
    "aggregate_curves": "mergelaw.curves",
    "per_k_means": "mergelaw.expert_effects",
    "simulate_curves": "mergelaw.simulate",
    "read_sweep": "mergelaw.measure.sweep",
    "fit_least_squares": "mergelaw.least_squares",
    "load_spec": "mergelaw.bayes.spec",
    "Fit": "mergelaw.bayes.fit",
    "Posterior": "mergelaw.bayes.posterior",
    "Answer": "mergelaw.answer",
    "CostModel": "mergelaw.plan",
    "MergelawError": "mergelaw.errors",
}

#: The planning queries of ``mergelaw.plan``; through ``mergelaw`` they take a fit, its path or
#: a Posterior as their first argument.
_PLAN_QUERIES = (
    "experts_for_target",
    "stopping",
    "sequential_stop",
    "budget",
    "forecast",
    "forecast_from_points",
)

__all__ = [
    "__version__",
    *_LAZY,
    *_PLAN_QUERIES,
    "compare_methods",
    "fit",
    "load_fit",
    "measure_curves",
    "posterior",
    "write_report",
]


def measure_curves(
    sweep: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    device: str = "auto",
    progress: bool = False,
    executor: Any = None,
) -> pd.DataFrame:
    """Measure the merge-loss curves a sweep file describes into the folder ``out`` and return
    the curves table (also written to ``out/curves.parquet``), as ``mergelaw measure`` does.

    Resumable: finished units in ``out`` are not measured again. The folder is locked while
    this runs, so a second run on it refuses. Needs ``pip install 'mergelaw[measure]'``
    (torch is imported here, not when mergelaw is). ``executor``: None for this process, or a
    ``mergelaw.measure.ray_executor.RayExecutor``.
    """
    from mergelaw.io import folder_lock
    from mergelaw.measure.device import check_device, require_measure_extra
    from mergelaw.measure.sweep import read_sweep, run_sweep

    check_device(device, local=executor is None, option="device")
    spec = read_sweep(sweep)
    require_measure_extra("mergelaw.measure_curves")
    with folder_lock(out, "mergelaw.measure_curves"):
        return run_sweep(spec, out, device=device, progress=progress, executor=executor)


def fit(
    curves: pd.DataFrame | str | os.PathLike[str],
    spec: ModelSpec | str = "default",
    backend: str = "numpyro",
    **options: Any,
) -> Fit:
    """Fit the hierarchical Bayesian merging law to a curves table (or a per-k means table) by
    NUTS and return the ``Fit``; ``curves`` may be a path, read and validated first.

    ``spec``: a model spec name in models/ or a .toml path; ``backend``: 'numpyro' or 'pymc';
    ``options``: draws, tune, chains, seed, target_accept, ... of ``mergelaw.bayes.fit.fit``.
    A fit that fails its diagnostics is returned all the same, flagged (``fit.flag``).
    """
    from mergelaw.bayes.fit import fit as run_fit

    source = "curves table"
    if not hasattr(curves, "columns"):
        from mergelaw.curves import read_curves

        source, curves = str(curves), read_curves(curves)
    options.setdefault("source", source)
    return run_fit(curves, spec, backend, **options)


def load_fit(path: str | os.PathLike[str], **options: Any) -> Fit:
    """Read a fit saved by ``Fit.save`` or ``mergelaw fit``; it is refused (one line) if its
    model spec no longer matches the spec file (see ``Fit.load`` for ``options``)."""
    from mergelaw.bayes.fit import Fit

    return Fit.load(path, **options)


def posterior(
    fit: Fit | Posterior | str | os.PathLike[str], *, pool_size: float | None = None
) -> Posterior:
    """The posterior draws the planning queries work on, from a Fit or a fit's path (a
    Posterior is returned as it is). ``pool_size``: the pool M for the finite-pool spread
    (default: the fitted table's)."""
    from mergelaw.bayes.posterior import Posterior

    if isinstance(fit, Posterior):
        return fit
    if isinstance(fit, str | os.PathLike):
        fit = load_fit(fit)
    return Posterior.from_fit(fit, pool_size=pool_size)


def compare_methods(
    fit: Fit | Posterior | str | os.PathLike[str], method_a: str, method_b: str, **options: Any
) -> Answer:
    """Compare two merge methods of a fit by posterior contrasts A - B (floor, tail amplitude,
    loss at k, experts for a target), with P(A < B) and a region of practical equivalence; the
    decision holds a verdict per quantity. ``options``: those of ``mergelaw.compare.contrasts``
    (sizes_b, k, target, rope, prob, level)."""
    from mergelaw.compare import contrasts

    return contrasts(posterior(fit), method_a, method_b, **options)


def write_report(
    fit: Fit | str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
) -> Path:
    """Write the self-contained HTML report of a fit (a Fit or a fit's path) to ``out``,
    atomically, and return its path. ``options``: targets, epsilon, size_b, level, rope."""
    from pathlib import Path

    from mergelaw.io import atomic_path, check_writable
    from mergelaw.report import build_report
    from mergelaw.report import write_report as write_from_path

    if isinstance(fit, str | os.PathLike):
        return write_from_path(fit, out, **options)
    check_writable(out)
    text = build_report(fit, source="fit", **options)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


def _plan_query(name: str):
    """``mergelaw.plan``'s query ``name``, taking a fit, its path or a Posterior first."""
    query = getattr(importlib.import_module("mergelaw.plan"), name)

    @functools.wraps(query)
    def call(fit, *args: Any, **kwargs: Any):
        return query(posterior(fit), *args, **kwargs)

    call.__doc__ = (
        f"{query.__doc__}\n\nThrough ``mergelaw``, the first argument may also be a Fit or the "
        "path of a saved fit."
    )
    return call


def __getattr__(name: str) -> Any:
    """Import a re-exported name's module on first use (PEP 562), so importing mergelaw stays
    cheap and torch-free."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _PLAN_QUERIES:
        value = _plan_query(name)
    else:
        raise AttributeError(f"module 'mergelaw' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
