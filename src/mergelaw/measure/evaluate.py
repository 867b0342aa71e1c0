"""Held-out text -> token windows (tokenized once, cached) -> token-mean cross-entropy.

Cross-entropy is the token-weighted mean negative log-likelihood over *predicted* tokens: token t
is predicted from tokens < t of its window (logits shifted by one), padding is never counted, and
a document longer than ``max_length`` is split into windows that overlap by one token, so every
token after a document's first is predicted exactly once (the context restarts at each window).

Eval text per domain: a ``.txt`` file (the whole file is one document) or a ``.jsonl`` file (one
``{"text": ...}`` document per line). Tokenizer: ``"bytes"`` (UTF-8 bytes as ids 0..255, for
random-model labs and tests) or a local Hugging Face tokenizer directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mergelaw.errors import MergelawError, first_line
from mergelaw.io import atomic_path

IGNORE = -100


@dataclass(frozen=True)
class Tokenizer:
    """A text -> ids function with an identity (part of the cache key)."""

    encode: Callable[[str], list[int]]
    identity: str


def byte_tokenizer() -> Tokenizer:
    return Tokenizer(lambda text: list(text.encode("utf-8")), "bytes")


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """``"bytes"`` or a local Hugging Face tokenizer directory (special tokens as it adds them)."""
    if str(spec) == "bytes":
        return byte_tokenizer()
    path = Path(spec)
    if not path.is_dir():
        raise MergelawError(f"{path}: no such tokenizer directory (expected 'bytes' or a dir)")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise MergelawError(f"{path}: cannot load a tokenizer ({first})") from None
    digest = hashlib.sha256()
    for file in sorted(path.glob("tokenizer*")) + sorted(path.glob("*.model")):
        digest.update(file.name.encode() + file.read_bytes())
    return Tokenizer(lambda text: list(tok(text)["input_ids"]), f"hf:{digest.hexdigest()[:16]}")


@dataclass(frozen=True)
class EvalSet:
    """One domain's held-out text as token windows."""

    domain: str
    windows: tuple[np.ndarray, ...]
    hash: str

    @property
    def n_tokens(self) -> int:
        """Predicted tokens: each window predicts all but its first token."""
        return int(sum(len(w) - 1 for w in self.windows))


def read_documents(path: str | Path, domain: str) -> list[str]:
    """Documents of one domain's eval file (.txt: one document; .jsonl: one per line)."""
    path = Path(path)
    if not path.is_file():
        raise MergelawError(
            f"{path}: no such eval file for domain {domain!r} (expected a .txt or .jsonl file)"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        docs = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                raise MergelawError(
                    f"{path}: line {i} is not a JSON object with a 'text' field "
                    f"(eval domain {domain!r})"
                ) from None
            docs.append(str(doc))
    else:
        docs = [text]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise MergelawError(
            f"{path}: eval text for domain {domain!r} is empty (expected held-out text)"
        )
    return docs


def windows_of(ids: Sequence[int], max_length: int) -> list[np.ndarray]:
    """Split one document into windows of <= max_length tokens overlapping by one token."""
    if max_length < 2:
        raise MergelawError(f"max_length = {max_length}: expected at least 2 tokens per window")
    ids = np.asarray(ids, dtype=np.int64)
    out, start = [], 0
    while start < len(ids) - 1:
        out.append(ids[start : start + max_length])
        start += max_length - 1
    return out


def build_eval_set(
    domain: str,
    path: str | Path,
    tokenizer: Tokenizer,
    max_length: int,
    *,
    vocab_size: int | None = None,
    cache_dir: str | Path | None = None,
) -> EvalSet:
    """Tokenize a domain's eval file once; reuse the cached windows when the file is unchanged."""
    path = Path(path)
    if not path.is_file():
        raise MergelawError(
            f"{path}: no such eval file for domain {domain!r} (expected a .txt or .jsonl file)"
        )
    key = hashlib.sha256(
        path.read_bytes() + f"|{tokenizer.identity}|{max_length}".encode()
    ).hexdigest()[:20]
    cache = Path(cache_dir) / f"{domain}-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            flat, lengths = data["ids"], data["lengths"]
        windows = tuple(np.split(flat, np.cumsum(lengths)[:-1]))
    else:
        windows_list: list[np.ndarray] = []
        for doc in read_documents(path, domain):
            windows_list.extend(windows_of(tokenizer.encode(doc), max_length))
        windows = tuple(windows_list)
        if not windows:
            raise MergelawError(
                f"{path}: eval text for domain {domain!r} has fewer than 2 tokens "
                "(expected at least one predicted token)"
            )
        if cache is not None:
            with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh, ids=np.concatenate(windows), lengths=np.array([len(w) for w in windows])
                )
    if vocab_size is not None:
        top = max(int(w.max()) for w in windows)
        if top >= vocab_size:
            raise MergelawError(
                f"{path}: token id {top} in domain {domain!r} is outside the model's vocabulary "
                f"of {vocab_size} (expected a tokenizer that matches the base)"
            )
    digest = hashlib.sha256(f"{domain}|{max_length}|".encode())
    for w in windows:
        digest.update(np.int64(len(w)).tobytes() + w.astype(np.int64).tobytes())
    return EvalSet(domain, windows, digest.hexdigest()[:16])


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T); padding positions hold token 0 and are never predicted
    labels: torch.Tensor  # (B, T); IGNORE at padding
    domain: torch.Tensor  # (B,) index into the eval sets


