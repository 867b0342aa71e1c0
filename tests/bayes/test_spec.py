"""Model specs: every shipped spec loads; bad specs give one-line errors; the digest is semantic."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelaw.bayes.spec import available_specs, load_spec
from mergelaw.errors import MergelawError


def test_shipped_specs_load_with_the_params_their_mean_needs():
    assert {"default", "naive", "free_exponent", "no_offset", "unpooled", "homoscedastic"} <= set(
        available_specs()
    )
    for name in available_specs():
        spec = load_spec(name)
        assert sorted(spec.params) == sorted(spec.required_params()), name
    default = load_spec("default")
    assert default.parameterisation == "anchored" and default.tail_exponent == "fixed"
    assert default.params["level"].centred and not default.is_pooled("decay")
    assert default.params["gap"].centred == "auto"
    assert default.membership == "power" and default.nugget == "method"
    assert not default.is_pooled("b") and not default.is_pooled("drop")
    assert default.tail_deviation_prior_sd > 0 and default.offset_deviation_prior_sd > 0
    assert default.floor_deviation_scale == "auto" and default.tail_deviation_scale == "fixed"
    by_method = load_spec("method_offset")
    assert by_method.params["b"].population == "method" and by_method.tail_deviation_prior_sd == 0
    floors = load_spec("floor_deviations")  # the previous default
    assert floors.tail_deviation_prior_sd == floors.offset_deviation_prior_sd == 0
    assert floors.floor_deviation_scale == "learnt" and floors.is_pooled("drop")
    assert default.params["drop"].transform == "identity"  # signed tail
    one_size = default.required_params(size_law=False)
    assert one_size == ["level", "drop", "b", "gap", "decay", "sigma"]
    assert default.required_params(form="means") == [
        "level", "drop", "floor_drop", "beta", "gamma", "b"
    ]  # fmt: skip
    assert default.target_accept == 0.95 and load_spec("default_v1").target_accept is None
    assert "alpha" in load_spec("free_exponent").required_params()
    assert "b" not in load_spec("no_offset").required_params()


def test_digest_ignores_comments_but_not_content(tmp_path):
    text = Path(load_spec("default").source).read_text()
    plain = tmp_path / "plain.toml"
    plain.write_text("\n".join(line for line in text.splitlines() if not line.startswith("#")))
    assert load_spec(plain).digest == load_spec("default").digest
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace("prior_sd = 0.75", "prior_sd = 0.8"))
    assert load_spec(changed).digest != load_spec("default").digest


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('offset = "family"', 'offset = "sometimes"'), "offset = 'sometimes' (expected one of"),
        (("[params.gamma]", "[params.delta]"), "missing [params.gamma]"),
        (('tail_exponent = "fixed"', 'tail_exponent = "free"'), "missing [params.alpha]"),
        (('transform = "identity"', 'transform = "logit"'), "transform = 'logit'"),
        (
            ("pool_scale = 0.2", "pool_scale = -0.2"),
            "[params.gamma].pool_scale = -0.2 (expected a number > 0)",
        ),
        (
            ("floor_deviation_prior_sd = 0.05", "floor_deviation_prior_sd = -0.05"),
            "[mean].floor_deviation_prior_sd = -0.05 (expected a number >= 0)",
        ),
        (("[noise]", "[noise]\nnuget = 0.1"), "unknown key 'nuget' in [noise] (expected some of:"),
        (("[mean]", "[means]"), "unknown key 'means' in the top level"),
        (("pool = true", "pool = 1"), "pool = 1 has the wrong type"),
        (
            ('noise_curve_scale = "fixed"', 'noise_curve_scale = "shared"'),
            "noise_curve_scale = 'shared' (expected one of: learnt, fixed)",
        ),
        (
            ('floor_deviation_scale = "auto"', 'floor_deviation_scale = "free"'),
            "floor_deviation_scale = 'free' (expected one of: learnt, fixed, auto)",
        ),
        (
            ("[params.drop]", '[params.drop]\npopulation = "domain"'),
            "[params.drop].population = 'domain' (expected one of: all, method)",
        ),
        (
            ("[params.beta]", '[params.beta]\npopulation = "method"'),
            "[params.beta].population = 'method' needs pooled = true",
        ),
        (
            ("[params.level]\ncentred = true", '[params.level]\ncentred = "auto"'),
            "[params.level].centred = 'auto' is for the membership gap only",
        ),
        (
            ('centred = "auto"', 'centred = "maybe"'),
            "[params.gap].centred = 'maybe'",
        ),
        (("[mean]", "[mean"), "not valid TOML"),
    ],
)
def test_bad_specs_give_one_line_errors(tmp_path, edit, message):
    _refused_one_line(tmp_path, "default", edit, message)


def _refused_one_line(tmp_path, spec_name: str, edit: tuple[str, str], message: str) -> None:
    text = Path(load_spec(spec_name).source).read_text()
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(MergelawError) as caught:
        load_spec(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("floor_deviation_prior_sd = 0.05", "floor_deviation_prior_sd = 0.0"),
            "tail_deviation_prior_sd > 0 needs floor deviations",
        ),
        (
            ('offset = "family"', 'offset = "curve"'),
            "offset_deviation_prior_sd > 0 needs an offset b per family",
        ),
        (
            ('tail_deviation_scale = "fixed"', 'tail_deviation_scale = "free"'),
            "tail_deviation_scale = 'free' (expected one of: learnt, fixed)",
        ),
    ],
)
def test_bad_curve_deviations_give_one_line_errors(tmp_path, edit, message):
    _refused_one_line(tmp_path, "default", edit, message)


def test_unknown_spec_name_lists_available():
    with pytest.raises(MergelawError, match=r"no such model spec .*default"):
        load_spec("nonexistent")


def test_transforms_and_population_density_match_scipy():
    """A group parameter's population: value = transform(raw), raw ~ Normal(mean, scale); the
    log density of a value carries the transform's Jacobian."""
    import numpy as np
    from scipy import stats

    from mergelaw.bayes.spec import ParamPrior

    values = np.array([-0.5, 0.0, 0.7, 3.0])
    log1p = ParamPrior("log1p", 0.0, 1.0, 0.5)
    # b = e^raw - 1 far below the cap (a relative 1e-4 at b = 3: e^(log 4 - 10))
    expected = stats.lognorm(s=0.4, scale=np.exp(0.2)).logpdf(values + 1.0)
    np.testing.assert_allclose(log1p.log_density(values, 0.2, 0.4), expected, rtol=1e-3)
    assert log1p.log_density(np.array([-1.5]), 0.2, 0.4)[0] == -np.inf
    assert log1p.to_value(np.log(2.5)) == pytest.approx(1.5, rel=1e-3)
    identity = ParamPrior("identity", 0.0, 1.0, 0.5)
    np.testing.assert_allclose(
        identity.log_density(values, 0.1, 0.3), stats.norm(0.1, 0.3).logpdf(values), rtol=1e-12
    )
    draws = log1p.sample(np.zeros(20000), np.full(20000, 0.5), np.random.default_rng(0))
    assert draws.min() > -1.0 and np.median(draws) == pytest.approx(0.0, abs=0.02)


