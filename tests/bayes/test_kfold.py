"""Grouped k-fold: folds leave out whole curves and keep every family in training; held-out log
densities equal a direct computation from the law and the noise model; the scores add up."""

import numpy as np
import pytest
from scipy import stats

from mergelaw.bayes.kfold import (
    assign_folds,
    compare_kfold,
    grouped_kfold,
    heldout_log_density,
)
from mergelaw.errors import MergelawError
from mergelaw.simulate import simulate_curves


def test_folds_leave_out_whole_curves_and_keep_every_family():
    table = simulate_curves(
        sizes_b=(0.5, 1.5, 3.0, 7.0, 14.0),
        domains=("code", "biology"),
        methods=("average", "ties"),
        subsets_per_k=1,
    )
    fold = assign_folds(table, folds=3, seed=2)
    table = table.assign(fold=fold)
    assert (table.groupby(["method", "eval_domain", "n_params"])["fold"].nunique() == 1).all()
    for j in range(3):
        training = table[table["fold"] != j]
        assert training.groupby(["method", "eval_domain"]).ngroups == 4
        assert training["n_params"].nunique() == 5  # staggered: no size leaves every family
        held = table[table["fold"] == j]
        # 5 sizes over 3 folds: each family leaves out 1 or 2 of its curves per fold
        assert held.groupby(["method", "eval_domain"])["n_params"].nunique().between(1, 2).all()
    np.testing.assert_array_equal(fold, assign_folds(table.drop(columns="fold"), 3, seed=2))
    with pytest.raises(MergelawError, match="folds <= the fewest sizes of any family"):
        assign_folds(table, folds=6)


def test_heldout_log_density_is_the_posterior_average_of_the_normal_density(fake_fit, plan_table):
    """Rows of a fitted curve, scored by hand: the law bent with the curve's own b, its floor
    and drop deviations and its membership offset; the finite-pool spread, the method's nugget
    and the curve's noise factor."""
    rows = plan_table[(plan_table["n_params"] == 3_000_000_000)].head(40)
    got = heldout_log_density(fake_fit, rows, draws=10_000)
    labels = list(fake_fit.families["label"])
    curves = list(zip(fake_fit.meta.curves["family"], fake_fit.meta.curves["n_params"]))
    methods = sorted(fake_fit.families["method"].unique())
    expected = []
    for _, row in rows.iterrows():
        f = labels.index(f"{row.arch}/{row.method}/{row.eval_domain}")
        c = curves.index((f, row.n_params))
        own = {n: fake_fit.draws(n)[:, c] for n in ("b_dev", "floor_dev", "tail_dev", "gap")}
        p = {n: fake_fit.draws(n)[:, f] for n in ("L_star", "B", "beta", "A0", "gamma", "b")}
        n_b, k, m = row.n_params / 1e9, row.k, row.pool_size
        floor = p["L_star"] + p["B"] * n_b ** -p["beta"]
        amplitude, b = p["A0"] * n_b ** -p["gamma"], p["b"]
        # the curve bends with its own b, keeping its loss at k_anchor and its drop from k = 1
        big_k, curve_b = fake_fit.meta.k_anchor, (1 + b) * np.exp(own["b_dev"]) - 1
        bent = (
            amplitude
            * (1 / (1 + b) - 1 / (big_k + b))
            / (1 / (1 + curve_b) - 1 / (big_k + curve_b))
        )
        floor = floor + amplitude / (big_k + b) - bent / (big_k + curve_b)
        mu = floor + own["floor_dev"] + (bent + own["tail_dev"]) / (k + curve_b)
        decay = fake_fit.draws("decay")[:, methods.index(row.method)]
        mu = mu + (row.in_domain - k / m) * own["gap"] * k**-decay
        sigma = fake_fit.draws("sigma")[:, f] * (n_b / fake_fit.meta.n_ref) ** -fake_fit.draws(
            "sigma_slope"
        )
        nugget = fake_fit.draws("nugget")[:, methods.index(row.method)]
        sd = np.sqrt(sigma**2 * (m - k) / (k * (m - 1)) + nugget**2)
        sd = sd * np.exp(fake_fit.draws("noise_dev")[:, c])  # the curve's noise factor
        expected.append(np.log(np.mean(stats.norm.pdf(row.loss, mu, sd))))
    np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.fixture
def refit_without_sampling(monkeypatch):
    """k-fold's refits made by fakes.fake_fit: these tests check the folds and the scores'
    bookkeeping, not a posterior (the held-out density is checked against the law above)."""
    from fakes import fit_without_sampling

    monkeypatch.setattr("mergelaw.bayes.kfold.fit", fit_without_sampling)


def test_grouped_kfold_scores_every_row_once(plan_table, refit_without_sampling):
    result = grouped_kfold(plan_table, folds=3, draws=80, tune=80, chains=2, seed=1)
    assert result.pointwise.shape == (len(plan_table),) and np.isfinite(result.pointwise).all()
    assert result.elpd == pytest.approx(result.pointwise.sum())
    assert set(result.fold_of_row) == {0, 1, 2} and len(result.flags) == 3
    ranked = compare_kfold([result])
    assert ranked["elpd_diff"][0] == 0.0 and ranked["dse"][0] == 0.0
    with pytest.raises(MergelawError, match="parameters per curve"):
        grouped_kfold(plan_table, "naive", folds=3)


def test_cli_kfold_prints_the_ranking(plan_table, tmp_path, refit_without_sampling):
    from typer.testing import CliRunner

    from mergelaw.cli import app
    from mergelaw.curves import write_curves

    path = tmp_path / "curves.parquet"
    write_curves(plan_table, path)
    args = ["kfold", str(path), "--folds", "2", "--draws", "40", "--tune", "40", "--chains", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "elpd_kfold" in result.stdout and "default" in result.stdout
    bad = CliRunner().invoke(app, [*args[:2], "--folds", "4"])
    assert bad.exit_code == 2 and "folds <= the fewest sizes" in bad.stderr
