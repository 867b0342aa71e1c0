"""The merge engine against independent references: PEFT's merge utilities, mergekit, closed forms.

PEFT (peft.utils.merge_utils) and mergekit are called, never copied. DARE draws its masks from a
generator seeded by ``dare_seed``; the references draw from torch's global generator, so their
random-pruning call is wrapped to seed the global generator with the same per-(expert, tensor)
seed just before each call — the reference code itself runs unchanged.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft_merge = pytest.importorskip("peft.utils.merge_utils")
pytest.importorskip("mergekit")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402
from mergelaw.measure.merge import (  # noqa: E402
    CHUNK,
    Segment,
    dare,
    dare_seed,
    merge,
    top_mask,
    trim,
)
from mergelaw.measure.methods import method_spec  # noqa: E402

SUBSET = ("d0", "d2", "d3")
C = 0.7
ATOL = 1e-6


@pytest.fixture(scope="module")
def pool(tiny):
    base, experts = tiny.models(4, seed=1)
    return load_pool(base, experts)


def _ours(pool, name, params, subset=SUBSET, seed=5, weights=None):
    spec = method_spec(name, params)
    vs = [pool.task_vectors[pool.index(e)] for e in subset]
    flat = merge(
        pool.base_flat, vs, spec, pool.layout, expert_ids=subset, seed=seed, weights=weights
    )
    return unflatten(flat, pool.layout)


def _per_tensor(pool, subset=SUBSET):
    base = unflatten(pool.base_flat, pool.layout)
    vs = [unflatten(pool.task_vectors[pool.index(e)], pool.layout) for e in subset]
    for seg in pool.layout:
        yield seg.name, base[seg.name], [v[seg.name] for v in vs]


def _assert_close(ours, name, expected, atol=ATOL):
    got = ours[name]
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= atol, f"{name}: max |ours - reference| = {diff}"


class _SeededPruning:
    """Wrap a reference's random-pruning function: seed torch's global RNG before each call."""

    def __init__(self, fn, seeds):
        self.fn, self.seeds = fn, iter(seeds)

    def __call__(self, *args, **kwargs):
        torch.manual_seed(next(self.seeds))
        return self.fn(*args, **kwargs)


# ----------------------------------------------------------------------------- PEFT


def test_average_and_task_arithmetic_match_peft(pool):
    k = len(SUBSET)
    avg = _ours(pool, "average", {})
    ta = _ours(pool, "task_arithmetic", {"c": C})
    ta_sum = _ours(pool, "task_arithmetic", {"c": C, "combine": "sum"})
    for name, base, vs in _per_tensor(pool):
        ref = peft_merge.task_arithmetic
        _assert_close(avg, name, base + ref(vs, torch.full((k,), 1.0 / k)))
        _assert_close(ta, name, base + ref(vs, torch.full((k,), C / k)))
        _assert_close(ta_sum, name, base + ref(vs, torch.full((k,), C)))


@pytest.mark.parametrize(
    ("sign_method", "peft_sign", "density", "min_one"),
    [
        ("sum", "total", 0.3, False),
        ("count", "frequency", 0.5, False),
        ("sum", "total", 0.02, False),
    ],
)
def test_ties_matches_peft(pool, sign_method, peft_sign, density, min_one):
    params = {"c": C, "density": density, "sign_method": sign_method, "trim_min_one": min_one}
    ours = _ours(pool, "ties", params)
    k = len(SUBSET)
    for name, base, vs in _per_tensor(pool):
        ref = peft_merge.ties(vs, torch.full((k,), C), density, majority_sign_method=peft_sign)
        _assert_close(ours, name, base + ref)


def test_dare_and_dare_ties_match_peft(pool, monkeypatch):
    k, p, seed = len(SUBSET), 0.6, 11
    names = [seg.name for seg in pool.layout]
    seeds = [dare_seed(seed, e, n) for n in names for e in SUBSET]
    for method, ref_fn, weights in [
        ("dare", peft_merge.dare_linear, C / k),
        ("dare_ties", peft_merge.dare_ties, C),
    ]:
        ours = _ours(pool, method, {"c": C, "p": p}, seed=seed)
        monkeypatch.setattr(
            peft_merge, "random_pruning", _SeededPruning(peft_merge.random_pruning, seeds)
        )
        for name, base, vs in _per_tensor(pool):
            ref = ref_fn(vs, torch.full((k,), weights), 1.0 - p)
            _assert_close(ours, name, base + ref)
        monkeypatch.undo()


# ----------------------------------------------------------------------------- mergekit


def _mergekit_group(method, name, base, vs, ids, params):
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    thetas = [base + v for v in vs]  # mergekit takes the experts' weights, not task vectors
    group = TensorGroup.from_tensors([base, *thetas], ids=["base", *ids], base_index=0, name=name)
    per_input = {key: dict.fromkeys(ids, params.pop(key)) for key in ("weight", "density")}
    full = {"int8_mask": False, "lambda": 1.0, **params, **per_input}
    return registry.get(method).merge_group(group, **full)


@pytest.mark.parametrize(
    ("method", "mk_method", "ours_params", "mk_params"),
    [
        ("average", "task_arithmetic", {}, {"weight": 1.0, "normalize": True, "rescale": False}),
        (
            "task_arithmetic",
            "task_arithmetic",
            {"c": C},
            {"weight": 1.0, "normalize": True, "lambda": C, "rescale": False},
        ),
        (
            "task_arithmetic",
            "task_arithmetic",
            {"c": C, "combine": "sum"},
            {"weight": C, "normalize": False, "rescale": False},
        ),
        (
            "ties",
            "ties",
            {"c": C, "density": 0.3},
            {"weight": 1.0, "density": 0.3, "normalize": True, "lambda": C, "rescale": False},
        ),
        (
            "ties",
            "ties",
            {"c": C, "density": 0.01, "trim_min_one": True},
            {"weight": 1.0, "density": 0.01, "normalize": True, "lambda": C, "rescale": False},
        ),
    ],
)
def test_deterministic_methods_match_mergekit(pool, method, mk_method, ours_params, mk_params):
    ours = _ours(pool, method, ours_params)
    for name, base, vs in _per_tensor(pool):
        params = {"density": 1.0, **mk_params}
        ref = _mergekit_group(mk_method, name, base, vs, SUBSET, params)
        _assert_close(ours, name, ref)


@pytest.mark.parametrize(
    ("method", "mk_method", "ours_params", "mk_params"),
    [
        # mergekit's DARE rescales each tensor to its L1 norm (rescale: true) -> rescale="l1".
        ("dare", "dare_linear", {"rescale": "l1", "combine": "sum"}, {"normalize": False}),
        ("dare", "dare_linear", {"rescale": "none", "combine": "sum"}, {"rescale": False}),
        # mergekit's dare_ties does not divide by default (normalize: false) -> disjoint_sum.
        ("dare_ties", "dare_ties", {"rescale": "l1", "combine": "disjoint_sum"}, {}),
        (
            "dare_ties",
            "dare_ties",
            {"rescale": "l1", "combine": "disjoint_mean", "divide_by": "weights"},
            {"normalize": True},
        ),
    ],
)
def test_dare_methods_match_mergekit(pool, monkeypatch, method, mk_method, ours_params, mk_params):
    from mergekit.merge_methods import generalized_task_arithmetic as gta

    p, seed = 0.7, 3
    ours = _ours(pool, method, {"c": C, "p": p, **ours_params}, seed=seed)
    seeds = [dare_seed(seed, e, seg.name) for seg in pool.layout for e in SUBSET]
    monkeypatch.setattr(gta, "sparsify", _SeededPruning(gta.sparsify, seeds))
    for name, base, vs in _per_tensor(pool):
        params = {"weight": 1.0, "density": 1.0 - p, "lambda": C, "normalize": False}
        params.update({"rescale": True, **mk_params})
        ref = _mergekit_group(mk_method, name, base, vs, SUBSET, params)
        _assert_close(ours, name, ref, atol=2e-6)


def test_unequal_weights_divide_by_weights_matches_mergekit(pool):
    weights = [1.0, 2.0, 0.5]
    ours = _ours(pool, "ties", {"c": C, "density": 0.4, "divide_by": "weights"}, weights=weights)
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    for name, base, vs in _per_tensor(pool):
        thetas = [base + v for v in vs]
        group = TensorGroup.from_tensors(
            [base, *thetas], ids=["base", *SUBSET], base_index=0, name=name
        )
        ref = registry.get("ties").merge_group(
            group,
            int8_mask=False,
            normalize=True,
            rescale=False,
            **{"lambda": C},
            weight=dict(zip(SUBSET, weights)),
            density=dict.fromkeys(SUBSET, 0.4),
        )
        _assert_close(ours, name, ref)


def test_checkpoint_dirs_match_mergekit_run_merge(tiny, tmp_path):
    """End to end: pool loaded from safetensors dirs vs mergekit's run_merge written to disk."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    base, experts = tiny.models(3, seed=2)
    base_dir, dirs = tiny.save(tmp_path, base, experts)
    pool = load_pool(base_dir, dirs)
    subset = ("d0", "d1", "d2")
    cases = [
        ("linear", {"weight": 1.0}, {}, "average", {}),
        ("ties", {"weight": 1.0, "density": 0.4}, {"lambda": C}, "ties", {"density": 0.4, "c": C}),
    ]
    for mk_name, model_params, global_params, ours_name, ours_params in cases:
        conf = {
            "merge_method": mk_name,
            "models": [{"model": str(dirs[e]), "parameters": model_params} for e in subset],
            "parameters": global_params,
            "dtype": "float32",
        }
        if mk_name != "linear":
            conf["base_model"] = str(base_dir)
        out = tmp_path / f"out-{mk_name}"
        run_merge(
            MergeConfiguration.model_validate(conf),
            str(out),
            MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True),
        )
        ref = load_file(out / "model.safetensors")
        ours = _ours(pool, ours_name, ours_params, subset=subset)
        for seg in pool.layout:
            _assert_close(ours, seg.name, ref[seg.name])


