"""Posterior: numpy draws of a fit; its curves are the law's, its new families the population's."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mergelaw import law
from mergelaw.bayes.posterior import (
    Posterior,
    fitted_curves_offset_population,
    fitted_groups_population,
)
from mergelaw.bayes.spec import load_spec
from mergelaw.errors import MergelawError

FAMILIES = ["qwen2/average/code", "qwen2/ties/biology"]
TRUTH = {
    "L_star": [0.28, 0.64],
    "B": [0.21, 0.62],
    "beta": [0.41, 0.37],
    "A0": [0.082, 0.159],
    "gamma": [0.137, 0.05],
    "b": [0.43, 0.2],
}


def test_point_mass_curves_are_the_law():
    post = Posterior.point_mass(FAMILIES, TRUTH, n_draws=3)
    curves = post.curves(7.0)
    t = {name: np.array(v) for name, v in TRUTH.items()}
    np.testing.assert_allclose(curves.floor[0], law.floor_loss(7.0, t["L_star"], t["B"], t["beta"]))
    np.testing.assert_allclose(curves.amplitude[0], law.tail_amplitude(7.0, t["A0"], t["gamma"]))
    ks = np.array([1.0, 2.0, 9.0])
    expected = law.mean_loss(7.0, ks[None, :], *(t[n][:, None] for n in law.LAW_PARAM_NAMES))
    np.testing.assert_allclose(curves.mean(ks)[1], expected)
    np.testing.assert_allclose(
        curves.marginal_gain(3.0)[2], law.marginal_gain(3.0, curves.amplitude[2], t["b"])
    )


def test_curves_take_a_k_grid_or_one_k_per_draw_and_family():
    """A 1-D k is a grid (a trailing axis); a 2-D k is one k per draw and family."""
    post = Posterior.point_mass(FAMILIES, {**TRUTH, "alpha": [1.0, 0.7]}, n_draws=3)
    curves = post.curves(7.0)
    grid = np.array([1.0, 2.0, 9.0])
    t = {name: np.array(v) for name, v in TRUTH.items()}
    alpha = np.array([1.0, 0.7])
    expected = law.tail_shape(grid, t["b"][:, None], alpha[:, None])
    np.testing.assert_allclose(curves.tail_shape(grid)[0], expected)
    one_each = np.array([[1.0, 9.0], [2.0, 2.0], [9.0, 1.0]])  # (S, F)
    at_grid = curves.mean(grid)
    column = np.searchsorted(grid, one_each)  # where each k sits on the grid
    draw, family = np.indices(one_each.shape)
    np.testing.assert_allclose(curves.mean(one_each), at_grid[draw, family, column])
    gain = curves.marginal_gain(one_each)
    np.testing.assert_allclose(gain, curves.mean(one_each) - curves.mean(one_each + 1.0))
    per_family = curves.marginal_gain(np.array([[3.0, 5.0]]))  # (1, F): the same in every draw
    np.testing.assert_array_equal(per_family[:, 0], curves.marginal_gain(3.0)[:, 0])
    np.testing.assert_array_equal(per_family[:, 1], curves.marginal_gain(5.0)[:, 1])


def test_family_curves_name_the_posterior_and_columns_a_family_lives_in():
    post = Posterior.point_mass(FAMILIES, TRUTH, n_draws=3)
    source, curves, index = post.family_curves(7.0, "biology")
    assert source is post and list(index) == [1] and curves.labels == [FAMILIES[1]]
    np.testing.assert_array_equal(source.law_at(index)["A0"], post.law["A0"][:, [1]])
    assert post.law_at(np.arange(2)) is post.law  # every family in order: no copies
    with pytest.raises(MergelawError, match="cannot be combined"):
        post.family_curves(7.0, ["new", "code"])


def test_selected_families_keep_their_curves_at_fitted_and_new_sizes():
    """``select`` takes columns once; a family's curve, the deviations drawn for it at a new
    size included, is the same whichever families are asked with it."""
    families = [*FAMILIES, "qwen2/ta/law"]
    truth = {name: [*values, values[0]] for name, values in TRUTH.items()}
    post = dataclasses.replace(
        Posterior.point_mass(families, truth, n_draws=200, sizes_b=(0.5, 3.0, 14.0)),
        floor_dev_scale=np.full(200, 0.05),
        b_dev_scale=np.full((200, 3), 0.2),
        tail_dev_scale=np.full((200, 3), 0.01),
        noise_dev_scale=np.full(200, 0.3),
    )
    assert post.per_size == {}  # no fitted deviations: every size draws them
    picked = post.select(["qwen2/ta/law", "code"])
    assert picked.labels == ["qwen2/ta/law", FAMILIES[0]]
    for n_b in (3.0, 40.0):
        whole, alone = post.curves(n_b), post.curves(n_b, ["code"])
        few = picked.curves(n_b)
        for name in ("floor", "amplitude", "b", "sigma"):
            np.testing.assert_array_equal(getattr(few, name), getattr(whole, name)[:, [2, 0]])
            np.testing.assert_array_equal(getattr(alone, name), getattr(whole, name)[:, [0]])
    deviation = post.curves(40.0).floor - post.curves(40.0).floor.mean(axis=0)
    assert 0.03 < deviation.std() < 0.07  # drawn at the floor's spread, per family
    assert not np.allclose(deviation[:, 0], deviation[:, 2])  # each family its own draws


def test_noise_sd_is_the_finite_pool_model():
    post = Posterior.point_mass(
        FAMILIES, TRUTH, sigma=0.04, sigma_slope=0.3, nugget=0.002, sizes_b=(0.5, 3, 14)
    )
    curves = post.curves(1.5)
    sigma_n = 0.04 * (1.5 / post.n_ref) ** -0.3
    for k in (1.0, 4.0, 9.0):
        factor = (9 - k) / (k * 8)
        expected = np.sqrt((sigma_n**2 * factor + 0.002**2) / 5)
        np.testing.assert_allclose(curves.noise_sd(k, n_subsets=5)[0, 0], expected)


def _anchored(post, t):
    """Group parameters (anchored) of the law ``t``: the inverse of the model's arithmetic,
    written out independently (as in tests/bayes/test_model.py)."""
    amplitude_ref = t["A0"] * post.n_ref ** (-t["gamma"])
    gap = t["B"] * post.n_ref ** (-t["beta"])
    k_a = post.k_anchor
    return {
        "level": t["L_star"] + gap + amplitude_ref / (k_a + t["b"]),
        "drop": amplitude_ref * (1 / (1 + t["b"]) - 1 / (k_a + t["b"])),
        "floor_drop": gap * (np.exp(-t["beta"] * post.x_lo) - np.exp(-t["beta"] * post.x_hi)),
        "beta": t["beta"],
        "gamma": t["gamma"],
        "b": t["b"],
        "sigma": 0.03,
    }


def test_new_family_from_a_narrow_population_is_its_centre():
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0))
    t = {name: value[0] for name, value in TRUTH.items()}
    centre = _anchored(post, t)
    spec = load_spec("default")
    population = {name: (spec.params[name].to_raw(v), 1e-9) for name, v in centre.items()}
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), population=population)
    new = post.new_family(per_draw=2)
    assert new.labels == ["new"] and new.n_draws == 2 * post.n_draws
    for name, value in t.items():
        np.testing.assert_allclose(new.law[name], value, rtol=1e-6)
    np.testing.assert_allclose(new.sigma, 0.03, rtol=1e-6)
    np.testing.assert_allclose(
        post.curves(3.0, "new").mean(9.0), law.mean_loss(3.0, 9.0, *t.values()), rtol=1e-6
    )


def test_new_family_takes_its_methods_nugget_where_the_fit_has_it():
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0))
    t = {name: value[0] for name, value in TRUTH.items()}
    population = {name: (load_spec("default").params[name].to_raw(v), 1e-9)
                  for name, v in _anchored(post, t).items()}  # fmt: skip
    per_method = np.tile([0.001, 0.03], (post.n_draws, 1))  # average/code, ties/biology
    post = dataclasses.replace(
        Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), population=population),
        nugget=per_method,
    )
    mixture = np.sqrt((0.001**2 + 0.03**2) / 2)
    for method, nugget in (("average", 0.001), ("ties", 0.03), ("dare", mixture), (None, mixture)):
        np.testing.assert_allclose(post.new_family(method=method).nugget, nugget)


def test_the_laws_misfit_of_per_k_means_is_its_methods_and_survives_a_selection():
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0))
    assert post.misfit_of("average") is None  # a fit that did not measure it
    post = dataclasses.replace(post, means_misfit={"average": 0.0003, "ties": 0.003})
    mixture = np.sqrt((0.0003**2 + 0.003**2) / 2)
    for method, misfit in (("average", 0.0003), ("ties", 0.003), ("dare", mixture)):
        np.testing.assert_allclose(post.misfit_of(method), misfit)
    assert post.select(["average/code"]).misfit_of("ties") == 0.003


def test_new_family_takes_its_methods_population_mean_where_the_spec_has_one():
    """b's population has one mean per merge method (sorted: average, ties): a new family of a
    fitted method gets that method's, one of an unseen method the spec's prior, and one of no
    named method one of the fitted methods per draw."""
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=4000)
    t = {name: value[0] for name, value in TRUTH.items()}
    prior_b = load_spec("default").params["b"]
    population = {name: (load_spec("default").params[name].to_raw(v), 1e-9)
                  for name, v in _anchored(post, t).items()}  # fmt: skip
    population["b"] = (np.tile(prior_b.to_raw([0.5, 9.0]), (post.n_draws, 1)), 1e-9)
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=4000,
                                population=population)  # fmt: skip
    np.testing.assert_allclose(post.new_family(method="average").law["b"], 0.5)
    np.testing.assert_allclose(post.new_family(method="ties").law["b"], 9.0)
    unseen = prior_b.to_raw(post.new_family(method="dare").law["b"])
    assert abs(unseen.mean() - prior_b.prior_mean) < 0.05
    assert abs(unseen.std() - prior_b.prior_sd) < 0.05
    either = post.new_family().law["b"]
    assert np.all(np.isclose(either, 0.5) | np.isclose(either, 9.0))
    assert 0.45 < np.isclose(either, 9.0).mean() < 0.55


def test_unpooled_parameters_population_is_each_methods_fitted_groups():
    """A parameter the spec leaves unpooled has no fitted population: a new group comes from its
    merge method's fitted groups (their mean and sd per draw, raw scale), the spec's prior where
    a method has fewer than three, and a per-method parameter is its method's value."""
    families = pd.DataFrame({"method": ["ties", "average", "ties", "ties", "average"]})
    curves = pd.DataFrame({"family": [0, 1, 2, 3, 4, 0, 2]})
    prior = load_spec("default").params["b"]
    rng = np.random.default_rng(0)
    b = np.expm1(rng.normal(2.0, 0.3, size=(6, 5)))  # (S, families)
    mean, scale = fitted_groups_population(prior, b, "family", families, curves)
    ties = prior.to_raw(b[:, [0, 2, 3]])
    np.testing.assert_allclose(mean[:, 1], ties.mean(axis=1))  # methods sorted: average, ties
    np.testing.assert_allclose(scale[:, 1], ties.std(axis=1, ddof=1))
    np.testing.assert_array_equal(mean[:, 0], prior.prior_mean)  # two averages: the prior
    np.testing.assert_array_equal(scale[:, 0], prior.prior_sd)
    per_curve = np.expm1(rng.normal(size=(6, 7)))
    mean, scale = fitted_groups_population(prior, per_curve, "curve", families, curves)
    ties_curves = prior.to_raw(per_curve[:, [0, 2, 3, 5, 6]])
    np.testing.assert_allclose(mean[:, 1], ties_curves.mean(axis=1))
    decay = load_spec("default").params["decay"]
    per_method = np.exp(rng.normal(size=(6, 2)))
    mean, scale = fitted_groups_population(decay, per_method, "merge_method", families, curves)
    np.testing.assert_allclose(mean, np.log(per_method))
    np.testing.assert_array_equal(scale, 0.0)


