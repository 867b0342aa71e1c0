"""``mergelaw report``: a saved fit as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergelaw.cli.shared import POSITIVE, UNIT, FitArg, command, console
from mergelaw.errors import LIST_SYNTAX, Range, parse_values

#: Allowed values of the numeric options (by parameter name).
RANGES: dict[str, Range] = {
    "level": UNIT,
    "target": POSITIVE,  # --target (losses)
    "epsilon": POSITIVE,
    "size": POSITIVE,
    "rope": Range(0),
}

app = typer.Typer()


@command(app, RANGES)
def report(
    fit_path: FitArg,
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
