"""The ``mergelaw`` command: validate, simulate and fit curves tables.

Every command reports bad input as one line on stderr and exits with code 2; no traceback is shown
unless MERGELAW_DEBUG=1. Outputs are written atomically.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from mergelaw import __version__

app = typer.Typer(
    name="mergelaw",
    help=(
        "Plan model merging with the merging law L(N,k) = L* + B·N^-β + A0·N^-γ/(k+b).\n\n"
        "Start with `mergelaw simulate --out curves.parquet` to get a table shaped like the "
        "paper's, `mergelaw validate curves.parquet` to check a table you measured, and "
        "`mergelaw fit-ls curves.parquet` for the paper's least-squares fit with bootstrap "
        "intervals."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
error_console = Console(stderr=True, soft_wrap=True, highlight=False)

F = TypeVar("F", bound=Callable)


class ScopeChoice(StrEnum):
    joint = "joint"
    curve = "curve"


class IntervalChoice(StrEnum):
    bc = "bc"
    percentile = "percentile"


class WeightingChoice(StrEnum):
    k = "k"
    none = "none"


def one_line_errors(command: F) -> F:
    """Turn any failure into one line on stderr and exit code 2 (MERGELAW_DEBUG=1 re-raises)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("MERGELAW_DEBUG") == "1":
                raise
            from mergelaw.errors import MergelawError

            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, MergelawError | OSError):
                message = f"{type(exc).__name__}: {message}"
            error_console.print(f"error: {message}", markup=False)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _split(text: str | None, convert: Callable[[str], object], what: str) -> list | None:
    if text is None:
        return None
    from mergelaw.errors import MergelawError

    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise MergelawError(f"{what}: empty list (expected comma-separated values)")
    try:
        return [convert(item) for item in items]
    except ValueError:
        raise MergelawError(
            f"{what}: cannot read {text!r} (expected comma-separated values)"
        ) from None


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"mergelaw {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Plan model merging with a Bayesian merging law."""


@app.command()
@one_line_errors
def validate(
    table: Annotated[Path, typer.Argument(help="Curves table, .parquet or .csv.")],
) -> None:
    """Check a curves table against the data contract and summarise it.

    Exits 0 if the table is valid; otherwise prints the first problem (file, column, row, value,
    what was expected) and exits 2.
    """
    from mergelaw.curves import CURVE_COLUMNS, read_curves

    curves = read_curves(table)
    n_curves = curves.groupby(list(CURVE_COLUMNS)).ngroups
    console.print(
        f"ok: {table}: {len(curves)} rows, {n_curves} curves; "
        f"archs {_listing(curves['arch'])}; methods {_listing(curves['method'])}; "
        f"{curves['base_model'].nunique()} base sizes; "
        f"{curves['eval_domain'].nunique()} eval domains; "
        f"k {curves['k'].min()}..{curves['k'].max()}",
        markup=False,
    )


def _listing(values) -> str:
    return ", ".join(sorted(values.unique()))


@app.command()
@one_line_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Where to write the table (.parquet or .csv).")],
    sizes: Annotated[
        str | None,
        typer.Option(
            help="Base sizes in billions, comma-separated. [default: the "
            "paper's 0.5,1.5,3,7,14,32,72]"
        ),
    ] = None,
    domains: Annotated[
        str | None, typer.Option(help="Eval domains, comma-separated. [default: all nine]")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="average, task_arithmetic, ties. [default: all three]")
    ] = None,
    pool_size: Annotated[int, typer.Option(help="M, experts in the pool.")] = 9,
    k_max: Annotated[int | None, typer.Option(help="Largest k. [default: the pool size]")] = None,
    subsets_per_k: Annotated[int, typer.Option(help="Subsets measured per k (all if fewer).")] = 5,
    spread_scale: Annotated[
        float, typer.Option(help="Multiply the paper's across-subset variance by this.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same table.")] = 0,
) -> None:
    """Simulate a curves table from the paper's fitted parameters (a known truth).

    Losses follow the paper's joint law per (method, domain); subset-to-subset spread follows its
    variance fits, shrinking like 1/k with the finite-pool factor (M-k)/(M-1).
    """
    from mergelaw.curves import write_curves
    from mergelaw.simulate import simulate_curves

    k_top = pool_size if k_max is None else k_max
    curves = simulate_curves(
        sizes_b=_split(sizes, float, "--sizes") or (0.5, 1.5, 3.0, 7.0, 14.0, 32.0, 72.0),
        domains=_split(domains, str, "--domains"),
        methods=_split(methods, str, "--methods"),
        k_values=list(range(1, k_top + 1)),
        pool_size=pool_size,
        subsets_per_k=subsets_per_k,
        spread_scale=spread_scale,
        seed=seed,
    )
    write_curves(curves, out)
    console.print(f"wrote {out}: {len(curves)} rows (seed {seed})", markup=False)


