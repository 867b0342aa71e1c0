"""A reader for SWORD zText Bible modules: the verse entries, in canonical order, as OSIS text.

A testament is three files: ``.bzs`` (blocks: offset, compressed size, size; little-endian u32),
``.bzz`` (the zlib-compressed blocks) and ``.bzv`` (entries: block, start, size as u32, u32, u16).
Entries follow the module's versification, with empty or heading-only entries for book and
chapter introductions; OSIS ``<chapter osisID="Matt.2"/>`` markers say where chapters start.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from pathlib import Path

from mergelaw.errors import MergelawError

_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"')
_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TITLE = re.compile(r"<title\b.*?</title>", re.S)
_TAG = re.compile(r"<[^>]+>")


def entries(module_dir: str | Path, testament: str) -> list[str]:
    """The raw OSIS text of every entry of one testament (``"ot"`` or ``"nt"``), in order."""
    root = Path(module_dir)
    try:
        bzs = (root / f"{testament}.bzs").read_bytes()
        bzz = (root / f"{testament}.bzz").read_bytes()
        bzv = (root / f"{testament}.bzv").read_bytes()
    except FileNotFoundError as exc:
        raise MergelawError(f"{exc.filename}: missing (expected a SWORD zText module)") from None
    blocks: dict[int, bytes] = {}
    out = []
    for i in range(0, len(bzv) - len(bzv) % 10, 10):
        block, start, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            out.append("")
            continue
        if block not in blocks:
            offset, csize, _ = struct.unpack_from("<III", bzs, 12 * block)
            blocks[block] = zlib.decompress(bzz[offset : offset + csize])
        out.append(blocks[block][start : start + size].decode("utf-8"))
    return out


def chapters(module_dir: str | Path) -> list[tuple[str, list[str]]]:
    """(osisID of the chapter, its verses as plain text) for the whole Bible, in order."""
    result: list[tuple[str, list[str]]] = []
    for testament in ("ot", "nt"):
        if not (Path(module_dir) / f"{testament}.bzv").is_file():
            continue
        for raw in entries(module_dir, testament):
            marks = _CHAPTER.findall(raw)
            if marks:
                result.append((marks[-1], []))
            text = plain(raw)
            if text and result:
                result[-1][1].append(text)
    return [(cid, verses) for cid, verses in result if verses]


def plain(osis: str) -> str:
    """OSIS markup -> plain text: notes and headings dropped, tags removed, spaces collapsed."""
    text = _TITLE.sub(" ", _NOTE.sub(" ", osis))
    text = html.unescape(_TAG.sub("", text))
    return " ".join(text.split())
