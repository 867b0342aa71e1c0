"""Sweeps: a declarative sweep file -> resumable measurement -> the curves table.

A sweep file (TOML or YAML; relative paths are relative to the file) names the base, the experts,
the held-out text per eval domain, the methods with their parameters, the k range, the subset
sampler and the seeds::

    base = "ckpt/base"              # Hugging Face checkpoint dir (safetensors)
    name = "tiny-llama"             # base_model column (default: the base dir's name)
    tokenizer = "bytes"             # "bytes" or a tokenizer dir (default: the base dir)
    k = [1, 2, 3]                   # or {min = 1, max = 3}; default 1..M
    seeds = [0]                     # each seed: its own subset sample and DARE drops
    sampler = {name = "uniform", n = 4}   # exhaustive | uniform | nested | diverse | balanced (n)
    exclude = "rotary"              # optional regex: tensors never merged (keep base values)
    subsets_per_unit = 8            # subsets per unit of work (and per part file)

    [experts]                       # expert id -> checkpoint dir; an id equal to an eval
    code = "ckpt/code"              # domain's name marks that domain in_domain
    math = "ckpt/math"

    [eval]
    max_length = 512                # window length; longer documents are split, not truncated
    batch_tokens = 8192             # padded tokens per forward
    dtype = "auto"                  # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16
    models_per_forward = 1          # >1: evaluate that many merged models per forward (vmap)
    [eval.domains]
    code = "heldout/code.txt"       # .txt (one document) or .jsonl ({"text": ...} per line)
    math = "heldout/math.jsonl"

    [[methods]]
    name = "task_arithmetic"
    c = 0.8
    [[methods]]
    name = "ties"
    density = 0.2

A mergekit merge config (YAML with ``merge_method``) is a sweep file too: its ``base_model`` and
``models`` are the pool, its ``merge_method`` and ``parameters`` the one method, and the keys
above other than base, experts, methods and exclude go under a ``mergelaw:`` section that
mergekit ignores (the mapping: ``mergelaw.measure.mergekit_config``, docs/mergekit.md).

``run_sweep`` measures every (method, seed, subset) not yet in ``OUT/parts`` and then writes the
whole table to ``OUT/curves.parquet`` (atomically).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import Field, field_validator

from mergelaw.config import Config, Wording, validated
from mergelaw.curves import KEY_COLUMNS, format_subset, write_curves
from mergelaw.errors import MergelawError, first_line
from mergelaw.measure.methods import MethodSpec, method_spec
from mergelaw.measure.samplers import SAMPLERS, sample_subsets
from mergelaw.measure.store import RowStore

DOMAINS = "a table: domain name -> eval text file"
EXPERTS = "a table: expert id -> checkpoint directory"
METHODS = "a list of tables with a 'name'"


@dataclass(frozen=True)
class SweepSpec:
    source: str
    base: Path
    experts: dict[str, Path]
    domains: dict[str, Path]
    methods: tuple[MethodSpec, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "exhaustive"})
    name: str | None = None
    tokenizer: str | None = None
    exclude: str | None = None
    max_length: int = 512
    batch_tokens: int = 8192
    dtype: str = "auto"
    models_per_forward: int = 1
    subsets_per_unit: int = 8


def read_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; one-line MergelawError naming the file and field at fault."""
    path = Path(path)
    if not path.is_file():
        raise MergelawError(f"{path}: no such sweep file (expected a .toml or .yaml file)")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            raw = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise MergelawError(
                f"{path}: unknown sweep file type {suffix or '(none)'!r} (expected .toml or .yaml)"
            )
    except MergelawError:
        raise
    except Exception as exc:  # tomllib / yaml parse errors
        first = first_line(exc)
        raise MergelawError(f"{path}: cannot be parsed ({first})") from None
    if not isinstance(raw, dict):
        raise MergelawError(f"{path}: expected a table of settings at the top level")
    return parse_sweep(raw, path)


def parse_sweep(raw: dict[str, Any], path: Path) -> SweepSpec:
    """Check a parsed sweep file: a native one, or a mergekit config with a ``mergelaw:`` section
    (``mergelaw.measure.mergekit_config``: the pool and the method from mergekit's keys)."""
    from mergelaw.measure.mergekit_config import SECTION, is_mergekit_config, read_mergekit

    if is_mergekit_config(raw):
        merge = read_mergekit(raw, path)
        return _parse(
            merge.sweep,
            path,
            base=merge.base,
            experts=merge.experts,
            methods=(merge.method,),
            prefix=f"{SECTION}.",
        )
    return _parse(raw, path)


