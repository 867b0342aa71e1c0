"""Streaming merges against the in-memory path: the same merged tensors and the same sweep losses.

The reference is built from the safetensors files themselves (``load_file``): the base and every
task vector as whole float32 vectors, merged by the flat engine (``merge.merge``, the in-memory
path that test_merge checks against PEFT and mergekit). The streaming side reads the same files
tensor by tensor (``StreamingMerger``), whole tensors and blocks of a few rows alike.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402
from mergelaw.measure.merge import CHUNK, magnitude_cut, merge  # noqa: E402
from mergelaw.measure.methods import method_spec  # noqa: E402
from mergelaw.measure.streaming import StreamingMerger  # noqa: E402
from mergelaw.measure.sweep import build_context, read_sweep, run_sweep  # noqa: E402
from mergelaw.measure.tensorfile import read_header, read_tensor  # noqa: E402
from mergelaw.measure.work import WorkUnit, run_unit  # noqa: E402

SUBSET = ("d0", "d2", "d3")
CASES = [
    ("average", {}),
    ("task_arithmetic", {"c": 0.8}),
    ("task_arithmetic", {"c": 0.7, "combine": "sum", "merge_embeddings": False}),
    ("ties", {"density": 0.3}),
    ("ties", {"density": 0.3, "sign_tie": "global", "sign_method": "count"}),
    ("ties", {"density": 0.4, "divide_by": "weights", "trim_min_one": False}),
    ("ties", {"density": 0.3, "combine": "mean"}),
    ("dare", {"p": 0.5}),
    ("dare", {"p": 0.3, "rescale": "l1"}),
    ("dare_ties", {"p": 0.4}),
    ("dare_ties", {"p": 0.4, "rescale": "none", "sign_tie": "global"}),
]
BLOCKS = [CHUNK, 40]  # whole tensors; blocks of one or two rows (and of part of a row)


def _save(root, tiny, dtype, seed):
    base, experts = tiny.models(4, seed=seed)
    for model in (base, *experts.values()):
        model.to(dtype)
    return tiny.save(root, base, experts)


@pytest.fixture(scope="module")
def bf16_dirs(tmp_path_factory, tiny):
    return _save(tmp_path_factory.mktemp("bf16"), tiny, torch.bfloat16, seed=3)


@pytest.fixture(scope="module")
def fp32_dirs(tmp_path_factory, tiny):
    return _save(tmp_path_factory.mktemp("fp32"), tiny, torch.float32, seed=4)


def _reference(base_dir, dirs, layout):
    """(base, {expert: task vector}) as whole float32 vectors, from the files alone."""
    base = load_file(base_dir / "model.safetensors")
    flat = torch.cat([base[s.name].float().reshape(-1) for s in layout])
    vectors = {}
    for e, d in dirs.items():
        theta = load_file(d / "model.safetensors")
        vectors[e] = torch.cat([theta[s.name].float().reshape(-1) for s in layout]) - flat
    return flat, vectors


def _streamed(pool, spec, subset, *, block, seed, weights=None):
    out = torch.full((pool.layout[-1].stop,), float("nan"))
    merger = StreamingMerger(pool, block=block)
    merger.merge_into(spec, subset, lambda s: out[s.offset : s.stop], seed=seed, weights=weights)
    return out


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize(("name", "params"), CASES)
def test_streamed_merge_equals_in_memory_merge(bf16_dirs, name, params, block):
    base_dir, dirs = bf16_dirs
    pool = load_pool(base_dir, dirs)
    base, vectors = _reference(base_dir, dirs, pool.layout)
    spec = method_spec(name, params)
    weights = [1.0, 2.0, 0.5] if params.get("divide_by") == "weights" else None
    expected = merge(
        base,
        [vectors[e] for e in SUBSET],
        spec,
        pool.layout,
        expert_ids=SUBSET,
        seed=11,
        weights=weights,
    )
    got = _streamed(pool, spec, SUBSET, block=block, seed=11, weights=weights)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-6, f"{name} {params}: max |streamed - in-memory| = {diff}"
    assert "task_vectors" not in vars(pool)  # the whole vectors were never built


@pytest.mark.parametrize("block", BLOCKS)
def test_one_merger_keeps_trim_masks_across_subsets_and_densities(bf16_dirs, block):
    """The per-tensor trim masks a merger keeps (as bits) give every later subset, and another
    density, the values of a fresh in-memory merge."""
    base_dir, dirs = bf16_dirs
    pool = load_pool(base_dir, dirs)
    base, vectors = _reference(base_dir, dirs, pool.layout)
    merger = StreamingMerger(pool, block=block)
    for density, subset in [
        (0.2, SUBSET),
        (0.2, ("d0", "d1")),
        (0.5, ("d2", "d0")),
        (0.2, ("d3",)),
    ]:
        spec = method_spec("ties", {"density": density})
        expected = merge(base, [vectors[e] for e in subset], spec, pool.layout, expert_ids=subset)
        out = torch.full((pool.layout[-1].stop,), float("nan"))
        merger.merge_into(spec, subset, lambda s, out=out: out[s.offset : s.stop])
        assert (out - expected).abs().max().item() <= 1e-6, (density, subset)
    assert merger._trim_masks  # kept, not remade


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("combine", ["disjoint_mean", "mean"])
def test_global_trim_streamed_equals_in_memory(fp32_dirs, combine, block):
    """float32 checkpoints: the global cut over the whole vector gives the flat path's values."""
    base_dir, dirs = fp32_dirs
    pool = load_pool(base_dir, dirs)
    base, vectors = _reference(base_dir, dirs, pool.layout)
    spec = method_spec("ties", {"density": 0.25, "trim_scope": "global", "combine": combine})
    expected = merge(base, [vectors[e] for e in SUBSET], spec, pool.layout, expert_ids=SUBSET)
    got = _streamed(pool, spec, SUBSET, block=block, seed=0)
    assert (got - expected).abs().max().item() <= 1e-6


