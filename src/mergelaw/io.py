"""Atomic file output: write to a temporary path beside the target, then rename over it.

Temporary files are named ``.NAME.PID.XXXXXXXX.tmp`` beside the target. One whose process is gone
(killed while writing) is removed the next time anything writes that target. Commands call
``check_writable`` on their outputs before working, so a path that cannot be written is refused
by the name the user gave, before any computation.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mergelaw.errors import MergelawError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it over ``target``.

    A reader never sees a half-written file, and a failure leaves any earlier file untouched.
    Temporary files of earlier writes to ``target`` whose process has ended are removed first.
    A folder or file system that refuses the write raises MergelawError naming ``target``.
    """
    target = Path(target)
    check_writable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise _write_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual mode
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise _write_error(target, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(target: str | os.PathLike[str]) -> None:
    """Refuse (one line naming ``target``) an output path that cannot be written: an existing
    folder, a path under a regular file, or a folder that refuses a new file (tried by creating
    and removing a probe file in the nearest existing folder)."""
    target = Path(target)
    if target.is_dir():
        raise MergelawError(f"{target}: is a folder (expected a file path to write)")
    folder = target.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        raise MergelawError(f"{target}: cannot write under {folder}, a file (expected a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.getpid()}.probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MergelawError(
            f"{target}: cannot write in {folder} ({exc.strerror or type(exc).__name__})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of earlier writes to ``target`` whose writer process has
    ended (or that predate the process-tagged names); return the paths removed."""
    target = Path(target)
    pattern = f".{glob.escape(target.name)}.*.tmp"
    removed = []
    for path in target.parent.glob(pattern):
        middle = path.name[len(target.name) + 2 : -len(".tmp")]
        pid = middle.split(".")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _write_error(target: Path, exc: OSError) -> MergelawError:
    reason = exc.strerror or type(exc).__name__
    return MergelawError(f"{target}: cannot write it ({reason})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(obj: Any, target: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
