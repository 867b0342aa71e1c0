"""Throughput of the measurement layer, in one run, on a ~5M-parameter random Llama with 9 experts.

(a) merged models evaluated per minute by mergelaw.measure (the streaming merge, tensor by tensor
    from the checkpoints into the evaluated model's parameters, then the evaluation), with 1 and
    with several models per forward;
(b) the same for the pipeline a user would otherwise build from existing tools: mergekit's
    run_merge to disk, reload with transformers, the same evaluation (same batches, same function);
(c) the flat engine's merge kernel alone (task arithmetic, k experts held in memory as task
    vectors) against a memory-bandwidth bound measured in the same run: bytes that must move
    ((k + 1) task-vector/base reads + 1 write of P floats) divided by the rate of a large tensor
    copy (bytes read + written per second).

Experts are random perturbations of the base (fine for timing). Prints the ratios and writes the
same text to benchmarks/results/measure_bench.txt.

    python benchmarks/measure_bench.py                 # the full run (a few minutes on 1 core)
    python benchmarks/measure_bench.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mergelaw.measure.evaluate import EvalSet, evaluate, make_batches, windows_of
from mergelaw.measure.experts import load_pool
from mergelaw.measure.merge import merge_sparsified
from mergelaw.measure.methods import method_spec
from mergelaw.measure.work import MeasureContext, WorkUnit, run_unit

RESULTS = Path(__file__).resolve().parent / "results" / "measure_bench.txt"
C = 0.8


def build_models(root: Path, n_experts: int, hidden: int, layers: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875),
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=vocab,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(root / "base", safe_serialization=True)
    dirs = {}
    state = base.state_dict()
    for i in range(n_experts):
        g = torch.Generator().manual_seed(i + 1)
        expert = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in state.items()}
        base.load_state_dict(expert)
        dirs[f"e{i}"] = root / f"e{i}"
        base.save_pretrained(dirs[f"e{i}"], safe_serialization=True)
    base.load_state_dict(state)
    n_params = sum(p.numel() for p in base.parameters())
    return root / "base", dirs, n_params


def eval_sets(n_domains: int, tokens: int, vocab: int, max_length: int) -> tuple[EvalSet, ...]:
    rng = np.random.default_rng(0)
    out = []
    for d in range(n_domains):
        ids = rng.integers(0, vocab, size=tokens + 1)
        out.append(EvalSet(f"dom{d}", tuple(windows_of(ids, max_length)), f"h{d}"))
    return tuple(out)


def subsets_for(ids, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        k = 1 + j % len(ids)
        out.append(tuple(sorted(rng.choice(ids, size=k, replace=False).tolist())))
    return out


def time_ours(pool, sets, batches, subsets, models_per_forward):
    spec = method_spec("task_arithmetic", {"c": C})
    ctx = MeasureContext(pool, sets, batches, "float32", models_per_forward)
    warm = WorkUnit(spec, 0, tuple(subsets[:models_per_forward]))
    run_unit(ctx, warm)  # warm-up (allocations, first-call overheads)
    unit = WorkUnit(spec, 0, tuple(subsets))
    t0 = time.perf_counter()
    rows = run_unit(ctx, unit)
    elapsed = time.perf_counter() - t0
    return elapsed / len(subsets), rows


def time_preparation(pool, sets, batches, subsets) -> float:
    """Mean time to turn a subset into the evaluable merged model (merge into the bound buffer)."""
    from mergelaw.measure.work import merged_flat

    spec = method_spec("task_arithmetic", {"c": C})
    ctx = MeasureContext(pool, sets, batches, "float32", 1)
    theta = ctx.theta()
    merged_flat(ctx, spec, 0, subsets[0], theta)
    t0 = time.perf_counter()
    for subset in subsets:
        merged_flat(ctx, spec, 0, subset, theta)
    return (time.perf_counter() - t0) / len(subsets)


def time_pipeline(base_dir, dirs, sets, batches, subsets, work: Path):
    """mergekit run_merge -> disk -> transformers reload -> the same evaluation."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM

    per_model, parts, losses = [], {"merge": [], "reload": [], "eval": []}, []
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True)
    for j, subset in enumerate(subsets):
        conf = {
            "merge_method": "task_arithmetic",
            "base_model": str(base_dir),
            "models": [{"model": str(dirs[e]), "parameters": {"weight": 1.0}} for e in subset],
            "parameters": {"normalize": True, "lambda": C},
            "dtype": "float32",
        }
        out = work / f"merged{j}"
        t0 = time.perf_counter()
        run_merge(MergeConfiguration.model_validate(conf), str(out), options)
        t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        t2 = time.perf_counter()
        loss, _ = evaluate(model, batches, len(sets))
        t3 = time.perf_counter()
        parts["merge"].append(t1 - t0)
        parts["reload"].append(t2 - t1)
        parts["eval"].append(t3 - t2)
        per_model.append(t3 - t0)
        losses.append(loss)
    return statistics.mean(per_model), {k: statistics.mean(v) for k, v in parts.items()}, losses


