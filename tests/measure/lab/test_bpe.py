"""The shipped tokenizer: retraining on the shipped corpora gives it byte for byte; it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from mergelaw.measure.lab.bpe import EOS, build_tokenizer, vocab_size_of
from mergelaw.measure.lab.corpora import corpus_files

DATA = Path(__file__).resolve().parents[3] / "data"


def test_retraining_on_the_shipped_corpora_gives_the_shipped_tokenizer(tmp_path):
    files = corpus_files(DATA / "corpora")
    out = build_tokenizer([files[d]["train"] for d in sorted(files)], tmp_path / "tok")
    shipped = DATA / "tokenizer" / "tokenizer.json"
    assert (out / "tokenizer.json").read_bytes() == shipped.read_bytes()
    assert vocab_size_of(DATA / "tokenizer") == 8192


def test_the_measure_layer_loads_it_and_every_text_starts_with_the_separator():
    from transformers import AutoTokenizer

    from mergelaw.measure.evaluate import load_tokenizer

    tok = load_tokenizer(DATA / "tokenizer")
    hf = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    text = "def f(x):\n    return x  # ¡Señor! ∀x ∈ A"
    ids = tok.encode(text)
    assert ids[0] == hf.convert_tokens_to_ids(EOS) and EOS not in hf.decode(ids[1:])
    assert hf.decode(ids[1:]) == text  # byte-level: lossless
    assert tok.identity.startswith("hf:")
