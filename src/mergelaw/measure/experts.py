"""Base + experts: load them, check they are mergeable, hold the task vectors once on the device.

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mergelaw.errors import MergelawError
from mergelaw.measure.checkpoints import read_checkpoint
from mergelaw.measure.lora import is_adapter, lora_deltas
from mergelaw.measure.merge import Segment

EMBEDDING_PATTERN = (
    r"(^|\.)(embed_tokens|embed_in|embed_out|wte|wpe|word_embeddings|lm_head|output)(\.|$)"
)

ModelSource = str | Path | nn.Module


@dataclass
class ExpertPool:
    """The base model (evaluation copy on ``device``), the layout, and the task vectors."""

    model: nn.Module
    base_name: str
    arch: str
    n_params: int
    expert_ids: tuple[str, ...]
    layout: tuple[Segment, ...]
    base_flat: torch.Tensor  # (P,)
    task_vectors: torch.Tensor  # (M, P): v_i = theta_i - theta_base, float32

    @property
    def device(self) -> torch.device:
        return self.base_flat.device

    def index(self, expert_id: str) -> int:
        return self.expert_ids.index(expert_id)


def load_pool(
    base: ModelSource,
    experts: Mapping[str, ModelSource],
    *,
    device: str | torch.device = "cpu",
    exclude: str | None = None,
    embedding_pattern: str = EMBEDDING_PATTERN,
    base_name: str | None = None,
) -> ExpertPool:
    """Load the base and the experts, check them, and build the pool on ``device``."""
    if not experts:
        raise MergelawError("experts: none given (expected at least one expert to merge)")
    device = torch.device(device)
    model, base_state, base_where = _load_base(base)
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
    base_flat = _flatten(base_state, layout, base_where).to(device)
    vectors = torch.empty((len(experts), offset), dtype=torch.float32, device=device)
    for i, source in enumerate(experts.values()):
        if is_adapter(source):
            vectors[i] = _adapter_vector(source, model, layout, base_where).to(device)
            continue
        state, where = _load_state(source)
        _check_mergeable(_config_of(source, None), base_cfg, state, base_state, where, base_where)
        vectors[i] = _flatten(state, layout, where).to(device)
        vectors[i] -= base_flat
        del state
    model = model.to(device=device, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
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
        base_flat=base_flat,
        task_vectors=vectors,
    )


def _load_base(source: ModelSource) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    if isinstance(source, nn.Module):
        return source, dict(source.state_dict()), type(source).__name__
    from transformers import AutoModelForCausalLM

    where = str(source)
    if is_adapter(source):
        raise MergelawError(
            f"{source}: a PEFT adapter cannot be the base (expected the base model's checkpoint "
            "directory: config.json + *.safetensors)"
        )
    state, _ = _load_state(source)
    _config_json(Path(source))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            Path(source), dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # transformers' own errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MergelawError(
            f"{source}: transformers cannot load this checkpoint ({first})"
        ) from None
    # Transformers prefers model.safetensors over a shard index; the model evaluated must hold the
    # tensors the task vectors are taken against (the index's, see mergelaw.measure.checkpoints).
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the config gives
        raise MergelawError(
            f"{source}: transformers cannot load this checkpoint ({_first_line(exc)})"
        ) from None
    return model, state, where


def _load_state(source: ModelSource) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, nn.Module):
        return dict(source.state_dict()), type(source).__name__
    return read_checkpoint(source), str(source)


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
    state: Mapping[str, torch.Tensor],
    base_state: Mapping[str, torch.Tensor],
    where: str,
    base_where: str,
) -> None:
    for key in ("model_type", "architectures", "vocab_size"):
        if cfg.get(key) != base_cfg.get(key):
            raise MergelawError(
                f"{where}: config {key} is {cfg.get(key)!r} but the base {base_where} has "
                f"{base_cfg.get(key)!r} (expected experts fine-tuned from the base)"
            )
    for name, tensor in base_state.items():
        if name not in state:
            if _is_tied_copy(name, base_cfg):
                continue
            raise MergelawError(
                f"{where}: tensor {name!r} is missing (expected the base's parameter names)"
            )
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise MergelawError(
                f"{where}: tensor {name!r} has shape {tuple(state[name].shape)} but the base has "
                f"{tuple(tensor.shape)} (expected the same shapes)"
            )
    extra = [n for n in state if n not in base_state]
    if extra:
        raise MergelawError(
            f"{where}: tensor {extra[0]!r} is not in the base {base_where} "
            "(expected the base's parameter names)"
        )


def _adapter_vector(
    source: str | Path, model: nn.Module, layout: list[Segment], base_where: str
) -> torch.Tensor:
    """A LoRA adapter's flat task vector: its deltas laid out; tensors outside the layout
    (excluded) keep the base values, a tied alias adds to the parameter it shares."""
    canonical: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        canonical[name] = first.setdefault(id(param), name)
    segments = {s.name: s for s in layout}
    flat = torch.zeros(layout[-1].stop if layout else 0, dtype=torch.float32)
    for name, delta in lora_deltas(source, model, base_where).items():
        seg = segments.get(canonical.get(name, name))
        if seg is not None:
            flat[seg.offset : seg.stop] += delta.reshape(-1)
    return flat


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_tied_copy(name: str, cfg: dict) -> bool:
    return bool(cfg.get("tie_word_embeddings")) and name.endswith("lm_head.weight")


def _flatten(
    state: Mapping[str, torch.Tensor], layout: list[Segment] | tuple[Segment, ...], where: str
) -> torch.Tensor:
    total = layout[-1].stop if layout else 0
    flat = torch.empty(total, dtype=torch.float32)
    for seg in layout:
        if seg.name not in state:
            raise MergelawError(
                f"{where}: tensor {seg.name!r} is missing (expected the base's parameter names)"
            )
        flat[seg.offset : seg.stop] = state[seg.name].detach().reshape(-1).to(torch.float32)
    return flat


def unflatten(flat: torch.Tensor, layout: tuple[Segment, ...]) -> dict[str, torch.Tensor]:
    """Views of a flat vector (or of a stack of them, leading dims kept) as named tensors."""
    lead = tuple(flat.shape[:-1])
    return {s.name: flat[..., s.offset : s.stop].view(*lead, *s.shape) for s in layout}


def bind_flat(model: nn.Module, flat: torch.Tensor, layout: tuple[Segment, ...]) -> None:
    """Make the model's merged parameters views into ``flat`` (writing ``flat`` updates it)."""
    params = dict(model.named_parameters())
    for name, view in unflatten(flat, layout).items():
        params[name].data = view