def copy_rate(n_bytes: int, repeats: int = 5) -> float:
    """Bytes moved (read + written) per second by a large tensor copy."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_kernel(pool, k: int, repeats: int = 7) -> float:
    spec = method_spec("task_arithmetic", {"c": C})
    rows = [pool.task_vectors[i] for i in range(k)]
    out = torch.empty_like(pool.base_flat)
    merge_sparsified(pool.base_flat, rows, spec, pool.layout, out=out)
    return min(
        _timed(lambda: merge_sparsified(pool.base_flat, rows, spec, pool.layout, out=out))
        for _ in range(repeats)
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--tokens", type=int, default=128, help="eval tokens per domain (9 domains)")
    ap.add_argument("--models-ours", type=int, default=36)
    ap.add_argument("--models-pipeline", type=int, default=9)
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hidden, layers, vocab = (256, 4, 4096) if not args.quick else (64, 2, 512)
    if args.quick:
        args.models_ours, args.models_pipeline = 6, 2
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_dir, dirs, n_params = build_models(root, 9, hidden, layers, vocab)
        pool = load_pool(base_dir, dirs)
        sets = eval_sets(9, args.tokens, vocab, max_length=256)
        batches = make_batches(sets, 4096)
        n_tokens = sum(es.n_tokens for es in sets)
        say("mergelaw measure_bench")
        say(
            f"device: cpu ({platform.processor() or platform.machine()}), torch "
            f"{torch.__version__}, threads {torch.get_num_threads()}, python "
            f"{sys.version.split()[0]}"
        )
        say(
            f"model: random Llama, {n_params / 1e6:.2f}M parameters (hidden {hidden}, "
            f"{layers} layers, vocab {vocab}); 9 experts = base + 0.01 N(0,1) perturbations"
        )
        say(
            f"eval: 9 domains x {args.tokens} predicted tokens = {n_tokens} tokens per merged "
            "model, float32; method task_arithmetic (c = 0.8, mean), k cycling 1..9"
        )
        say()
        subsets = subsets_for(list(dirs), args.models_ours)
        ours = {}
        for mpf in (1, 3):
            sec, rows = time_ours(pool, sets, batches, subsets, mpf)
            ours[mpf] = (sec, rows)
            say(
                f"(a) mergelaw, {mpf} model{'s' if mpf > 1 else ''} per forward: "
                f"{sec * 1e3:8.1f} ms per merged model = {60 / sec:7.1f} models/min"
            )
        best = min(ours, key=lambda m: ours[m][0])
        a_sec = ours[best][0]
        pipe_subsets = subsets[: args.models_pipeline]
        b_sec, parts, b_losses = time_pipeline(base_dir, dirs, sets, batches, pipe_subsets, root)
        say(
            f"(b) mergekit run_merge -> disk -> transformers reload -> same eval: "
            f"{b_sec * 1e3:8.1f} ms per merged model = {60 / b_sec:7.1f} models/min"
        )
        say(
            f"    of which merge+write {parts['merge'] * 1e3:.1f} ms, reload "
            f"{parts['reload'] * 1e3:.1f} ms, eval {parts['eval'] * 1e3:.1f} ms"
        )
        ours_losses = ours[1][1].pivot_table(
            index="subset", columns="eval_domain", values="loss", sort=False
        )
        diffs = []
        for subset, loss in zip(pipe_subsets, b_losses):
            mine = ours_losses.loc["|".join(subset), [es.domain for es in sets]].to_numpy()
            diffs.append(float(np.max(np.abs(mine - loss))))
        say(f"    same losses as (a): max |difference| = {max(diffs):.2e} nats")
        say(
            f"(a)/(b) = {b_sec / a_sec:.1f}x models per minute "
            f"(best of (a): {best} per forward; target >= 20x)"
        )
        prep = time_preparation(pool, sets, batches, subsets)
        b_prep = parts["merge"] + parts["reload"]
        say(
            f"    model preparation alone (subset -> evaluable model): mergelaw "
            f"{prep * 1e3:.2f} ms vs mergekit+reload {b_prep * 1e3:.1f} ms = {b_prep / prep:.0f}x"
        )
        say()
        rate = copy_rate(256 * 2**20)
        say(f"(c) large-copy rate (256 MiB float32, read + write): {rate / 1e9:.2f} GB/s")
        p = pool.base_flat.numel()
        for k in (1, 5, 9):
            t = time_kernel(pool, k)
            moved = (k + 2) * p * 4
            bound = moved / rate
            say(
                f"    merge kernel, k = {k}: {t * 1e3:7.2f} ms; bound {(k + 2)} x {p * 4 / 1e6:.1f}"
                f" MB = {moved / 1e6:.0f} MB / copy rate = {bound * 1e3:6.2f} ms; "
                f"kernel/bound = {t / bound:.2f}x (target <= 2x)"
            )
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