def test_sampler_section_is_checked(tmp_path):
    text = Path(load_spec("default").source).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("target_accept = 0.95 ", "target_accept = 1.5 "))
    with pytest.raises(MergelawError, match=r"\[sampler\].target_accept = 1.5"):
        load_spec(bad)


@settings(max_examples=50, deadline=None)
@given(raw=st.floats(-20.0, 60.0))
def test_the_offset_is_held_below_its_cap(raw):
    """b = transform(raw) is increasing, below e^cap - 1 (where the law's floor and amplitude
    would cancel in float64), the identity's e^raw - 1 well below the cap, and to_raw inverts it
    wherever b is not yet at the cap in float64."""
    from mergelaw.bayes.spec import LOG1P_B_CAP, ParamPrior

    log1p = ParamPrior("log1p", 0.0, 1.0, 0.5)
    b = float(log1p.to_value(raw))
    assert -1.0 <= b <= np.expm1(LOG1P_B_CAP)
    assert float(log1p.to_value(raw + 0.5)) >= b
    if raw < LOG1P_B_CAP - 6:
        assert np.log1p(b) == pytest.approx(raw, abs=3e-3)
    if raw < LOG1P_B_CAP + 20:
        assert float(log1p.to_raw(b)) == pytest.approx(raw, abs=1e-6)


def test_the_capped_offsets_density_integrates_to_one():
    from scipy.integrate import quad

    from mergelaw.bayes.spec import LOG1P_B_CAP, ParamPrior

    log1p = ParamPrior("log1p", 0.0, 1.0, 0.5)
    pieces = [(-1.0, 0.0), (0.0, 100.0), (100.0, 1e4), (1e4, np.expm1(LOG1P_B_CAP))]
    for mean, scale in [(2.0, 1.5), (8.0, 2.0)]:  # the second puts mass against the cap

        def density(b, mean=mean, scale=scale):
            return float(np.exp(log1p.log_density(b, mean, scale)))

        total = sum(quad(density, lo, hi, limit=200)[0] for lo, hi in pieces)
        assert total == pytest.approx(1.0, abs=1e-6)
