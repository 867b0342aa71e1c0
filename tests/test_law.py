"""The law's closed forms against hand-derived values, brute force and the paper's example."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw import law
from mergelaw.paper import paper_table

positive = st.floats(min_value=1e-3, max_value=10.0, allow_nan=False)
offsets = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)


def test_floor_tail_and_mean_by_hand():
    assert law.floor_loss(2.0, 0.2, 0.1, 1.0) == pytest.approx(0.25)
    assert law.tail_amplitude(4.0, 0.3, 0.5) == pytest.approx(0.15)
    assert law.curve_loss(3, 0.3, 0.2, 1.0) == pytest.approx(0.35)
    # L* + B N^-beta + A0 N^-gamma / (k + b) at N=4, k=2: 0.1 + 0.4/2 + 0.6/2/(2+1) = 0.4
    assert law.mean_loss(4.0, 2, 0.1, 0.4, 0.5, 0.6, 0.5, 1.0) == pytest.approx(0.4)
    params = law.LawParams(0.1, 0.4, 0.5, 0.6, 0.5, 1.0)
    assert params.mean_loss(4.0, 2) == pytest.approx(0.4)


def test_size_in_billions():
    assert law.size_in_billions(5e8) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1e-4, max_value=1e5),
    st.lists(st.floats(min_value=-3.0, max_value=3.0), min_size=1, max_size=20),
)
def test_size_power_of_one_size_is_the_power(n, exponents):
    """exp(-e·log N) for one size and an array of exponents: N^-e to a few ulps."""
    exponent = np.array(exponents)
    np.testing.assert_allclose(law.size_power(n, exponent), n ** (-exponent), rtol=1e-13)
    assert law.size_power(n, 0.5) == n**-0.5  # a scalar: the power itself
    sizes = np.array([n, 2 * n])
    np.testing.assert_array_equal(law.size_power(sizes, exponent[:1]), sizes ** (-exponent[:1]))


def test_k_for_target_by_hand_and_unreachable():
    # 0.3 + 0.2/(k+1) = 0.35 -> k = 3; = 0.34 -> k = 4; 0.345 -> k = 3.44.. -> 4 experts
    assert law.k_for_target(0.35, 0.3, 0.2, 1.0) == pytest.approx(3.0)
    assert law.experts_for_target(0.34, 0.3, 0.2, 1.0) == 4.0
    assert law.experts_for_target(0.345, 0.3, 0.2, 1.0) == 4.0
    assert law.experts_for_target(0.9, 0.3, 0.2, 1.0) == 1.0  # already met by one expert
    assert np.isinf(law.k_for_target(0.3, 0.3, 0.2, 1.0))
    assert np.isinf(law.experts_for_target(0.25, 0.3, 0.2, 1.0))


@given(floor=positive, amplitude=positive, b=offsets, k=st.integers(1, 200))
def test_k_for_target_inverts_curve(floor, amplitude, b, k):
    target = law.curve_loss(k, floor, amplitude, b)
    assert law.k_for_target(target, floor, amplitude, b) == pytest.approx(k, rel=1e-6)


def test_marginal_gain_is_difference_of_curve():
    k = np.arange(1, 20)
    gain = law.marginal_gain(k, 0.2, 0.7)
    diff = law.curve_loss(k, 0.3, 0.2, 0.7) - law.curve_loss(k + 1, 0.3, 0.2, 0.7)
    np.testing.assert_allclose(gain, diff, rtol=1e-12)
    assert law.marginal_gain(1, 0.2, 1.0) == pytest.approx(0.2 / 6)
    free = law.marginal_gain(k, 0.2, 0.7, alpha=0.6)
    diff = law.curve_loss(k, 0.3, 0.2, 0.7, 0.6) - law.curve_loss(k + 1, 0.3, 0.2, 0.7, 0.6)
    np.testing.assert_allclose(free, diff, rtol=1e-12)


@given(amplitude=positive, b=offsets, threshold=st.floats(1e-5, 1.0))
@settings(max_examples=300)
def test_first_k_gain_below_matches_brute_force(amplitude, b, threshold):
    k = np.arange(1, 200_000)
    below = np.flatnonzero(law.marginal_gain(k, amplitude, b) < threshold)
    expected = k[below[0]]
    assert law.first_k_gain_below(threshold, amplitude, b) == expected


def test_first_k_gain_below_by_hand():
    # A=1, b=0: gains 1/2, 1/6, 1/12, 1/20 ... first below 0.1 is k=3 (1/12)
    assert law.first_k_gain_below(0.1, 1.0, 0.0) == 3
    assert law.first_k_gain_below(10.0, 1.0, 0.0) == 1


@pytest.mark.parametrize(
    ("domain", "size_b", "expected"),
    [("code", 0.5, 8), ("code", 32.0, 5), ("biology", 0.5, 18), ("biology", 32.0, 18)],
)
def test_paper_worked_example_k_epsilon(domain, size_b, expected):
    """Paper, Table 12 worked example: eps = 0.01: code 8 experts at 0.5B, 5 at 32B; biology ~18."""
    row = paper_table("two_stage_average").set_index("domain").loc[domain]
    amplitude = law.tail_amplitude(size_b, row["A0"], row["gamma"])
    assert law.experts_within_epsilon(0.01, amplitude, row["b"]) == expected


def test_k_epsilon_by_hand():
    assert law.k_epsilon(0.01, 0.1, 0.5) == pytest.approx(9.5)
    assert law.experts_within_epsilon(0.01, 0.1, 0.5) == 10
    assert law.experts_within_epsilon(0.01, 0.1, 0.0) == 10  # exactly 10, not 11 from float noise


def test_gain_fraction_by_hand():
    # b = 0, k_max = 9: (1 - 1/5) / (1 - 1/9) = 0.9
    assert law.gain_fraction(5, 0.0, 9) == pytest.approx(0.9)
    assert law.gain_fraction(1, 0.3, 9) == pytest.approx(0.0)
    assert law.gain_fraction(9, 0.3, 9) == pytest.approx(1.0)
    # against the floor: 1 - (1+b)/(k+b)
    assert law.gain_fraction(4, 1.0) == pytest.approx(1 - 2 / 5)
    assert law.k_for_gain_fraction(0.9, 0.0, 9) == pytest.approx(5.0)
    assert law.experts_for_gain_fraction(0.9, 0.0, 9) == 5
    # 1 - 1/k = 0.8 * 8/9 -> k = 45/13 = 3.46 -> 4 experts
    assert law.experts_for_gain_fraction(0.8, 0.0, 9) == 4


@given(b=offsets, fraction=st.floats(0.01, 0.99), k_max=st.integers(2, 50))
def test_k_for_gain_fraction_inverts(b, fraction, k_max):
    k = law.k_for_gain_fraction(fraction, b, k_max)
    assert 1.0 <= k <= k_max
    assert law.gain_fraction(k, b, k_max) == pytest.approx(fraction, rel=1e-9)


@given(floor=positive, amplitude=positive, b=offsets)
def test_three_point_solution_recovers_curve(floor, amplitude, b):
    losses = [law.curve_loss(k, floor, amplitude, b) for k in (1, 2, 4)]
    solution = law.three_point_solution(*losses)
    scale = amplitude / (1 + b)
    assert solution.b == pytest.approx(b, abs=1e-6 * (1 + b) ** 3 / min(1.0, scale) + 1e-9)
    for k in (1, 2, 3, 4, 9):
        fitted = law.curve_loss(k, *solution)
        assert fitted == pytest.approx(law.curve_loss(k, floor, amplitude, b), abs=1e-9)


@given(floor=positive, amplitude=positive, b=offsets)
def test_three_point_solution_through_any_three_k(floor, amplitude, b):
    """Through k = 2, 4, 6 (the later points of a pool measured from k = 2): the same curve."""
    losses = [law.curve_loss(k, floor, amplitude, b) for k in (2, 4, 6)]
    solution = law.three_point_solution(*losses, ks=(2, 4, 6))
    for k in (1, 3, 5, 9):
        fitted = law.curve_loss(k, *solution)
        assert fitted == pytest.approx(law.curve_loss(k, floor, amplitude, b), rel=1e-6, abs=1e-8)


def test_three_point_solution_by_hand_and_invalid():
    # floor 1, A 2, b 0: L1 = 3, L2 = 2, L4 = 1.5
    floor, amplitude, b = law.three_point_solution(3.0, 2.0, 1.5)
    assert (floor, amplitude, b) == pytest.approx((1.0, 2.0, 0.0))
    for bad in [(1.0, 1.5, 1.2), (3.0, 2.0, 2.5), (3.0, 2.0, 2.0)]:
        assert all(math.isnan(v) for v in law.three_point_solution(*bad))
    vectorised = law.three_point_solution(np.array([3.0, 1.0]), np.array([2.0, 1.5]), 1.5)
    assert vectorised.floor[0] == pytest.approx(1.0) and np.isnan(vectorised.floor[1])


def test_functions_keep_jax_arrays():
    jnp = pytest.importorskip("jax.numpy")
    k = jnp.arange(1.0, 10.0)
    out = law.experts_for_target(jnp.asarray(0.34), 0.3, 0.2, 1.0)
    assert "jax" in type(out).__module__
    assert float(out) == 4.0
    np.testing.assert_allclose(
        np.asarray(law.curve_loss(k, 0.3, 0.2, 1.0)),
        law.curve_loss(np.arange(1.0, 10.0), 0.3, 0.2, 1.0),
    )
    sol = law.three_point_solution(jnp.asarray(3.0), 2.0, 1.5)
    assert float(sol.amplitude) == pytest.approx(2.0)
    assert float(law.first_k_gain_below(jnp.asarray(0.1), 1.0, 0.0)) == 3
    beta = jnp.asarray([0.3, 0.5])  # one size and jax exponents: jax's power, traceable
    assert "jax" in type(law.floor_loss(7.0, 0.2, 0.1, beta)).__module__


# ---- the terms measured curves add, and the arithmetic the model shares ----------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=9),
    st.data(),
    st.floats(min_value=-1.0, max_value=1.0),
    st.floats(min_value=0.1, max_value=2.0),
)
def test_stratum_offsets_average_to_zero_over_every_k_subset(pool_size, data, gap, decay):
    """Over all C(M, k) subsets of a pool, the offsets of the two strata cancel: the curve the
    planner uses stays the average over subsets, and their spread is membership_variance, by
    enumeration."""
    k = data.draw(st.integers(min_value=1, max_value=pool_size))
    subsets = list(itertools.combinations(range(pool_size), k))
    in_domain = np.array([0 in s for s in subsets], dtype=float)  # expert 0 is the domain's own
    offsets = law.stratum_offset(k, in_domain, pool_size, gap, decay)
    assert offsets.mean() == pytest.approx(0.0, abs=1e-12)
    assert in_domain.mean() == pytest.approx(law.in_domain_share(k, pool_size))
    # ... and their variance over the subsets is the membership variance a random merge adds
    assert offsets.var() == pytest.approx(
        law.membership_variance(k, pool_size, gap, decay), rel=1e-9, abs=1e-15
    )


def test_membership_terms_by_hand():
    # the own expert's gap thins like gap / k at decay 1; with it, a subset sits (1 - k/M) gap(k)
    assert law.own_expert_gap(4.0, -0.4) == pytest.approx(-0.1)
    assert law.own_expert_gap(4.0, -0.4, 0.5) == pytest.approx(-0.2)
    assert law.stratum_offset(3.0, 1.0, 9.0, -0.6) == pytest.approx((1 - 3 / 9) * -0.2)
    assert law.stratum_offset(3.0, 0.0, 9.0, -0.6) == pytest.approx(-(3 / 9) * -0.2)
    assert law.stratum_offset(9.0, 1.0, 9.0, -0.6) == 0.0  # the whole pool: no other stratum


def test_noise_scale_and_sigma_at_size_by_hand():
    assert law.noise_scale(0.3, 0.25, 0.04) == pytest.approx(math.sqrt(0.09 * 0.25 + 0.0016))
    assert law.sigma_at_size(0.1, 0.5, 4.0) == pytest.approx(0.05)
    factor = law.spread_factor("finite_pool", np.array([1.0, 3.0, 9.0, 12.0]), 9.0)
    np.testing.assert_allclose(factor, [1.0, 6 / 24, 0.0, 0.0])  # beyond the pool: no spread


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1.0, max_value=5.0),
    st.floats(min_value=0.01, max_value=2.0),
    st.floats(min_value=0.05, max_value=2.0),
    st.floats(min_value=-2.0, max_value=2.0).filter(lambda a: abs(a) > 1e-3),
    st.floats(min_value=-0.5, max_value=0.8),
    st.floats(min_value=-0.9, max_value=10.0),
    st.floats(min_value=1.0, max_value=2.0),
)
def test_anchored_law_inverts_the_anchors(L_star, B, beta, A0, gamma, b, k_low):
    """Anchors computed from the paper's parameters (a signed tail included) give them back."""
    n_ref, ratio_lo, ratio_hi, k_anchor = 2.0, 0.25, 4.0, 9.0
    at = lambda n, k: law.mean_loss(n, k, L_star, B, beta, A0, gamma, b)  # noqa: E731
    anchors = {
        "level": at(n_ref, k_anchor),
        "drop": at(n_ref, k_low) - at(n_ref, k_anchor),
        "floor_drop": law.floor_loss(n_ref * ratio_lo, L_star, B, beta)
        - law.floor_loss(n_ref * ratio_hi, L_star, B, beta),
    }
    back = law.anchored_law(
        anchors["level"], anchors["drop"], k_anchor=k_anchor, k_low=k_low, b=b,
        floor_drop=anchors["floor_drop"], beta=beta, gamma=gamma, n_ref=n_ref,
        ratio_lo=ratio_lo, ratio_hi=ratio_hi,
    )  # fmt: skip
    assert back["L_star"] == pytest.approx(L_star, rel=1e-8, abs=1e-8)
    assert back["B"] == pytest.approx(B, rel=1e-7)
    assert back["A0"] == pytest.approx(A0, rel=1e-7)


