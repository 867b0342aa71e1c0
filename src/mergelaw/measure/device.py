"""Checks before measuring, without importing torch until it is needed: the ``measure`` extra is
installed, and a device name is one torch would take on this machine."""

from __future__ import annotations

import importlib.util
import re

from mergelaw.errors import MergelawError, MissingExtraError

#: The modules measuring needs, all installed by ``pip install 'mergelaw[measure]'``.
MEASURE_MODULES = ("torch", "transformers", "safetensors")


def require_measure_extra(what: str = "mergelaw measure") -> None:
    """Refuse in one line, naming the extra to install, where torch, transformers or
    safetensors is missing (looked up without importing them)."""
    for module in MEASURE_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, what)


def check_device(device: str, *, local: bool = True, option: str = "--device") -> None:
    """Refuse a device name torch would not take, or (``local``) CUDA on a machine without it,
    as one line naming the option, before anything is loaded."""
    if device in ("auto", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise MergelawError(f"{option} {device}: expected auto, cpu, cuda or cuda:N")
    if not local:
        return
    require_measure_extra(f"{option} {device}")
    import torch

    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU found"
        raise MergelawError(f"{option} {device}: CUDA is not available ({why}); use auto or cpu")
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise MergelawError(
            f"{option} {device}: this machine has {count} CUDA device(s) (expected cuda:0 to "
            f"cuda:{count - 1})"
        )


def set_torch_threads(threads: int | None) -> None:
    """Torch's CPU threads for this process (None: torch's own choice). Tiny models slow down
    badly when threads wait for a busy core."""
    if threads is None:
        return
    require_measure_extra("--threads")
    import torch

    torch.set_num_threads(threads)
