"""Method specs from the registry: recorded parameters, one-line refusals, every method merges."""

from __future__ import annotations

import pytest

from mergelaw.errors import MergelawError
from mergelaw.measure.methods import method_spec
from mergelaw.merge_methods import METHOD_NAMES, METHODS

#: method_params as curves tables already on disk record each method's defaults: a registry
#: change that altered them would split those tables' curves from newly measured ones.
RECORDED = {
    "average": '{"c":1.0,"combine":"mean","merge_embeddings":true}',
    "task_arithmetic": '{"c":0.8,"combine":"mean","merge_embeddings":true}',
    "ties": '{"c":1.0,"combine":"disjoint_mean","density":0.2,"divide_by":"count",'
    '"merge_embeddings":true,"sign_method":"sum","sign_tie":"positive","trim_min_one":true,'
    '"trim_scope":"tensor"}',
    "dare": '{"c":1.0,"combine":"mean","merge_embeddings":true,"p":0.5,"rescale":"inverse_keep"}',
    "dare_ties": '{"c":1.0,"combine":"disjoint_mean","divide_by":"count","merge_embeddings":true,'
    '"p":0.5,"rescale":"inverse_keep","sign_method":"sum","sign_tie":"positive"}',
}


def test_default_parameters_are_recorded_as_before():
    assert set(RECORDED) == set(METHOD_NAMES)
    for name, recorded in RECORDED.items():
        assert method_spec(name).params_json == recorded, name


def test_a_whole_number_is_recorded_as_the_number_it_means():
    assert method_spec("average", {"c": 1}).params_json == RECORDED["average"]


def test_the_spec_carries_the_registry_steps():
    ties, dare = method_spec("ties"), method_spec("dare", {"combine": "disjoint_sum"})
    assert (ties.sparsify, ties.consensus, ties.elects) == ("trim", True, True)
    assert (dare.sparsify, dare.consensus, dare.elects, dare.random) == ("dare", False, True, True)
    assert not method_spec("ties", {"combine": "mean"}).elects


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("slerp", {}, "m.toml: unknown merge method 'slerp' (expected one of: average,"),
        ("ties", {"densty": 0.3}, "m.toml: unknown parameter 'densty' for method 'ties'"),
        ("dare", {"p": 1.0}, "m.toml: parameter 'p' of 'dare' = 1.0 (expected a drop rate"),
        ("ties", {"trim_scope": "layer"},
         "m.toml: parameter 'trim_scope' of 'ties' = 'layer' (expected one of: tensor, global)"),
        ("average", {"c": float("inf")}, "parameter 'c' of 'average' = inf (expected a finite"),
        ("average", {"c": "0.8"}, "'c' of 'average' = '0.8' has the wrong type (expected a"),
        ("ties", {"trim_min_one": 1}, "'trim_min_one' of 'ties' = 1 has the wrong type"),
        ("average", {"density": 0.5}, "unknown parameter 'density' for method 'average'"),
    ],
)  # fmt: skip
def test_bad_parameters_are_one_line(name, params, message):
    with pytest.raises(MergelawError) as caught:
        method_spec(name, params, source="m.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_every_method_merges_copies_of_one_expert_to_base_plus_c_v():
    """Nothing sparsified (density 1, drop rate 0), merging k copies of one task vector gives
    base + c * v under every method's default combine (a mean; the election agrees everywhere)."""
    torch = pytest.importorskip("torch")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mergelaw.measure.merge import Segment, merge

    keep_all = {"trim": {"density": 1.0}, "dare": {"p": 0.0}}

    @settings(max_examples=20, deadline=None)
    @given(name=st.sampled_from(METHOD_NAMES), k=st.integers(1, 4), seed=st.integers(0, 99),
           c=st.floats(0.1, 2.0))  # fmt: skip
    def check(name, k, seed, c):
        spec = method_spec(name, {"c": c, **keep_all.get(METHODS[name].sparsify, {})})
        assert spec.combine in ("mean", "disjoint_mean")  # every method's default
        gen = torch.Generator().manual_seed(seed)
        base, v = torch.randn(30, generator=gen), torch.randn(30, generator=gen)
        layout = [Segment("a", 0, (5, 2)), Segment("b", 10, (20,))]
        merged = merge(base, [v] * k, spec, layout, expert_ids=[f"e{i}" for i in range(k)])
        torch.testing.assert_close(merged, base + c * v)

    check()
