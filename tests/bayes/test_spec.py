"""Model specs: every shipped spec loads; bad specs give one-line errors; the digest is semantic."""

from pathlib import Path

import pytest

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
    assert default.params["level"].centred and not default.params["b"].centred
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
        (("pool_scale = 0.2", "pool_scale = -0.2"), "must be > 0"),
        (("pool = true", "pool = 1"), "pool = 1 has the wrong type"),
        (("[mean]", "[mean"), "not valid TOML"),
    ],
)
def test_bad_specs_give_one_line_errors(tmp_path, edit, message):
    text = Path(load_spec("default").source).read_text()
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(MergelawError) as caught:
        load_spec(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_unknown_spec_name_lists_available():
    with pytest.raises(MergelawError, match=r"no such model spec .*default"):
        load_spec("nonexistent")