def test_dare_streamed_is_seeded_and_reproducible(bf16_dirs):
    base_dir, dirs = bf16_dirs
    pool = load_pool(base_dir, dirs)
    spec = method_spec("dare_ties", {"p": 0.5})
    a = _streamed(pool, spec, SUBSET, block=CHUNK, seed=7)
    b = _streamed(pool, spec, SUBSET, block=40, seed=7)
    c = _streamed(pool, spec, SUBSET, block=CHUNK, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_in_memory_experts_and_lora_adapters_stream_too(tiny, tmp_path):
    """Experts given as models (not files), and the flat path over the same pool."""
    base, experts = tiny.models(3, seed=5)
    pool = load_pool(base, experts)
    base_flat, vectors = pool.base_flat.clone(), pool.task_vectors.clone()
    for name, params in CASES:
        spec = method_spec(name, params)
        subset = ("d0", "d1", "d2")
        expected = merge(base_flat, list(vectors), spec, pool.layout, expert_ids=subset, seed=2)
        got = _streamed(pool, spec, subset, block=40, seed=2)
        assert (got - expected).abs().max().item() <= 1e-6, (name, params)


def _peft_adapter(base_dir, out, seed, **lora):
    """A PEFT LoRA adapter on ``base_dir`` with every trainable tensor random, saved."""
    peft = pytest.importorskip("peft")
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **lora))
        with torch.no_grad():
            for p in wrapped.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        wrapped.save_pretrained(out)
        merged = peft.PeftModel.from_pretrained(
            transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), out
        ).merge_and_unload()
    return out, {n: p.detach() for n, p in merged.named_parameters()}


