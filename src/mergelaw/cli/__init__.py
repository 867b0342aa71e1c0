"""The ``mergelaw`` command: one module per command group, each declaring its commands on its own
typer app with its numeric ranges (``mergelaw.cli.shared.command``); this module puts them
together under the root.

    curves   validate, simulate
    fit      fit, fit-ls, diagnose, loo, kfold
    report   report
    plan     plan FIT target|stop|budget|forecast, compare
    measure  measure, lab run|corpora|tokenizer

Conventions shared by every command (``mergelaw.cli.shared``): bad input is one line on stderr
and exit code 2; a list option takes its values comma-separated, repeated, or both
(``parse_values``); a JSON output given as ``-`` goes to stdout, the human-readable output then to
stderr; output to a pipe or file is never wrapped or cut (``output_console``); output paths are
checked for writability before any work and written atomically; a missing optional dependency
names the extra that installs it. Importing this package loads typer and rich only.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mergelaw import __version__
from mergelaw.cli import curves, fit, measure, plan, report
from mergelaw.cli.shared import OneLineUsage, console, set_verbose
from mergelaw.errors import LIST_SYNTAX

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
for group in (curves, fit, report, measure, plan):
    app.add_typer(group.app)


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
    set_verbose(verbose)


__all__ = ["app"]
