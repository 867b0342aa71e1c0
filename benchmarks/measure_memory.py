"""Peak host memory of measuring a pool: the streaming path against the in-memory one (issue 15).

Builds synthetic pools on disk: a random Llama base (a transformers LlamaConfig, vocabulary
32000, untied embeddings) and M experts (the base plus small random perturbations), all saved in
bf16 safetensors. Then, for each merge method (average, task arithmetic, TIES, DARE) at k = M,
each path runs in a fresh subprocess that reports its own peak RSS (VmHWM from /proc; the
parent's wait4/RUSAGE_CHILDREN figure would include the parent's own peak, which Linux carries
into a child at exec):

- streaming: what ``mergelaw measure`` does now: ``load_pool``, then ``run_unit`` (the merge
  written tensor by tensor into the evaluated model, then its loss on a short text); the child
  then writes the merged tensors to a scratch file, tensor by tensor.
- in-memory: the path before streaming: every task vector as one float32 (M, P) array
  (``ExpertPool.task_vectors``), the base's flat vector, a flat buffer the model's tensors view,
  and for TIES and DARE the sparsified copies of all M vectors (stacked from a list, as the old
  ``MeasureContext.sparsified`` did), merged by the flat engine and evaluated the same way. It
  runs only if its expected peak fits in 60% of the memory available when it starts (this
  machine is shared); otherwise the table says what it would need.

Checks: the streamed merged tensors against a reference merge computed tensor by tensor from the
safetensors files (read by safetensors itself; the flat engine, ``merge.merge``, on each tensor's
whole task vectors: exact for these per-tensor methods), and against the in-memory child's where
it ran, as is the loss. One model = P parameters x 4 bytes (float32, as the model is
evaluated); the checkpoint on disk is half that.

    python benchmarks/measure_memory.py                # 8 experts; sizes 300m and auto
    python benchmarks/measure_memory.py --size 150m    # one size
    python benchmarks/measure_memory.py --quick        # smoke test: 3 tiny experts, no file

Sizes: ``300m`` shows streaming at the issue's scale; there the in-memory path (M + 3 = 11
models, ~15 GB) does not fit this machine's share, so ``auto`` adds the largest preset whose
in-memory average run fits in 60% of the available memory, where both paths run side by side.
Pools are kept under --work and reused. Prints one table and writes the same text to
benchmarks/results/measure_memory.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "measure_memory.txt"
METHODS = {  # name -> (method, parameters): the package's defaults
    "average": ("average", {}),
    "task_arithmetic": ("task_arithmetic", {}),
    "ties": ("ties", {}),
    "dare": ("dare", {}),
}
SIZES = {  # preset -> (hidden, intermediate, layers); vocabulary 32000, head dim 64
    "300m": (1024, 2816, 20),
    "200m": (1024, 2816, 12),
    "150m": (768, 2048, 14),
    "100m": (768, 2048, 7),
    "tiny": (64, 128, 2),
}
VOCAB = 32000
SEED = 0
TEXT = (
    "A merged model is evaluated on held-out text; its loss is what the sweep records. "
    "The streaming path and the in-memory path must give the same number. "
)
MEMORY_SHARE = 0.6  # of MemAvailable an in-memory child may be expected to use
GB = 1e9


def n_params(size: str) -> int:
    hidden, inter, layers = SIZES[size]
    return (
        2 * VOCAB * hidden
        + layers * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden)
        + hidden
    )


# ----------------------------------------------------------------------------- children


def child_build(work: Path, size: str, m: int) -> None:
    """The pool on disk: base + m experts, bf16 safetensors (one tensor set held at a time)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    hidden, inter, layers = SIZES[size]
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(work / "base")
    base = {n: t.detach() for n, t in model.state_dict().items()}
    del model
    gen = torch.Generator().manual_seed(SEED + 1)
    for i in range(m):
        folder = work / f"e{i}"
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, t in base.items():
            noise = torch.randn(t.shape, generator=gen) * 0.002
            state[name] = (t.float() + noise).to(torch.bfloat16)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        shutil.copy(work / "base" / "config.json", folder / "config.json")
        del state