def test_anchored_law_of_one_size_is_the_curve():
    # one base size: no size law; the floor and amplitude of the curve through the anchors
    p = law.anchored_law(4.2, 0.3, k_anchor=9.0, b=0.5)
    assert p["B"] == 0.0
    assert law.curve_loss(9.0, p["L_star"], p["A0"], 0.5) == pytest.approx(4.2)
    assert law.curve_loss(1.0, p["L_star"], p["A0"], 0.5) == pytest.approx(4.5)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1.0, max_value=5.0),
    st.floats(min_value=-2.0, max_value=2.0).filter(lambda a: abs(a) > 1e-3),
    st.floats(min_value=-0.9, max_value=12.0),
    st.floats(min_value=-1.5, max_value=1.5),
    st.floats(min_value=1.0, max_value=2.0),
)
def test_a_bent_curve_keeps_its_level_and_drop(floor, amplitude, b, deviation, k_low):
    """A curve bending with its own b (log(1 + b) moved by ``deviation``) keeps its loss at
    k_anchor and its drop from k_low, and is the family's curve at deviation 0."""
    k_anchor = 9.0
    curve_b = law.offset_off_family(b, deviation)
    assert math.log1p(curve_b) == pytest.approx(math.log1p(b) + deviation, abs=1e-9)
    bent_floor, bent_amplitude = law.bent_curve(floor, amplitude, b, curve_b, k_low, k_anchor)
    for k in (k_low, k_anchor):
        family = law.curve_loss(k, floor, amplitude, b)
        assert law.curve_loss(k, bent_floor, bent_amplitude, curve_b) == pytest.approx(family)
    same = law.bent_curve(floor, amplitude, b, law.offset_off_family(b, 0.0), k_low, k_anchor)
    assert same == pytest.approx((floor, amplitude))


def test_amplitude_for_drop_by_hand():
    # b = 1, k from 1 to 9: 1/2 - 1/10 = 0.4 of a drop per unit amplitude
    assert law.drop_per_amplitude(1.0, 9.0, 1.0) == pytest.approx(0.4)
    assert law.amplitude_for_drop(0.2, 1.0, 9.0, 1.0) == pytest.approx(0.5)