@pytest.mark.parametrize(("name", "params"), [c for c in CASES if c[0] != "task_arithmetic"])
def test_lora_adapters_stream_in_blocks(bf16_dirs, tmp_path, name, params):
    """Adapters (low-rank, an embedding, saved full tensors) beside full experts, in blocks of
    rows; the reference takes PEFT's own merged models as the experts."""
    base_dir, dirs = bf16_dirs
    a, merged_a = _peft_adapter(
        base_dir, tmp_path / "a", 1, r=4, lora_alpha=8, target_modules="all-linear"
    )
    b, merged_b = _peft_adapter(
        base_dir, tmp_path / "b", 2, r=3, lora_alpha=5, target_modules=["embed_tokens", "k_proj"],
        modules_to_save=["lm_head"],
    )  # fmt: skip
    pool = load_pool(base_dir, {"a": a, "b": b, "d1": dirs["d1"]})
    base, vectors = _reference(base_dir, {"d1": dirs["d1"]}, pool.layout)
    for e, merged in (("a", merged_a), ("b", merged_b)):
        vectors[e] = torch.cat([merged[s.name].reshape(-1) for s in pool.layout]) - base
    subset = ("a", "b", "d1")
    spec = method_spec(name, params)
    weights = [1.0, 2.0, 0.5] if params.get("divide_by") == "weights" else None
    expected = merge(
        base, [vectors[e] for e in subset], spec, pool.layout, expert_ids=subset, seed=4,
        weights=weights,
    )  # fmt: skip
    got = _streamed(pool, spec, subset, block=40, seed=4, weights=weights)
    assert (got - expected).abs().max().item() <= 1e-5


def test_masks_kept_as_bits_give_back_any_span():
    from mergelaw.measure.streaming import _Mask

    mask = torch.rand(1001, generator=torch.Generator().manual_seed(0)) > 0.5
    kept = _Mask(mask)
    for lo, hi in [(0, 1001), (3, 11), (8, 16), (997, 1001), (5, 6), (0, 0)]:
        assert torch.equal(kept[lo:hi], mask[lo:hi])


def test_magnitude_cut_is_the_kth_largest_with_its_ties():
    torch.manual_seed(0)
    x = torch.randint(-6, 7, (1000,)).float() * 0.125  # many exact ties
    chunks = [x[:300], x[300:301], x[301:]]
    for k in (1, 7, 100, 999, 1000):
        t, r = magnitude_cut(lambda: iter(chunks), k)
        top = x.abs().sort(descending=True).values
        assert t == top[k - 1].item()
        assert r == k - int((x.abs() > t).sum())
    assert magnitude_cut(lambda: iter(chunks), 0) == (float("inf"), 0)


def test_global_trim_keeps_exactly_k_with_ties_in_flat_order(tmp_path, tiny):
    """Task vectors on a grid of 1/16 tie everywhere; the streamed global trim keeps exactly
    int(density * n): all above the cut and the first ties at it in flat order."""
    base, experts = tiny.models(1, seed=6)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for model, span in ((base, 8), (experts["d0"], 4)):
            for p in model.parameters():
                p.copy_(torch.randint(-span, span + 1, p.shape, generator=gen) / 16)
            if model is experts["d0"]:
                for p, q in zip(model.parameters(), base.parameters()):
                    p.add_(q)
    base_dir, dirs = tiny.save(tmp_path, base, experts)
    pool = load_pool(base_dir, dirs)
    spec = method_spec("ties", {"density": 0.3, "trim_scope": "global"})
    n = pool.layout[-1].stop
    merger = StreamingMerger(pool, block=40)
    out = torch.empty(n)
    merger.merge_into(spec, ("d0",), lambda s: out[s.offset : s.stop])
    got, v = out - pool.base_flat, pool.task_vectors[0]
    t, r = merger.cut(0, spec, n)
    ties = (v.abs() == t).nonzero().reshape(-1)
    assert len(ties) > r  # the cut falls inside a run of ties
    kept = got != 0
    assert int(kept.sum()) == int(0.3 * n)
    assert torch.equal(got[kept], v[kept])  # kept values are the task vector's own
    assert bool((v[~kept].abs() <= t).all()) and bool((v[kept].abs() >= t).all())
    assert kept[ties[:r]].all() and not kept[ties[r:]].any()


# ----------------------------------------------------------------------------- sweeps