def _context(work: Path, m: int):
    from mergelaw.measure.evaluate import EvalSet, make_batches, windows_of
    from mergelaw.measure.experts import load_pool
    from mergelaw.measure.work import MeasureContext

    pool = load_pool(work / "base", {f"e{i}": work / f"e{i}" for i in range(m)})
    windows = tuple(windows_of(list(TEXT.encode()), 128))
    eval_set = EvalSet("text", windows, "bench")
    return MeasureContext(pool, (eval_set,), make_batches([eval_set], 4096), "float32", 1)


def child_stream(work: Path, m: int, method: str, merged: Path) -> dict:
    from mergelaw.measure.methods import method_spec
    from mergelaw.measure.work import WorkUnit, run_unit

    t0 = time.perf_counter()
    context = _context(work, m)
    spec = method_spec(*METHODS[method])
    rows = run_unit(context, WorkUnit(spec, SEED, (tuple(context.pool.expert_ids),)))
    seconds = time.perf_counter() - t0
    _write_f32(merged, {s.name: p for s, p in _layout_params(context.pool)})
    return {
        "loss": float(rows["loss"].iat[0]),
        "seconds": seconds,
        "n_params": context.pool.n_params,
    }


def child_memory(work: Path, m: int, method: str, merged: Path) -> dict:
    import torch

    from mergelaw.measure.evaluate import evaluate
    from mergelaw.measure.merge import merge_sparsified, sparsify
    from mergelaw.measure.methods import method_spec
    from mergelaw.measure.tensorfile import read_header, read_tensor

    t0 = time.perf_counter()
    context = _context(work, m)
    pool = context.pool
    spec = method_spec(*METHODS[method])
    vectors = pool.task_vectors  # (M, P) float32, and pool.base_flat (P)
    theta = context.theta()  # (P), the model's merged tensors view it
    if spec.sparsify is not None:  # as MeasureContext.sparsified did: all M, stacked from a list
        psis = torch.stack(
            [
                sparsify(vectors[i], spec, pool.layout, seed=SEED, expert_id=e)
                for i, e in enumerate(pool.expert_ids)
            ]
        )
    else:
        psis = vectors
    merge_sparsified(pool.base_flat, list(psis), spec, pool.layout, out=theta)
    loss, _ = evaluate(pool.model, context.batches, 1)
    seconds = time.perf_counter() - t0
    header = read_header(merged)
    diff = max(
        (read_tensor(header[s.name]).reshape(-1) - theta[s.offset : s.stop]).abs().max().item()
        for s in pool.layout
    )
    return {"loss": float(loss[0]), "seconds": seconds, "max_diff": diff}


def child_baseline() -> dict:
    import torch  # noqa: F401
    from transformers import LlamaForCausalLM  # noqa: F401

    import mergelaw.measure.work  # noqa: F401

    return {}


def _layout_params(pool):
    params = dict(pool.model.named_parameters())
    return [(s, params[s.name]) for s in pool.layout]


def _write_f32(path: Path, tensors: dict) -> None:
    """A safetensors file of float32 tensors, written one tensor at a time (no full copy)."""
    header, offset = {}, 0
    for name, t in tensors.items():
        size = t.numel() * 4
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
        for t in tensors.values():
            fh.write(memoryview(t.detach().float().contiguous().reshape(-1).numpy()))


# ----------------------------------------------------------------------------- parent


def own_peak() -> int:
    """This process's peak RSS since it started (VmHWM), in bytes.

    Not the parent's ``wait4``/``RUSAGE_CHILDREN`` figure: at exec, Linux carries the forking
    process's high-water mark into the child's ru_maxrss, so a child's would read at least its
    parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(args: list[str]) -> dict:
    """Run this script as a child; its JSON result (with its own peak RSS, ``peak``)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0
    return result


def mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return float("nan")


