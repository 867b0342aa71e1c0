"""The lab corpora: cleaning, chunking, the document split, the readers, and the shipped folder."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from mergelaw.errors import MergelawError
from mergelaw.measure.lab.corpora import (
    chunk,
    nbytes,
    normalise,
    read_jsonl,
    split_documents,
    truncate,
)
from mergelaw.measure.lab.extract import DOMAINS, metamath_records, pack, reflow
from mergelaw.measure.lab.fetch import SOURCES, Source, unpack
from mergelaw.measure.lab.rdata import unserialize
from mergelaw.measure.lab.sword import chapters

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "corpora"


def test_normalise_is_the_documented_cleaning():
    raw = "e\u0301t\u00e9  \r\nline\x07 two\t \r\r\n\n\n\nend  "
    assert normalise(raw) == "\u00e9t\u00e9\nline two\n\nend"
    assert normalise(normalise(raw)) == normalise(raw)


def test_chunk_keeps_every_byte_and_respects_the_limit():
    text = "\n\n".join(f"paragraph {i} " + "word " * (i % 50) for i in range(300))
    text += "\n\n" + "x" * 5000  # one line longer than the limit
    pieces = chunk("doc", text, max_doc=1000)
    assert all(nbytes(t) <= 1000 for _, t in pieces)
    assert [i for i, _ in pieces] == [f"doc#{n}" for n in range(len(pieces))]
    assert "".join(t for _, t in pieces).replace("\n", "") == text.replace("\n", "")
    assert chunk("short", "tiny") == [("short", "tiny")]


def test_truncate_cuts_at_a_line_boundary_within_the_budget():
    assert truncate("ab\ncd\nef", 6) == "ab\ncd"
    assert nbytes(truncate("é" * 10, 5)) <= 5
    assert truncate("abc", 10) == "abc"


def _docs(n=400, seed=0):
    import random

    rng = random.Random(seed)
    return [(f"d{i}", " ".join(rng.choice(["alpha", "beta", "gamma", "delta"])
                               for _ in range(rng.randint(5, 400)))) for i in range(n)]  # fmt: skip


def test_split_is_deterministic_capped_and_disjoint():
    docs = _docs()
    a = split_documents("x", docs, train_bytes=40_000, heldout_bytes=5_000, max_doc=1_000)
    b = split_documents("x", docs, train_bytes=40_000, heldout_bytes=5_000, max_doc=1_000)
    assert a == b
    train_bytes = sum(nbytes(t) for _, t in a.train)
    held_bytes = sum(nbytes(t) for _, t in a.heldout)
    assert 40_000 - 1_000 < train_bytes <= 40_000 and 5_000 - 1_000 < held_bytes <= 5_000
    assert not {i for i, _ in a.train} & {i for i, _ in a.heldout}
    other = split_documents("y", docs, train_bytes=40_000, heldout_bytes=5_000, max_doc=1_000)
    assert [i for i, _ in other.heldout] != [i for i, _ in a.heldout]  # seeded per domain
    with pytest.raises(MergelawError, match="fewer than"):
        split_documents("x", docs[:3], train_bytes=40_000, heldout_bytes=5_000)


def test_pack_reflow_and_metamath_records():
    docs = pack([(str(i), "r" * 30) for i in range(10)], size=100)
    assert [d for d, _ in docs] == ["0", "4", "8"] and docs[0][1].count("\n\n") == 3
    assert reflow(["Hard", "wrapped", "", "", "Next"]) == "Hard wrapped\n\nNext"
    mm = """$( A comment
       on two lines. $)
    $c ( ) $.  wph $f wff ph $.
    ax-1 $a |- ( ph -> ph ) $.
    th1 $p |- ph $= ( wph ax-1 ) AB $.
    """
    assert metamath_records(mm) == [
        ("c0", "A comment\non two lines."),
        ("ax-1", "ax-1 $a |- ( ph -> ph ) $."),
        ("th1", "th1 $p |- ph $."),
    ]


def _xdr_char(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">ii", 0x00040009, len(data)) + data


def test_rdata_reads_named_character_vectors():
    strs = struct.pack(">ii", 16, 2) + _xdr_char("EMMA") + _xdr_char("By Jane Austen")
    names = struct.pack(">ii", 16, 1) + _xdr_char("emma")
    attrs = struct.pack(">i", 2 | 0x400) + struct.pack(">i", 1) + _xdr_char("names") + names
    attrs += struct.pack(">i", 254)
    blob = b"X\n" + struct.pack(">iii", 2, 0x040000, 0x020300)
    blob += struct.pack(">ii", 19 | 0x200, 1) + strs + attrs
    assert unserialize(blob) == {"emma": ["EMMA", "By Jane Austen"]}
    with pytest.raises(MergelawError, match="not R XDR"):
        unserialize(b"RDX2\n")


def test_sword_reader_splits_chapters_and_strips_markup(tmp_path):
    entries = [
        "",
        '<chapter osisID="Gen.1" sID="Gen.1"/><title>Génesis</title>',
        '<w lemma="x">EN el principio</w> crió <note>nota</note>Dios.',
        "Y la tierra &amp; el mar.",
        '<chapter osisID="Gen.2"/>Fueron acabados.',
    ]
    block = "".join(entries).encode()
    z = zlib.compress(block)
    (tmp_path / "ot.bzz").write_bytes(z)
    (tmp_path / "ot.bzs").write_bytes(struct.pack("<III", 0, len(z), len(block)))
    index, pos = b"", 0
    for e in entries:
        n = len(e.encode())
        index += struct.pack("<IIH", 0, pos, n)
        pos += n
    (tmp_path / "ot.bzv").write_bytes(index)
    assert chapters(tmp_path) == [
        ("Gen.1", ["EN el principio crió Dios.", "Y la tierra & el mar."]),
        ("Gen.2", ["Fueron acabados."]),
    ]


def test_deb_unpack_without_dpkg(tmp_path):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo("./usr/share/x.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    data = payload.getvalue()

    def member(name: str, body: bytes) -> bytes:
        head = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        return head + body + (b"\n" if len(body) % 2 else b"")

    deb = b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("data.tar.gz", data)
    (tmp_path / "p.deb").write_bytes(deb)
    src = Source("deb", "p", "1", hashlib.sha256(deb).hexdigest(), "p.deb", "-", "-")
    root = unpack(src, tmp_path / "p.deb", tmp_path / "out")
    assert (root / "usr/share/x.txt").read_text() == "hello"


def test_every_domain_names_pinned_sources():
    assert len(DOMAINS) >= 9
    for d in DOMAINS.values():
        assert all(s in SOURCES for s in d.sources) and d.licence


# ----------------------------------------------------------------------------- shipped data


@pytest.fixture(scope="module")
def provenance():
    return json.loads((SHIPPED / "provenance.json").read_text())


def test_shipped_corpora_match_their_provenance(provenance):
    settings = provenance["settings"]
    assert len(provenance["domains"]) >= 9
    for name, d in provenance["domains"].items():
        for side, cap in (
            ("train", settings["train_bytes"]),
            ("heldout", settings["heldout_bytes"]),
        ):
            path = SHIPPED / name / f"{side}.jsonl"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == d[side]["sha256"], path
            docs = read_jsonl(path)
            size = sum(nbytes(t) for _, t in docs)
            assert size == d[side]["bytes"] and cap * 0.99 <= size <= cap, (name, side)
            assert len(docs) == d[side]["documents"]
        train_ids = {i for i, _ in read_jsonl(SHIPPED / name / "train.jsonl")}
        held_ids = {i for i, _ in read_jsonl(SHIPPED / name / "heldout.jsonl")}
        assert not train_ids & held_ids, name
        assert d["licence"] and d["sources"]
    assert (SHIPPED / "PROVENANCE.md").is_file()
    assert (SHIPPED / "licences" / "CC-BY-4.0.txt").is_file()


def test_shipped_corpora_are_small(provenance):
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 20e6
