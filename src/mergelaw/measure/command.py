"""The ``mergelaw measure`` command: a typer-compatible function that ``mergelaw.cli`` registers.

Importing this module loads no torch; the sweep runner imports it when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def measure(
    sweep: Annotated[
        Path, typer.Argument(help="Sweep file (.toml or .yaml): base, experts, eval, methods.")
    ],
    out: Annotated[
        Path,
        typer.Option(help="Output folder: parts/ (one file per finished unit), curves.parquet."),
    ],
    device: Annotated[
        str, typer.Option(help="auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...")
    ] = "auto",
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar with ETA.")
    ] = True,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch (default: torch's choice). Use 1 on a machine whose "
            "other cores are busy: tiny models slow down badly when threads wait for a core."
        ),
    ] = None,
) -> None:
    """Measure merge-loss curves: merge k-subsets of experts, evaluate held-out loss.

    For each method in the sweep file and each sampled subset of k experts,
    the experts' task vectors (expert minus base) are merged onto the base,
    and the merged model's token-mean cross-entropy (nats/token) is measured
    on each eval domain's held-out text. One row per (merged model, eval
    domain) goes to OUT/curves.parquet, the table `mergelaw fit-ls` reads.

    Interrupted? Run the same command again: only missing rows are measured,
    finished rows are never repeated.

    Sweep file (TOML or YAML; paths relative to it), in YAML:

        base: ckpt/base
        tokenizer: bytes            # or a tokenizer dir; default: the base dir
        k: [1, 2, 3]
        sampler: {name: uniform, n: 4}
        seeds: [0]
        experts: {code: ckpt/code, math: ckpt/math}
        eval:
          domains: {code: heldout/code.txt, math: heldout/math.jsonl}
        methods:
          - {name: task_arithmetic, c: 0.8}
          - {name: ties, density: 0.2}

    All settings: see the mergelaw.measure.sweep module docstring.
    """
    from mergelaw.measure.sweep import read_sweep, run_sweep

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    spec = read_sweep(sweep)
    table = run_sweep(spec, out, device=device, progress=progress)
    typer.echo(
        f"wrote {out / 'curves.parquet'}: {len(table)} rows, "
        f"{table['subset'].nunique()} subsets, {table['method'].nunique()} methods, "
        f"{table['eval_domain'].nunique()} eval domains"
    )
