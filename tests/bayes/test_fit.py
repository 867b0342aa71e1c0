"""Fit: self-describing, seeded, saved and loaded whole; refuses a changed spec or other data."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mergelaw.bayes.fit import Fit, fit, prior_predictive
from mergelaw.bayes.spec import load_spec
from mergelaw.cli import app
from mergelaw.curves import write_curves
from mergelaw.errors import MergelawError
from mergelaw.simulate import simulate_curves

QUICK = {"draws": 60, "tune": 60, "chains": 2, "target_accept": 0.9}


@pytest.fixture(scope="module")
def table():
    return simulate_curves(
        sizes_b=(0.5, 3.0, 14.0),
        domains=("code", "biology", "physics"),
        methods=("average",),
        seed=4,
    )


@pytest.fixture(scope="module")
def quick_fit(table):
    return fit(table, seed=5, **QUICK)


def test_fit_is_self_describing(quick_fit, table):
    posterior = quick_fit.idata.posterior
    assert posterior["L_star"].dims == ("chain", "draw", "family")
    assert list(posterior["family"].to_numpy()) == [
        "qwen2/average/biology",
        "qwen2/average/code",
        "qwen2/average/physics",
    ]
    assert "loss" in quick_fit.idata.log_likelihood
    meta = quick_fit.meta
    assert meta.backend == "numpyro" and meta.settings.seed == 5
    assert {"numpyro", "jax", "pymc", "arviz", "mergelaw"} <= set(meta.versions)
    assert quick_fit.spec.digest == load_spec("default").digest
    # 120 draws cannot reach ESS 400: the flag must say so.
    assert not quick_fit.diagnostics.ok and "ESS" in quick_fit.flag
    summary = quick_fit.law_summary()
    assert set(summary["param"]) == {"L_star", "B", "beta", "A0", "gamma", "b"}
    assert (summary["lower"] <= summary["mean"]).all() and (
        summary["mean"] <= summary["upper"]
    ).all()


def test_predictive_draws_and_curve_checks_travel_with_the_fit(quick_fit, table, tmp_path):
    """The fit keeps the table's structure, so a saved fit alone replicates every row and keeps
    the per-curve checks made when it was fitted."""
    replicated = quick_fit.posterior_predictive(draws=50, seed=1)
    assert replicated.shape == (50, len(table))
    mean, scale = quick_fit.predictive_draws(draws=50)
    # the replicated rows scatter around the posterior mean by the noise model's scale
    z = (replicated - mean) / scale
    assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05
    checks = quick_fit.curve_checks()
    assert len(checks) == 9 and checks["p_means"].between(0, 1).all()
    assert not checks["misfit"].any() and not quick_fit.diagnostics.misfit_curves
    assert quick_fit.meta.pool_size == 9
    quick_fit.save(tmp_path / "fit.nc")
    loaded = Fit.load(tmp_path / "fit.nc")
    np.testing.assert_array_equal(loaded.posterior_predictive(draws=50, seed=1), replicated)
    assert loaded.curve_checks().equals(checks)


def test_prior_predictive_draws_losses_on_the_tables_structure(table):
    prior = prior_predictive(table, draws=20, seed=0)
    assert prior["loss"].shape == (20, len(table))
    assert prior["L_star"].shape == (20, 3)
    again = prior_predictive(table, draws=20, seed=0)
    np.testing.assert_array_equal(again["loss"], prior["loss"])


def test_same_seed_same_posterior(table, quick_fit):
    again = fit(table, seed=5, **QUICK)
    np.testing.assert_array_equal(again.draws("L_star"), quick_fit.draws("L_star"))


def test_save_load_round_trip(quick_fit, table, tmp_path):
    path = tmp_path / "fit.nc"
    quick_fit.save(path)
    loaded = Fit.load(path, table=table)
    np.testing.assert_array_equal(loaded.draws("A0"), quick_fit.draws("A0"))
    assert loaded.meta == quick_fit.meta
    assert loaded.diagnostics == quick_fit.diagnostics
    assert loaded.spec == quick_fit.spec.__class__(**{**quick_fit.spec.__dict__, "source": ""})


def test_load_refuses_changed_spec_and_other_data(table, tmp_path):
    spec_path = tmp_path / "mine.toml"
    spec_path.write_text(Path(load_spec("default").source).read_text())
    result = fit(table, spec=load_spec(spec_path), seed=1, **QUICK)
    path = tmp_path / "fit.nc"
    result.save(path)
    Fit.load(path, spec=spec_path)  # unchanged: loads
    spec_path.write_text(spec_path.read_text().replace("prior_sd = 0.75", "prior_sd = 0.9"))
    with pytest.raises(
        MergelawError, match=r"fitted with spec 'default' \(digest .*now has digest"
    ):
        Fit.load(path, spec=spec_path)
    other = table.copy()
    other.loc[0, "loss"] += 0.01
    with pytest.raises(MergelawError, match=r"fitted to data .* but the table given hashes to"):
        Fit.load(path, spec=None, table=other)
    junk = tmp_path / "junk.nc"
    junk.write_text("no")
    with pytest.raises(MergelawError, match=r"junk\.nc: not a mergelaw fit"):
        Fit.load(junk)


def test_a_fit_reloads_with_its_own_spec_whatever_the_file_was_called(quick_fit, tmp_path):
    """Made with --spec path/to/mine.toml: reloads by that path while it exists and is unchanged,
    refuses it changed, and stands on the spec saved inside once the file is gone."""
    import dataclasses

    spec_path = tmp_path / "specs" / "mine.toml"
    spec_path.parent.mkdir()
    text = Path(load_spec("default").source).read_text()
    text = text.replace('name = "default"', 'name = "mine"')
    spec_path.write_text(text)
    mine = load_spec(spec_path)
    result = dataclasses.replace(quick_fit, spec=mine, meta=dataclasses.replace(
        quick_fit.meta, spec_source=str(spec_path.resolve())))  # fmt: skip
    path = tmp_path / "fit.nc"
    result.save(path)
    assert Fit.load(path).spec.name == "mine"  # 'current': the file it came from
    spec_path.write_text(text.replace("prior_sd = 0.75", "prior_sd = 0.9"))
    with pytest.raises(MergelawError, match=r"fitted with spec 'mine'.*mine\.toml now has digest"):
        Fit.load(path)
    spec_path.unlink()
    assert Fit.load(path).spec.digest == mine.digest  # the file is gone: the saved spec stands


def test_cli_fit_diagnose_loo(table, tmp_path):
    runner = CliRunner()
    curves = tmp_path / "curves.parquet"
    write_curves(table, curves)
    fits = []
    for spec in ("default", "no_offset"):
        out = tmp_path / f"{spec}.nc"
        result = runner.invoke(
            app,
            [
                "fit",
                str(curves),
                "--out",
                str(out),
                "--spec",
                spec,
                "--draws",
                "60",
                "--tune",
                "60",
                "--chains",
                "2",
                "--no-progress",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "posterior: mean [90% interval]" in result.stdout and "flag: FAILED" in result.stdout
        fits.append(str(out))
    result = runner.invoke(app, ["diagnose", fits[0]])
    assert result.exit_code == 1 and "spec default" in result.stdout  # flagged fit: exit 1
    result = runner.invoke(app, ["loo", *fits])
    assert result.exit_code == 0, result.output
    assert "PSIS-LOO" in result.stdout and "elpd_diff" in result.stdout
    result = runner.invoke(app, ["fit", str(curves), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and "expected a .nc path" in result.stderr


def test_one_chain_is_a_valid_flagged_fit(table):
    one = fit(table, seed=6, **{**QUICK, "chains": 1})
    assert "1 chain: R-hat needs >= 2 chains" in one.flag
    assert np.isnan(one.diagnostics.max_rhat) and one.diagnostics.min_ess_bulk > 0
    assert one.idata.log_likelihood["loss"].shape == (1, QUICK["draws"], len(table))


def test_a_nutpie_fit_carries_its_log_likelihood_and_loo_reads_it(table, quick_fit):
    """The nutpie extra: PyMC's model sampled by nutpie is a whole fit (pointwise log-likelihood
    made after sampling, as for the other samplers), and PSIS-LOO compares it with NumPyro's."""
    pytest.importorskip("nutpie")
    from mergelaw.bayes import diagnostics

    by_nutpie = fit(table, backend="pymc", sampler="nutpie", seed=5, **QUICK)
    assert by_nutpie.meta.sampler == "pymc (nutpie)"
    assert by_nutpie.idata.log_likelihood["loss"].shape == (2, QUICK["draws"], len(table))
    assert np.isfinite(by_nutpie.idata.log_likelihood["loss"].values).all()
    comparison = diagnostics.compare({"nutpie": by_nutpie.idata, "numpyro": quick_fit.idata})
    assert set(comparison.index) == {"nutpie", "numpyro"}


