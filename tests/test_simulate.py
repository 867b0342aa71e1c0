"""The simulator: seeded, and exact against the law and the finite-pool variance when exhaustive."""

import math

import numpy as np
import pandas as pd
import pytest

from mergelaw.curves import aggregate_curves, subset_members
from mergelaw.errors import MergelawError
from mergelaw.law import LAW_PARAM_NAMES, mean_loss
from mergelaw.paper import paper_law_params, paper_spread_params
from mergelaw.simulate import (
    expert_pool,
    finite_pool_variance,
    sample_subsets,
    simulate_curves,
    spread_at_k1,
    with_dare_stand_in,
)

SMALL = {"sizes_b": (0.5, 3.0), "domains": ("code", "physics"), "methods": ("average", "ties")}


def test_same_seed_same_table_other_seed_other_table():
    a = simulate_curves(**SMALL, seed=3)
    b = simulate_curves(**SMALL, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = simulate_curves(**SMALL, seed=4)
    assert not np.allclose(a["loss"], c["loss"])
    assert (a["seed"] == 3).all()


def test_exhaustive_subsets_reproduce_law_mean_and_finite_pool_variance():
    """With every subset measured and no interaction term, the subset mean is the law exactly and
    the spread is v1 (M-k)/(k(M-1)), v1 from the paper's variance fit."""
    table = simulate_curves(
        **SMALL, subsets_per_k=200, interaction_share=0.0, eval_noise_sd=0.0, in_domain_shift=3.0
    )
    agg = aggregate_curves(table)
    law = paper_law_params().set_index(["method", "domain"])
    spread = paper_spread_params().set_index(["method", "domain"])
    for _, row in agg.iterrows():
        assert row["count"] == math.comb(9, int(row.k))
        size_b = row.n_params / 1e9
        params = law.loc[(row.method, row.eval_domain)][list(LAW_PARAM_NAMES)].astype(float)
        assert row["mean"] == pytest.approx(float(mean_loss(size_b, row.k, *params)), abs=1e-12)
        if row["count"] > 1:
            v1 = spread_at_k1(spread.loc[(row.method, row.eval_domain)], size_b)
            population_var = row["var"] * (row["count"] - 1) / row["count"]  # ddof=0
            assert population_var == pytest.approx(finite_pool_variance(v1, row.k, 9), rel=1e-9)


def test_dare_stand_in_keeps_ta_floor_and_inflates_tail_and_spread_by_one_over_keep():
    """DARE (p = 0.2) is simulated from task arithmetic: same floor, tail and k=1 spread x 1.25."""
    table = simulate_curves(
        sizes_b=(0.5, 3.0),
        domains=("code",),
        methods=("task_arithmetic", "dare"),
        subsets_per_k=200,
        interaction_share=0.0,
        eval_noise_sd=0.0,
    )
    agg = aggregate_curves(table).set_index(["method", "n_params", "k"])
    ta, dare = agg.loc["task_arithmetic"], agg.loc["dare"]
    law = paper_law_params().set_index(["method", "domain"]).loc[("task_arithmetic", "code")]
    for size_b in (0.5, 3.0):
        n = round(size_b * 1e9)
        tail_ta = ta.loc[(n, 1), "mean"] - ta.loc[(n, 9), "mean"]
        assert dare.loc[(n, 1), "mean"] - dare.loc[(n, 9), "mean"] == pytest.approx(1.25 * tail_ta)
        floor = law["L_star"] + law["B"] * size_b ** -law["beta"]
        amplitude = law["A0"] * size_b ** -law["gamma"]
        assert dare.loc[(n, 9), "mean"] == pytest.approx(floor + 1.25 * amplitude / (9 + law["b"]))
        assert dare.loc[(n, 1), "var"] == pytest.approx(1.25 * ta.loc[(n, 1), "var"], rel=1e-9)
    assert set(table.loc[table.method == "dare", "method_params"]) == {'{"c":0.8,"p":0.2}'}
    law_plus, spread_plus = with_dare_stand_in(paper_law_params(), paper_spread_params())
    assert (
        set(law_plus["method"])
        == set(spread_plus["method"])
        == {"average", "task_arithmetic", "ties", "dare"}
    )


def test_default_methods_are_the_papers_three():
    table = simulate_curves(sizes_b=(0.5,), domains=("code",), subsets_per_k=1)
    assert set(table["method"]) == {"average", "task_arithmetic", "ties"}


def test_spread_shrinks_roughly_like_one_over_k_with_interactions():
    table = simulate_curves(**SMALL, subsets_per_k=200, seed=1)
    agg = aggregate_curves(table)
    ratio = (
        agg[agg.k == 1].set_index(["base_model", "method", "eval_domain"])["var"]
        / agg[agg.k == 4].set_index(["base_model", "method", "eval_domain"])["var"]
    )
    expected = finite_pool_variance(1.0, 1, 9) / finite_pool_variance(1.0, 4, 9)  # = 5.33
    assert np.median(ratio) == pytest.approx(expected, rel=0.35)


def test_in_domain_flag_and_shift():
    table = simulate_curves(**SMALL, subsets_per_k=9, seed=2)
    members = table["subset"].map(subset_members)
    assert (table["in_domain"] == [d in m for d, m in zip(table["eval_domain"], members)]).all()
    k1 = table[table.k == 1]
    gap = k1.groupby("in_domain")["loss"].mean()
    assert gap[True] < gap[False]  # the eval domain's own expert helps most


def test_subsets_shared_across_methods_and_domains():
    table = simulate_curves(**SMALL, seed=5)
    per_group = table.groupby(["base_model", "method", "eval_domain"])["subset"].apply(frozenset)
    for base, groups in per_group.groupby(level="base_model"):
        assert len(set(groups)) == 1, base


def test_sample_subsets_distinct_and_capped():
    rng = np.random.default_rng(0)
    pool = expert_pool(9)
    picks = sample_subsets(pool, 3, 10, rng)
    assert len(set(picks)) == 10 and all(len(p) == 3 for p in picks)
    assert len(sample_subsets(pool, 9, 5, rng)) == 1
    big = sample_subsets(expert_pool(40), 20, 7, rng)  # C(40,20) too many to enumerate
    assert len(set(big)) == 7
    assert expert_pool(11)[-2:] == ["extra_10", "extra_11"]


def test_bad_requests_are_one_line_errors():
    with pytest.raises(MergelawError, match="no law parameters for method 'dare_ties'"):
        simulate_curves(methods=("dare_ties",))
    with pytest.raises(MergelawError, match=r"k = 10 is outside 1\.\.9"):
        simulate_curves(k_values=[1, 10])
    with pytest.raises(MergelawError, match="base size -1"):
        simulate_curves(sizes_b=(-1.0,))