def test_a_new_curves_offset_comes_from_the_fitted_curves_bends_included():
    """A bent curve's log(1 + b) is its family's plus its bend, whichever way a draw splits the
    two: a new curve's offset population is the spread of the fitted curves' sums per merge
    method (the spec's prior for a method of fewer than three families)."""
    families = pd.DataFrame({"method": ["ties", "average", "ties", "ties", "average"]})
    curves = pd.DataFrame({"family": [0, 1, 2, 3, 4, 0, 2, 3, 1]})
    prior = load_spec("default").params["b"]
    rng = np.random.default_rng(1)
    split = rng.normal(0.0, 0.5, size=(6, 1))  # a ridge: family up, its curves' bends down
    family_b = np.expm1(rng.normal(2.0, 0.1, size=(6, 5)) + split)
    own = rng.normal(0.0, 0.05, size=(6, 9))
    bends = own - split
    mean, scale = fitted_curves_offset_population(prior, family_b, bends, families, curves)
    ties = [0, 2, 3, 5, 6, 7]  # curves of TIES families
    # closed form: log(1 + b) is the sum (on the prior's raw scale, soft-capped near 10)
    curve_raw = prior.to_raw(np.expm1(np.log1p(family_b[:, curves["family"]]) + bends))
    np.testing.assert_allclose(mean[:, 1], curve_raw[:, ties].mean(axis=1))
    np.testing.assert_allclose(scale[:, 1], curve_raw[:, ties].std(axis=1, ddof=1))
    assert np.all(scale[:, 1] < 0.3)  # the ridge's 0.5 cancels; the families' spread does not
    np.testing.assert_array_equal(mean[:, 0], prior.prior_mean)  # two Average families
    np.testing.assert_array_equal(scale[:, 0], prior.prior_sd)


