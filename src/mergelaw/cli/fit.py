"""The fitting commands: ``fit`` (the hierarchical Bayesian law), ``fit-ls`` (the paper's
weighted least squares), ``diagnose`` a saved fit, compare fits by ``loo`` or ``kfold``."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mergelaw.cli.render import print_diagnostics, print_fits, print_law_summary, print_loo
from mergelaw.cli.shared import SEED, UNIT, FitArg, command, console, error_console
from mergelaw.errors import LIST_SYNTAX, MergelawError, Range, parse_values
from mergelaw.io import is_stdout

#: Allowed values of the numeric options (by parameter name).
RANGES: dict[str, Range] = {
    "seed": SEED,
    "level": UNIT,
    "n_boot": Range(1),
    "draws": Range(1),
    "tune": Range(0),
    "chains": Range(1),
    "target_accept": UNIT,
    "folds": Range(2),
}

app = typer.Typer()


class ScopeChoice(StrEnum):
    joint = "joint"
    curve = "curve"


class IntervalChoice(StrEnum):
    bc = "bc"
    percentile = "percentile"


class WeightingChoice(StrEnum):
    k = "k"
    none = "none"


@command(app, RANGES, "fit-ls")
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

    from mergelaw.curves import read_curves
    from mergelaw.io import atomic_path, check_writable, write_json
    from mergelaw.least_squares import fit_least_squares

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
    print_fits(fits, scope.value, level, shown)
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


@command(app, RANGES)
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
    from mergelaw.curves import keep_only, read_fit_input
    from mergelaw.io import check_writable

    if out.suffix != ".nc":
        raise MergelawError(f"--out {out}: a fit is written as netCDF (expected a .nc path)")
    if sampler is not None and backend != BackendChoice.pymc:
        raise MergelawError(f"--sampler {sampler.value}: needs --backend pymc")
    check_writable(out)
    model_spec = load_spec(spec)
    curves = read_fit_input(table)
    filters = {"arch": (arch, "--arch"), "method": (method, "--method")}
    filters["eval_domain"] = (domain, "--domain")
    for column, (wanted, option) in filters.items():
        curves = keep_only(curves, column, parse_values(wanted, str, option), table)
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
    for note in result.meta.notes:
        console.print(f"note: {note}", markup=False)
    print_law_summary(result)
    print_diagnostics(result)
    console.print(f"wrote {out}", markup=False)
    if strict and not result.diagnostics.ok:
        error_console.print(f"flagged (--strict): {out} is saved; exit code 1", markup=False)
        raise typer.Exit(code=1)


@command(app, RANGES)
def diagnose(
    fit_path: FitArg,
) -> None:
    """Print a saved fit's diagnostics and provenance; exit 1 if it failed them."""
    from mergelaw.bayes.fit import Fit

    result = Fit.load(fit_path)
    print_diagnostics(result)
    meta = result.meta
    console.print(
        f"spec {result.spec.name} ({result.spec.digest}), {meta.sampler}, data "
        f"{meta.data_hash} ({meta.n_obs} rows, {len(result.families)} families), "
        f"{meta.wall_time_s:.0f} s",
        markup=False,
    )
    if not result.diagnostics.ok:
        raise typer.Exit(code=1)


@command(app, RANGES)
def loo(
    fits: Annotated[list[Path], typer.Argument(metavar="FIT...", help="Fits of the same table.")],
) -> None:
    """Compare fits by PSIS-LOO (expected log predictive density; higher is better)."""
    from mergelaw.bayes.diagnostics import MAX_PARETO_K
    from mergelaw.bayes.fit import Fit
    from mergelaw.bayes.selection import loo_scores, unreliable_specs

    scores, comparison = loo_scores({str(p): Fit.load(p) for p in fits})
    print_loo(scores, comparison, unreliable_specs(scores), MAX_PARETO_K)


@command(app, RANGES)
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
    from mergelaw.curves import read_fit_input

    spec = parse_values(spec, str, "--spec")
    for name in spec:
        load_spec(name)  # a bad spec is refused before the first fold is fitted
    curves = read_fit_input(table)
    settings = dict(draws=draws, tune=tune, chains=chains, seed=seed)
    results = []
    for name in spec:
        result = grouped_kfold(curves, name, folds=folds, **settings)
        results.append(result)
        for j, flag in enumerate(result.flags):
            if flag != "ok":
                console.print(f"{name}: fold {j + 1} fit flagged: {flag}", markup=False)
    console.print(compare_kfold(results).to_string(index=False, float_format="{:.1f}".format))
