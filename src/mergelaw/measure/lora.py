"""PEFT LoRA adapters as experts: the task vector per target module from the low-rank factors.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (what PEFT's
``save_pretrained`` writes). On the base, each target module's weight becomes W + delta W with

    delta W = s * B @ A        (transposed for fan_in_fan_out: Conv1D weights are (in, out))
    s       = alpha / r        (use_rslora: alpha / sqrt(r))

r and alpha per module from ``rank_pattern`` / ``alpha_pattern`` (the first key matching the end
of the module's name, as PEFT matches them), else ``r`` / ``lora_alpha``; r must equal the factors'
rank. Embedding modules (``lora_embedding_A/B``) give (B @ A)^T * s; ``lora_bias`` adds
s * lora_B.bias to the module's bias. fan_in_fan_out follows the config except where the module's
type fixes it (nn.Linear: no, Conv1D: yes), as PEFT decides when it loads the adapter. Full tensors
the adapter saves (``modules_to_save``, biases trained with ``bias = "all"``, an embedding's
``base_layer``) replace the base's: their delta is saved - base. The sum is what PEFT's
``merge_and_unload`` gives, and is checked against it. ``read_lora`` checks an adapter and keeps
its low-rank factors (small); each parameter's delta is computed when a merge asks for it
(``experts.AdapterExpert``), and saved full tensors are read then.

Refused in one line: other PEFT types, DoRA, layer replication, LoRA on raw parameters or
convolutions, trainable tokens, and initialisations that change the base (PiSSA, OLoRA, CorDA,
LoftQ) unless saved relative to the base. A module the base lacks or of another shape names the
adapter file, the module and the shapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mergelaw.errors import MergelawError, first_line
from mergelaw.measure.tensorfile import TensorInfo, read_header, read_tensor

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_FACTORS = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_B.bias": "bias",
    ".lora_embedding_A": "A",
    ".lora_embedding_B": "B",
}
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


def is_adapter(source: object) -> bool:
    """Whether ``source`` is a PEFT adapter folder (it holds ``adapter_config.json``)."""
    return isinstance(source, str | Path) and (Path(source) / CONFIG).is_file()


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    """The adapter's config, checked to be a plain LoRA adapter this module can apply."""
    file = Path(path) / CONFIG
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise MergelawError(f"{file}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(cfg, dict):
        raise MergelawError(f"{file}: expected a table of settings at the top level")
    peft_type = cfg.get("peft_type")
    if peft_type != "LORA":
        raise MergelawError(f"{file}: peft_type is {peft_type!r} (expected 'LORA')")
    refused = {
        "use_dora": "DoRA adapters are not supported (expected plain LoRA)",
        "use_qalora": "QALoRA adapters are not supported (expected plain LoRA)",
        "layer_replication": "layer replication adds layers the base lacks (expected none)",
        "target_parameters": "LoRA on raw parameters is not supported (expected target_modules)",
        "trainable_token_indices": "trainable tokens are not supported (expected none)",
    }
    for key, why in refused.items():
        if cfg.get(key):
            raise MergelawError(f"{file}: {key} is {cfg[key]!r}: {why}")
    init = cfg.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise MergelawError(
            f"{file}: init_lora_weights is {init!r}, which changes the base's weights "
            "(expected an adapter saved relative to the base: PEFT's "
            "path_initial_model_for_weight_conversion)"
        )
    for key in ("r", "lora_alpha"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise MergelawError(f"{file}: {key} is {value!r} (expected a positive number)")
    for key in ("rank_pattern", "alpha_pattern"):
        if not isinstance(cfg.get(key) or {}, dict):
            raise MergelawError(f"{file}: {key} is {cfg[key]!r} (expected a table)")
    return cfg


@dataclass(frozen=True)
class _Factors:
    """One target module's low-rank update of one parameter: s * B @ A (transposed), or s * b."""

    a: torch.Tensor | None
    b: torch.Tensor
    scaling: float
    transpose: bool = False

    def delta(self) -> torch.Tensor:
        if self.a is None:  # lora_bias
            return self.b.to(torch.float32) * self.scaling
        delta = (self.b.to(torch.float32) @ self.a.to(torch.float32)) * self.scaling
        return delta.T if self.transpose else delta


@dataclass(frozen=True)
class LoraAdapter:
    """A checked LoRA adapter: per base parameter, the parts of its delta, computed when asked.

    ``parts[name]`` lists a saved full tensor (its ``TensorInfo``: read when asked, delta =
    saved - base) and low-rank updates; ``experts.AdapterExpert`` adds them up per tensor.
    """

    file: Path
    parts: dict[str, list[TensorInfo | _Factors]]

    @property
    def names(self) -> list[str]:
        """Base parameter names the adapter changes, in the file's order (full tensors first)."""
        return list(self.parts)


def read_lora(path: str | Path, base: nn.Module, base_where: str) -> LoraAdapter:
    """Open and check an adapter against the base model; reads its factors, not its full tensors.

    ``base``'s module types fix fan_in_fan_out and its parameters give the shapes. Every mismatch
    is found here, before any merge.
    """
    path = Path(path)
    cfg = read_adapter_config(path)
    file = path / WEIGHTS
    if not file.is_file():
        found = sorted(p.name for p in path.glob("adapter_model.*"))
        raise MergelawError(
            f"{file}: no such file (expected the adapter's weights in safetensors"
            + (f"; found {found[0]})" if found else ")")
        )
    header = read_header(file)
    modules = dict(base.named_modules(remove_duplicate=False))
    params = dict(base.named_parameters(remove_duplicate=False))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    embedding: dict[str, bool] = {}
    full: dict[str, TensorInfo] = {}
    for key, info in header.items():
        name = key.removeprefix(PREFIX)
        suffix = next((s for s in _FACTORS if name.endswith(s)), None)
        if suffix is not None:
            module = name[: -len(suffix)]
            factors.setdefault(module, {})[_FACTORS[suffix]] = read_tensor(info)
            embedding[module] = "embedding" in suffix
        elif re.search(r"(^|\.)(lora_\w+|token_adapter|trainable_tokens\w*)(\.|$)", name):
            raise MergelawError(
                f"{file}: tensor {key!r} is not a LoRA factor this package applies (expected "
                "lora_A/lora_B or lora_embedding_A/B: plain LoRA)"
            )
        else:
            full[name.replace(".base_layer.", ".")] = info
    parts: dict[str, list[TensorInfo | _Factors]] = {}
    for name, info in full.items():
        target = _param(params, name, file, name, base_where)
        _same_shape(file, f"tensor {name!r}", info.shape, name, target, base_where)
        parts[name] = [info]
    for module, found in factors.items():
        where = (file, base_where)
        for name, part in _module_factors(where, cfg, module, found, embedding[module], modules,
                                          params):  # fmt: skip
            parts.setdefault(name, []).append(part)
    return LoraAdapter(file, parts)


def _module_factors(
    where: tuple[Path, str],
    cfg: dict[str, Any],
    module: str,
    parts: dict[str, torch.Tensor],
    is_embedding: bool,
    modules: Mapping[str, nn.Module],
    params: Mapping[str, torch.Tensor],
) -> list[tuple[str, _Factors]]:
    """(parameter name, update) for one target module: its weight, and its bias with lora_bias."""
    file, base_where = where
    if module not in modules:
        raise MergelawError(
            f"{file}: module {module!r} is not in the base {base_where} (expected an adapter "
            "trained on this base model)"
        )
    for part in ("A", "B"):
        if part not in parts:
            kind = "lora_embedding_" if is_embedding else "lora_"
            raise MergelawError(f"{file}: module {module!r} has no {kind}{part} (expected both)")
    a, b = parts["A"], parts["B"]
    if a.dim() != 2 or b.dim() != 2:
        raise MergelawError(
            f"{file}: module {module!r} has factors of shapes {tuple(b.shape)} and "
            f"{tuple(a.shape)} (expected matrices: LoRA on convolutions is not supported)"
        )
    r = _pattern(cfg.get("rank_pattern"), module, cfg["r"])
    alpha = _pattern(cfg.get("alpha_pattern"), module, cfg["lora_alpha"])
    if a.shape[0] != r or b.shape[1] != r:
        raise MergelawError(
            f"{file}: module {module!r} has factors of rank {a.shape[0]} x {b.shape[1]} but "
            f"{CONFIG} gives r = {r} (expected the config's rank)"
        )
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    transpose = is_embedding or _fan_in_fan_out(modules[module], cfg)
    shape = (b.shape[0], a.shape[1])
    shape = shape[::-1] if transpose else shape
    weight = f"{module}.weight"
    target = _param(params, weight, file, module, base_where)
    what = f"module {module!r} (s * B @ A)"
    _same_shape(file, what, shape, weight, target, base_where)
    out = [(weight, _Factors(a, b, scaling, transpose))]
    if "bias" in parts:
        bias = f"{module}.bias"
        target = params.get(bias)
        if target is None:
            raise MergelawError(
                f"{file}: module {module!r} has a lora_B bias but the base {base_where} has no "
                f"{bias!r} (expected lora_bias only on modules with a bias)"
            )
        what = f"lora_B bias of {module!r}"
        _same_shape(file, what, tuple(parts["bias"].shape), bias, target, base_where)
        out.append((bias, _Factors(None, parts["bias"], scaling)))
    return out


def _pattern(patterns: Mapping[str, Any] | None, module: str, default: float) -> float:
    """PEFT's rank/alpha pattern lookup: the first key matching the end of the module's name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _fan_in_fan_out(module: nn.Module, cfg: dict[str, Any]) -> bool:
    if isinstance(module, nn.Linear):
        return False
    if type(module).__name__ == "Conv1D":  # transformers' Conv1D (GPT-2): weights are (in, out)
        return True
    return bool(cfg.get("fan_in_fan_out"))


def _param(
    params: Mapping[str, torch.Tensor], name: str, file: Path, key: str, base_where: str
) -> torch.Tensor:
    if name not in params:
        what = "module" if key != name else "tensor"
        raise MergelawError(
            f"{file}: {what} {key!r} has no parameter {name!r} in the base {base_where} "
            "(expected an adapter trained on this base model)"
        )
    return params[name]


def _same_shape(
    file: Path, what: str, shape: tuple[int, ...], name: str, target: torch.Tensor, base_where: str
) -> None:
    if shape != tuple(target.shape):
        raise MergelawError(
            f"{file}: {what} has shape {shape} but {name!r} of the base {base_where} has "
            f"{tuple(target.shape)} (expected an adapter trained on this base model)"
        )
