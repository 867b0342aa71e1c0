"""The lab pipeline: corpora -> tokenizer -> bases -> experts -> sweeps -> curves, resumable.

A pipeline file (TOML; paths relative to it) says what to build; ``data/lab/pipeline.toml`` is the
full-size one and documents every setting. Stages, each skipped when its output is there:

1. corpora    ``corpora`` folder with provenance.json (built from pinned packages if missing)
2. tokenizer  ``tokenizer.path`` (trained on the train splits if missing; a tokenizer trained on
              other corpora is refused)
3. bases      ``OUT/bases/<name>``: one per ``[[bases]]`` entry, pretrained on the mixed corpus,
              or a real pretrained LM brought in (``pretrained = {...}``, see ``pretrained.py``;
              it brings its own tokenizer, and a pipeline of such bases needs no [pretrain])
4. experts    ``OUT/experts/<base>/<domain>``: one full fine-tune per domain, one recipe for all
5. sweeps     ``OUT/sweeps/<base>.toml`` written, measured into ``OUT/sweeps/<base>/`` by the
              measurement layer's resumable sweep runner
6. curves     ``curves.path`` (one parquet, every finished base) + ``provenance.json`` beside it

Training and sweeps checkpoint as they go, so the whole pipeline can run across several sittings:
run the same command again and it continues where it stopped.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from mergelaw.config import Config, validated
from mergelaw.errors import MergelawError
from mergelaw.io import write_json

STAGES = ("corpora", "tokenizer", "bases", "experts", "sweeps", "curves")


@dataclass(frozen=True)
class BaseSpec:
    name: str
    arch: str
    config: dict[str, Any]
    pretrained: dict[str, str] | None = None  # where a real LM's weights come from


@dataclass(frozen=True)
class Pipeline:
    source: Path
    out: Path
    corpora: Path
    domains: tuple[str, ...] | None
    tokenizer: Path
    vocab_size: int
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    bases: tuple[BaseSpec, ...]
    sweep: dict[str, Any]
    curves: Path
    corpora_cache: Path
    eval_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class CorporaTable(Config):
    """``corpora``: where the corpora are (built from pinned packages if missing)."""

    path: str
    cache: str | None = None  # default: OUT/sources


class TokenizerTable(Config):
    path: str | None = None  # default: OUT/tokenizer
    vocab_size: Annotated[int, Field(ge=1)] = 8192


class CurvesTable(Config):
    path: str = "curves/lab.parquet"


class LabSweep(Config):
    """[sweep]: what every base's sweep file gets (``SWEEP_KEYS`` at its top level,
    ``EVAL_KEYS`` under its ``eval``; checked in full there) and the eval text's size."""

    methods: Annotated[list[dict[str, Any]], Field(min_length=1)]
    sampler: Any = None
    seeds: Any = None
    k: Any = None
    exclude: str | None = None
    subsets_per_unit: Annotated[int, Field(ge=1)] | None = None
    max_length: Annotated[int, Field(ge=2)] | None = None
    batch_tokens: Annotated[int, Field(ge=1)] | None = None
    dtype: Literal["auto", "float32", "bfloat16"] | None = None
    models_per_forward: Annotated[int, Field(ge=1)] | None = None
    eval_bytes: Annotated[int, Field(ge=1)] | None = None  # default: the whole held-out text


