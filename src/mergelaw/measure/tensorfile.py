"""Per-tensor reads from a safetensors file: its header once, then each tensor (or block of rows)
read by offset into a buffer of its own.

Why not a memory map (``safetensors.safe_open``): the pages of a mapped file that were read stay
in the process's resident set while the mapping is open, so M experts read through open mappings
grow peak RSS by their whole size, though the kernel could drop them; and opening a mapping per
read costs milliseconds. A ``readinto`` leaves the file's pages in the page cache (reclaimable,
not the process's) and the tensor is freed when dropped. Values are as stored (dtype kept).

The header is checked against the file (known dtypes, sizes that match shapes, data inside the
file); a file that fails is one ``MergelawError`` line naming it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mergelaw.errors import MergelawError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in its file: dtype, shape, absolute byte offset."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def row_bytes(self) -> int:
        """Bytes per index of the first dimension (the whole tensor for a scalar)."""
        return math.prod(self.shape[1:]) * _itemsize(self.dtype)


def read_header(file: str | Path) -> dict[str, TensorInfo]:
    """Tensor name -> ``TensorInfo`` of a safetensors file, in the order of the data (as
    ``safetensors.torch.load_file`` gives them)."""
    file = Path(file)
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(fh.read(8), "little")
            if n > min(size - 8, _MAX_HEADER):
                raise ValueError(f"header length {n} exceeds the file's {size} bytes")
            raw = json.loads(fh.read(n))
    except OSError as exc:
        raise MergelawError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _unreadable(file, exc) from None
    if not isinstance(raw, dict):
        raise _unreadable(file, "the header is not a JSON object")
    start, data = 8 + n, size - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, entry in raw.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _unreadable(file, f"bad header entry for {name!r}") from None
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data:
            raise _unreadable(file, f"tensor {name!r} lies outside the file")
        if end - begin != math.prod(shape) * _itemsize(dtype):
            raise _unreadable(file, f"tensor {name!r}: its bytes do not match its shape")
        out[str(name)] = TensorInfo(file, dtype, shape, start + begin)
    return dict(sorted(out.items(), key=lambda item: item[1].offset))


def read_tensor(info: TensorInfo, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """The tensor (or rows ``[a, b)`` of its first dimension) as stored, in a new CPU buffer."""
    shape, offset = info.shape, info.offset
    if rows is not None and shape:
        a, b = rows
        shape = (b - a, *shape[1:])
        offset += a * info.row_bytes
    out = torch.empty(shape, dtype=info.dtype)
    if out.numel() == 0:
        return out
    view = memoryview(out.view(-1).view(torch.uint8).numpy())
    try:
        with open(info.file, "rb", buffering=0) as fh:
            fh.seek(offset)
            done = 0
            while done < len(view):
                got = fh.readinto(view[done:])
                if not got:
                    raise OSError(0, "the file ended early (truncated?)")
                done += got
    except OSError as exc:
        raise MergelawError(f"{info.file}: cannot be read ({exc.strerror or exc})") from None
    return out


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _unreadable(file: Path, why: object) -> MergelawError:
    return MergelawError(f"{file}: not a readable safetensors file ({why})")