def test_a_new_family_takes_no_bend_on_top_of_the_curves_offsets():
    """Where the offset's population already holds the fitted curves' bends, a new family's
    curve at any size spreads by that population alone; otherwise a fresh bend adds its own."""
    n = 4000
    spec = load_spec("default")
    base = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=n)
    t = {name: value[0] for name, value in TRUTH.items()}
    population = {name: (spec.params[name].to_raw(v), 1e-9)
                  for name, v in _anchored(base, t).items()}  # fmt: skip
    population["b"] = (np.full(n, 0.1), np.full(n, 0.05))
    for curves_hold_bends, expected in ((True, 0.05), (False, np.hypot(0.05, 0.3))):
        post = dataclasses.replace(
            Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=n,
                                 population=population),
            b_dev_scale=np.full(n, 0.3), offsets_of_curves=curves_hold_bends,
        )  # fmt: skip
        b = post.new_family(method="average").curves(1.7).b[:, 0]
        assert abs(np.log1p(b).std() - expected) < 0.1 * expected


def test_new_family_draws_its_methods_spread_where_the_population_has_one():
    """With a scale per merge method (an unpooled parameter's fitted groups), a new family of a
    fitted method spreads by that method's scale; one of an unseen method draws from the spec's
    prior (once, not a prior mean and then a prior spread); one of no named method takes one
    method per draw for every parameter."""
    n = 4000
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=n)
    t = {name: value[0] for name, value in TRUTH.items()}
    spec = load_spec("default")
    population = {name: (spec.params[name].to_raw(v), 1e-9)
                  for name, v in _anchored(post, t).items()}  # fmt: skip
    population["b"] = (np.tile(np.log1p([0.5, 9.0]), (n, 1)), np.tile([0.1, 0.4], (n, 1)))
    population["drop"] = (np.tile([0.2, -0.3], (n, 1)), np.tile([1e-9, 1e-9], (n, 1)))
    post = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0), n_draws=n,
                                population=population)  # fmt: skip
    values, _ = post.population_draws(rng=np.random.default_rng(1), method="ties")
    raw_b = np.log1p(values["b"])
    assert abs(raw_b.mean() - np.log1p(9.0)) < 0.03 and abs(raw_b.std() - 0.4) < 0.03
    np.testing.assert_allclose(values["drop"], -0.3)
    values, _ = post.population_draws(rng=np.random.default_rng(1), method="dare")
    prior = spec.params["b"]
    raw_b = np.log1p(values["b"])
    assert abs(raw_b.mean() - prior.prior_mean) < 0.05
    assert abs(raw_b.std() - prior.prior_sd) < 0.05
    values, _ = post.population_draws(rng=np.random.default_rng(1))
    ties = np.isclose(values["drop"], -0.3)
    assert 0.45 < ties.mean() < 0.55
    assert np.log1p(values["b"][ties]).min() > np.log1p(9.0) - 5 * 0.4  # ties' b, not average's
    assert np.log1p(values["b"][~ties]).max() < np.log1p(0.5) + 5 * 0.1


