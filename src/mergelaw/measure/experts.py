"""Base + experts: open them lazily, check they are mergeable, give task vectors tensor by tensor.

Experts come from local Hugging Face checkpoint directories (``config.json`` + ``*.safetensors``,
sharded ones read by their index's weight map: ``mergelaw.measure.checkpoints``), from PEFT LoRA
adapter directories on the base (``adapter_config.json`` + ``adapter_model.safetensors``: the task
vector from the low-rank factors, ``mergelaw.measure.lora``), or as in-memory models. Full
checkpoints are mergeable with the base when they share the architecture, the vocabulary, and the
parameter names and shapes; adapters when every module they target is the base's, of its shape.
The first mismatch is reported in one line.

Which tensors merge: every parameter (buffers never), except those matching ``exclude`` (a
regular expression; they keep the base values). Embedding and output tensors (``EMBEDDING_PATTERN``)
are laid out last in the flat vector, so a method with ``merge_embeddings = false`` merges a
prefix and leaves them at the base values.

Memory: the pool holds the evaluated model (float32, on the device) and, of the base and each
expert, only where its tensors lie: the checks use the files' headers, and a merge
(``mergelaw.measure.streaming``) reads a tensor (or a block of its rows) of the base and of each
expert when it needs it, in the checkpoint's dtype, and computes its task vector in float32 there:
v_i = theta_i - theta_base, the same values as the whole vector would hold. An adapter holds its
low-rank factors (small). ``ExpertPool.base_flat`` and ``task_vectors`` are the whole float32
vectors, built on first use (4·(M+1)·P bytes): for tests and small pools; measuring never uses them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from mergelaw.errors import MergelawError, first_line
from mergelaw.measure.checkpoints import Checkpoint, open_checkpoint
from mergelaw.measure.lora import LoraAdapter, is_adapter, read_lora
from mergelaw.measure.merge import Segment
from mergelaw.measure.tensorfile import TensorInfo, read_tensor

EMBEDDING_PATTERN = (
    r"(^|\.)(embed_tokens|embed_in|embed_out|wte|wpe|word_embeddings|lm_head|output)(\.|$)"
)

ModelSource = str | Path | nn.Module
Rows = tuple[int, int] | None


class TensorSource(Protocol):
    """Tensors by name, as stored, read when asked (a ``Checkpoint``, or a state dict's); each
    read is a new tensor, the caller's own."""

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]: ...

    def read(self, name: str, rows: Rows = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class StateTensors:
    """An in-memory state dict as a ``TensorSource`` (a read copies what it returns)."""

    state: Mapping[str, torch.Tensor]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self.state.items()}

    def read(self, name: str, rows: Rows = None) -> torch.Tensor:
        t = self.state[name].detach()
        return (t[rows[0] : rows[1]] if rows is not None and t.dim() else t).clone()


