"""Train the lab's models: pretrain a base from a transformers config, fine-tune experts.

Both share one loop (``train``): packed fixed-length sequences drawn from a token stream in a
seeded order, AdamW with linear warm-up and cosine decay, bf16 autocast (CPU or CUDA), gradient
clipping, a tqdm progress bar. Every ``checkpoint_every`` steps the run saves model, optimizer,
scheduler, RNG state and its step to ``OUT/checkpoint.pt`` (atomically); the data position is a
function of the step and the seed, so a resumed run draws the same batches and ends with the same
weights as an uninterrupted one. When done it writes ``OUT/model/`` (safetensors checkpoint that
``mergelaw.measure.experts`` loads, with the tokenizer) and ``OUT/training.json`` (config, recipe,
tokens seen, wall time, loss curve, versions), and deletes the checkpoint. A finished run is never
repeated: calling it again returns the record.

Data order: the stream of token ids is cut into ``len // seq_len`` sequences; epoch ``e`` visits
them in the order ``numpy.random.default_rng([seed, e]).permutation``; step ``s`` takes positions
``s*batch .. s*batch+batch-1`` of that endless sequence of epochs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field

from mergelaw.config import Config, validated
from mergelaw.errors import MergelawError
from mergelaw.io import atomic_path, write_json
from mergelaw.measure.experts import EMBEDDING_PATTERN

DONE = "training.json"
MODEL = "model"
CHECKPOINT = "checkpoint.pt"


Count = Annotated[int, Field(ge=1)]
TOKEN_BUDGET = "the tokens to train on, a whole number >= 1"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Recipe(Config):
    """How to train: one recipe for every base (pretraining) and one for every expert."""

    token_budget: Annotated[int, Field(ge=1, description=TOKEN_BUDGET)]
    seq_len: Annotated[int, Field(ge=2)] = 256
    batch_size: Count = 16
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-3
    min_lr_ratio: Fraction = 0.1
    warmup: Fraction = 0.05  # fraction of the steps
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.1
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.95
    grad_clip: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1.0  # 0: no clipping
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # autocast dtype
    seed: Annotated[int, Field(ge=0)] = 0
    checkpoint_every: Count = 200
    log_every: Count = 10

    @property
    def steps(self) -> int:
        return max(1, self.token_budget // (self.seq_len * self.batch_size))

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "recipe") -> Recipe:
        """Build from a config table; a one-line error naming ``source`` and the setting."""
        return validated(cls, raw, source)


# ----------------------------------------------------------------------------- models


def model_config(arch: str, vocab_size: int, eos_id: int = 0, **kwargs: Any):
    """A transformers config for the lab: ``llama`` or ``gpt2``, tied embeddings, no dropout."""
    from transformers import GPT2Config, LlamaConfig

    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id)
    common["tie_word_embeddings"] = True
    if arch == "llama":
        return LlamaConfig(**{**common, "attention_dropout": 0.0, **kwargs})
    if arch == "gpt2":
        zero = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2Config(**{**common, **zero, **kwargs})
    raise MergelawError(f"arch {arch!r}: unknown (expected llama or gpt2)")


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, non-embedding parameters); tied tensors count once."""
    embed = re.compile(EMBEDDING_PATTERN)
    total = non_embed = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if not embed.search(name):
            non_embed += p.numel()
    return total, non_embed


# ----------------------------------------------------------------------------- data


def encode_files(
    files: Sequence[str | Path], tokenizer_dir: str | Path, cache_dir: str | Path | None = None
) -> np.ndarray:
    """The token stream of some corpus ``.jsonl`` files: each document as the tokenizer encodes
    it (with its leading ``<|endoftext|>``), concatenated in file order; cached as ``.npy``."""
    from mergelaw.measure.lab.bpe import tokenizer_fingerprint
    from mergelaw.measure.lab.corpora import read_jsonl

    digest = hashlib.sha256(tokenizer_fingerprint(tokenizer_dir).encode())
    for f in files:
        digest.update(Path(f).read_bytes())
    key = digest.hexdigest()[:20]
    cache = Path(cache_dir) / f"stream-{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    texts = [t for f in files for _, t in read_jsonl(f)]
    ids = [e.ids for e in tok.encode_batch(texts)]
    stream = np.fromiter((i for doc in ids for i in doc), dtype=np.int32)
    stream = stream.astype(np.uint16 if tok.get_vocab_size() < 65536 else np.int32)
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.save(fh, stream)
    return stream