def test_family_lookup_by_label_or_unique_part():
    post = Posterior.point_mass(FAMILIES, TRUTH)
    assert post.family_index("qwen2/ties/biology") == 1
    assert post.family_index("average/code") == 0
    assert post.family_index("biology") == 1
    with pytest.raises(MergelawError, match="is not a family of this fit"):
        post.family_index("physics")
    with pytest.raises(MergelawError, match="not a positive number"):
        post.curves(-1.0)


def test_refuses_a_spec_with_a_law_per_curve():
    naive = SimpleNamespace(spec=load_spec("naive"))
    with pytest.raises(MergelawError, match="per \\(family, size\\) curve"):
        Posterior.from_fit(naive)


def test_from_fit_holds_the_fits_draws(fake_fit):
    result = fake_fit
    post = Posterior.from_fit(result, pool_size=9)
    assert post.labels == list(result.families["label"]) and post.n_draws == result.n_draws
    assert post.sizes_b == (0.5, 3.0, 14.0) and post.flag == result.flag
    assert post.provenance["data_hash"] == result.meta.data_hash
    pooled = [n for n in result.spec.required_params() if result.spec.is_pooled(n)]
    assert set(post.population) == set(result.spec.required_params()) and "beta" not in pooled
    draws = {name: result.draws(name) for name in law.LAW_PARAM_NAMES}
    # at a fitted size, each family's curve is the law at k_anchor plus that curve's floor and
    # drop deviations (its own bend keeps the law's level there: test_fit checks the bend)
    curves = result.meta.curve_table
    at_3 = curves[curves["n_params"] == 3e9].sort_values("family").index.to_numpy()
    own = {name: result.draws(name)[:, at_3] for name in ("floor_dev", "tail_dev", "b_dev")}
    big_k = post.k_anchor
    curve_b = (1 + draws["b"]) * np.exp(own["b_dev"]) - 1
    law_mean = law.mean_loss(3.0, big_k, *draws.values())
    np.testing.assert_allclose(
        post.curves(3.0).mean(big_k),
        law_mean + own["floor_dev"] + own["tail_dev"] / (big_k + curve_b),
        rtol=1e-10,
    )
    np.testing.assert_allclose(post.population["gap"][1], result.draws("gap_scale"))
    # unpooled: decay is its method's value; b, two families per method, the spec's prior
    np.testing.assert_allclose(post.population["decay"][0], np.log(result.draws("decay")))
    np.testing.assert_array_equal(post.population["b"][1], result.spec.params["b"].prior_sd)
    gap = post.curves(3.0).gap
    np.testing.assert_allclose(gap, result.draws("gap")[:, at_3])
    # ... and its noise the fit's noise model times that curve's noise factor
    obs = result.observations()
    rows = [int(np.flatnonzero((obs.curve == c) & (obs.k == 2.0))[0]) for c in at_3]
    _, scale = result.predictive_draws(obs=obs, keep=np.arange(post.n_draws))
    within = post.curves(3.0).in_stratum("with_own")  # the fit's scale is about a stratum
    np.testing.assert_allclose(within.noise_sd(2.0), scale[:, rows], rtol=1e-10)
    # a random merge also varies by whether it holds the own expert
    at_3 = post.curves(3.0)
    membership = law.membership_variance(2.0, post.pool_size, at_3.gap, at_3.decay)
    np.testing.assert_allclose(at_3.noise_sd(2.0) ** 2, scale[:, rows] ** 2 + membership)
    # at a size the fit has not seen, each curve's gap is drawn from the gap's population, the
    # same whichever families are asked with it
    at_new = post.curves(1.7)
    assert at_new.gap.shape == (post.n_draws, len(post.labels))
    gap = post.population["gap"]
    z = (at_new.gap - gap[0][:, None]) / gap[1][:, None]
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    np.testing.assert_array_equal(post.curves(1.7, [post.labels[1]]).gap[:, 0], at_new.gap[:, 1])
    assert np.ptp(result.draws("noise_dev")) > 0
    # the default's noise factors spread by a fixed 0.3: a new curve's are drawn at that spread
    assert "noise_dev_scale" not in result.idata.posterior
    np.testing.assert_array_equal(post.noise_dev_scale, result.spec.noise_curve_prior_sd)


