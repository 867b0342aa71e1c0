"""Planning queries: on a posterior of point masses each equals the law's closed form (or an
independent brute-force search); on a real fit of a simulated table it covers the truth."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from mergelaw import law, plan
from mergelaw.bayes.posterior import Posterior
from mergelaw.errors import MergelawError
from mergelaw.paper import paper_law_params

FAMILIES = ["qwen2/average/code", "qwen2/ties/biology"]
TRUTH = {
    "L_star": np.array([0.28, 0.64]),
    "B": np.array([0.21, 0.62]),
    "beta": np.array([0.41, 0.37]),
    "A0": np.array([0.082, 0.159]),
    "gamma": np.array([0.137, 0.05]),
    "b": np.array([0.43, 0.2]),
}
N = 3.0


@pytest.fixture
def post():
    return Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), pool_size=9)


def _curve(n=N):
    t = TRUTH
    return (
        law.floor_loss(n, t["L_star"], t["B"], t["beta"]),
        law.tail_amplitude(n, t["A0"], t["gamma"]),
        t["b"],
    )


def _values(answer, quantity):
    rows = answer.table[answer.table["quantity"] == quantity]
    assert len(rows) > 0, f"no rows for {quantity!r}"
    return rows


# ---- experts for a target -----------------------------------------------------------------------


def test_experts_for_target_is_the_closed_form(post):
    floor, amplitude, b = _curve()
    target = floor + 0.012  # reachable for both, at different k
    answer = plan.experts_for_target(post, target[0], n_b=N, family=FAMILIES[0], k_max=9)
    expected = law.experts_for_target(target[0], floor[0], amplitude[0], b[0])
    row = _values(answer, "experts for target").iloc[0]
    assert row.estimate == row.lower == row.upper == expected
    decided = _values(answer, "smallest k: P(L(k) <= target) >= 0.9").iloc[0]
    assert decided.estimate == expected and math.isnan(decided.lower)
    reach = _values(answer, "P(reachable, <= 9 experts)").iloc[0].estimate
    assert reach == float(expected <= 9)
    assert answer.decision[FAMILIES[0]]["k"] == expected
    # The base size where the floor meets the target, and where k_max experts meet it.
    t = {name: v[0] for name, v in TRUTH.items()}
    n_any = (t["B"] / (target[0] - t["L_star"])) ** (1 / t["beta"])
    n_pool = brentq(lambda n: law.mean_loss(n, 9, *t.values()) - target[0], 1e-4, 1e7)
    np.testing.assert_allclose(_values(answer, "base size (B) for target, any k").estimate, n_any)
    np.testing.assert_allclose(
        _values(answer, "base size (B) for target, <= 9 experts").estimate, n_pool, rtol=1e-6
    )
    assert answer.flag == "ok" and answer.provenance["spec"] == "default"


def test_unreachable_at_this_size_names_the_size_that_reaches_it(post):
    floor, _, _ = _curve()
    target = floor[1] - 0.01  # below the biology floor at 3B
    answer = plan.experts_for_target(post, target, n_b=N, family="ties/biology")
    assert _values(answer, "experts for target").estimate.iloc[0] == math.inf
    assert _values(answer, "P(reachable, any k)").estimate.iloc[0] == 0.0
    decision = answer.decision[FAMILIES[1]]
    assert decision["status"] == "unreachable at this size" and decision["k"] == math.inf
    n_needed = decision["n_b_for_target_any_k"]
    assert n_needed > N
    t = {name: v[1] for name, v in TRUTH.items()}
    assert law.floor_loss(n_needed, t["L_star"], t["B"], t["beta"]) == pytest.approx(target)
    assert decision["n_b_for_target_k_max"] > n_needed  # 9 experts stay above the floor
    # Below L_star no base size reaches it.
    never = plan.experts_for_target(post, 0.5, n_b=N, family="ties/biology")
    assert never.decision[FAMILIES[1]]["n_b_for_target_any_k"] == math.inf


def test_mixture_of_two_point_masses_gives_probabilities_and_quantiles():
    """Half the draws need k1 experts, half k2 > k1: P(reachable with k1) = 1/2, the smallest k
    with P >= 0.5 is k1 and with P >= 0.9 is k2."""
    low = {n: v[0] for n, v in TRUTH.items()}
    high = {**low, "A0": low["A0"] * 1.6}
    law_draws = {n: np.array([[low[n]]] * 50 + [[high[n]]] * 50) for n in low}
    post = Posterior.from_draws(FAMILIES[:1], law_draws)
    floor = law.floor_loss(N, low["L_star"], low["B"], low["beta"])
    target = floor + 0.01
    k1 = law.experts_for_target(
        target, floor, law.tail_amplitude(N, low["A0"], low["gamma"]), low["b"]
    )
    k2 = law.experts_for_target(
        target, floor, law.tail_amplitude(N, high["A0"], high["gamma"]), low["b"]
    )
    assert k2 > k1
    half = plan.experts_for_target(post, target, n_b=N, prob=0.5, k_max=k1)
    assert _values(half, f"P(reachable, <= {k1:g} experts)").estimate.iloc[0] == 0.5
    assert half.decision[FAMILIES[0]]["k"] == k1
    sure = plan.experts_for_target(post, target, n_b=N, prob=0.9, k_max=k1)
    assert sure.decision[FAMILIES[0]]["k"] == k2
    assert sure.decision[FAMILIES[0]]["status"] == "beyond the pool"


@settings(max_examples=40, deadline=None)
@given(
    t1=st.floats(0.0, 0.3),
    t2=st.floats(0.0, 0.3),
    scale=st.floats(0.2, 3.0),
)
def test_experts_needed_falls_as_the_target_rises(t1, t2, scale):
    rng = np.random.default_rng(0)
    draws = {n: v * np.exp(0.2 * rng.standard_normal((64, 2))) for n, v in TRUTH.items()}
    draws["A0"] = draws["A0"] * scale
    post = Posterior.from_draws(FAMILIES, draws)
    curves = post.curves(N)
    lo, hi = sorted((t1, t2))
    base = curves.floor.min()
    assert np.all(plan.experts_needed(base + hi, curves) <= plan.experts_needed(base + lo, curves))


# ---- stopping --------------------------------------------------------------------------------


def test_stopping_is_the_closed_form(post):
    _, amplitude, b = _curve()
    answer = plan.stopping(post, n_b=N, epsilon=0.002, cost_per_expert=2.0, k_max=9)
    first = _values(answer, "first k with gain < threshold")
    expected = law.first_k_gain_below(0.004, amplitude, b)
    np.testing.assert_array_equal(first.estimate, expected)
    np.testing.assert_array_equal(first.lower, expected)
    np.testing.assert_array_equal(
        _values(answer, "stop at k (expected gain < threshold)").estimate, expected
    )
    for fraction in (0.8, 0.9):
        rows = _values(answer, f"k{round(fraction * 100)} (to k=9)")
        np.testing.assert_array_equal(rows.estimate, law.experts_for_gain_fraction(fraction, b, 9))
    assert answer.decision[FAMILIES[0]]["stop_at_k"] == expected[0]


def test_bayes_stop_uses_the_posterior_expected_gain():
    """Two equally likely amplitudes: the Bayes rule stops where the mean of the two gains drops
    below epsilon, which lies between the two per-draw answers."""
    t = {n: v[0] for n, v in TRUTH.items()}
    draws = {n: np.full((2, 1), v) for n, v in t.items()}
    draws["A0"] = np.array([[t["A0"] * 0.3], [t["A0"] * 3.0]])
    post = Posterior.from_draws(FAMILIES[:1], draws)
    curves = post.curves(N)
    eps = 0.001
    k = np.arange(1, 200)
    mean_gain = np.mean([law.marginal_gain(k, a, t["b"]) for a in curves.amplitude[:, 0]], axis=0)
    expected = k[np.argmax(mean_gain < eps)]
    per_draw = law.first_k_gain_below(eps, curves.amplitude[:, 0], t["b"])
    answer = plan.stopping(post, n_b=N, epsilon=eps)
    assert answer.decision[FAMILIES[0]]["stop_at_k"] == expected
    assert per_draw.min() < expected <= per_draw.max()


def test_free_exponent_forms_match_brute_force():
    t = {n: v[0] for n, v in TRUTH.items()}
    post = Posterior.point_mass(FAMILIES[:1], {**t, "alpha": 0.7})
    curves = post.curves(N)
    k = np.arange(1.0, 5000.0)
    loss = curves.floor[0, 0] + curves.amplitude[0, 0] * (k + t["b"]) ** -0.7
    target = loss[6] + 1e-9  # reached exactly at k = 7
    assert plan.experts_needed(target, curves)[0, 0] == 7
    gain = loss[:-1] - loss[1:]
    assert plan.first_k_gain_below(1e-3, curves)[0, 0] == k[np.argmax(gain < 1e-3)]
    drop = (loss[0] - loss) / (loss[0] - loss[8])
    assert plan.experts_for_fraction(0.8, curves, 9)[0, 0] == k[np.argmax(drop >= 0.8 - 1e-12)]


@settings(max_examples=60, deadline=None)
@given(
    amplitude=st.lists(st.floats(1e-3, 10.0), min_size=1, max_size=6),
    threshold=st.floats(1e-6, 1.0),
    hi=st.integers(1, 4000),
    below=st.integers(0, 50),
)
def test_smallest_whole_k_is_the_brute_force_search(amplitude, threshold, hi, below):
    """Per element, the first k where the gain drops below the threshold, as a scan over every
    k finds it: searched from (0, K_CAP], from a bracket around it, and inf past a cap it
    misses."""
    amplitude = np.array(amplitude)
    k = np.arange(1.0, 5001.0)
    scan = np.array([k[np.argmax(law.marginal_gain(k, a, 0.3) < threshold)] for a in amplitude])

    def holds(k):
        return law.marginal_gain(k, amplitude, 0.3) < threshold

    everywhere = plan.smallest_whole_k(holds, np.zeros_like(scan), np.full_like(scan, plan.K_CAP))
    np.testing.assert_array_equal(everywhere, scan)
    lo = np.maximum(scan - 1.0 - below, 0.0)
    np.testing.assert_array_equal(plan.smallest_whole_k(holds, lo, scan + below), scan)
    capped = plan.smallest_whole_k(holds, np.zeros_like(scan), np.full_like(scan, float(hi)))
    np.testing.assert_array_equal(capped, np.where(scan <= hi, scan, np.inf))


@settings(max_examples=30, deadline=None)
@given(e1=st.floats(1e-5, 0.05), e2=st.floats(1e-5, 0.05))
def test_stop_k_falls_as_epsilon_rises(e1, e2):
    post = Posterior.point_mass(FAMILIES, TRUTH)
    curves = post.curves(N)
    lo, hi = sorted((e1, e2))
    assert np.all(plan.first_k_gain_below(hi, curves) <= plan.first_k_gain_below(lo, curves))
    assert np.all(plan.expected_gain_stop(hi, curves) <= plan.expected_gain_stop(lo, curves))


def test_sequential_stop_says_stop_once_the_gain_is_small(post):
    _, amplitude, b = _curve()
    floor = _curve()[0][0]
    points = pd.DataFrame({"k": [1.0, 2.0, 3.0]})
    points["loss"] = law.curve_loss(points["k"], floor, amplitude[0], b[0])
    gain = law.marginal_gain(3.0, amplitude[0], b[0])
    go = plan.sequential_stop(post, points, n_b=N, epsilon=gain * 0.9, prior="average/code")
    stop = plan.sequential_stop(post, points, n_b=N, epsilon=gain * 1.1, prior="average/code")
    assert go.decision["action"] == "continue" and stop.decision["action"] == "stop"
    assert go.decision["expected_gain"] == pytest.approx(gain)
    assert _values(go, "gain of expert 4").estimate.iloc[0] == pytest.approx(gain)


# ---- budget -------------------------------------------------------------------------------------


def test_budget_picks_the_lowest_expected_loss_within_budget(post):
    costs = plan.CostModel(
        base={0.5: 1.0, 3.0: 6.0, 14.0: 25.0},
        per_expert={0.5: 0.5, 3.0: 1.0, 14.0: 4.0},
        per_merge=0.1,
    )
    answer = plan.budget(post, costs, 40.0, k_max=9)
    options = {}
    for n, per_expert in costs.per_expert.items():
        for k in range(1, 10):
            cost = costs.base[n] + k * (per_expert + 0.1)
            if cost <= 40.0:
                loss = np.mean(
                    [
                        law.mean_loss(n, k, *(TRUTH[p][j] for p in law.LAW_PARAM_NAMES))
                        for j in range(2)
                    ]
                )
                options[(n, k)] = (cost, loss)
    best = min(options, key=lambda o: options[o][1])
    assert (answer.decision["n_b"], answer.decision["k"]) == best
    assert answer.decision["p_best"] == 1.0
    table = answer.table
    assert len(table) == len(options) and table["p_best"].sum() == pytest.approx(1.0)
    for row in table.itertuples():
        cost, loss = options[(row.n_b, row.k)]
        assert row.cost == pytest.approx(cost) and row.estimate == pytest.approx(loss)
    with pytest.raises(MergelawError, match=r"cheapest option costs 1\.6"):
        plan.budget(post, costs, 1.0)


def test_budget_probability_of_best_splits_between_near_options():
    """Two draws that disagree on which base is better: each option is best with P = 1/2."""
    t = {n: v[0] for n, v in TRUTH.items()}
    draws = {n: np.full((2, 1), v) for n, v in t.items()}
    draws["L_star"] = np.array([[t["L_star"]], [t["L_star"] - 0.2]])
    draws["B"] = np.array([[t["B"]], [0.0]])  # draw 2: no gain from a larger base
    post = Posterior.from_draws(FAMILIES[:1], draws)
    costs = plan.CostModel(base={0.5: 0.0, 14.0: 10.0}, per_expert=1.0)
    answer = plan.budget(post, costs, 11.0, k_max=9)
    assert answer.table["p_best"].max() == 0.5 and answer.table["p_best"].sum() == 1.0


# ---- forecasts ----------------------------------------------------------------------------------


def test_forecast_is_the_law_with_the_noise_model():
    post = Posterior.point_mass(
        FAMILIES, TRUTH, n_draws=20_000, sigma=0.02, sigma_slope=0.2, nugget=0.003,
        sizes_b=(0.5, 3.0, 14.0), pool_size=9,
    )  # fmt: skip
    answer = plan.forecast(post, n_b=72.0, family="code", k=[1, 4, 9], n_subsets=2)
    expected = law.mean_loss(72.0, np.array([1.0, 4.0, 9.0]), *(v[0] for v in TRUTH.values()))
    mean = _values(answer, "expected loss")
    np.testing.assert_allclose(mean.estimate, expected)
    np.testing.assert_allclose(mean.upper - mean.lower, 0.0, atol=1e-12)
    observed = _values(answer, "observed loss (mean of 2)")
    sigma_n = 0.02 * (72.0 / post.n_ref) ** -0.2
    k = np.array([1.0, 4.0, 9.0])
    sd = np.sqrt((sigma_n**2 * (9 - k) / (k * 8) + 0.003**2) / 2)
    np.testing.assert_allclose(observed.upper - observed.lower, 2 * 1.6449 * sd, rtol=0.05)
    # the noise draws are shared by the families (each row is marginal): a family's rows are
    # the same whoever else is forecast with it
    both = plan.forecast(post, n_b=72.0, k=[1, 4, 9], n_subsets=2)
    alone = answer.table.drop(columns="family").reset_index(drop=True)
    first = both.table[both.table["family"] == FAMILIES[0]].drop(columns="family")
    pd.testing.assert_frame_equal(first.reset_index(drop=True), alone)


def test_few_point_forecast_on_a_point_mass_family(post):
    floor, amplitude, b = _curve()
    points = pd.DataFrame({"k": [1.0, 2.0, 4.0]})
    points["loss"] = law.curve_loss(points["k"], floor[0], amplitude[0], b[0])
    answer = plan.forecast_from_points(post, points, n_b=N, prior="average/code", k=range(5, 10))
    expected = law.curve_loss(np.arange(5.0, 10.0), floor[0], amplitude[0], b[0])
    np.testing.assert_allclose(_values(answer, "expected loss").estimate, expected)
    three = answer.decision["three_point"]  # the paper's exact curve through the three points
    np.testing.assert_allclose(
        [three["floor"], three["amplitude"], three["b"]], [floor[0], amplitude[0], b[0]]
    )
    np.testing.assert_allclose(three["loss"], expected)


def test_answer_json_round_trip(post, tmp_path):
    floor, _, _ = _curve()
    answer = plan.experts_for_target(post, floor[1] - 0.01, n_b=N)
    path = tmp_path / "answer.json"
    answer.write_json(path)
    loaded = json.loads(path.read_text())
    assert loaded["flag"] == "ok" and loaded["provenance"]["spec"] == "default"
    assert "inf" in {row["estimate"] for row in loaded["table"]}
    assert {row["lower"] for row in loaded["table"] if row["stat"] == "probability"} == {None}


def test_bad_requests_are_one_line_errors(post):
    with pytest.raises(MergelawError, match=r"level 1\.5"):
        plan.forecast(post, n_b=3.0, level=1.5)
    with pytest.raises(MergelawError, match="epsilon"):
        plan.stopping(post, n_b=3.0, epsilon=0.0)
    with pytest.raises(MergelawError, match="'new' cannot be combined"):
        plan.forecast(post, n_b=3.0, family=["new", "code"])


# ---- against the truth, on a real fit of a simulated table ------------------------------------


def _truth_table(plan_fit):
    truth = paper_law_params().set_index(["method", "domain"])
    fam = plan_fit.families
    return {
        label: truth.loc[(m, d), list(law.LAW_PARAM_NAMES)].astype(float).to_numpy()
        for label, m, d in zip(fam["label"], fam["method"], fam["eval_domain"])
    }


def test_forecasts_cover_the_true_curve(plan_fit):
    post = Posterior.from_fit(plan_fit)
    truth = _truth_table(plan_fit)
    covered = []
    for n in (0.5, 3.0, 14.0):
        answer = plan.forecast(post, n_b=n)
        rows = _values(answer, "expected loss")
        for row in rows.itertuples():
            true = law.mean_loss(n, row.k, *truth[row.family])
            covered.append(row.lower <= true <= row.upper)
    assert np.mean(covered) >= 0.75, np.mean(covered)


def test_experts_and_stopping_intervals_hold_the_truth(plan_fit):
    post = Posterior.from_fit(plan_fit)
    truth = _truth_table(plan_fit)
    hits = []
    for label, t in truth.items():
        floor = law.floor_loss(3.0, *t[:3])
        amplitude = law.tail_amplitude(3.0, t[3], t[4])
        target = law.curve_loss(4.5, floor, amplitude, t[5])  # truly needs 5 experts
        answer = plan.experts_for_target(post, target, n_b=3.0, family=label)
        row = _values(answer, "experts for target").iloc[0]
        hits.append(row.lower <= 5 <= row.upper)
        true_stop = law.first_k_gain_below(0.003, amplitude, t[5])
        row = _values(plan.stopping(post, n_b=3.0, epsilon=0.003, family=label),
                      "first k with gain < threshold").iloc[0]  # fmt: skip
        hits.append(row.lower <= true_stop <= row.upper)
    assert np.mean(hits) >= 0.75, hits


def test_few_point_forecast_of_an_unseen_domain_covers_the_truth(plan_fit):
    """Physics is not in the fit: its k = 1, 2, 4 rows and the fitted population forecast
    k = 5..9 at each size."""
    from mergelaw.simulate import simulate_curves

    post = Posterior.from_fit(plan_fit)
    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0), domains=("physics",), methods=("average",), seed=9
    )
    truth = paper_law_params().set_index(["method", "domain"]).loc[("average", "physics")]
    covered = []
    for n in (0.5, 3.0, 14.0):
        rows = table[(table["n_params"] == n * 1e9) & table["k"].isin([1, 2, 4])]
        answer = plan.forecast_from_points(post, rows[["k", "loss"]], n_b=n, k=range(5, 10))
        assert answer.decision["ess"] > 200 and not answer.notes
        expected = _values(answer, "expected loss")
        true = law.mean_loss(
            n, expected["k"].to_numpy(), *truth[list(law.LAW_PARAM_NAMES)].astype(float)
        )
        covered += list((expected["lower"] <= true) & (true <= expected["upper"]))
    assert np.mean(covered) >= 0.8, covered


def test_base_size_for_target_with_a_tail_that_grows_with_n():
    """gamma < 0 (measured on the lab's small bases): L(N, k) falls, then rises with N. The size
    that reaches the target is the first crossing, left of the minimum; a target below the
    minimum is never reached. Reference: brentq on a dense scan, independent of the solver."""
    t = {"L_star": 3.9, "B": 2e-4, "beta": 1.3, "A0": 1.5, "gamma": -0.35, "b": 0.4}
    post = Posterior.point_mass(["llama/task_arithmetic/code"], t, sizes_b=(7e-4, 2e-3, 4e-3),
                                pool_size=9)  # fmt: skip
    grid = np.logspace(-4, 7, 20_001)
    losses = law.mean_loss(grid, 9, *t.values())
    lowest = losses.min()
    assert 1e-4 < grid[losses.argmin()] < 1e7  # the curve has an interior minimum
    target = lowest + 0.05
    first = np.flatnonzero(losses <= target)[0]
    expected = brentq(lambda n: law.mean_loss(n, 9, *t.values()) - target,
                      grid[first - 1], grid[first])  # fmt: skip
    answer = plan.experts_for_target(post, target, n_b=4e-3, k_max=9)
    found = _values(answer, "base size (B) for target, <= 9 experts").estimate.iloc[0]
    assert found == pytest.approx(expected, rel=1e-6)
    below = plan.experts_for_target(post, lowest - 0.01, n_b=4e-3, k_max=9)
    assert _values(below, "base size (B) for target, <= 9 experts").estimate.iloc[0] == math.inf


def test_base_size_for_target_per_draw_is_the_root_of_each_draws_law():
    """Draws converge at different Newton steps (the search drops them as they do): each draw's
    size is still the root of its own law, found by brentq."""
    rng = np.random.default_rng(3)
    draws = {n: v[:1] * np.exp(0.1 * rng.standard_normal((40, 1))) for n, v in TRUTH.items()}
    post = Posterior.from_draws(FAMILIES[:1], draws)
    target = float(law.mean_loss(20.0, 9.0, *(TRUTH[n][0] for n in law.LAW_PARAM_NAMES)))
    found = plan.size_for_target(target, 9.0, post, np.array([0]))[:, 0]
    ends = np.log(plan.N_RANGE_B)
    for s, size in enumerate(found):
        params = [draws[n][s, 0] for n in law.LAW_PARAM_NAMES]

        def excess(x, p=params):
            return law.mean_loss(np.exp(x), 9.0, *p) - target

        if excess(ends[1]) > 0:
            assert size == math.inf
        else:
            root = brentq(excess, *ends, xtol=1e-14)
            assert size == pytest.approx(np.exp(root), rel=1e-9)
    assert np.isfinite(found).sum() >= 10  # most draws reach it


def test_a_rising_curve_says_adding_experts_makes_it_worse():
    """A negative amplitude (TIES on our lab curves): the gain is negative from k = 1, the
    stopping rule stops at once and says why, and a target is met at k = 1 or never."""
    law_values = {"L_star": [4.4, 4.0], "B": 0.0, "beta": 0.5, "A0": [-0.3, 0.3], "gamma": 0.0,
                  "b": 1.0}  # fmt: skip
    post = Posterior.point_mass(["x/ties/code", "x/average/code"], law_values)
    answer = plan.stopping(post, n_b=1.0, epsilon=0.001)
    assert answer.decision["x/ties/code"] == {"stop_at_k": 1.0, "adding_experts": "makes it worse"}
    assert answer.decision["x/average/code"]["adding_experts"] == "helps"
    curves = post.curves(1.0)
    at_1 = float(curves.mean(1.0)[0, 0])  # 4.4 - 0.15 = 4.25, rising towards 4.4
    needed = plan.experts_for_target(post, at_1 + 0.01, n_b=1.0, family="x/ties/code")
    assert needed.decision["x/ties/code"]["k"] == 1.0
    never = plan.experts_for_target(post, at_1 - 0.01, n_b=1.0, family="x/ties/code")
    assert never.decision["x/ties/code"]["status"] == "unreachable at this size"


def test_answers_carry_their_decision_in_words():
    """Each family's decision is one sentence in the answer itself (the terminal, the report and
    the JSON show the same words), saying what the decision dict says."""
    law_values = {"L_star": [4.4, 4.0], "B": 0.0, "beta": 0.5, "A0": [-0.3, 0.3], "gamma": 0.0,
                  "b": 1.0}  # fmt: skip
    post = Posterior.point_mass(["x/ties/code", "x/average/code"], law_values)
    stop = plan.stopping(post, n_b=1.0, epsilon=0.001)
    k_stop = stop.decision["x/average/code"]["stop_at_k"]
    assert stop.summary == (
        "x/ties/code @ 1B: adding experts makes it worse (P >= 0.9): stop at k = 1",
        f"x/average/code @ 1B: stop at k = {k_stop:.0f} (the next expert's expected gain is "
        "below 0.001)",
    )
    target = plan.experts_for_target(post, 4.2, n_b=1.0, family="x/average/code", prob=0.9)
    k = target.decision["x/average/code"]["k"]  # 4.0 + 0.3 / (k + 1) <= 4.2: k = 1 (0.15)
    assert k == 1.0
    assert target.summary == ("x/average/code @ 1B: 1 experts reach loss 4.2 with P >= 0.9",)
    never = plan.experts_for_target(post, 3.9, n_b=1.0, family="x/average/code")
    assert never.summary[0].startswith(
        "x/average/code @ 1B: unreachable at this size with P >= 0.9; reachable from a base of "
    )
    assert stop.to_dict()["summary"] == list(stop.summary)