class PipelineFile(Config):
    """A pipeline file. Bases and recipes are checked on their own (``_bases``, ``Recipe``)."""

    out: str
    corpora: CorporaTable
    domains: list[str] | None = None
    tokenizer: TokenizerTable = TokenizerTable()
    pretrain: dict[str, Any] | None = None
    finetune: dict[str, Any]
    bases: list[dict[str, Any]]
    sweep: LabSweep
    curves: CurvesTable = CurvesTable()
    notes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("corpora", "curves", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        """A bare path is the table ``{path = ...}``."""
        return {"path": value} if isinstance(value, str) else value


def read_pipeline(path: str | Path) -> Pipeline:
    """Parse and check a pipeline file; one-line MergelawError naming the file and setting."""
    from mergelaw.measure.lab.training import Recipe

    path = Path(path)
    if not path.is_file():
        raise MergelawError(f"{path}: no such pipeline file (expected a .toml file)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MergelawError(f"{path}: cannot be parsed ({exc})") from None
    file = validated(PipelineFile, raw, str(path))
    bases = _bases(file.bases, path)
    if file.pretrain is None and any(b.pretrained is None for b in bases):
        raise MergelawError(f"{path}: missing 'pretrain' (bases trained here need a recipe)")
    for key in ("pretrain", "finetune"):
        if getattr(file, key) is not None:
            Recipe.from_dict(getattr(file, key), source=f"{path}: [{key}]")
    root = path.parent
    return Pipeline(
        source=path,
        out=root / file.out,
        corpora=root / file.corpora.path,
        corpora_cache=root / (file.corpora.cache or str(Path(file.out) / "sources")),
        domains=tuple(file.domains) if file.domains else None,
        tokenizer=root / (file.tokenizer.path or str(Path(file.out) / "tokenizer")),
        vocab_size=file.tokenizer.vocab_size,
        pretrain=dict(file.pretrain or {}),
        finetune=dict(file.finetune),
        bases=bases,
        sweep=file.sweep.model_dump(exclude_unset=True),
        curves=root / file.curves.path,
        eval_bytes=file.sweep.eval_bytes,
        notes=dict(file.notes),
    )


def _bases(entries: list[dict[str, Any]], path: Path) -> tuple[BaseSpec, ...]:
    """Each [[bases]] entry: a name and an arch with its config keys, or a pretrained LM."""
    from mergelaw.measure.lab.pretrained import check_source

    bases = []
    for i, b in enumerate(entries):
        if "pretrained" in b:
            if set(b) != {"name", "pretrained"}:
                bad = sorted(set(b) - {"name", "pretrained"}) or ["name"]
                raise MergelawError(
                    f"{path}: bases[{i}].{bad[0]}: a pretrained base takes only 'name' and "
                    "'pretrained'"
                )
            source = check_source(b["pretrained"], f"{path}: bases[{i}]")
            bases.append(BaseSpec(str(b["name"]), "pretrained", {}, source))
            continue
        if "name" not in b or "arch" not in b:
            raise MergelawError(f"{path}: bases[{i}] needs a 'name' and an 'arch'")
        config = {k: v for k, v in b.items() if k not in ("name", "arch")}
        bases.append(BaseSpec(str(b["name"]), str(b["arch"]), config))
    if len({b.name for b in bases}) != len(bases):
        raise MergelawError(f"{path}: two bases share a name")
    return tuple(bases)


# ----------------------------------------------------------------------------- stages


def stage_corpora(p: Pipeline, log: Callable[[str], None]) -> dict[str, dict]:
    from mergelaw.measure.lab.corpora import build_corpora, corpus_files

    if not (p.corpora / "provenance.json").is_file():
        log(f"corpora: building {p.corpora}")
        build_corpora(p.corpora, p.corpora_cache, domains=p.domains, log=log)
    files = corpus_files(p.corpora, p.domains)
    log(f"corpora: {len(files)} domains in {p.corpora}")
    return files


def stage_tokenizer(p: Pipeline, files: dict[str, dict], log: Callable[[str], None]) -> Path:
    import hashlib

    if all(b.pretrained is not None for b in p.bases):
        log("tokenizer: every base brings its own")
        return p.tokenizer

    from mergelaw.measure.lab.bpe import build_tokenizer

    train = [files[d]["train"] for d in sorted(files)]
    prov = p.tokenizer / "provenance.json"
    if (p.tokenizer / "tokenizer.json").is_file():
        if prov.is_file():
            trained = {x["sha256"] for x in json.loads(prov.read_text())["trained_on"]}
            ours = {hashlib.sha256(f.read_bytes()).hexdigest() for f in train}
            if trained != ours:
                raise MergelawError(
                    f"{p.tokenizer}: trained on other corpora than {p.corpora} "
                    "(delete it to retrain, or point tokenizer.path elsewhere)"
                )
        log(f"tokenizer: {p.tokenizer} (kept)")
        return p.tokenizer
    log(f"tokenizer: training a {p.vocab_size}-token byte-level BPE")
    return build_tokenizer(train, p.tokenizer, vocab_size=p.vocab_size)


def base_config(p: Pipeline, spec: BaseSpec):
    from mergelaw.measure.lab.bpe import EOS, vocab_size_of
    from mergelaw.measure.lab.training import model_config

    vocab = vocab_size_of(p.tokenizer)
    data = json.loads((p.tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    eos = next(t["id"] for t in data["added_tokens"] if t["content"] == EOS)
    return model_config(spec.arch, vocab, eos_id=eos, **spec.config)


def tokenizer_of(p: Pipeline, spec: BaseSpec) -> Path:
    """The tokenizer a base's experts and sweeps use: a pretrained base's own, else the lab's."""
    if spec.pretrained is not None:
        from mergelaw.measure.lab.training import MODEL

        return p.out / "bases" / spec.name / MODEL
    return p.tokenizer


def stage_bases(p: Pipeline, files, opts: dict, log) -> dict[str, Path]:
    from mergelaw.measure.lab.pretrained import import_base
    from mergelaw.measure.lab.training import Recipe, pretrain_base

    train = [files[d]["train"] for d in sorted(files)]
    out = {}
    for spec in _selected(p, opts):
        where = p.out / "bases" / spec.name
        if spec.pretrained is not None:
            rec = import_base(spec.pretrained, where, root=p.source.parent,
                              cache=p.corpora_cache, name=spec.name)  # fmt: skip
            log(
                f"base {spec.name}: pretrained {rec['arch']}, {rec['n_params']:,} params "
                f"({rec['n_params_non_embedding']:,} non-embedding)"
            )
            out[spec.name] = where
            continue
        recipe = Recipe.from_dict(p.pretrain, source=f"{p.source}: [pretrain]")
        rec = pretrain_base(
            base_config(p, spec), train, p.tokenizer, recipe, where, name=spec.name,
            cache_dir=p.out / "cache", **opts["train"],
        )  # fmt: skip
        if rec is None:
            raise _Stopped
        log(
            f"base {spec.name}: {rec['n_params_non_embedding']:,} non-embedding params, "
            f"{rec['tokens_seen']:,} tokens, final train loss {rec['final_train_loss']:.3f}"
        )
        out[spec.name] = where
    return out


def stage_experts(p: Pipeline, files, bases: dict[str, Path], opts: dict, log):
    from mergelaw.measure.lab.training import Recipe, finetune_expert

    recipe = Recipe.from_dict(p.finetune, source=f"{p.source}: [finetune]")
    specs = {b.name: b for b in p.bases}
    out: dict[str, dict[str, Path]] = {}
    for name, base_dir in bases.items():
        out[name] = {}
        tokenizer = tokenizer_of(p, specs[name])
        for domain in files:
            where = p.out / "experts" / name / domain
            rec = finetune_expert(
                base_dir, [files[domain]["train"]], recipe, where, tokenizer_dir=tokenizer,
                name=f"{name}/{domain}", cache_dir=p.out / "cache", **opts["train"],
            )  # fmt: skip
            if rec is None:
                raise _Stopped
            out[name][domain] = where
        log(f"experts of {name}: {len(out[name])} domains")
    return out


def eval_files(p: Pipeline, files: dict[str, dict]) -> dict[str, Path]:
    """Held-out files for the sweeps: the corpora's, or their first ``eval_bytes`` bytes."""
    from mergelaw.measure.lab.corpora import nbytes, read_jsonl, truncate, write_jsonl

    if p.eval_bytes is None:
        return {d: f["heldout"] for d, f in files.items()}
    out = {}
    for d, f in files.items():
        target = p.out / "eval" / f"{d}.jsonl"
        docs, used = [], 0
        for doc_id, text in read_jsonl(f["heldout"]):
            room = int(p.eval_bytes) - used
            if room <= 0:
                break
            text = truncate(text, room)
            if text.strip():
                docs.append((doc_id, text))
                used += nbytes(text)
        write_jsonl(docs, target)  # deterministic: rewriting gives the same bytes
        out[d] = target
    return out


SWEEP_KEYS = ("methods", "sampler", "seeds", "k", "exclude", "subsets_per_unit")
EVAL_KEYS = ("max_length", "batch_tokens", "dtype", "models_per_forward")


def sweep_file(
    p: Pipeline, base: BaseSpec, base_dir: Path, experts: dict[str, Path], evals
) -> Path:
    """Write the measurement layer's sweep file for one base (paths relative to it)."""
    import os

    import yaml

    path = p.out / "sweeps" / f"{base.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)

    def rel(x: Path) -> str:
        return os.path.relpath(x, path.parent)

    raw: dict[str, Any] = {
        "base": rel(base_dir / "model"),
        "name": base.name,
        "tokenizer": rel(tokenizer_of(p, base)),
        "experts": {d: rel(e / "model") for d, e in experts.items()},
        "eval": {"domains": {d: rel(f) for d, f in evals.items()}},
    }
    for key in SWEEP_KEYS:
        if key in p.sweep:
            raw[key] = p.sweep[key]
    for key in EVAL_KEYS:
        if key in p.sweep:
            raw["eval"][key] = p.sweep[key]
    text = yaml.safe_dump(raw, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def stage_sweeps(p: Pipeline, files, bases, experts, opts: dict, log) -> dict[str, Path]:
    from mergelaw.measure.sweep import read_sweep, run_sweep

    evals = eval_files(p, files)
    specs = {b.name: b for b in p.bases}
    out = {}
    for name, base_dir in bases.items():
        path = sweep_file(p, specs[name], base_dir, experts[name], evals)
        where = p.out / "sweeps" / name
        timing = where / "timing.json"
        spent = json.loads(timing.read_text())["wall_s"] if timing.is_file() else 0.0
        start = time.perf_counter()

        def record(_: int = 0, spent=spent, start=start, timing=timing) -> None:
            """After every unit, so that an interrupted sitting's time counts too."""
            write_json({"wall_s": round(spent + time.perf_counter() - start, 2)}, timing)

        table = run_sweep(read_sweep(path), where, device=opts["train"]["device"],
                          progress=opts["train"]["progress"], on_unit=record)  # fmt: skip
        record()
        log(f"sweep {name}: {len(table)} rows")
        out[name] = where
    return out


def stage_curves(p: Pipeline, files, log) -> Path | None:
    """Gather every finished sweep into one table + provenance (rewritten each run)."""
    import pandas as pd

    from mergelaw import __version__
    from mergelaw.curves import KEY_COLUMNS, read_curves, write_curves

    tables, prov_bases = [], {}
    for spec in p.bases:
        sweep_out = p.out / "sweeps" / spec.name
        done = sweep_out / "curves.parquet"
        if not done.is_file():
            continue
        tables.append(read_curves(done))
        prov_bases[spec.name] = _base_provenance(p, spec, sweep_out, files)
    if not tables:
        log("curves: no finished sweep yet")
        return None
    table = pd.concat(tables, ignore_index=True)
    table = table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    write_curves(table, p.curves)
    import platform

    import torch
    import transformers

    corpora_prov = json.loads((p.corpora / "provenance.json").read_text())
    record = {
        "table": p.curves.name,
        "rows": len(table),
        "pipeline": _pipeline_record(p),
        "corpora": {d: corpora_prov["domains"][d]["heldout"] for d in files},
        "tokenizer": json.loads((p.tokenizer / "provenance.json").read_text())
        if (p.tokenizer / "provenance.json").is_file()
        else "each base's own (its source is in bases.<name>.base.source)"
        if all(b.pretrained is not None for b in p.bases)
        else str(p.tokenizer),
        "bases": prov_bases,
        "versions": {"mergelaw": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }  # fmt: skip
    write_json(record, p.curves.with_name(p.curves.stem + ".provenance.json"))
    log(f"curves: {len(table)} rows from {len(tables)} bases -> {p.curves}")
    return p.curves


def _pipeline_record(p: Pipeline) -> dict[str, Any]:
    raw = tomllib.loads(p.source.read_text(encoding="utf-8"))
    return {"file": p.source.name, "settings": raw}


def _training_summary(path: Path) -> dict[str, Any]:
    rec = json.loads((path / "training.json").read_text())
    rec.pop("losses", None)
    rec.pop("base", None)
    return rec


EXPERT_KEYS = ("tokens_seen", "steps", "wall_s", "tokens_per_s", "final_train_loss", "data",
               "threads", "device")  # fmt: skip


def _base_provenance(p: Pipeline, spec: BaseSpec, sweep_out: Path, files) -> dict[str, Any]:
    base = _training_summary(p.out / "bases" / spec.name)
    experts = {}
    for d in files:
        where = p.out / "experts" / spec.name / d
        if (where / "training.json").is_file():
            rec = _training_summary(where)
            experts[d] = {k: rec[k] for k in EXPERT_KEYS}
    timing = sweep_out / "timing.json"
    sweep = (p.out / "sweeps" / f"{spec.name}.yaml").read_text()
    return {
        "base": base,
        "experts": experts,
        "sweep_file": sweep,
        "sweep_wall_s": json.loads(timing.read_text())["wall_s"] if timing.is_file() else None,
    }


# ----------------------------------------------------------------------------- the runner


class _Stopped(Exception):
    """A training step was told to stop early (tests of resuming)."""


def _selected(p: Pipeline, opts: dict) -> list[BaseSpec]:
    only = opts.get("only")
    if not only:
        return list(p.bases)
    names = {b.name for b in p.bases}
    bad = [n for n in only if n not in names]
    if bad:
        raise MergelawError(
            f"{p.source}: no base named {bad[0]!r} (expected one of {sorted(names)})"
        )
    return [b for b in p.bases if b.name in only]


def run_pipeline(
    pipeline: Pipeline | str | Path,
    *,
    until: str = "curves",
    only: Sequence[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
) -> Path | None:
    """Run every stage up to ``until`` (each skipped when done); return the curves path, if any.

    ``only``: base names to train and sweep (others are left alone), e.g. to run two processes
    side by side. ``stop_after``: stop each training run after that many steps (tests).
    """
    p = pipeline if isinstance(pipeline, Pipeline) else read_pipeline(pipeline)
    if until not in STAGES:
        raise MergelawError(f"until = {until!r}: expected one of {', '.join(STAGES)}")
    last = STAGES.index(until)
    _selected(p, {"only": only})  # an unknown --only base is refused before any stage runs
    opts = {
        "only": list(only) if only else None,
        "train": {"device": device, "progress": progress, "stop_after": stop_after},
    }
    files = stage_corpora(p, log)
    if last < 1:
        return None
    stage_tokenizer(p, files, log)
    if last < 2:
        return None
    try:
        bases = stage_bases(p, files, opts, log)
        if last < 3:
            return None
        experts = stage_experts(p, files, bases, opts, log)
    except _Stopped:
        log("stopped early (stop_after); run again to resume")
        return None
    if last < 4:
        return None
    sweep_opts = {"train": {"device": device, "progress": progress}}
    stage_sweeps(p, files, bases, experts, sweep_opts, log)
    if last < 5:
        return None
    return stage_curves(p, files, log)
