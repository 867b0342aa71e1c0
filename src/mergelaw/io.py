"""File and terminal output: atomic writes, ``-`` for stdout, consoles that don't wrap in a pipe,
and a lock on an output folder.

Atomic writes: write to a temporary path beside the target, then rename over it.

Temporary files are named ``.NAME.PID.XXXXXXXX.tmp`` beside the target. One whose process is gone
(killed while writing) is removed the next time anything writes that target. Commands call
``check_writable`` on their outputs before working, so a path that cannot be written is refused
by the name the user gave, before any computation. An output given as ``-`` is stdout
(``is_stdout``); ``write_json`` writes there, and commands send their other output to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import socket
import sys
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


#: The output path that means stdout (``--json -``).
STDOUT = "-"


def is_stdout(target: str | os.PathLike[str] | None) -> bool:
    """Whether an output path is ``-``, standard output."""
    return target is not None and os.fspath(target) == STDOUT


def write_json(obj: Any, target: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON, atomically; ``-`` writes it to stdout."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    if is_stdout(target):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# ---- consoles ---------------------------------------------------------------------------------

#: The width a console takes where its output is not a terminal: long enough never to wrap a line
#: or cut a table cell (tables take only the width their contents need).
UNWRAPPED_WIDTH = 100_000


def output_console(*, stderr: bool = False, **options: Any):
    """A rich Console for a command's output that wraps lines and fits tables to the terminal's
    width on a terminal, and never wraps or cuts anything in a pipe or file (rich alone would
    wrap at 80 columns there, which breaks scripts). Imports rich on first use."""
    return _unwrapped_console_class()(stderr=stderr, **options)


@functools.cache
def _unwrapped_console_class() -> type:
    from rich.console import Console, ConsoleDimensions

    class UnwrappedConsole(Console):
        """A Console whose width is unlimited unless it writes to a terminal."""

        @property
        def size(self) -> ConsoleDimensions:
            size = super().size
            if self._width is None and not self.is_terminal:
                return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)
            return size

        @size.setter
        def size(self, new_size: tuple[int, int]) -> None:
            Console.size.fset(self, new_size)

    return UnwrappedConsole


# ---- a lock on an output folder ---------------------------------------------------------------

#: The lock file a command holds in an output folder while it writes there.
LOCK_NAME = ".mergelaw.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "mergelaw") -> Iterator[Path]:
    """Hold ``FOLDER/.mergelaw.lock`` while the block runs, so that a second run on the same
    folder refuses (one line naming the folder, the holder's pid and host) instead of
    repeating the first one's work and removing its temporary files.

    The lock file is created atomically (O_CREAT | O_EXCL) and holds ``pid host command``; it is
    removed on exit. A lock whose process has died on this host (killed, out of memory) is stale
    and taken over. A lock from another host cannot be checked and is honoured."""
    folder = Path(folder)
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(folder, exc) from None
    mine = f"{os.getpid()} {socket.gethostname()} {what}\n"
    for _ in range(10):  # a stale lock is removed, then created afresh; each race costs a retry
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is None:
                continue  # removed between our open and our read: try again
            pid, host, command = holder
            if host == socket.gethostname() and pid is not None and not _running(pid):
                _remove_if_unchanged(lock, holder)
                continue
            who = f"pid {pid}" if pid is not None else "an unknown process"
            where = f" on {host}" if host and host != socket.gethostname() else ""
            raise MergelawError(
                f"{folder}: another {command or 'run'} ({who}{where}) is writing to this folder; "
                f"wait for it to end, or remove {lock} if it is no longer running"
            ) from None
        except OSError as exc:
            raise _write_error(lock, exc) from None
        else:
            with os.fdopen(fd, "w") as file:
                file.write(mine)
            break
    else:
        raise MergelawError(f"{lock}: could not take the lock (it changed hands 10 times)")
    try:
        yield lock
    finally:
        if _read_lock(lock) == _parse_lock(mine):
            lock.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` is alive and not a zombie (killed, not yet reaped by its parent:
    its lock is stale all the same)."""
    if not _alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or gone meanwhile: trust the signal check
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _read_lock(lock: Path) -> tuple[int | None, str, str] | None:
    """(pid, host, command) written in a lock file; None if the file is gone."""
    try:
        return _parse_lock(lock.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return None
    except OSError:
        return (None, "", "")


def _parse_lock(text: str) -> tuple[int | None, str, str]:
    pid, _, rest = text.strip().partition(" ")
    host, _, command = rest.partition(" ")
    return (int(pid) if pid.isdigit() else None, host, command)


def _remove_if_unchanged(lock: Path, holder: tuple[int | None, str, str]) -> None:
    """Remove a stale lock unless another process took it over since it was read (a narrow race
    remains between the read and the unlink; the O_EXCL create that follows is atomic)."""
    if _read_lock(lock) == holder:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