def test_an_unseen_curve_draws_its_gap_from_its_methods_population(quick_fit, table):
    """A held-out size's curve has no fitted gap: it is drawn from the population, its merge
    method's mean where the spec gives one per method."""
    import dataclasses

    import xarray as xr

    spec = quick_fit.spec
    gap = dataclasses.replace(spec.params["gap"], population="method")
    by_method = dataclasses.replace(quick_fit, spec=dataclasses.replace(
        spec, params={**spec.params, "gap": gap}))  # fmt: skip
    posterior = quick_fit.idata.posterior
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])
    by_method.idata = quick_fit.idata.copy()
    by_method.idata.posterior["gap_mean"] = xr.DataArray(
        np.full((*shape, 1), 0.7), dims=("chain", "draw", "merge_method")
    )
    by_method.idata.posterior["gap_scale"] = xr.DataArray(
        np.full(shape, 1e-9), dims=("chain", "draw")
    )
    rows = table[table["n_params"] == table["n_params"].min()].assign(n_params=7e9)
    obs = by_method.observations_for(rows, new_curves=True)
    n_curves = len(quick_fit.meta.curves["family"])
    assert obs.curve.min() == n_curves  # every row is of a curve the fit has not seen
    keep = np.arange(10)
    values = {"gap": posterior["gap"].stack(s=("chain", "draw")).transpose("s", ...).values[keep]}
    out = by_method._with_unseen_curves(values, keep, obs, n_curves)
    assert out["gap"].shape == (10, n_curves + 3)
    np.testing.assert_allclose(out["gap"][:, n_curves:], 0.7, atol=1e-6)


