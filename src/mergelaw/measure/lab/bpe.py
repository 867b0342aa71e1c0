"""The lab tokenizer: a byte-level BPE trained on the corpora's train splits, for transformers.

Byte-level, so every text encodes (no unknown token); ``<|endoftext|>`` is the one special token
and the post-processor puts it before every encoded text. Training documents are packed as
``<|endoftext|> doc <|endoftext|> doc ...`` and an evaluated document starts with the same token,
so the first real token of a held-out document is predicted from the context training gave it.
Training reads the documents in a fixed order (domains sorted, then file order), single-threaded,
so the same corpora give the same vocabulary and merges.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mergelaw.errors import MergelawError
from mergelaw.io import write_json

EOS = "<|endoftext|>"
VOCAB_SIZE = 8192


def train_bpe(texts: Iterable[str], vocab_size: int = VOCAB_SIZE, min_frequency: int = 2):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (deterministic)."""
    os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, eos)]
    )
    return tok


def save_tokenizer(tok, out: str | Path, provenance: dict | None = None) -> Path:
    """Save as a transformers tokenizer directory (``AutoTokenizer.from_pretrained`` loads it)."""
    from transformers import PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None, pad_token=EOS
    )
    fast.model_max_length = 1_000_000
    fast.save_pretrained(out)
    if provenance is not None:
        write_json(provenance, out / "provenance.json")
    return out


def build_tokenizer(
    train_files: Sequence[str | Path], out: str | Path, vocab_size: int = VOCAB_SIZE
) -> Path:
    """Train on the texts of the given ``.jsonl`` train files (in that order); save to ``out``."""
    from mergelaw.measure.lab.corpora import read_jsonl

    files = [Path(f) for f in train_files]
    if not files:
        raise MergelawError("tokenizer: no train files given (expected the corpora train splits)")

    def texts() -> Iterable[str]:
        for f in files:
            for _, text in read_jsonl(f):
                yield text

    tok = train_bpe(texts(), vocab_size=vocab_size)
    import hashlib

    prov = {
        "kind": "byte-level BPE (tokenizers)",
        "vocab_size": tok.get_vocab_size(),
        "requested_vocab_size": vocab_size,
        "special_tokens": [EOS],
        "post_processor": f"{EOS} before every text",
        "trained_on": [
            {
                "file": f"{f.parent.name}/{f.name}",
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            }
            for f in files
        ],
    }
    return save_tokenizer(tok, out, prov)


def tokenizer_fingerprint(path: str | Path) -> str:
    """The sha256 of the saved ``tokenizer.json`` (what the lab stages key their caches on)."""
    import hashlib

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise MergelawError(f"{path}: no tokenizer.json (expected a saved lab tokenizer)")
    return hashlib.sha256(file.read_bytes()).hexdigest()


def vocab_size_of(path: str | Path) -> int:
    """The vocabulary size of a saved tokenizer (models are built to match it)."""
    data = json.loads((Path(path) / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["id"] for t in data.get("added_tokens", [])}
    return max([*data["model"]["vocab"].values(), *added]) + 1