class Batches:
    """Step -> (batch, seq_len) tensor of token ids, in the seeded order of the module docstring."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, seed: int):
        self.n_seq = len(stream) // seq_len
        if self.n_seq < 1:
            raise MergelawError(
                f"token stream of {len(stream)} tokens is shorter than one sequence of {seq_len}"
            )
        self.seqs = np.asarray(stream[: self.n_seq * seq_len]).reshape(self.n_seq, seq_len)
        self.batch_size, self.seed = batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_seq)}
        return self._perms[epoch]

    def __call__(self, step: int) -> torch.Tensor:
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        rows = [self._perm(int(p // self.n_seq))[p % self.n_seq] for p in pos]
        return torch.from_numpy(self.seqs[rows].astype(np.int64))

    @property
    def tokens(self) -> int:
        return int(self.seqs.size)


# ----------------------------------------------------------------------------- the loop


def _schedule(recipe: Recipe) -> Callable[[int], float]:
    steps = recipe.steps
    warm = max(1, round(recipe.warmup * steps)) if recipe.warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), foreach=False
    )


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def is_done(out: str | Path) -> bool:
    """Whether a training run in ``out`` has finished (its record and model are there)."""
    out = Path(out)
    return (out / DONE).is_file() and (out / MODEL / "config.json").is_file()


def train(
    model: torch.nn.Module,
    batches: Batches,
    recipe: Recipe,
    out: str | Path,
    *,
    record: dict[str, Any],
    device: str = "auto",
    progress: bool = True,
    desc: str = "train",
    stop_after: int | None = None,
    tokenizer_dir: str | Path | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) the loop; return the finished record, or None when stopped early.

    ``stop_after``: stop once that many steps are done (after saving a checkpoint), as if the
    process had been killed there; for tests of resuming.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if is_done(out):
        return json.loads((out / DONE).read_text())
    dev = _device(device)
    model.to(dev)
    model.train()
    opt = _optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(recipe))
    state = {"step": 0, "tokens": 0, "wall_s": 0.0, "losses": [], "window": []}
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        saved = torch.load(ckpt, map_location=dev, weights_only=False)
        if saved["recipe"] != recipe.model_dump():
            raise MergelawError(
                f"{ckpt}: saved with another recipe (delete it, or train with the same settings)"
            )
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        # map_location moved every tensor to the device; RNG states must be CPU byte tensors
        torch.set_rng_state(saved["rng"].cpu())
        if dev.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), dev)
        state = saved["state"]
    else:
        torch.manual_seed(recipe.seed)
    steps = recipe.steps
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=recipe.dtype == "bfloat16")
    bar = tqdm(total=steps, initial=state["step"], disable=not progress, desc=desc,
               unit="step", dynamic_ncols=True)  # fmt: skip
    started, window = time.perf_counter(), state["window"]
    try:
        for step in range(state["step"], steps):
            ids = batches(step).to(dev)
            with autocast:
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            window.append(float(loss.detach()))
            state["step"] = step + 1
            state["tokens"] += ids.numel()
            if state["step"] % recipe.log_every == 0 or state["step"] == steps:
                state["losses"].append([state["step"], float(np.mean(window))])
                window.clear()
            elapsed = state["wall_s"] + time.perf_counter() - started
            bar.set_postfix(
                loss=f"{window[-1] if window else 0.0:.3f}",
                tok_s=f"{state['tokens'] / elapsed:,.0f}",
            )
            bar.update(1)
            last = state["step"] == steps
            stop = stop_after is not None and state["step"] >= stop_after
            if state["step"] % recipe.checkpoint_every == 0 or stop or last:
                state["wall_s"] += time.perf_counter() - started
                started = time.perf_counter()
                _save_checkpoint(ckpt, model, opt, sched, recipe, state)
            if stop and not last:
                return None
    finally:
        bar.close()
    return _finish(model, recipe, state, out, record, dev, tokenizer_dir)


def _save_checkpoint(path: Path, model, opt, sched, recipe: Recipe, state: dict) -> None:
    blob = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": _cuda_rng_state(model),
        "recipe": recipe.model_dump(),
        "state": state,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _cuda_rng_state(model) -> torch.Tensor | None:
    """The CUDA generator's state of the model's device, when it is on one."""
    device = next(model.parameters()).device
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _finish(model, recipe: Recipe, state: dict, out: Path, record: dict, dev, tokenizer_dir):
    import transformers

    model.eval()
    final = out / MODEL
    tmp = out / f".{MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to("cpu").save_pretrained(tmp, safe_serialization=True)
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).glob("tokenizer*"):
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    total, non_embed = count_params(model)
    record = {
        **record,
        "arch": model.config.model_type,
        "config": model.config.to_diff_dict(),
        "n_params": total,
        "n_params_non_embedding": non_embed,
        "recipe": recipe.model_dump(),
        "steps": state["step"],
        "tokens_seen": state["tokens"],
        "wall_s": round(state["wall_s"], 2),
        "tokens_per_s": round(state["tokens"] / max(state["wall_s"], 1e-9), 1),
        "final_train_loss": state["losses"][-1][1] if state["losses"] else None,
        "losses": state["losses"],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_json(record, out / DONE)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return record


# ----------------------------------------------------------------------------- entry points


def _files_record(files: Sequence[str | Path]) -> list[dict[str, str]]:
    return [
        {"file": f"{Path(f).parent.name}/{Path(f).name}",
         "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()}
        for f in files
    ]  # fmt: skip


def pretrain_base(
    config,
    corpus: Sequence[str | Path],
    tokenizer_dir: str | Path,
    recipe: Recipe,
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> dict[str, Any] | None:
    """Pretrain a randomly initialised model (``config``: a transformers config) on the mixed
    train files ``corpus`` for ``recipe.token_budget`` tokens; the model lands in ``OUT/model``."""
    from transformers import AutoModelForCausalLM

    out = Path(out)
    if is_done(out):
        return json.loads((out / DONE).read_text())
    stream = encode_files(corpus, tokenizer_dir, cache_dir)
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(config)
    record = {
        "kind": "base",
        "name": name or out.name,
        "data": {"files": _files_record(corpus), "stream_tokens": len(stream)},
    }
    batches = Batches(stream, recipe.seq_len, recipe.batch_size, recipe.seed)
    return train(model, batches, recipe, out, record=record, device=device, progress=progress,
                 desc=f"base {record['name']}", stop_after=stop_after,
                 tokenizer_dir=tokenizer_dir)  # fmt: skip


def finetune_expert(
    base_dir: str | Path,
    domain_corpus: Sequence[str | Path],
    recipe: Recipe,
    out: str | Path,
    *,
    tokenizer_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> dict[str, Any] | None:
    """Fully fine-tune the base in ``base_dir`` (a finished base run, or a checkpoint dir) on one
    domain's train files; the expert lands in ``OUT/model``."""
    from transformers import AutoModelForCausalLM

    out = Path(out)
    if is_done(out):
        return json.loads((out / DONE).read_text())
    base_dir = Path(base_dir)
    model_dir = base_dir / MODEL if (base_dir / MODEL / "config.json").is_file() else base_dir
    if not (model_dir / "config.json").is_file():
        raise MergelawError(f"{base_dir}: no finished base (expected {MODEL}/config.json)")
    stream = encode_files(domain_corpus, tokenizer_dir, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 local_files_only=True)  # fmt: skip
    record = {
        "kind": "expert",
        "name": name or out.name,
        "base": str(model_dir),
        "data": {"files": _files_record(domain_corpus), "stream_tokens": len(stream)},
    }
    batches = Batches(stream, recipe.seq_len, recipe.batch_size, recipe.seed)
    return train(model, batches, recipe, out, record=record, device=device, progress=progress,
                 desc=f"expert {record['name']}", stop_after=stop_after,
                 tokenizer_dir=tokenizer_dir)  # fmt: skip