def in_memory_models(method: str, m: int) -> int:
    """Float32 models' worth the in-memory path holds: M + 3, and 2M more while sparsifying."""
    return m + 3 + (2 * m if METHODS[method][0] in ("ties", "dare") else 0)


def pick_size(m: int, baseline: float, available: float) -> tuple[str, str]:
    """The largest preset whose in-memory average run fits in MEMORY_SHARE of ``available``."""
    for size in ("300m", "200m", "150m", "100m"):
        need = baseline + in_memory_models("average", m) * 4 * n_params(size)
        if need <= MEMORY_SHARE * available:
            return size, (
                f"the largest preset whose in-memory average run (M + 3 = {m + 3} models, "
                f"~{need / GB:.1f} GB) fits in {MEMORY_SHARE:.0%} of the {available / GB:.1f} GB "
                "available"
            )
    return "100m", "nothing larger fits; in-memory runs may be skipped"


def reference_diff(work: Path, m: int, method: str, merged: Path) -> float:
    """Max |streamed - reference| over all merged tensors; the reference merges tensor by tensor
    from the files (safetensors' own reader) with the flat engine."""
    from safetensors import safe_open

    from mergelaw.measure.experts import EMBEDDING_PATTERN
    from mergelaw.measure.merge import Segment, merge
    from mergelaw.measure.methods import method_spec
    from mergelaw.measure.tensorfile import read_header, read_tensor

    spec = method_spec(*METHODS[method])
    ids = [f"e{i}" for i in range(m)]
    got = read_header(merged)
    worst = 0.0
    for name in got:
        with safe_open(work / "base" / "model.safetensors", "pt") as fh:
            base = fh.get_tensor(name).float().reshape(-1)
        vectors = []
        for e in ids:
            with safe_open(work / e / "model.safetensors", "pt") as fh:
                vectors.append(fh.get_tensor(name).float().reshape(-1) - base)
        seg = Segment(name, 0, got[name].shape, bool(re.search(EMBEDDING_PATTERN, name)))
        expected = merge(base, vectors, spec, (seg,), expert_ids=ids, seed=SEED)
        diff = (read_tensor(got[name]).reshape(-1) - expected).abs().max().item()
        worst = max(worst, diff)
        del vectors, expected
    return worst