# ----------------------------------------------------------------------------- closed forms


def _toy_layout(*sizes):
    layout, offset = [], 0
    for i, n in enumerate(sizes):
        layout.append(Segment(f"t{i}", offset, (n,)))
        offset += n
    return tuple(layout)


def test_global_trim_keeps_top_density_of_whole_vector():
    layout = _toy_layout(10, 30)
    v = torch.cat([torch.linspace(1, 10, 10), torch.linspace(-0.3, 0.3, 30)])
    spec = method_spec("ties", {"density": 0.25, "trim_scope": "global"})
    out = trim(v, spec, layout)
    assert torch.equal(out[:10], v[:10])  # the 10 largest magnitudes are all in the first tensor
    assert torch.count_nonzero(out[10:]) == 0
    per_tensor = trim(v, method_spec("ties", {"density": 0.25}), layout)
    assert torch.count_nonzero(per_tensor[:10]) == 2 and torch.count_nonzero(per_tensor[10:]) == 7


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 12), min_size=1, max_size=300),
    share=st.floats(0.0, 1.0),
)
def test_top_mask_keeps_the_k_largest_and_the_first_ties(values, share):
    """Against a stable sort by descending magnitude: equal magnitudes (a bf16 checkpoint's task
    vectors tie all over) are kept in flat order, exactly k of them."""
    magnitudes = torch.tensor(values, dtype=torch.float32) * 0.0625
    k = int(share * len(values))
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    expected = torch.zeros(len(values), dtype=torch.bool)
    expected[order[:k]] = True
    assert torch.equal(top_mask(magnitudes, k), expected)