class EvalTable(Config):
    """[eval]: the held-out text per domain and how it is evaluated."""

    domains: Annotated[dict[str, str], Field(min_length=1, description=DOMAINS)]
    max_length: Annotated[int, Field(ge=2)] = 512
    batch_tokens: Annotated[int, Field(ge=1)] = 8192
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    models_per_forward: Annotated[int, Field(ge=1)] = 1


class SamplerTable(Config):
    """``sampler``: how subsets are drawn at each k (a name alone is the table ``{name}``)."""

    name: Literal[SAMPLERS]
    n: Annotated[int, Field(ge=1)] | None = None
    candidates: Annotated[int, Field(ge=1)] = 64


class SweepSettings(Config):
    """The settings of a sweep that a mergekit config's ``mergelaw:`` section holds too."""

    name: str | None = None
    tokenizer: str | None = None
    eval: EvalTable = Field({}, validate_default=True)  # absent: 'eval.domains' is missing
    k: Any = None  # a list or {min, max}: checked against the pool's size (``_ks``)
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [0]
    )
    sampler: SamplerTable = SamplerTable(name="exhaustive")
    subsets_per_unit: Annotated[int, Field(ge=1)] = 8

    @field_validator("sampler", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class SweepFile(SweepSettings):
    """A native sweep file: the pool and the methods besides the settings."""

    base: Annotated[str, Field(description="the base checkpoint directory")]
    experts: Annotated[dict[str, str], Field(min_length=1, description=EXPERTS)]
    methods: Annotated[list[dict[str, Any]], Field(min_length=1, description=METHODS)]
    exclude: str | None = None


def _parse(
    raw: dict[str, Any],
    path: Path,
    *,
    base: Path | None = None,
    experts: dict[str, Path] | None = None,
    methods: tuple[MethodSpec, ...] | None = None,
    prefix: str = "",
) -> SweepSpec:
    """The sweep's own keys; ``base``, ``experts`` and ``methods`` given come from a mergekit
    config, whose sweep keys sit under ``prefix`` (named so in messages)."""
    src = str(path)
    root = path.parent
    exclude = None
    if methods is None:
        settings = file = validated(SweepFile, raw, src)
        base = root / file.base
        experts = {e: root / p for e, p in file.experts.items()}
        methods = _methods(file.methods, src)
        exclude = file.exclude
    else:
        settings = validated(SweepSettings, raw, src, Wording(prefix=prefix))
    ev = settings.eval
    tokenizer = settings.tokenizer
    if tokenizer is not None and tokenizer != "bytes":
        tokenizer = str(root / tokenizer)
    return SweepSpec(
        source=src,
        base=base,
        experts=experts,
        domains={d: root / p for d, p in ev.domains.items()},
        methods=methods,
        ks=_ks(settings.k, len(experts), src, f"'{prefix}k'"),
        seeds=tuple(settings.seeds),
        sampler=settings.sampler.model_dump(exclude_unset=True),
        name=settings.name,
        tokenizer=tokenizer,
        exclude=exclude,
        max_length=ev.max_length,
        batch_tokens=ev.batch_tokens,
        dtype=ev.dtype,
        models_per_forward=ev.models_per_forward,
        subsets_per_unit=settings.subsets_per_unit,
    )


def _methods(methods: list[dict[str, Any]], src: str) -> tuple[MethodSpec, ...]:
    specs = []
    for i, m in enumerate(methods):
        if "name" not in m:
            raise MergelawError(f"{src}: methods[{i}] has no 'name' (expected e.g. name = 'ties')")
        params = {key: value for key, value in m.items() if key != "name"}
        specs.append(method_spec(str(m["name"]), params, source=f"{src}: methods[{i}]"))
    if len({(s.name, s.params_json) for s in specs}) != len(specs):
        raise MergelawError(f"{src}: 'methods' lists the same method and parameters twice")
    return tuple(specs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ks(value: Any, m: int, src: str, key: str = "'k'") -> tuple[int, ...]:
    if value is None:
        return tuple(range(1, m + 1))
    if isinstance(value, dict) and set(value) <= {"min", "max"}:
        value = list(range(int(value.get("min", 1)), int(value.get("max", m)) + 1))
    if not isinstance(value, list) or not value or not all(_is_int(k) for k in value):
        raise MergelawError(f"{src}: {key} = {value!r} (expected a list or {{min, max}})")
    bad = [k for k in value if not 1 <= k <= m]
    if bad:
        raise MergelawError(f"{src}: {key} = {bad[0]} (expected 1 <= k <= {m}, the pool size)")
    return tuple(sorted(set(value)))


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Item:
    method: MethodSpec
    seed: int
    subset: tuple[str, ...]


def plan_items(spec: SweepSpec) -> list[Item]:
    """Every (method, seed, subset) the sweep measures, in a fixed order."""
    items = []
    ids = list(spec.experts)
    for seed in spec.seeds:
        subsets = sample_subsets(
            spec.sampler["name"],
            ids,
            spec.ks,
            seed=seed,
            n=spec.sampler.get("n"),
            candidates=int(spec.sampler.get("candidates", 64)),
            source=f"{spec.source}: sampler",
        )
        for method in spec.methods:
            for k in spec.ks:
                items.extend(Item(method, seed, s) for s in subsets[k])
    return items


def item_keys(item: Item, arch: str, base: str, eval_hashes: dict[str, str]) -> list[tuple]:
    """The curves-table keys (KEY_COLUMNS order) of one item's rows."""
    subset = format_subset(item.subset)
    return [
        (arch, base, item.method.name, item.method.params_json, subset, item.seed, d, h)
        for d, h in eval_hashes.items()
    ]


def make_units(items: list[Item], per_unit: int) -> list:
    from mergelaw.measure.work import WorkUnit

    units, groups = [], {}
    for it in items:
        groups.setdefault((it.method, it.seed), []).append(it.subset)
    for (method, seed), subsets in groups.items():
        for i in range(0, len(subsets), per_unit):
            units.append(WorkUnit(method, seed, tuple(subsets[i : i + per_unit])))
    return units


# ----------------------------------------------------------------------------- running


def auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sweep_identity(spec: SweepSpec) -> tuple[str, str, int | None]:
    """(arch, base_model, vocab size) from the base's config.json, without loading any weights.

    These are what the loaded pool reports (``ExpertPool.arch``, ``base_name``), so the driver can
    key rows for resume while only the workers load the model.
    """
    base = Path(spec.base)
    file = base / "config.json"
    if not file.is_file():
        what = "no config.json" if base.is_dir() else "no such checkpoint directory"
        raise MergelawError(
            f"{base}: {what} (expected a Hugging Face checkpoint directory: config.json + "
            "*.safetensors)"
        )
    try:
        cfg = json.loads(file.read_text())
    except ValueError as exc:
        raise MergelawError(f"{file}: not valid JSON ({exc})") from None
    arch = cfg.get("model_type")
    if not arch:
        raise MergelawError(f"{file}: no 'model_type' (expected a Hugging Face model config)")
    vocab = cfg.get("vocab_size")
    vocab = int(vocab) if _is_int(vocab) and vocab > 0 else None
    return str(arch), spec.name if spec.name is not None else base.name, vocab


def sweep_eval_sets(spec: SweepSpec, out: Path) -> tuple:
    """Check and tokenize each domain's eval text (cached in OUT/tokens); small, cheap to ship."""
    from mergelaw.measure.evaluate import build_eval_set, load_tokenizer

    for domain, path in spec.domains.items():
        if not path.is_file():
            raise MergelawError(
                f"{spec.source}: eval domain {domain!r}: no such file {path} "
                "(expected its held-out text, .txt or .jsonl)"
            )
    _, _, vocab = sweep_identity(spec)
    tokenizer = load_tokenizer(spec.tokenizer if spec.tokenizer is not None else spec.base)
    return tuple(
        build_eval_set(d, p, tokenizer, spec.max_length, vocab_size=vocab, cache_dir=out / "tokens")
        for d, p in spec.domains.items()
    )


@dataclass
class SweepWork:
    """The function executors map over units: picklable, builds its context once per process.

    It carries the sweep spec and the tokenized eval sets (small), never the loaded pool: an
    executor ships it to each worker, the worker loads the base and the task vectors onto its own
    device at its first unit, and every later unit there reuses them. ``device = "auto"`` is
    resolved where the work runs (a GPU worker's own GPU).
    """

    spec: SweepSpec
    eval_sets: tuple
    device: str = "auto"
    _context: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_context": None}  # the loaded pool never travels

    def context(self):
        """The MeasureContext of this process: the pool on the device, batches, settings."""
        if self._context is None:
            from mergelaw import __version__
            from mergelaw.measure.evaluate import make_batches
            from mergelaw.measure.experts import load_pool
            from mergelaw.measure.work import MeasureContext

            spec = self.spec
            device = auto_device() if self.device == "auto" else self.device
            pool = load_pool(
                spec.base, spec.experts, device=device, exclude=spec.exclude, base_name=spec.name
            )
            dtype = spec.dtype
            if dtype == "auto":
                dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
            self._context = MeasureContext(
                pool=pool,
                eval_sets=self.eval_sets,
                batches=make_batches(self.eval_sets, spec.batch_tokens, device),
                dtype=dtype,
                models_per_forward=spec.models_per_forward,
                package_version=__version__,
            )
        return self._context

    def __call__(self, unit) -> pd.DataFrame:
        from mergelaw.measure.work import run_unit

        return run_unit(self.context(), unit)


def build_context(spec: SweepSpec, out: Path, device: str):
    """Load the pool and tokenize the eval text (cached in OUT/tokens), in this process."""
    return SweepWork(spec, sweep_eval_sets(spec, out), device).context()


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    executor=None,
    on_unit: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Measure what is not yet stored in ``out``, then write ``out/curves.parquet``; return it.

    ``executor`` maps the unit function over the missing units (default: this process, one unit
    after another; ``RayExecutor``: a Ray cluster). Each finished unit is written to the store as
    it arrives, in whatever order, so an interrupted sweep resumes where it stopped.
    """
    from mergelaw.measure.executors import SerialExecutor

    out = Path(out)
    items = plan_items(spec)  # sampler errors surface before anything is loaded
    store = RowStore(out)
    eval_sets = sweep_eval_sets(spec, out)
    arch, base_name, _ = sweep_identity(spec)
    hashes = {es.domain: es.hash for es in eval_sets}
    done = store.keys()
    todo = [
        it for it in items if not all(k in done for k in item_keys(it, arch, base_name, hashes))
    ]
    units = make_units(todo, spec.subsets_per_unit)
    executor = executor or SerialExecutor()
    bar = _progress(len(items), len(items) - len(todo), progress)
    try:
        for i, (unit, rows) in enumerate(
            executor.map(SweepWork(_absolute(spec), eval_sets, device), iter(units))
        ):
            _check_identity(rows, arch, base_name, spec)
            store.write(unit.unit_id, rows)
            bar.update(len(unit.subsets))
            if on_unit is not None:
                on_unit(i)
    finally:
        bar.close()
    table = store.read()
    table = table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    return write_curves(table, out / "curves.parquet")


def _absolute(spec: SweepSpec) -> SweepSpec:
    """The spec with absolute checkpoint paths: a worker's working folder may not be ours."""
    tokenizer = spec.tokenizer
    if tokenizer is not None and tokenizer != "bytes":
        tokenizer = str(Path(tokenizer).absolute())
    return dataclasses.replace(
        spec,
        base=spec.base.absolute(),
        experts={e: p.absolute() for e, p in spec.experts.items()},
        domains={d: p.absolute() for d, p in spec.domains.items()},
        tokenizer=tokenizer,
    )


def _check_identity(rows: pd.DataFrame, arch: str, base_name: str, spec: SweepSpec) -> None:
    """Rows must carry the keys the resume check used, or a rerun would measure them again."""
    if len(rows) and (rows["arch"].iat[0], rows["base_model"].iat[0]) != (arch, base_name):
        raise MergelawError(
            f"{spec.base}: the loaded model reports arch {rows['arch'].iat[0]!r}, base "
            f"{rows['base_model'].iat[0]!r} but its config.json gives {arch!r}, {base_name!r} "
            "(expected them to agree)"
        )


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="model",
        desc="merged models",
        dynamic_ncols=True,
    )


def iter_units(spec: SweepSpec) -> Iterator:
    """All units of a sweep from scratch (for executors that plan ahead)."""
    yield from make_units(plan_items(spec), spec.subsets_per_unit)
