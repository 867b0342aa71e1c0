"""A minimal reader for R's XDR serialization and lazy-load databases (``.rdx`` + ``.rdb``).

Enough of the format for R packages that ship text as character vectors (``janeaustenr``):
NULL, symbols, pairlists, character/logical/integer/double vectors, lists, references and
attributes. Anything else raises a one-line error naming the type.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

from mergelaw.errors import MergelawError

NILVALUE, REF, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC = 254, 255, 1, 2, 9, 10, 13, 14, 16, 19
ENVS = {241, 242, 253}  # base, empty, global environment: no payload
NA_INT = -(2**31)


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where, self.refs = data, 0, where, []

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def header(self) -> None:
        if self.data[:2] != b"X\n":
            raise MergelawError(f"{self.where}: not R XDR serialization (expected 'X\\n')")
        self.pos = 2
        version = self.int()
        self.int(), self.int()
        if version == 3:
            n = self.int()
            self.pos += n

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
        if kind == NILVALUE or kind in ENVS:
            return None
        if kind == REF:
            return self.refs[(flags >> 8) - 1]
        if kind == SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == LIST:
            out = {}
            while kind == LIST:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else str(len(out))
                out[str(tag)] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
            if kind != NILVALUE:
                raise MergelawError(f"{self.where}: pairlist ends with R type {kind}")
            return out
        if kind == CHAR:
            n = self.int()
            if n == -1:
                return None
            text = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return text
        if kind in (LGL, INT, REAL, STR, VEC):
            n = self.int()
            if kind in (LGL, INT):
                values: Any = list(struct.unpack_from(f">{n}i", self.data, self.pos))
                self.pos += 4 * n
            elif kind == REAL:
                values = list(struct.unpack_from(f">{n}d", self.data, self.pos))
                self.pos += 8 * n
            else:
                values = [self.item() for _ in range(n)]
            if has_attr:
                attrs = self.item()
                names = attrs.get("names") if isinstance(attrs, dict) else None
                if isinstance(names, list) and len(names) == len(values):
                    return dict(zip(names, values))
            return values
        raise MergelawError(f"{self.where}: R type {kind} is not supported by this reader")


def unserialize(data: bytes, where: str = "R data") -> Any:
    """One R object from its XDR serialization (a dict for named vectors and pairlists)."""
    reader = _Reader(data, where)
    reader.header()
    return reader.item()


def read_lazyload(rdx: str | Path) -> dict[str, Any]:
    """Every object of an R lazy-load database (``NAME.rdx`` index beside ``NAME.rdb``)."""
    rdx = Path(rdx)
    index = unserialize(_inflate(gzip.decompress(rdx.read_bytes()), rdx, raw=True), str(rdx))
    rdb = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        blob = rdb[int(offset) : int(offset) + int(length)]
        out[name] = unserialize(_inflate(blob, rdx.with_suffix(".rdb")), f"{rdx}:{name}")
    return out


def _inflate(blob: bytes, where: Path, raw: bool = False) -> bytes:
    """R's compressed blobs: 4-byte big-endian length, then zlib data (index files: plain)."""
    if raw:
        return blob
    try:
        return zlib.decompress(blob[4:])
    except zlib.error:
        raise MergelawError(
            f"{where}: an entry is not zlib-compressed (expected R's default)"
        ) from None