def make_batches(
    eval_sets: Sequence[EvalSet], batch_tokens: int, device: str | torch.device = "cpu"
) -> list[Batch]:
    """Pack all windows of all domains into padded batches of about ``batch_tokens`` tokens."""
    items = [(len(w), d, w) for d, es in enumerate(eval_sets) for w in es.windows]
    items.sort(key=lambda x: -x[0])
    batches, i = [], 0
    while i < len(items):
        width = items[i][0]
        rows = max(1, batch_tokens // width)
        chunk = items[i : i + rows]
        i += len(chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for r, (n, _, w) in enumerate(chunk):
            ids[r, :n] = torch.from_numpy(w)
            labels[r, :n] = ids[r, :n]
        domain = torch.tensor([d for _, d, _ in chunk], dtype=torch.long)
        batches.append(Batch(ids.to(device), labels.to(device), domain.to(device)))
    return batches


def _row_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL per row: logits at t predict the token at t + 1."""
    shift_logits = logits[..., :-1, :].float()
    shift_labels = labels[..., 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    )
    return nll.view(shift_labels.shape).sum(-1)


def _autocast(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _counts(batches: Sequence[Batch], n_domains: int) -> torch.Tensor:
    counts = torch.zeros(n_domains, dtype=torch.float64)
    for b in batches:
        per_row = (b.labels[:, 1:] != IGNORE).sum(-1).double().cpu()
        counts.index_add_(0, b.domain.cpu(), per_row)
    return counts


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Sequence[Batch], n_domains: int, *, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Token-mean CE per domain of one model; returns (loss per domain, predicted tokens)."""
    device = batches[0].input_ids.device
    sums = torch.zeros(n_domains, dtype=torch.float64, device=device)
    with _autocast(device, dtype):
        for b in batches:
            logits = model(input_ids=b.input_ids, use_cache=False).logits
            sums.index_add_(0, b.domain, _row_nll(logits, b.labels).double())
    counts = _counts(batches, n_domains)
    return (sums.cpu() / counts).numpy(), counts.numpy().astype(np.int64)


@torch.no_grad()
def evaluate_stacked(
    model: nn.Module,
    stacked: dict[str, torch.Tensor],
    batches: Sequence[Batch],
    n_domains: int,
    *,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Several models in one forward: ``stacked`` maps parameter names to (n_models, ...) tensors.

    Parameters not in ``stacked`` are shared (the model's own). Uses torch.func.functional_call
    under torch.vmap. Returns (loss of shape (n_models, n_domains), predicted tokens per domain).
    """
    from torch.func import functional_call

    device = batches[0].input_ids.device
    n_models = next(iter(stacked.values())).shape[0]
    sums = torch.zeros((n_models, n_domains), dtype=torch.float64, device=device)
    with _autocast(device, dtype):
        for b in batches:

            def rows(params, b=b):
                logits = functional_call(model, params, (b.input_ids,), {"use_cache": False})
                return _row_nll(logits.logits, b.labels)

            per_row = torch.vmap(rows)(stacked).double()  # (n_models, B)
            sums.index_add_(1, b.domain, per_row)
    counts = _counts(batches, n_domains)
    return (sums.cpu() / counts).numpy(), counts.numpy().astype(np.int64)
