"""The ``mergelaw`` command: validate, simulate and fit curves tables; plan and compare from a fit.

Every command reports bad input as one line on stderr (``error: ...``) and exits with code 2; no
traceback is shown unless MERGELAW_DEBUG=1. That holds for what typer refuses too (a missing
option, a value of the wrong type): ``OneLineUsage`` prints those as one line. Numeric options are
checked against one table of ranges per command group (``RANGES`` here) before a command starts;
output paths are checked for writability before any work, and written atomically. Library
warnings and logging (JAX, ArviZ, PyMC, transformers) are silenced unless ``mergelaw --verbose``.

Conventions shared by every command: a list option takes its values comma-separated, repeated, or
both (``parse_values``); a JSON output given as ``-`` goes to stdout, the human-readable output
then to stderr; output to a pipe or file is never wrapped or cut (``output_console``); a missing
optional dependency names the extra that installs it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from mergelaw import __version__
from mergelaw.errors import (
    LIST_SYNTAX,
    MergelawError,
    MissingExtraError,
    Range,
    check_options,
    first_line,
    parse_values,
    plain,
)
from mergelaw.io import is_stdout, output_console

#: Allowed values of the numeric options of the top-level commands (by parameter name).
SEED = Range(0, 2**32 - 1)
LEVEL = Range(0, 1, open_low=True, open_high=True)
POSITIVE = Range(0, open_low=True)
RANGES: dict[str, Range] = {
    "seed": SEED,
    "level": LEVEL,
    "sizes": POSITIVE,  # simulate --sizes (billions)
    "pool_size": Range(2),
    "k_max": Range(1),
    "subsets_per_k": Range(1),
    "spread_scale": Range(0),
    "n_boot": Range(1),
    "draws": Range(1),
    "tune": Range(0),
    "chains": Range(1),
    "target_accept": Range(0, 1, open_low=True, open_high=True),
    "folds": Range(2),
    "target": POSITIVE,  # report --target (losses)
    "epsilon": POSITIVE,
    "size": POSITIVE,
    "rope": Range(0),
}

#: Loggers of the libraries whose warnings stay off stderr unless --verbose.
LIBRARY_LOGGERS = ("jax", "absl", "arviz", "pymc", "pytensor", "numpyro", "transformers",
                   "huggingface_hub", "torch", "matplotlib", "ray")  # fmt: skip
_state = {"verbose": False}


class OneLineUsage(TyperGroup):
    """The root command group: usage errors (missing option, bad value, unknown command) are one
    line ``error: ...`` with exit code 2, like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer._click.ClickException as exc:  # typer's own click
            if type(exc).__name__ != "NoArgsIsHelpError":  # help already printed
                names, ctx = [], getattr(exc, "ctx", None)
                while ctx is not None:
                    names.insert(0, ctx.info_name)
                    ctx = ctx.parent
                command = " ".join(names)
                message = " ".join(exc.format_message().split()).rstrip(".")
                where, hint = (f"{command}: ", f" (see {command} --help)") if names else ("", "")
                error_console.print(f"error: {where}{message}{hint}", markup=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_console.print("error: aborted", markup=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineUsage,
    name="mergelaw",
    help=(
        "Plan model merging with the merging law L(N,k) = L* + B·N^-β + A0·N^-γ/(k+b).\n\n"
        "Start with `mergelaw simulate --out curves.parquet` to get a table shaped like the "
        "paper's, `mergelaw validate curves.parquet` to check a table you measured, and "
        "`mergelaw fit-ls curves.parquet` for the paper's least-squares fit with bootstrap "
        "intervals.\n\n"
        f"List options take values {LIST_SYNTAX} (--k 1,2 --k 4). A JSON output given as - "
        "goes to stdout (the rest to stderr). Output to a pipe or file is never wrapped."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = output_console()
error_console = output_console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

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


def one_line_errors(command: F, ranges: Mapping[str, Range] = RANGES) -> F:
    """Check the command's numeric options against ``ranges`` (its group's table), run it with
    library output quiet (unless --verbose), and turn any failure into one line on stderr and
    exit code 2 (MERGELAW_DEBUG=1 re-raises). List options (their values as typed) are checked
    by the command as it parses them; a missing optional dependency names its extra."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with library_output(_state["verbose"]):
            try:
                scalars = {k: v for k, v in kwargs.items() if not _typed_list(v)}
                check_options(scalars, ranges, option_flags(command))
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except Exception as exc:
                if _debug():
                    raise
                if isinstance(exc, ImportError):
                    exc = MissingExtraError.of(exc, _command_name()) or exc
                message = first_line(exc)
                if not isinstance(exc, MergelawError | OSError):
                    message = f"{type(exc).__name__}: {message}"
                error_console.print(f"error: {plain(message)}", markup=False)
                raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _typed_list(value: object) -> bool:
    """A list option's values as the user typed them (strings, perhaps comma-separated)."""
    return isinstance(value, list | tuple) and any(isinstance(item, str) for item in value)


def _command_name() -> str:
    """The running command as typed (``mergelaw plan stop``); 'this command' outside one."""
    try:
        from typer._click.globals import get_current_context  # typer's own click, as above
    except ImportError:
        return "this command"
    ctx, names = get_current_context(silent=True), []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    return "mergelaw " + " ".join(names) if names else "this command"


@functools.cache
def option_flags(command: Callable) -> dict[str, str]:
    """Parameter name -> the option as the user types it (--json for json_out), from the
    command's typer annotations; arguments by their metavar."""
    flags = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        for info in getattr(hint, "__metadata__", ()):
            if isinstance(info, typer.models.OptionInfo):
                decls = [*info.param_decls]
                if isinstance(info.default, str) and info.default.startswith("-"):
                    decls.insert(0, info.default)
                long = [d.split("/")[0] for d in decls if d.startswith("--")]
                flags[name] = long[0] if long else "--" + name.replace("_", "-")
            elif isinstance(info, typer.models.ArgumentInfo):
                flags[name] = info.metavar or name.upper()
    return flags


@contextlib.contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Silence library warnings, logging below ERROR and transformers' progress bars for the
    duration of a command, unless ``verbose``; restore them afterwards."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    env = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    saved_env = {key: os.environ.get(key) for key in env}
    bars = _transformers_bars(None)
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        for key, value in env.items():
            os.environ.setdefault(key, value)
        _transformers_bars(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
        if bars:
            _transformers_bars(True)


def _transformers_bars(enable: bool | None) -> bool | None:
    """Whether transformers shows progress bars (None: not imported); set it when ``enable`` is
    given. Only touches transformers where a command already imported it."""
    hf = sys.modules.get("transformers.utils.logging")
    if hf is None:
        return None
    if enable is not None:
        (hf.enable_progress_bar if enable else hf.disable_progress_bar)()
    return bool(hf.is_progress_bar_enabled())


def _debug() -> bool:
    return os.environ.get("MERGELAW_DEBUG") == "1"


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
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show library warnings, logging and progress bars (JAX, ArviZ, PyMC, "
            "transformers), which are silenced otherwise.",
        ),
    ] = False,
) -> None:
    """Plan model merging with a Bayesian merging law."""
    _state["verbose"] = verbose or _debug()


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
        list[str] | None,
        typer.Option(
            metavar="N,...",
            help=f"Base sizes in billions, {LIST_SYNTAX}. (default: the "
            "paper's 0.5,1.5,3,7,14,32,72)",
        ),
    ] = None,
    domains: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DOMAIN,...", help=f"Eval domains, {LIST_SYNTAX}. (default: all nine)"
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            metavar="METHOD,...",
            help=f"Methods (average, task_arithmetic, ties), {LIST_SYNTAX}. (default: all three)",
        ),
    ] = None,
    pool_size: Annotated[int, typer.Option(help="M, experts in the pool.")] = 9,
    k_max: Annotated[int | None, typer.Option(help="Largest k. (default: the pool size)")] = None,
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
    from mergelaw.errors import MergelawError
    from mergelaw.io import check_writable
    from mergelaw.simulate import simulate_curves

    if out.suffix not in (".parquet", ".csv"):
        raise MergelawError(f"--out {out}: expected a .parquet or .csv path")
    check_writable(out)
    if k_max is not None and k_max > pool_size:
        raise MergelawError(f"--k-max {k_max}: expected at most --pool-size ({pool_size})")
    sizes_b = parse_values(sizes, float, "--sizes", RANGES["sizes"])
    curves = simulate_curves(
        sizes_b=sizes_b or (0.5, 1.5, 3.0, 7.0, 14.0, 32.0, 72.0),
        domains=parse_values(domains, str, "--domains"),
        methods=parse_values(methods, str, "--methods"),
        k_values=list(range(1, (pool_size if k_max is None else k_max) + 1)),
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
        Path | None,
        typer.Option(help="Write the long parameter table as CSV (- for stdout)."),
    ] = None,
    out_json: Annotated[
        Path | None, typer.Option(help="Write the same as JSON records (- for stdout).")
    ] = None,
) -> None:
    """Fit the merging law by the paper's weighted least squares, with bootstrap intervals.

    Prints one row per group: each parameter as estimate [lower, upper] and R². This is the
    baseline the Bayesian fits are compared against. With --out-csv - or --out-json -, that
    output goes to stdout and the table to stderr.
    """
    from rich.progress import Progress

    from mergelaw.bayes.least_squares import fit_least_squares
    from mergelaw.curves import read_curves
    from mergelaw.io import atomic_path, check_writable, write_json

    if is_stdout(out_csv) and is_stdout(out_json):
        raise MergelawError("--out-csv - and --out-json -: only one output can go to stdout")
    for path in (out_csv, out_json):
        if path is not None and not is_stdout(path):
            check_writable(path)
    shown = error_console if is_stdout(out_csv) or is_stdout(out_json) else console
    curves = read_curves(table)
    # a bar only on a terminal: elsewhere rich's transient bar leaves a blank line on stderr
    quiet = not error_console.is_terminal
    with Progress(console=error_console, transient=True, disable=quiet) as progress:
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
    _print_fits(fits, scope.value, level, shown)
    if is_stdout(out_csv):
        fits.to_csv(sys.stdout, index=False)
    elif out_csv is not None:
        with atomic_path(out_csv) as tmp:
            fits.to_csv(tmp, index=False)
        shown.print(f"wrote {out_csv}", markup=False)
    if out_json is not None:
        write_json(fits.to_dict(orient="records"), out_json)
        if not is_stdout(out_json):
            shown.print(f"wrote {out_json}", markup=False)


