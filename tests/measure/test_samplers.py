"""Subset samplers: invariants by property tests, the paper's diverse sampler by hand."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.errors import MergelawError
from mergelaw.measure import samplers

pools = st.integers(1, 9).map(lambda m: [f"e{i}" for i in range(m)])


@settings(max_examples=40, deadline=None)
@given(ids=pools, data=st.data())
def test_every_sampler_returns_sorted_distinct_k_subsets(ids, data):
    ks = data.draw(st.lists(st.integers(1, len(ids)), min_size=1, max_size=3, unique=True))
    name = data.draw(st.sampled_from(samplers.SAMPLERS))
    n = data.draw(st.integers(1, 12))
    seed = data.draw(st.integers(0, 2**32 - 1))
    out = samplers.sample_subsets(name, ids, ks, seed=seed, n=n)
    assert sorted(out) == sorted(ks)
    for k, subsets in out.items():
        assert len(set(subsets)) == len(subsets)
        assert len(subsets) <= math.comb(len(ids), k)
        for s in subsets:
            assert len(s) == k and list(s) == sorted(set(s)) and set(s) <= set(ids)
        if name == "uniform":
            assert len(subsets) == min(n, math.comb(len(ids), k))
    again = samplers.sample_subsets(name, ids, ks, seed=seed, n=n)
    assert again == out


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_balanced_puts_each_expert_in_exactly_k_of_the_m_subsets(m, seed):
    ids = [f"e{i}" for i in range(m)]
    out = samplers.balanced(ids, range(1, m + 1), n=1, seed=seed)
    for k, subsets in out.items():
        assert len(subsets) == (m if k < m else 1)
        counts = {i: sum(i in s for s in subsets) for i in ids}
        assert set(counts.values()) == ({k} if k < m else {1}), (k, counts)


def test_balanced_rounds_draw_other_orders():
    ids = [f"e{i}" for i in range(9)]
    one = samplers.balanced(ids, [3], n=1, seed=0)[3]
    three = samplers.balanced(ids, [3], n=3, seed=0)[3]
    assert three[:9] == one and 9 < len(three) <= 27
    assert samplers.balanced(ids, [3], n=1, seed=1)[3] != one


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_each_balanced_round_is_a_balanced_design_and_their_union_the_sample(m, n, seed):
    ids = [f"e{i}" for i in range(m)]
    ks = range(1, m + 1)
    rounds = samplers.balanced_rounds(ids, ks, n=n, seed=seed)
    assert len(rounds) == n
    for windows in rounds:
        for k in ks:
            assert len(windows[k]) == m
            assert {sum(i in w for w in windows[k]) for i in ids} == {k}
    union = {k: {w for r in rounds for w in r[k]} for k in ks}
    assert {k: set(s) for k, s in samplers.balanced(ids, ks, n=n, seed=seed).items()} == union


def test_exhaustive_is_all_combinations():
    ids = ["c", "a", "b", "d"]
    out = samplers.exhaustive(ids, [2])
    assert out[2] == list(itertools.combinations(["a", "b", "c", "d"], 2))


def test_uniform_is_uniform_over_subsets():
    # 4 choose 2 = 6 subsets; one subset per seed: each should appear ~1/6 of the time
    ids = ["a", "b", "c", "d"]
    counts: dict[tuple, int] = {}
    draws = 3000
    for seed in range(draws):
        (s,) = samplers.uniform(ids, [2], n=1, seed=seed)[2]
        counts[s] = counts.get(s, 0) + 1
    assert len(counts) == 6
    expected, sd = draws / 6, math.sqrt(draws * (1 / 6) * (5 / 6))
    assert all(abs(c - expected) < 5 * sd for c in counts.values())


def test_uniform_large_pool_uses_rejection_and_stays_distinct():
    ids = [f"e{i}" for i in range(30)]
    out = samplers.uniform(ids, [15], n=50, seed=1)[15]
    assert len(set(out)) == 50


def test_nested_prefixes_are_nested():
    ids = [f"e{i}" for i in range(6)]
    perms = samplers.random_permutations(6, 1, seed=3)
    out = samplers.prefixes(ids, perms, range(1, 7))
    for k in range(1, 6):
        assert set(out[k][0]) < set(out[k + 1][0])


def test_diverse_starts_from_identity_and_reverse_then_maximises_min_distance():
    perms = samplers.diverse_permutations(5, 6, seed=0, candidates=200)
    assert perms[0] == (0, 1, 2, 3, 4) and perms[1] == (4, 3, 2, 1, 0)
    assert len(set(perms)) == 6
    # greedy choice: each added permutation's min distance to the earlier ones is at least that
    # of a typical random shuffle
    for j in range(2, 6):
        d = min(samplers.hamming(perms[j], p) for p in perms[:j])
        assert d >= 3
    # more diverse than plain random permutations on average
    rand = samplers.random_permutations(5, 6, seed=0)

    def mean_min(ps):
        return sum(min(samplers.hamming(a, b) for b in ps if b is not a) for a in ps) / len(ps)

    assert mean_min(perms) >= mean_min(rand)


def test_diverse_stops_at_all_permutations():
    assert len(samplers.diverse_permutations(3, 10, seed=0)) == 6


@pytest.mark.parametrize(
    ("name", "n", "ks", "match"),
    [
        ("bogus", 3, [1], "unknown sampler 'bogus'"),
        ("uniform", None, [1], "needs n >= 1"),
        ("exhaustive", None, [5], "expected 1 <= k <= 3"),
    ],
)
def test_bad_sampler_input_is_one_line(name, n, ks, match):
    with pytest.raises(MergelawError, match=match) as err:
        samplers.sample_subsets(name, ["a", "b", "c"], ks, n=n)
    assert "\n" not in str(err.value)