@pytest.fixture(scope="module")
def one_size_fit():
    """A fit, made without sampling (fakes.fake_fit), of a table with one base size (what most
    teams have): no size law."""
    from fakes import fake_fit
    from mergelaw.simulate import simulate_curves

    table = simulate_curves(sizes_b=(3.0,), domains=("code", "biology"),
                            methods=("average", "ties"), seed=2)  # fmt: skip
    return fake_fit(table, seed=1)


def test_one_size_fit_answers_at_its_size_and_refuses_size_laws(one_size_fit):
    from mergelaw.plan import CostModel, budget, experts_for_target, forecast

    assert one_size_fit.meta.size_law is False
    assert "no size law" in one_size_fit.meta.notes[0]
    post = Posterior.from_fit(one_size_fit)
    assert post.sizes_b == (3.0,) and not post.size_law
    curves = post.curves(3.0)
    # the family's curve is the fitted curve at that size: level and drop give floor and A
    draws = one_size_fit.draws("L_star")
    np.testing.assert_allclose(curves.floor, draws)
    np.testing.assert_allclose(curves.mean(9.0), one_size_fit.draws("level"), rtol=1e-10)
    answer = experts_for_target(post, float(np.median(curves.mean(4.0))), n_b=3.0)
    assert not any("base size" in q for q in answer.table["quantity"])
    assert len(forecast(post, n_b=3.0).table) > 0
    assert len(forecast(post, n_b=3.0, family="new").table) > 0
    with pytest.raises(MergelawError, match="needs the size laws, but this fit has 1 base size"):
        post.curves(7.0)
    with pytest.raises(MergelawError, match="needs the size laws"):
        budget(post, CostModel(base={3.0: 1.0, 7.0: 2.0}, per_expert=0.1), limit=10.0)