def test_an_unseen_curve_draws_its_bend_and_drop_at_its_methods_scales(quick_fit, table):
    """A held-out size's curve has no fitted bend or drop deviation: each is drawn at its merge
    method's scale, the drop's turned into amplitude by the curve's own b."""
    rows = table[table["n_params"] == table["n_params"].min()].assign(n_params=7e9)
    obs = quick_fit.observations_for(rows, new_curves=True)
    n_curves = len(quick_fit.meta.curves["family"])
    keep = np.arange(quick_fit.n_draws)
    values = {name: quick_fit.draws(name)[keep] for name in ("b_dev", "tail_dev")}
    out = quick_fit._with_unseen_curves(values, keep, obs, n_curves)
    bend = out["b_dev"][:, n_curves:]
    z_bend = bend / quick_fit.deviation_scale("b_dev")[:, None]
    curve, first = np.unique(obs.curve, return_index=True)
    family = obs.family[first[curve >= n_curves]]
    b = (1.0 + quick_fit.draws("b")[:, family]) * np.exp(bend) - 1.0
    per_drop = 1.0 / (1.0 + b) - 1.0 / (quick_fit.meta.k_anchor + b)
    z_tail = out["tail_dev"][:, n_curves:] * per_drop / quick_fit.tail_drop_scale()[:, [0]]
    for z in (z_bend, z_tail):
        assert z.shape == (quick_fit.n_draws, 3)
        assert abs(z.mean()) < 0.15 and 0.9 < z.std() < 1.1


def test_a_fitted_curve_keeps_its_own_bend_drop_and_floor(quick_fit):
    """At a fitted size the posterior's curve is the law bent with the curve's own b (keeping the
    law's level at k_anchor and drop from k = 1), plus its floor and tail deviations; at a size
    the fit has not seen, fresh drop and bend deviations widen every curve."""
    from mergelaw import law
    from mergelaw.bayes.posterior import Posterior

    result = quick_fit
    post = Posterior.from_fit(result)
    draws = {name: result.draws(name) for name in law.LAW_PARAM_NAMES}
    curves = result.meta.curve_table
    at_3 = curves[curves["n_params"] == 3e9].sort_values("family").index.to_numpy()
    dev, tail = result.draws("floor_dev")[:, at_3], result.draws("tail_dev")[:, at_3]
    curve_b = (1.0 + draws["b"]) * np.exp(result.draws("b_dev")[:, at_3]) - 1.0
    at_3b = post.curves(3.0)
    np.testing.assert_allclose(at_3b.b, curve_b)
    top, bottom = 1.0, post.k_anchor
    law_at = {k: law.mean_loss(3.0, k, *draws.values()) for k in (top, bottom)}
    np.testing.assert_allclose(
        at_3b.mean(bottom), law_at[bottom] + dev + tail / (bottom + curve_b), rtol=1e-10
    )
    np.testing.assert_allclose(
        at_3b.mean(top) - at_3b.mean(bottom),
        law_at[top] - law_at[bottom] + tail * (1 / (top + curve_b) - 1 / (bottom + curve_b)),
        rtol=1e-8,
        atol=1e-12,
    )
    assert post.tail_dev_scale.shape == (result.n_draws, len(post.labels))
    np.testing.assert_array_equal(post.b_dev_scale, result.spec.offset_deviation_prior_sd)
    on_the_law = dataclasses.replace(post, tail_dev_scale=None, b_dev_scale=None)
    deviated, lawful = (
        p.curves(7.0).mean(1.0) - p.curves(7.0).mean(4.0) for p in (post, on_the_law)
    )
    assert np.all(deviated.std(0) > lawful.std(0))
