"""Method comparison: contrasts equal the law's differences on point masses, cover the true
differences on a real fit, and LOO prefers method effects where the methods differ."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mergelaw import law
from mergelaw.bayes.data import prepare
from mergelaw.bayes.fit import fit
from mergelaw.bayes.posterior import Posterior
from mergelaw.cli import app
from mergelaw.compare import contrasts, method_effects_loo, method_pairs, pool_methods
from mergelaw.curves import validate_curves
from mergelaw.errors import MergelawError
from mergelaw.paper import paper_law_params

FAMILIES = ["qwen2/average/biology", "qwen2/average/code", "qwen2/ties/biology", "qwen2/ties/code"]
#: Per family: ties has a lower floor (L_star) and the same tail, except a larger A0 on code.
TRUTH = {
    "L_star": [0.64, 0.28, 0.60, 0.25],
    "B": [0.62, 0.21, 0.62, 0.21],
    "beta": [0.37, 0.41, 0.37, 0.41],
    "A0": [0.159, 0.082, 0.159, 0.1],
    "gamma": [0.05, 0.137, 0.05, 0.137],
    "b": [0.2, 0.43, 0.2, 0.43],
}
SIZES = (0.5, 3.0, 14.0)


@pytest.fixture
def post():
    return Posterior.point_mass(FAMILIES, TRUTH, sizes_b=SIZES)


def _law(j):
    return [TRUTH[name][j] for name in law.LAW_PARAM_NAMES]


def test_contrasts_are_the_laws_differences(post):
    answer = contrasts(post, "average", "ties", k=[1, 9], target=0.9, rope=0.001)
    table = answer.table
    domain_rows = table[table["scope"] == "domain"]
    for row in domain_rows.itertuples():
        a, b = (0, 2) if row.domain == "biology" else (1, 3)
        pa, pb = _law(a), _law(b)
        if row.quantity == "floor":
            expected = law.floor_loss(row.n_b, *pa[:3]) - law.floor_loss(row.n_b, *pb[:3])
        elif row.quantity == "tail amplitude":
            expected = law.tail_amplitude(row.n_b, *pa[3:5]) - law.tail_amplitude(row.n_b, *pb[3:5])
        elif row.quantity.startswith("loss at k="):
            k = float(row.quantity.removeprefix("loss at k="))
            expected = law.mean_loss(row.n_b, k, *pa) - law.mean_loss(row.n_b, k, *pb)
        else:
            need = [
                law.experts_for_target(
                    0.9,
                    law.floor_loss(row.n_b, *p[:3]),
                    law.tail_amplitude(row.n_b, *p[3:5]),
                    p[5],
                )
                for p in (pa, pb)
            ]
            expected = 0.0 if np.isinf(need).all() else need[0] - need[1]
        assert row.estimate == pytest.approx(expected, abs=1e-12), row
        assert row.p_a_lower == float(expected < 0)
        rope = 0.0 if row.quantity.startswith("experts") else 0.001
        assert row.p_equivalent == float(abs(expected) <= rope)
    # Pooled rows: the mean of the domain rows, per size and over all sizes.
    for _, group in table.groupby("quantity"):
        per_size = group[group["scope"] == "domain"].groupby("n_b")["estimate"].mean()
        pooled = group[group["scope"] == "pooled over domains"].set_index("n_b")["estimate"]
        np.testing.assert_allclose(pooled.loc[per_size.index], per_size)
        overall = group[group["scope"] == "pooled over domains and sizes"]["estimate"]
        np.testing.assert_allclose(overall, per_size.mean())
    assert answer.decision["verdicts"]["floor"] == "B better"  # ties' floor is lower everywhere
    # average's amplitude is lower on code: a flatter curve, which is not a verdict on the loss
    assert answer.decision["verdicts"]["tail amplitude"] == "A lower"
    assert "floor (pooled): B better  (A = average, B = ties, ROPE 0.001)" in answer.summary


def test_rope_makes_small_differences_equivalent(post):
    answer = contrasts(post, "average", "ties", k=[9], rope=0.05)
    assert answer.decision["verdicts"]["floor"] == "practically equivalent"
    pooled = answer.table[answer.table["scope"] == "pooled over domains and sizes"]
    assert (pooled["p_equivalent"] == 1.0).all()


def test_method_pairs_and_their_errors(post):
    pairs = method_pairs(post, "average", "ties")
    assert list(pairs["domain"]) == ["biology", "code"]
    assert list(pairs["label_b"]) == ["qwen2/ties/biology", "qwen2/ties/code"]
    with pytest.raises(MergelawError, match="method 'dare' is not in this fit"):
        method_pairs(post, "average", "dare")
    with pytest.raises(MergelawError, match="two different methods"):
        method_pairs(post, "ties", "ties")


def test_method_pairs_across_archs_and_settings():
    """Pairs follow method A's families; several archs prefix the domain; a method with two
    settings for one domain is refused, as are methods sharing no domain."""
    labels = ["llama/ties/code", "qwen2/average/code", "qwen2/ties/code", "llama/average/code",
              "qwen2/average/math"]  # fmt: skip
    post = Posterior.point_mass(labels, {n: v[0] for n, v in TRUTH.items()})
    pairs = method_pairs(post, "average", "ties")
    assert list(pairs["domain"]) == ["qwen2/code", "llama/code"]
    assert list(pairs["label_b"]) == ["qwen2/ties/code", "llama/ties/code"]
    families = post.families.copy()
    families.loc[0, ["arch", "method_params"]] = ["qwen2", '{"density": 0.5}']
    twice = Posterior.point_mass(families, {n: v[0] for n, v in TRUTH.items()})
    with pytest.raises(MergelawError, match="several parameter settings for qwen2/code"):
        method_pairs(twice, "average", "ties")
    apart = Posterior.point_mass(
        ["qwen2/average/code", "qwen2/ties/math"], {n: v[0] for n, v in TRUTH.items()}
    )
    with pytest.raises(MergelawError, match="share no"):
        method_pairs(apart, "average", "ties")


def test_pool_methods_keeps_rows_in_order_with_one_family_per_domain(plan_table):
    pooled = pool_methods(plan_table)
    validate_curves(pooled)  # still one row per key
    np.testing.assert_array_equal(pooled["loss"], plan_table["loss"])
    assert set(pooled["pooled_from"]) == {"average", "ties"}
    assert len(prepare(pooled).families) == 2 and len(prepare(plan_table).families) == 4


def test_loo_refuses_fits_of_other_rows():
    def fake(values):
        return SimpleNamespace(idata=SimpleNamespace(observed_data={"loss": pd.Series(values)}))

    with pytest.raises(MergelawError, match="same rows in the same order"):
        method_effects_loo(fake([1.0, 2.0]), fake([2.0, 1.0]))


def test_contrasts_cover_the_true_differences(plan_fit):
    post = Posterior.from_fit(plan_fit)
    truth = paper_law_params().set_index(["method", "domain"])
    answer = contrasts(post, "average", "ties", k=[1, 9])
    rows = answer.table[answer.table["scope"] == "domain"]
    covered = []
    for row in rows.itertuples():
        pa, pb = (
            truth.loc[(m, row.domain), list(law.LAW_PARAM_NAMES)].astype(float)
            for m in ("average", "ties")
        )
        if row.quantity == "floor":
            expected = law.floor_loss(row.n_b, *pa[:3]) - law.floor_loss(row.n_b, *pb[:3])
        elif row.quantity == "tail amplitude":
            continue  # A and b trade off; their sum is what the loss rows check
        else:
            k = float(row.quantity.removeprefix("loss at k="))
            expected = law.mean_loss(row.n_b, k, *pa) - law.mean_loss(row.n_b, k, *pb)
        covered.append(row.lower <= expected <= row.upper)
    assert np.mean(covered) >= 0.75, covered


@pytest.mark.slow  # a second fit: about 40 s on 2 busy cores
def test_loo_prefers_method_effects_when_methods_differ(plan_fit, plan_table, tmp_path):
    pooled_fit = fit(pool_methods(plan_table), seed=5, draws=200, tune=300, chains=2)
    answer = method_effects_loo(plan_fit, pooled_fit)
    assert answer.decision["preferred"] == "method effects"
    difference = answer.table[answer.table["quantity"] == "elpd difference"].iloc[0]
    assert difference.lower > 0
    # The same through the command line.
    plan_fit.save(tmp_path / "fit.nc")
    pooled_fit.save(tmp_path / "pooled.nc")
    args = ["compare", str(tmp_path / "fit.nc"), "--methods", "average,ties", "--pooled-only"]
    result = CliRunner().invoke(app, [*args, "--null", str(tmp_path / "pooled.nc")])
    assert result.exit_code == 0, result.output
    assert "PSIS-LOO prefers: method effects" in result.output