def _write_sweep(root, base_dir, dirs, methods, models_per_forward):
    text = "The merged model reads this held-out text; losses must agree to the bit. " * 2
    (root / "d0.txt").write_text(text)
    lines = [f'base = "{base_dir}"', 'name = "tiny"', 'tokenizer = "bytes"', "seeds = [3]"]
    lines += ["k = [1, 2, 4]", "[experts]"] + [f'{e} = "{p}"' for e, p in dirs.items()]
    lines += ["[eval]", "max_length = 256", "batch_tokens = 2048"]
    lines += [f"models_per_forward = {models_per_forward}", "[eval.domains]", 'd0 = "d0.txt"']
    for name, params in methods:
        lines += ["[[methods]]", f'name = "{name}"']
        lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in params]
    (root / "sweep.toml").write_text("\n".join(lines) + "\n")
    return read_sweep(root / "sweep.toml"), text


@pytest.mark.parametrize("models_per_forward", [1, 3])
def test_sweep_losses_equal_the_in_memory_merged_models(bf16_dirs, tmp_path, models_per_forward):
    base_dir, dirs = bf16_dirs
    methods = [
        ("average", []),
        ("task_arithmetic", [("c", 0.8)]),
        ("ties", [("density", 0.3)]),
        ("dare", [("p", 0.5)]),
    ]
    spec, text = _write_sweep(tmp_path, base_dir, dirs, methods, models_per_forward)
    table = run_sweep(spec, tmp_path / "out", device="cpu", progress=False)
    assert len(table) == len(methods) * (4 + 6 + 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.eval()
    pool = load_pool(base_dir, dirs)  # only for the layout
    base, vectors = _reference(base_dir, dirs, pool.layout)
    ids = torch.tensor([list(text.encode())])
    methods_by_name = {m.name: m for m in spec.methods}
    for row in table.itertuples():
        subset = tuple(row.subset.split("|"))
        flat = merge(
            base,
            [vectors[e] for e in subset],
            methods_by_name[row.method],
            pool.layout,
            expert_ids=subset,
            seed=row.seed,
        )
        model.load_state_dict(unflatten(flat, pool.layout), strict=False)
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert row.loss == pytest.approx(loss, rel=1e-5, abs=1e-6), (row.method, row.subset)


def test_measuring_never_builds_the_whole_vectors(bf16_dirs, tmp_path):
    base_dir, dirs = bf16_dirs
    spec, _ = _write_sweep(tmp_path, base_dir, dirs, [("ties", [("density", 0.3)])], 1)
    context = build_context(spec, tmp_path / "out", "cpu")
    run_unit(context, WorkUnit(spec.methods[0], 3, (("d0", "d1"), ("d0", "d1", "d2", "d3"))))
    assert "task_vectors" not in vars(context.pool)
    assert "base_flat" not in vars(context.pool)


# ----------------------------------------------------------------------------- files


def test_tensor_reads_by_offset_equal_the_file(tmp_path):
    tensors = {
        "w": torch.randn(7, 5).to(torch.bfloat16),
        "b": torch.randn(5),
        "i": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "s": torch.tensor(2.5, dtype=torch.float16),
        "e": torch.zeros(0, 3),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    header = read_header(tmp_path / "x.safetensors")
    assert list(header) == list(load_file(tmp_path / "x.safetensors"))
    for name, t in tensors.items():
        got = read_tensor(header[name])
        assert got.dtype == t.dtype and torch.equal(got, t)
    assert torch.equal(read_tensor(header["w"], (2, 5)), tensors["w"][2:5])


def _file(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x08\x00\x00\x00garbage!", r"header length \d+ exceeds the file's 12 bytes"),
        (_file(b"[]"), r"the header is not a JSON object"),
        (_file(b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', b"\0" * 8),
         r"tensor 'w' lies outside the file"),
        (_file(b'{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}', b"\0" * 16),
         r"tensor 'w': its bytes do not match its shape"),
        (_file(b'{"w": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}', b"\0" * 16),
         r"bad header entry for 'w'"),
    ],
)  # fmt: skip
def test_unreadable_files_are_one_line(tmp_path, data, match):
    file = tmp_path / "model.safetensors"
    file.write_bytes(data)
    with pytest.raises(MergelawError, match=r"model.safetensors: not a readable safetensors file"):
        read_header(file)
    with pytest.raises(MergelawError, match=match):
        read_header(file)
