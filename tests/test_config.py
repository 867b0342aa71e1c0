"""The config adapter: pydantic's errors as one-line messages naming source, key, value, want."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field

from mergelaw.config import TABLES, Config, Wording, dotted, validated
from mergelaw.errors import MergelawError


class Inner(Config):
    dtype: Literal["auto", "float32"] = "auto"
    size: Annotated[int, Field(ge=2)] = 8
    rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    domains: Annotated[dict[str, str], Field(min_length=1, description="a table of files")]


class Outer(Config):
    flag: bool = True
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])
    limit: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    eval: Inner
    tables: dict[str, Inner] = Field(default_factory=dict)


GOOD = {"eval": {"domains": {"code": "code.txt"}}}


def _message(raw: dict, wording: Wording = Wording()) -> str:
    with pytest.raises(MergelawError) as caught:
        validated(Outer, raw, "f.toml", wording)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("f.toml: ")
    return message.removeprefix("f.toml: ")


def test_a_good_table_validates_with_defaults_and_frozen_values():
    outer = validated(Outer, GOOD, "f.toml")
    assert outer.flag and outer.eval.size == 8 and outer.eval.domains == {"code": "code.txt"}
    with pytest.raises(ValueError):
        outer.flag = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"colour": 1},
         "unknown setting 'colour' (expected some of: eval, flag, limit, seeds, tables)"),
        ({"eval": {"domains": {"a": "a"}, "batch": 2}},
         "unknown setting 'eval.batch' (expected some of: domains, dtype, rate, size)"),
        ({"flag": 1}, "'flag' = 1 has the wrong type (expected true or false)"),
        ({"seeds": [1, "2"]}, "'seeds[1]' = '2' has the wrong type (expected a whole number)"),
        ({"seeds": 3}, "'seeds' = 3 has the wrong type (expected a list of whole numbers)"),
        ({"seeds": [-1]}, "'seeds[0]' = -1 (expected a whole number >= 0)"),
        ({"limit": 1.5}, "'limit' = 1.5 (expected a number in (0, 1))"),
        ({"eval": {"domains": {"a": "a"}, "dtype": "float16"}},
         "'eval.dtype' = 'float16' (expected one of: auto, float32)"),
        ({"eval": {"domains": {"a": "a"}, "size": 1}},
         "'eval.size' = 1 (expected a whole number >= 2)"),
        ({"eval": {"domains": {"a": "a"}, "rate": 1.0}},
         "'eval.rate' = 1.0 (expected a number in (0, 1))"),
        ({"eval": {}}, "missing 'eval.domains' (expected a table of files)"),
        ({"eval": {"domains": {}}}, "'eval.domains' = {} (expected a table of files)"),
        ({"eval": 3}, "'eval' = 3 has the wrong type (expected a table)"),
        ({"tables": {"x": {"domains": {"a": "a"}, "rate": 0}}},
         "'tables.x.rate' = 0 (expected a number in (0, 1))"),
    ],
)  # fmt: skip
def test_each_kind_of_problem_is_one_line(edit, message):
    assert _message({**GOOD, **edit}) == message


def test_an_unknown_key_is_named_before_other_problems():
    assert _message({**GOOD, "flag": 1, "zzz": 2}).startswith("unknown setting 'zzz'")


def test_tables_wording_names_keys_as_toml_does():
    assert _message({**GOOD, "colour": 1}, TABLES).startswith(
        "unknown key 'colour' in the top level (expected some of:"
    )
    bad_table = {**GOOD, "tables": {"x": {"domains": {"a": "a"}, "nope": 1}}}
    assert _message(bad_table, TABLES).startswith("unknown key 'nope' in [tables.x]")
    bad_choice = {"eval": {"domains": {"a": "a"}, "dtype": "f16"}}
    assert _message(bad_choice, TABLES) == "[eval].dtype = 'f16' (expected one of: auto, float32)"
    assert _message({**GOOD, "flag": 1}, TABLES) == (
        "flag = 1 has the wrong type (expected true or false)"
    )
    assert _message({}, TABLES) == "missing 'eval' in the top level"


def test_a_prefix_places_the_table_inside_another_file():
    message = _message({**GOOD, "colour": 1}, Wording(prefix="mergelaw."))
    assert message.startswith("unknown setting 'mergelaw.colour'")


def test_dotted_paths():
    assert dotted(("eval", "domains")) == "eval.domains"
    assert dotted(("bases", 0, "name")) == "bases[0].name"
    assert dotted(()) == ""