def ensure_pool(root: Path, size: str, m: int) -> Path:
    """The pool of ``size`` with ``m`` experts under ``root`` (built once, then reused)."""
    work = root / f"{size}-m{m}"
    stamp = work / "pool.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == {"size": size, "m": m}):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        built = run_child(["build", str(work), size, str(m)])
        stamp.write_text(json.dumps({"size": size, "m": m}))
        print(f"(built the {size} pool in {built['wall']:.0f} s)", flush=True)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument(
        "--size",
        default="300m,auto",
        help=f"pool sizes, comma-separated: {', '.join(SIZES)} or auto (default: 300m,auto)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/mergelaw_measure_memory"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--quick", action="store_true", help="3 tiny experts; no results file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, rest = args.child[0], args.child[1:]
        if kind == "build":
            child_build(Path(rest[0]), rest[1], int(rest[2]))
            result = {}
        elif kind == "baseline":
            result = child_baseline()
        elif kind == "reference":
            result = {
                "max_diff": reference_diff(Path(rest[0]), int(rest[1]), rest[2], Path(rest[3]))
            }
        else:
            fn = child_stream if kind == "stream" else child_memory
            result = fn(Path(rest[0]), int(rest[1]), rest[2], Path(rest[3]))
        result["peak"] = own_peak()
        print(json.dumps(result))
        return

    m = 3 if args.quick else args.experts
    methods = [x for x in args.methods.split(",") if x]
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    baseline = run_child(["baseline"])["peak"]
    sizes: list[tuple[str, str]] = []
    for size in ["tiny"] if args.quick else args.size.split(","):
        why = "--quick" if args.quick else "asked for"
        if size == "auto":
            size, why = pick_size(m, baseline, mem_available())
        if size not in SIZES:
            raise SystemExit(f"--size {size}: expected some of {', '.join(SIZES)}, auto")
        if size not in (s for s, _ in sizes):
            sizes.append((size, why))
    pools = {size: ensure_pool(args.work, size, m) for size, _ in sizes}

    say("measure_memory: peak host memory (RSS) of measuring a pool, streaming vs in-memory")
    say(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    say(
        f"pools: a random Llama base (vocab {VOCAB}, untied embeddings) + {m} experts (base + "
        "N(0, 0.002) noise), bf16 safetensors; each run merges all of them (k = "
        f"{m}) with the package's defaults and evaluates the merged model once"
    )
    for size, why in sizes:
        hidden, inter, layers = SIZES[size]
        disk = (pools[size] / "base" / "model.safetensors").stat().st_size
        say(
            f"  {size}: {n_params(size) / 1e6:.0f}M params (hidden {hidden}, intermediate "
            f"{inter}, {layers} layers), {disk / GB:.2f} GB per checkpoint; {why}"
        )
    say("one model = P params x 4 bytes (float32, as evaluated); peak = the child's own VmHWM")
    say(
        "a child that only imports torch, transformers' Llama and mergelaw.measure peaks at "
        f"{baseline / GB:.2f} GB (part of every figure below)"
    )
    say()
    header = (
        f"{'size':<5} {'method':<16} {'streaming':>9} {'x model':>8} {'in-memory':>10} "
        f"{'x model':>8} {'max|dw| ref':>11} {'max|dw| mem':>11} {'loss stream':>11} "
        f"{'loss mem':>10} {'s stream':>8} {'s mem':>6}"
    )
    say(header)
    say("-" * len(header))
    worst, all_equal = 0.0, True
    for size, _ in sizes:
        work, model = pools[size], 4 * n_params(size)
        for method in methods:
            merged = work / f"merged-{method}.safetensors"
            common = [str(work), str(m), method, str(merged)]
            stream = run_child(["stream", *common])
            ref = run_child(["reference", *common])["max_diff"]
            need = baseline + in_memory_models(method, m) * model
            if need <= MEMORY_SHARE * mem_available():
                mem = run_child(["memory", *common])
                cells = (
                    f"{mem['peak'] / GB:>8.2f}G {mem['peak'] / model:>7.2f}x",
                    f"{mem['max_diff']:>11.2e}",
                    f"{mem['loss']:>10.6f}",
                    f"{mem['seconds']:>6.0f}",
                )
                same_loss = abs(mem["loss"] - stream["loss"]) <= 1e-5
                all_equal &= mem["max_diff"] <= 1e-6 and same_loss
            else:
                expected = "~" + format(need / GB, ".1f") + "G"
                cells = (
                    f"{expected:>10} {need / model:>7.2f}x",
                    f"{'not run':>11}",
                    "-" * 10,
                    "-" * 6,
                )
            merged.unlink()
            all_equal &= ref <= 1e-6
            worst = max(worst, stream["peak"] / model)
            say(
                f"{size:<5} {method:<16} {stream['peak'] / GB:>8.2f}G "
                f"{stream['peak'] / model:>7.2f}x {cells[0]} {ref:>11.2e} {cells[1]} "
                f"{stream['loss']:>11.6f} {cells[2]} {stream['seconds']:>8.0f} {cells[3]}"
            )
    say()
    say(
        f"streaming: at most {worst:.2f}x one model (target <= 2x). In-memory: M + 3 = {m + 3} "
        f"models for average and task arithmetic, 3M + 3 = {3 * m + 3} while TIES or DARE "
        f"sparsify all M; '~' = expected, not run (over {MEMORY_SHARE:.0%} of the memory "
        "available then: this machine is shared)"
    )
    say(
        "merged weights: "
        + ("equal" if all_equal else "NOT EQUAL")
        + " (max|dw| ref: streamed vs a per-tensor reference merge of the files; max|dw| mem: "
        "streamed vs the in-memory path; losses on the same text; s = seconds per run: load, "
        "merge, evaluate)"
    )
    if not args.quick:
        from mergelaw.io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    if not all_equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
