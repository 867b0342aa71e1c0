"""``mergelaw validate`` (check a curves table against the data contract) and ``mergelaw
simulate`` (a table from the paper's fitted law: a known truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mergelaw.cli.shared import POSITIVE, SEED, command, console
from mergelaw.errors import LIST_SYNTAX, MergelawError, Range, parse_values

#: Allowed values of the numeric options (by parameter name).
RANGES: dict[str, Range] = {
    "seed": SEED,
    "sizes": POSITIVE,  # --sizes (billions)
    "pool_size": Range(2),
    "k_max": Range(1),
    "subsets_per_k": Range(1),
    "spread_scale": Range(0),
}

app = typer.Typer()


@command(app, RANGES)
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


@command(app, RANGES)
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