class Expert(Protocol):
    """One expert's task vector, tensor by tensor."""

    def delta(self, seg: Segment, base: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        """v = theta - theta_base on ``seg`` (rows ``[a, b)`` of its first dimension, or all),
        flat float32 on ``base``'s device; ``base`` holds the base's values of those rows, flat
        float32. The result is the caller's own (a merge may change it in place)."""
        ...


@dataclass(frozen=True)
class FullExpert:
    """A full fine-tune: its tensors minus the base's."""

    tensors: TensorSource

    def delta(self, seg: Segment, base: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        theta = self.tensors.read(seg.name, rows).to(device=base.device, dtype=torch.float32)
        return theta.reshape(-1).sub_(base)  # in place: a read is the reader's own tensor


class AdapterExpert:
    """A LoRA adapter: per tensor the sum of its deltas on that parameter and its tied aliases
    (in the order of ``LoraAdapter.parts``). The low-rank products of the tensor a merge is on
    are computed once and kept until the merge moves on; saved full tensors are read by rows.
    """

    def __init__(self, adapter: LoraAdapter, canonical: Mapping[str, str]):
        self.adapter = adapter
        self.parts: dict[str, list[str]] = {}
        for name in adapter.names:
            self.parts.setdefault(canonical.get(name, name), []).append(name)
        self._seg: str | None = None
        self._products: dict[tuple[str, int], torch.Tensor] = {}

    def delta(self, seg: Segment, base: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        if self._seg != seg.name:
            self._seg, self._products = seg.name, {}
        flat = torch.zeros(base.numel(), dtype=torch.float32, device=base.device)
        for name in self.parts.get(seg.name, ()):
            value = None
            for j, part in enumerate(self.adapter.parts[name]):
                if isinstance(part, TensorInfo):  # saved full tensor: saved - base
                    saved = read_tensor(part, rows).to(base.device, torch.float32).reshape(-1)
                    x = saved - base
                else:
                    if (name, j) not in self._products:
                        self._products[name, j] = part.delta().to(base.device).reshape(-1)
                    x = _rows_of(self._products[name, j], seg, rows)
                value = x if value is None else value + x
            flat += value
        return flat


@dataclass
class ExpertPool:
    """The base model (evaluation copy on ``device``), the layout, and the experts' sources."""

    model: nn.Module
    base_name: str
    arch: str
    n_params: int
    expert_ids: tuple[str, ...]
    layout: tuple[Segment, ...]
    device: torch.device
    base: TensorSource
    experts: tuple[Expert, ...]

    def index(self, expert_id: str) -> int:
        return self.expert_ids.index(expert_id)

    def base_tensor(self, seg: Segment, rows: Rows = None) -> torch.Tensor:
        """The base's values of ``seg`` (rows ``[a, b)``, or all): flat float32 on the device."""
        t = self.base.read(seg.name, rows).to(device=self.device, dtype=torch.float32)
        return t.reshape(-1)

    def task_vector(
        self, i: int, seg: Segment, base: torch.Tensor, rows: Rows = None
    ) -> torch.Tensor:
        """Expert ``i``'s task vector on ``seg`` (rows ``[a, b)``), given the base's values
        there (``base_tensor``)."""
        return self.experts[i].delta(seg, base, rows)

    @functools.cached_property
    def base_flat(self) -> torch.Tensor:
        """The base's merged tensors as one flat float32 vector (P floats, built on first use)."""
        flat = torch.empty(self.layout[-1].stop if self.layout else 0, device=self.device)
        for seg in self.layout:
            flat[seg.offset : seg.stop] = self.base_tensor(seg)
        return flat

    @functools.cached_property
    def task_vectors(self) -> torch.Tensor:
        """All task vectors, (M, P) float32, built on first use: tests and small pools only."""
        vectors = torch.empty((len(self.experts), self.base_flat.numel()), device=self.device)
        for seg in self.layout:
            base = self.base_flat[seg.offset : seg.stop]
            for i in range(len(self.experts)):
                vectors[i, seg.offset : seg.stop] = self.task_vector(i, seg, base)
        return vectors


def load_pool(
    base: ModelSource,
    experts: Mapping[str, ModelSource],
    *,
    device: str | torch.device = "cpu",
    exclude: str | None = None,
    embedding_pattern: str = EMBEDDING_PATTERN,
    base_name: str | None = None,
) -> ExpertPool:
    """Load the base's model onto ``device``, open and check the experts, lay out the tensors.

    Reads no expert's tensors (adapters: their factors); see ``mergelaw.measure.streaming``.
    """
    if not experts:
        raise MergelawError("experts: none given (expected at least one expert to merge)")
    device = torch.device(device)
    model, base_source, base_where = _load_base(base)
    base_cfg = _config_of(base, model)
    params = dict(model.named_parameters())  # shared (tied) parameters appear once
    exclude_re = re.compile(exclude) if exclude else None
    embed_re = re.compile(embedding_pattern)
    names = [n for n in params if not (exclude_re and exclude_re.search(n))]
    names.sort(key=lambda n: bool(embed_re.search(n)))  # stable: embeddings last
    layout, offset = [], 0
    for name in names:
        seg = Segment(name, offset, tuple(params[name].shape), bool(embed_re.search(name)))
        layout.append(seg)
        offset += seg.numel
    base_shapes = base_source.shapes
    for seg in layout:
        if seg.name not in base_shapes:
            raise _missing(base_where, seg.name)
    canonical: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        canonical[name] = first.setdefault(id(param), name)
    sources: list[Expert] = []
    for source in experts.values():
        if is_adapter(source):
            sources.append(AdapterExpert(read_lora(source, model, base_where), canonical))
            continue
        tensors, where = _open(source)
        _check_mergeable(
            _config_of(source, None), base_cfg, tensors.shapes, base_shapes, where, base_where
        )
        for seg in layout:
            if seg.name not in tensors.shapes:
                raise _missing(where, seg.name)
        sources.append(FullExpert(tensors))
    model = model.to(device=device, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
        if not p.data.is_contiguous():
            p.data = p.data.contiguous()
    arch = str(getattr(model.config, "model_type", None) or type(model).__name__)
    n_params = sum(p.numel() for p in model.parameters())
    if base_name is None:
        base_name = Path(base).name if isinstance(base, str | Path) else type(model).__name__
    return ExpertPool(
        model=model,
        base_name=base_name,
        arch=arch,
        n_params=n_params,
        expert_ids=tuple(str(e) for e in experts),
        layout=tuple(layout),
        device=device,
        base=base_source,
        experts=tuple(sources),
    )


def _load_base(source: ModelSource) -> tuple[nn.Module, TensorSource, str]:
    """The evaluation model and the base's tensors (kept as read: the model gets merged into).

    A checkpoint folder: the model is built from its config.json (float32) and filled tensor by
    tensor from what ``open_checkpoint`` reads, so loading holds one model and one tensor.
    """
    if isinstance(source, nn.Module):
        state = {n: t.detach().clone() for n, t in source.state_dict().items()}
        return source, StateTensors(state), type(source).__name__
    from transformers import AutoConfig, AutoModelForCausalLM

    where = str(source)
    if is_adapter(source):
        raise MergelawError(
            f"{source}: a PEFT adapter cannot be the base (expected the base model's checkpoint "
            "directory: config.json + *.safetensors)"
        )
    checkpoint = open_checkpoint(source)
    _config_json(Path(source))
    try:
        config = AutoConfig.from_pretrained(Path(source), local_files_only=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:  # transformers' own
        raise MergelawError(
            f"{source}: transformers cannot load this checkpoint ({first_line(exc)})"
        ) from None
    _fill(model, checkpoint, where)
    return model.eval(), checkpoint, where


def _fill(model: nn.Module, checkpoint: Checkpoint, where: str) -> None:
    """Copy the checkpoint's tensors into the model's parameters and saved buffers, one at a time.

    A parameter the checkpoint lacks (and no tied alias of it holds) is refused by name, as is
    a tensor of another shape than the config gives.
    """
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    targets: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        found = next((n for n in aliases[id(param)] if n in checkpoint.tensors), None)
        if found is None:
            raise _missing(where, name)
        targets[found] = param
    for name, buffer in model.named_buffers():
        if name in checkpoint.tensors and name not in targets:
            targets[name] = buffer
    with torch.no_grad():
        for name, target in targets.items():
            shape = checkpoint.tensors[name].shape
            if shape != tuple(target.shape):
                raise MergelawError(
                    f"{where}: transformers cannot load this checkpoint (tensor {name!r} has "
                    f"shape {shape} but its config.json gives {tuple(target.shape)})"
                )
            target.copy_(checkpoint.read(name))


def _open(source: ModelSource) -> tuple[TensorSource, str]:
    if isinstance(source, nn.Module):
        return StateTensors(dict(source.state_dict())), type(source).__name__
    return open_checkpoint(source), str(source)


def _config_json(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise MergelawError(
            f"{path}: no config.json (expected a Hugging Face checkpoint directory)"
        )
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise MergelawError(f"{file}: not valid JSON ({exc})") from None


def _config_of(source: ModelSource, model: nn.Module | None) -> dict:
    if isinstance(source, nn.Module):
        cfg = getattr(source, "config", None)
        out = cfg.to_dict() if cfg is not None else {}
        out.setdefault("architectures", [type(source).__name__])
        return out
    return _config_json(Path(source))


def _check_mergeable(
    cfg: dict,
    base_cfg: dict,
    shapes: Mapping[str, tuple[int, ...]],
    base_shapes: Mapping[str, tuple[int, ...]],
    where: str,
    base_where: str,
) -> None:
    for key in ("model_type", "architectures", "vocab_size"):
        if cfg.get(key) != base_cfg.get(key):
            raise MergelawError(
                f"{where}: config {key} is {cfg.get(key)!r} but the base {base_where} has "
                f"{base_cfg.get(key)!r} (expected experts fine-tuned from the base)"
            )
    for name, shape in base_shapes.items():
        if name not in shapes:
            if _is_tied_copy(name, base_cfg):
                continue
            raise _missing(where, name)
        if tuple(shapes[name]) != tuple(shape):
            raise MergelawError(
                f"{where}: tensor {name!r} has shape {tuple(shapes[name])} but the base has "
                f"{tuple(shape)} (expected the same shapes)"
            )
    extra = [n for n in shapes if n not in base_shapes]
    if extra:
        raise MergelawError(
            f"{where}: tensor {extra[0]!r} is not in the base {base_where} "
            "(expected the base's parameter names)"
        )


def _missing(where: str, name: str) -> MergelawError:
    """The one-line error for a tensor of the base's that a checkpoint lacks."""
    return MergelawError(
        f"{where}: tensor {name!r} is missing (expected the base's parameter names)"
    )


def _is_tied_copy(name: str, cfg: dict) -> bool:
    return bool(cfg.get("tie_word_embeddings")) and name.endswith("lm_head.weight")


def _rows_of(flat: torch.Tensor, seg: Segment, rows: Rows) -> torch.Tensor:
    """Rows ``[a, b)`` of a segment's flat tensor (all of it for ``None``)."""
    if rows is None or not seg.shape:
        return flat
    return flat[rows[0] * seg.per_row : rows[1] * seg.per_row]


def unflatten(flat: torch.Tensor, layout: tuple[Segment, ...]) -> dict[str, torch.Tensor]:
    """Views of a flat vector (or of a stack of them, leading dims kept) as named tensors."""
    lead = tuple(flat.shape[:-1])
    return {s.name: flat[..., s.offset : s.stop].view(*lead, *s.shape) for s in layout}


def bind_flat(model: nn.Module, flat: torch.Tensor, layout: tuple[Segment, ...]) -> None:
    """Make the model's merged parameters views into ``flat`` (writing ``flat`` updates it)."""
    params = dict(model.named_parameters())
    for name, view in unflatten(flat, layout).items():
        params[name].data = view