def test_top_mask_ties_across_blocks():
    """Ties at the cut spread over several blocks are taken from the first block on."""
    magnitudes = torch.ones(2 * CHUNK + 5)
    magnitudes[-1] = 2.0
    mask = top_mask(magnitudes, CHUNK + 3)
    assert int(mask.sum()) == CHUNK + 3
    assert mask[-1] and mask[: CHUNK + 2].all() and not mask[CHUNK + 2 : -1].any()


def test_sign_tie_rules_closed_form():
    layout = _toy_layout(4)
    base = torch.zeros(4)
    # coordinate 0: +1 and -1 tie; coordinates 1..3: majority negative
    vs = [torch.tensor([1.0, -1.0, -2.0, -3.0]), torch.tensor([-1.0, -1.0, -2.0, -3.0])]
    ids = ("a", "b")
    pos = merge(base, vs, method_spec("ties", {"density": 1.0}), layout, expert_ids=ids)
    glob = merge(
        base,
        vs,
        method_spec("ties", {"density": 1.0, "sign_tie": "global"}),
        layout,
        expert_ids=ids,
    )
    assert pos.tolist() == [1.0, -1.0, -2.0, -3.0]  # tie elects +: only expert a agrees
    assert glob.tolist() == [-1.0, -1.0, -2.0, -3.0]  # tie takes the vector's majority sign (-)
    summed = merge(
        base,
        vs,
        method_spec("ties", {"density": 1.0, "combine": "disjoint_sum"}),
        layout,
        expert_ids=ids,
    )
    assert summed.tolist() == [1.0, -2.0, -4.0, -6.0]