def test_queries_plan_at_a_one_size_fits_size_unless_told(one_size_fit):
    """Python callers, like the CLI, need not repeat a one-size fit's size; a size as printed
    (six significant digits) is that fitted size; several sizes need n_b."""
    from mergelaw.plan import forecast, stopping

    post = Posterior.from_fit(one_size_fit)
    assert post.planning_size(None) == 3.0 and post.planning_size(7.0) == 7.0
    default = stopping(post, epsilon=0.01).table
    pd.testing.assert_frame_equal(default, stopping(post, n_b=3.0, epsilon=0.01).table)
    assert post.fitted_size(float(f"{3.0000123:g}")) == 3.0 and post.fitted_size(3.001) is None
    assert len(forecast(post, n_b=3.00001).table) > 0
    several = Posterior.point_mass(FAMILIES, TRUTH, sizes_b=(0.5, 3.0, 14.0))
    with pytest.raises(MergelawError, match=r"n_b: this fit has 3 base sizes \(0.5B, 3B, 14B\)"):
        stopping(several, epsilon=0.01)


def test_pool_strata_straddle_the_law(one_size_fit):
    """With the own expert the curve sits (1 - k/M) gap(k) off the average, without it -(k/M)
    gap(k): the two strata, weighted k/M and 1 - k/M, average back to the law."""
    post = Posterior.from_fit(one_size_fit)
    curves = post.curves(3.0)
    ks = np.arange(1.0, 9.0)
    with_own, without = (curves.in_stratum(s).mean(ks) for s in ("with_own", "without_own"))
    share = ks / post.pool_size
    np.testing.assert_allclose(share * with_own + (1 - share) * without, curves.mean(ks))
    assert np.all(np.median(with_own - without, axis=0) < 0)  # the own expert helps its domain
    with pytest.raises(MergelawError, match="pool 'mine'"):
        curves.in_stratum("mine")