class BackendChoice(StrEnum):
    numpyro = "numpyro"
    pymc = "pymc"


class SamplerChoice(StrEnum):
    pymc = "pymc"
    nutpie = "nutpie"
    numpyro = "numpyro"


@app.command()
@one_line_errors
def fit(
    table: Annotated[Path, typer.Argument(help="Curves table (.parquet/.csv), or per-k means.")],
    out: Annotated[Path, typer.Option(help="Where to write the fit (netCDF, .nc).")],
    spec: Annotated[
        str,
        typer.Option(
            help="Model spec: a name in models/ (the file's stem: default, or a variant the "
            "README lists) or a .toml path."
        ),
    ] = "default",
    backend: Annotated[BackendChoice, typer.Option(help="numpyro (parallel chains) or pymc.")] = (
        BackendChoice.numpyro
    ),
    sampler: Annotated[
        SamplerChoice | None,
        typer.Option(help="With --backend pymc: pymc, nutpie or numpyro. (default: pymc)"),
    ] = None,
    draws: Annotated[int, typer.Option(help="Draws per chain after warm-up.")] = 1000,
    tune: Annotated[int, typer.Option(help="Warm-up draws per chain.")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains (one XLA host device each).")] = 4,
    target_accept: Annotated[
        float | None,
        typer.Option(help="NUTS target acceptance. (default: the spec's, else 0.99)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same posterior.")] = 0,
    arch: Annotated[
        list[str] | None,
        typer.Option(metavar="ARCH,...", help=f"Fit only the rows of these archs, {LIST_SYNTAX}."),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            metavar="METHOD,...", help=f"Fit only the rows of these methods, {LIST_SYNTAX}."
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(metavar="DOMAIN,...", help=f"Fit only these eval domains, {LIST_SYNTAX}."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Exit with code 1 if the fit is flagged (it is saved all the same)."
        ),
    ] = False,
) -> None:
    """Fit the hierarchical Bayesian merging law; print the parameters and the diagnostics.

    A fit that misses a diagnostic threshold (R-hat <= 1.01, bulk/tail ESS >= 400, no
    divergences, tree depth not saturated, BFMI >= 0.3) is saved all the same, but flagged: the
    flag is printed here and travels with every answer made from the fit. With --strict a
    flagged fit also ends the command with exit code 1, for scripts and CI.
    """
    from mergelaw.bayes.fit import fit as run_fit
    from mergelaw.bayes.spec import load_spec
    from mergelaw.curves import read_curves
    from mergelaw.errors import MergelawError
    from mergelaw.io import check_writable

    if out.suffix != ".nc":
        raise MergelawError(f"--out {out}: a fit is written as netCDF (expected a .nc path)")
    if sampler is not None and backend != BackendChoice.pymc:
        raise MergelawError(f"--sampler {sampler.value}: needs --backend pymc")
    check_writable(out)
    model_spec = load_spec(spec)
    curves = _read_fit_input(table, read_curves)
    filters = {"arch": (arch, "--arch"), "method": (method, "--method")}
    filters["eval_domain"] = (domain, "--domain")
    for column, (wanted, option) in filters.items():
        curves = _only(curves, column, parse_values(wanted, str, option), table)
    result = run_fit(
        curves,
        model_spec,
        backend.value,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept,
        progress=progress,
        sampler=(sampler or SamplerChoice.pymc).value,
        source=str(table),
    )
    result.save(out)
    for note in result.meta.get("notes", []):
        console.print(f"note: {note}", markup=False)
    _print_law_summary(result)
    _print_diagnostics(result)
    console.print(f"wrote {out}", markup=False)
    if strict and not result.diagnostics.ok:
        error_console.print(f"flagged (--strict): {out} is saved; exit code 1", markup=False)
        raise typer.Exit(code=1)


def _only(curves, column: str, wanted: list[str] | None, source: Path):
    """The rows whose ``column`` is one of ``wanted`` (None: all); unknown values are refused."""
    from mergelaw.errors import MergelawError

    if not wanted:
        return curves
    present = sorted(curves[column].astype(str).unique())
    missing = [w for w in wanted if w not in present]
    if missing:
        raise MergelawError(
            f"{source}: column {column!r} has no value {missing[0]!r} (values: "
            f"{', '.join(present)})"
        )
    return curves[curves[column].isin(wanted)].reset_index(drop=True)


def _read_fit_input(table: Path, read_curves):
    """A curves table, or (a .csv with 'mean' and no 'loss' column) a per-k means table, which
    ``prepare`` validates."""
    import pandas as pd

    from mergelaw.errors import MergelawError

    if table.suffix == ".csv" and table.is_file():
        try:
            head = pd.read_csv(table, nrows=1)
            if "mean" in head.columns and "loss" not in head.columns:
                return pd.read_csv(table)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            first = first_line(exc)
            raise MergelawError(f"{table}: cannot be read as CSV ({first})") from None
    return read_curves(table)


@app.command()
@one_line_errors
def diagnose(
    fit_path: Annotated[Path, typer.Argument(metavar="FIT", help="A fit written by mergelaw fit.")],
) -> None:
    """Print a saved fit's diagnostics and provenance; exit 1 if it failed them."""
    from mergelaw.bayes.fit import Fit

    result = Fit.load(fit_path)
    _print_diagnostics(result)
    meta = result.meta
    console.print(
        f"spec {result.spec.name} ({result.spec.digest}), {meta['sampler']}, data "
        f"{meta['data_hash']} ({meta['n_obs']} rows, {len(result.families)} families), "
        f"{meta['wall_time_s']:.0f} s",
        markup=False,
    )
    if not result.diagnostics.ok:
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def report(
    fit_path: Annotated[Path, typer.Argument(metavar="FIT", help="A fit written by mergelaw fit.")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "report.html"
    ),
    target: Annotated[
        list[str] | None,
        typer.Option(
            metavar="LOSS,...",
            help=f"Losses for the experts-needed table, {LIST_SYNTAX}. (default: one chosen "
            "from the fit, E[L] at k = M/2)",
        ),
    ] = None,
    epsilon: Annotated[
        float, typer.Option(help="Stopping rule: smallest gain worth an expert (nats).")
    ] = 0.005,
    size: Annotated[
        float | None,
        typer.Option(help="Base size (billions) of the planning tables; default: the largest."),
    ] = None,
    level: Annotated[float, typer.Option(help="Credible interval level.")] = 0.9,
    rope: Annotated[float, typer.Option(help="ROPE of the method comparison (nats).")] = 0.005,
) -> None:
    """Write a self-contained HTML report of a saved fit: data, fitted curves, parameters,
    floor and tail against N, spread, diagnostics, predictive checks, planning, comparison."""
    from mergelaw.report import write_report

    targets = parse_values(target, float, "--target", RANGES["target"])
    written = write_report(fit_path, out, targets=targets, epsilon=epsilon, size_b=size,
                           level=level, rope=rope)  # fmt: skip
    console.print(f"report: {written.resolve()}", markup=False)


@app.command()
@one_line_errors
def loo(
    fits: Annotated[list[Path], typer.Argument(metavar="FIT...", help="Fits of the same table.")],
) -> None:
    """Compare fits by PSIS-LOO (expected log predictive density; higher is better)."""
    from mergelaw.bayes import diagnostics as diag
    from mergelaw.bayes.fit import Fit
    from mergelaw.errors import MergelawError

    loaded = {str(p): Fit.load(p) for p in fits}
    hashes = {f.meta["data_hash"] for f in loaded.values()}
    if len(hashes) > 1:
        raise MergelawError(f"the fits were made on different data ({', '.join(sorted(hashes))})")
    table = Table(title="PSIS-LOO", box=box.SIMPLE_HEAD)
    for column in ("fit", "spec", "elpd_loo", "se", "p_loo", "Pareto k > 0.7", "diagnostics"):
        table.add_column(column)
    unreliable = []
    for name, result in loaded.items():
        scores = diag.loo(result.idata)
        if scores["n_high_pareto_k"]:
            unreliable.append(result.spec.name)
        table.add_row(
            name,
            result.spec.name,
            f"{scores['elpd_loo']:.1f}",
            f"{scores['se']:.1f}",
            f"{scores['p_loo']:.1f}",
            f"{scores['n_high_pareto_k']} of {scores['n_points']}",
            result.flag,
        )
    console.print(table)
    if len(loaded) > 1:
        comparison = diag.compare({name: f.idata for name, f in loaded.items()})
        console.print(comparison[["rank", "elpd_loo", "elpd_diff", "dse", "weight"]].to_string())
    if unreliable:
        specs = " ".join(f"--spec {name}" for name in dict.fromkeys(unreliable))
        console.print(
            f"Pareto k > {diag.MAX_PARETO_K} for some rows: PSIS-LOO is unreliable there. "
            f"Refit by grouped k-fold instead: mergelaw kfold TABLE {specs} --folds 5",
            markup=False,
        )


@app.command()
@one_line_errors
def kfold(
    table: Annotated[Path, typer.Argument(help="Curves table (.parquet/.csv), or per-k means.")],
    spec: Annotated[
        list[str],
        typer.Option(metavar="SPEC,...", help=f"Model specs to score and compare, {LIST_SYNTAX}."),
    ] = ["default"],  # noqa: B006 (typer reads the default list, never mutates it)
    folds: Annotated[int, typer.Option(help="Folds; whole curves are left out.")] = 5,
    draws: Annotated[int, typer.Option(help="Draws per chain after warm-up.")] = 1000,
    tune: Annotated[int, typer.Option(help="Warm-up draws per chain.")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the fits.")] = 0,
) -> None:
    """Compare specs by grouped k-fold cross-validation (refits without whole curves): the
    fallback where PSIS-LOO's Pareto k is too high."""
    from mergelaw.bayes.kfold import compare_kfold, grouped_kfold
    from mergelaw.bayes.spec import load_spec
    from mergelaw.curves import read_curves

    spec = parse_values(spec, str, "--spec")
    for name in spec:
        load_spec(name)  # a bad spec is refused before the first fold is fitted
    curves = _read_fit_input(table, read_curves)
    settings = dict(draws=draws, tune=tune, chains=chains, seed=seed)
    results = []
    for name in spec:
        result = grouped_kfold(curves, name, folds=folds, **settings)
        results.append(result)
        for j, flag in enumerate(result.flags):
            if flag != "ok":
                console.print(f"{name}: fold {j + 1} fit flagged: {flag}", markup=False)
    console.print(compare_kfold(results).to_string(index=False, float_format="{:.1f}".format))


def _print_law_summary(result) -> None:
    summary = result.law_summary().rename(columns={"mean": "estimate"})
    _print_param_table("posterior: mean [90% interval]", summary, ["family"])


def _print_diagnostics(result) -> None:
    d = result.diagnostics
    console.print(
        f"diagnostics: max R-hat {d.max_rhat:.3f}, min ESS bulk {d.min_ess_bulk:.0f} / tail "
        f"{d.min_ess_tail:.0f}, {d.divergences} divergences in {d.n_draws} draws, "
        f"{d.saturated_share:.1%} at max tree depth, mean tree steps {d.mean_tree_steps:.0f}, "
        f"min BFMI {d.min_bfmi:.2f}",
        markup=False,
    )
    console.print(f"flag: {d.flag}", markup=False, style=None if d.ok else "bold red")


def _register_measure() -> None:
    from mergelaw.measure.command import RANGES as MEASURE_RANGES
    from mergelaw.measure.command import measure  # imports no torch until the command runs

    app.command("measure")(one_line_errors(measure, MEASURE_RANGES))


_register_measure()


def _register_lab() -> None:
    from mergelaw.measure.lab.command import register  # imports no torch until a command runs

    register(app, one_line_errors)


_register_lab()


def _register_queries() -> None:
    from mergelaw.plan_command import register  # typer and rich only, until a command runs

    register(app, one_line_errors)


_register_queries()


def _print_fits(fits, scope: str, level: float, to: Console | None = None) -> None:
    """The least-squares fits as one table, on ``to`` (default: stdout)."""
    from mergelaw.curves import CURVE_COLUMNS, FAMILY_COLUMNS

    to = to or console

    shown_always = {"method", "eval_domain", "base_model"}
    group_columns = [
        c
        for c in (FAMILY_COLUMNS if scope == "joint" else CURVE_COLUMNS)
        if c in shown_always or (c not in ("n_params", "method_params") and fits[c].nunique() > 1)
    ]
    if fits.groupby("method")["method_params"].nunique().max() > 1:
        group_columns.insert(group_columns.index("method") + 1, "method_params")
    _print_param_table(
        f"least-squares fit ({scope}), {level:.0%} bootstrap intervals",
        fits,
        group_columns,
        to=to,
        extras=[
            ("bound", 5, lambda row, first: f"{row.boot_on_bound:.0%}"),
            ("R²", 5, lambda row, first: f"{row.r2:.3f}" if first else ""),
        ],
    )
    to.print(
        "bound: share of bootstrap fits with the parameter on its bound (beta, gamma, b >= 0).",
        markup=False,
    )


def _print_param_table(
    title: str, rows, group_columns: list[str], extras=(), to: Console | None = None
) -> None:
    """One line per parameter (estimate and interval), one section per group: fits 80 columns
    on a terminal (cells cut with an ellipsis); in a pipe or file, nothing is cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in group_columns:
        table.add_column(column.removeprefix("eval_"), no_wrap=True, overflow="ellipsis")
    columns = [("param", 6), ("estimate", 8), ("interval", 19)]
    for column, width in [*columns, *((name, width) for name, width, _ in extras)]:
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    groups = list(rows.groupby(group_columns, sort=False))
    for g, (key, group) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        for i, row in enumerate(group.itertuples()):
            table.add_row(
                *(map(str, key) if i == 0 else [""] * len(key)),
                row.param,
                _number(row.estimate),
                f"[{_number(row.lower, 3)}, {_number(row.upper, 3)}]",
                *(render(row, i == 0) for _, _, render in extras),
                end_section=(i == len(group) - 1 and g < len(groups) - 1),
            )
    (to or console).print(table)


def _number(value: float, digits: int = 4) -> str:
    """Significant digits; below 1e-8 (an optimiser's rendering of a bound at 0) prints as 0."""
    return "0" if abs(value) < 1e-8 else f"{value:.{digits}g}"
