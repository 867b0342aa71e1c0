"""NumPyro sampling of the default model: it mixes, and recovers the simulated truth."""

import numpy as np

from mergelaw.bayes import model, numpyro_backend
from mergelaw.bayes.data import prepare
from mergelaw.bayes.spec import load_spec
from mergelaw.paper import paper_law_params
from mergelaw.simulate import simulate_curves


def test_default_model_samples_and_recovers_truth():
    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0),
        domains=("code", "biology", "physics", "algebra"),
        methods=("average",),
        seed=2,
    )
    data = prepare(table)
    run = numpyro_backend.sample(
        load_spec("default"),
        data,
        draws=300,
        tune=500,
        chains=2,
        seed=0,
        target_accept=0.95,
        max_tree_depth=8,
        progress=False,
    )
    extra = run.mcmc.get_extra_fields()
    # Known open point: on tables this small a few draws in a thousand can still diverge.
    assert float(np.mean(extra["diverging"])) <= 0.01
    assert float(np.mean(extra["num_steps"])) < 2**8 - 1  # not saturating the tree depth
    samples = run.mcmc.get_samples()
    truth = paper_law_params().set_index(["method", "domain"])
    for name in ("L_star", "B", "beta", "A0"):
        draws = np.asarray(samples[name])
        lo, hi = np.quantile(draws, [0.005, 0.995], axis=0)
        true = np.array([truth.loc[("average", d), name] for d in data.families["eval_domain"]])
        assert np.all((lo <= true) & (true <= hi)), (name, lo, hi, true)


def test_a_chain_far_above_the_others_in_energy_and_narrower_is_stuck():
    rng = np.random.default_rng(0)
    energy = rng.normal(0.0, 30.0, (4, 500))
    steps = np.full((4, 500), 63.0)
    assert numpyro_backend.stuck_chains(energy, steps) == []
    energy[2] += 1845.0  # the paper table's seed-0 chain
    assert numpyro_backend.stuck_chains(energy, steps) == []  # as wide: a real mode, kept
    steps[2] = 1023.0
    assert numpyro_backend.stuck_chains(energy, steps) == [2]
    energy[2] -= 1845.0 - 10 * 30.0  # 10 sd above: within reach of a real mode, kept
    assert numpyro_backend.stuck_chains(energy, steps) == []
    two = numpyro_backend.stuck_chains(energy[[0, 2]] + [[0.0], [1845.0]], steps[[0, 2]])
    assert two == [1]
    assert numpyro_backend.stuck_chains(energy[[2, 2]], steps[[2, 2]]) == []


def test_a_stuck_chain_restarts_from_a_healthy_chains_state(monkeypatch):
    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0), domains=("code", "algebra"), methods=("average",), seed=2
    )
    data = prepare(table)
    calls = []

    def first_call_finds_chain_0(energy, steps):
        calls.append(energy.shape)
        return [0] if len(calls) == 1 else []

    monkeypatch.setattr(numpyro_backend, "stuck_chains", first_call_finds_chain_0)
    run = numpyro_backend.sample(
        load_spec("default"), data, draws=100, tune=150, chains=2, seed=0,
        target_accept=0.95, max_tree_depth=8, progress=False,
    )  # fmt: skip
    assert len(calls) == 1
    assert len(run.restarts) == 1 and run.restarts[0].startswith("chain 0 ")
    assert "from chain 1's last state" in run.restarts[0]
    start = run.mcmc.post_warmup_state.z  # what the second run of draws started from
    for name, value in start.items():
        np.testing.assert_array_equal(value[0], value[1], err_msg=name)
    draws = run.mcmc.get_samples(group_by_chain=True)["L_star"]
    assert draws.shape[:2] == (2, 100)
    assert not np.array_equal(draws[0], draws[1])  # each chain drew with its own key


def test_the_membership_decay_and_gaps_share_a_dense_mass_matrix():
    """Rows at k > 1 measure gap * k^-decay, so NUTS adapts one dense mass matrix over each
    method's decay and the curves' gaps (a ridge a diagonal one crossed slowly: R-hat 1.015 on
    the paper's table); a spec without the power membership term has no such block."""
    table = simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=("code", "biology"),
                            methods=("average", "ties"), seed=1)  # fmt: skip
    data = prepare(table)
    default = load_spec("default")
    _, dims = numpyro_backend.model_fn(default, data)
    assert numpyro_backend.dense_blocks(dims) == [("decay_raw", "gap_raw")]
    for other in ("default_v1", "naive"):
        spec = load_spec(other)
        _, dims = numpyro_backend.model_fn(spec, data)
        assert "decay_raw" not in dims and numpyro_backend.dense_blocks(dims) == []
    settings = dict(draws=10, tune=10, chains=1, target_accept=0.9, max_tree_depth=5)
    mcmc, _, _ = numpyro_backend.make_mcmc(default, data, progress=False, **settings)
    assert mcmc.sampler._dense_mass == [("decay_raw", "gap_raw")]


def test_gaps_are_centred_where_the_curves_hold_their_own_expert_often():
    """'auto' samples the membership gaps centred where the median curve holds its own expert
    in at least CENTRED_GAP_MIN_OWN_ROWS merged models, non-centred where fewer rows pin them
    (k = 1, 2, 4 alone: a funnel with their population's scale); the decay and gap block
    follows whichever the table made."""
    table = simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=("code", "biology"),
                            methods=("average", "ties"), subsets_per_k=5, seed=1)  # fmt: skip
    default = load_spec("default")
    few = table[table["k"].isin([1, 2, 4])]
    for rows, site in ((table, "gap_raw"), (few, "gap_z")):
        data = prepare(rows)
        own = np.bincount(data.curve, weights=data.in_domain)
        assert (np.median(own) >= model.CENTRED_GAP_MIN_OWN_ROWS) == (site == "gap_raw")
        _, dims = numpyro_backend.model_fn(default, data)
        assert site in dims and numpyro_backend.dense_blocks(dims) == [("decay_raw", site)]
