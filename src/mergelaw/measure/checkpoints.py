"""Read the tensors of a Hugging Face checkpoint folder: which file holds which tensor.

A folder may hold its weights in several ways; the first rule that applies decides:

1. ``model.safetensors.index.json`` (a sharded checkpoint): exactly the tensors of its
   ``weight_map``, each read from the shard the map names. Every other ``*.safetensors`` file in
   the folder is ignored, so a folder that also holds a consolidated copy (``model.safetensors``,
   or Mistral's ``consolidated.safetensors`` with its own tensor names) reads the shards.
2. ``model.safetensors``: that file alone.
3. Otherwise every ``*.safetensors`` file, each tensor name in one file only.

Transformers prefers ``model.safetensors`` over an index; ``load_pool`` fills the base's evaluation
model from what this module reads, so the model evaluated and the task vectors agree.
A shard the index names but the folder lacks, or a tensor missing from its shard, is a one-line
``MergelawError`` naming the file and the tensor.

``open_checkpoint`` reads only the files' headers: a ``Checkpoint`` knows every tensor's name,
shape and place, and reads a tensor (or a block of its rows) when asked
(``mergelaw.measure.tensorfile``), so a pool of M experts never holds M models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mergelaw.errors import MergelawError, first_line
from mergelaw.measure.tensorfile import TensorInfo, read_header, read_tensor

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def tensor_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, by the rules above."""
    path = Path(path)
    if not path.is_dir():
        raise MergelawError(
            f"{path}: no such checkpoint directory (expected config.json + *.safetensors)"
        )
    index = path / INDEX
    if index.is_file():
        return _from_index(path, index)
    files = [path / SINGLE] if (path / SINGLE).is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise MergelawError(f"{path}: no *.safetensors files (expected a safetensors checkpoint)")
    where: dict[str, Path] = {}
    for file in files:
        for name in _names(file):
            if name in where:
                raise MergelawError(
                    f"{file}: tensor {name!r} is also in {where[name].name} (expected each "
                    f"tensor in one file, or a {INDEX} naming the shard of each)"
                )
            where[name] = file
    return where


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder's tensors, read on demand: name -> where it lies (dtype, shape)."""

    path: Path
    tensors: dict[str, TensorInfo]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Tensor ``name`` (or rows ``[a, b)`` of its first dimension) as stored."""
        return read_tensor(self.tensors[name], rows)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint's tensors by ``tensor_files``' rules, from the files' headers alone."""
    by_file: dict[Path, list[str]] = {}
    for name, file in tensor_files(path).items():
        by_file.setdefault(file, []).append(name)
    tensors: dict[str, TensorInfo] = {}
    for file, names in by_file.items():
        header = read_header(file)
        for name in names:
            if name not in header:
                raise MergelawError(
                    f"{file}: no tensor {name!r} (the {INDEX} maps it to this shard; "
                    f"expected it here, found {len(header)} other tensors)"
                )
            tensors[name] = header[name]
    return Checkpoint(Path(path), tensors)


def _from_index(path: Path, index: Path) -> dict[str, Path]:
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise MergelawError(f"{index}: not valid JSON ({first_line(exc)})") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise MergelawError(
            f"{index}: no 'weight_map' (expected a table: tensor name -> shard file)"
        )
    where: dict[str, Path] = {}
    checked: set[str] = set()
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard:
            raise MergelawError(
                f"{index}: tensor {name!r} maps to {shard!r} (expected a file name in {path})"
            )
        file = path / shard
        if shard not in checked:
            if not file.is_file():
                raise MergelawError(
                    f"{file}: no such shard (the {INDEX} maps tensor {name!r} to it; expected "
                    "every shard it names in the folder)"
                )
            checked.add(shard)
        where[str(name)] = file
    return where


def _names(file: Path) -> list[str]:
    return sorted(read_header(file))
