"""Diagnostics decide each threshold once: the flag's failures and the report's rows agree."""

import math

import pytest

from mergelaw.bayes import diagnostics as diag


def _diagnostics(**changes) -> diag.Diagnostics:
    values = dict(
        max_rhat=1.004, worst_rhat="level[0]", min_ess_bulk=900.0, min_ess_tail=850.0,
        worst_ess="b[2]", divergences=0, n_draws=4000, saturated_share=0.0,
        mean_tree_steps=31.0, min_bfmi=0.9, max_tree_depth=10,
    )  # fmt: skip
    return diag.Diagnostics(**(values | changes)).with_checks()


def test_a_clean_fit_passes_every_check():
    d = _diagnostics()
    assert d.ok and d.flag == "ok"
    assert [c.name for c in d.checks] == [
        "max R-hat", "min ESS bulk / tail", "divergent transitions", "draws at max tree depth",
        "min BFMI",
    ]  # fmt: skip
    assert all(c.passed for c in d.checks)


@pytest.mark.parametrize(
    ("changes", "failure"),
    [
        ({"max_rhat": 1.02}, "R-hat 1.020 > 1.01 (level[0])"),
        ({"max_rhat": math.nan, "worst_rhat": "one chain"},
         "1 chain: R-hat needs >= 2 chains to check convergence"),
        ({"min_ess_tail": 399.0}, "ESS bulk 900 / tail 399 < 400 (b[2])"),
        ({"divergences": 3}, "3 divergent transitions"),
        ({"saturated_share": 0.02}, "2% of draws hit the maximum tree depth 10"),
        ({"min_bfmi": 0.2}, "BFMI 0.20 < 0.3"),
    ],
)  # fmt: skip
def test_each_threshold_fails_alone_with_its_words(changes, failure):
    d = _diagnostics(**changes)
    assert d.failures == [failure] and d.flag == f"FAILED: {failure}"
    assert [c.name for c in d.checks if not c.passed] == [
        c.name for c in d.checks if c.failure == failure
    ]


def test_at_the_thresholds_a_fit_passes():
    d = _diagnostics(max_rhat=diag.MAX_RHAT, min_ess_bulk=diag.MIN_ESS,
                     saturated_share=diag.MAX_SATURATED_SHARE, min_bfmi=diag.MIN_BFMI)  # fmt: skip
    assert d.ok, d.failures


def test_predictive_misfits_join_the_checks_and_the_flag():
    d = _diagnostics().with_checks(misfit_curves=["a", "b", "c", "d"], misfit_threshold=2.5e-4)
    (check,) = [c for c in d.checks if not c.passed]
    assert check.name == "curves failing the predictive check" and check.value == "4"
    assert d.failures == ["4 curve(s) fail the predictive check (p < 2.5e-04): a, b, c ..."]
    clean = _diagnostics().with_checks(misfit_curves=[], misfit_threshold=2.5e-4)
    assert clean.ok and clean.checks[-1].passed


def test_loo_check_counts_high_pareto_k():
    loo = {"elpd_loo": 10.0, "se": 1.0, "p_loo": 3.0, "n_points": 50, "n_high_pareto_k": 2,
           "max_pareto_k": 0.9}  # fmt: skip
    check = diag.loo_check(loo)
    assert not check.passed and check.value.startswith("2 of 50 above 0.7 (max 0.90)")
    assert diag.loo_check(loo | {"n_high_pareto_k": 0}).passed


def test_a_saved_diagnostics_dict_reads_back():
    d = _diagnostics(divergences=2)
    again = diag.Diagnostics.from_dict(d.to_dict())
    assert again == d and again.failures == d.failures