def test_merge_embeddings_false_keeps_base_embeddings(pool):
    ours = _ours(pool, "task_arithmetic", {"c": C, "merge_embeddings": False})
    base = unflatten(pool.base_flat, pool.layout)
    embeds = [s.name for s in pool.layout if s.embedding]
    assert sorted(embeds) == ["lm_head.weight", "model.embed_tokens.weight"]
    for seg in pool.layout:
        if seg.embedding:
            assert torch.equal(ours[seg.name], base[seg.name])
        else:
            assert not torch.equal(ours[seg.name], base[seg.name])


def test_dare_same_seed_is_bitwise_reproducible(pool):
    a = _ours(pool, "dare_ties", {"p": 0.5}, seed=7)
    b = _ours(pool, "dare_ties", {"p": 0.5}, seed=7)
    c = _ours(pool, "dare_ties", {"p": 0.5}, seed=8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


@settings(max_examples=8, deadline=None)
@given(p=st.floats(0.05, 0.9), seed=st.integers(0, 2**31))
def test_dare_inverse_keep_preserves_expectation(p, seed):
    layout = _toy_layout(64)
    v = torch.linspace(-1.0, 1.0, 64)
    spec = method_spec("dare", {"p": p})
    draws = torch.stack([dare(v, spec, layout, seed=seed + i, expert_id="e") for i in range(600)])
    kept = draws != 0
    # survivors are exactly v / (1 - p); the mean over seeds is v within 5 standard errors
    assert torch.allclose(draws[kept], (v / (1 - p)).expand_as(draws)[kept], rtol=1e-6)
    se = v.abs() * (p / (1 - p) / draws.shape[0]) ** 0.5
    assert ((draws.mean(0) - v).abs() <= 5 * se + 1e-6).all()


def test_subset_order_does_not_matter(pool):
    for method in ("task_arithmetic", "ties", "dare_ties"):
        a = _ours(pool, method, {}, subset=SUBSET)
        b = _ours(pool, method, {}, subset=tuple(reversed(SUBSET)))
        for n in a:
            assert torch.allclose(a[n], b[n], atol=1e-6)


def test_single_expert_closed_forms(pool):
    """k = 1: average is the expert itself; TIES with density 1 is base + c * v."""
    e = pool.expert_ids[1]
    theta = pool.base_flat + pool.task_vectors[1]
    avg = _ours(pool, "average", {}, subset=(e,))
    ties = _ours(pool, "ties", {"density": 1.0, "c": C}, subset=(e,))
    expected_ties = unflatten(pool.base_flat + C * pool.task_vectors[1], pool.layout)
    for name, t in unflatten(theta, pool.layout).items():
        _assert_close(avg, name, t)
        _assert_close(ties, name, expected_ties[name])