@app.command("fit-ls")
@one_line_errors
def fit_ls(
    table: Annotated[Path, typer.Argument(help="Curves table, .parquet or .csv.")],
    scope: Annotated[
        ScopeChoice,
        typer.Option(
            help="joint: one law per (arch, method, domain) across base sizes; "
            "curve: floor + A/(k+b) per base size."
        ),
    ] = ScopeChoice.joint,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap fits per group (resampling subsets).")
    ] = 200,
    level: Annotated[float, typer.Option(help="Interval level.")] = 0.9,
    weighting: Annotated[
        WeightingChoice, typer.Option(help="k: weights ∝ k as in the paper; none: unweighted.")
    ] = WeightingChoice.k,
    interval: Annotated[
        IntervalChoice,
        typer.Option(help="bc: bias-corrected percentile (default); percentile: plain."),
    ] = IntervalChoice.bc,
    seed: Annotated[
        int, typer.Option(help="Bootstrap seed; the same seed gives the same table.")
    ] = 0,
    out_csv: Annotated[
        Path | None, typer.Option(help="Write the long parameter table as CSV.")
    ] = None,
    out_json: Annotated[Path | None, typer.Option(help="Write the same as JSON records.")] = None,
) -> None:
    """Fit the merging law by the paper's weighted least squares, with bootstrap intervals.

    Prints one row per group: each parameter as estimate [lower, upper] and R². This is the
    baseline the Bayesian fits are compared against.
    """
    from rich.progress import Progress

    from mergelaw.bayes.least_squares import fit_least_squares
    from mergelaw.curves import read_curves
    from mergelaw.io import atomic_path, write_json

    curves = read_curves(table)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("fitting", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        fits = fit_least_squares(
            curves,
            scope=scope.value,
            n_boot=n_boot,
            level=level,
            seed=seed,
            weighting=weighting.value,
            interval=interval.value,
            progress=advance,
        )
    _print_fits(fits, scope.value, level)
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            fits.to_csv(tmp, index=False)
        console.print(f"wrote {out_csv}", markup=False)
    if out_json is not None:
        write_json(fits.to_dict(orient="records"), out_json)
        console.print(f"wrote {out_json}", markup=False)


def _register_measure() -> None:
    from mergelaw.measure.command import measure  # imports no torch until the command runs

    app.command("measure")(one_line_errors(measure))


_register_measure()


def _print_fits(fits, scope: str, level: float) -> None:
    from mergelaw.curves import CURVE_COLUMNS, FAMILY_COLUMNS

    shown_always = {"method", "eval_domain", "base_model"}
    group_columns = [
        c
        for c in (FAMILY_COLUMNS if scope == "joint" else CURVE_COLUMNS)
        if c in shown_always or (c not in ("n_params", "method_params") and fits[c].nunique() > 1)
    ]
    if fits.groupby("method")["method_params"].nunique().max() > 1:
        group_columns.insert(group_columns.index("method") + 1, "method_params")
    table = Table(
        title=f"least-squares fit ({scope}), {level:.0%} bootstrap intervals", box=box.SIMPLE_HEAD
    )
    for column in group_columns:
        table.add_column(column.removeprefix("eval_"), no_wrap=True, overflow="ellipsis")
    for column, width in [("param", 6), ("estimate", 8), ("interval", 19), ("bound", 5), ("R²", 5)]:
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    groups = list(fits.groupby(group_columns, sort=False))
    for g, (key, rows) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        for i, row in enumerate(rows.itertuples()):
            table.add_row(
                *(map(str, key) if i == 0 else [""] * len(key)),
                row.param,
                _number(row.estimate),
                f"[{_number(row.lower, 3)}, {_number(row.upper, 3)}]",
                f"{row.boot_on_bound:.0%}",
                f"{row.r2:.3f}" if i == 0 else "",
                end_section=(i == len(rows) - 1 and g < len(groups) - 1),
            )
    console.print(table)
    console.print(
        "bound: share of bootstrap fits with the parameter on its bound (beta, gamma, b >= 0).",
        markup=False,
    )


def _number(value: float, digits: int = 4) -> str:
    """Significant digits; below 1e-8 (an optimiser's rendering of a bound at 0) prints as 0."""
    return "0" if abs(value) < 1e-8 else f"{value:.{digits}g}"
