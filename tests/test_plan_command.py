"""`mergelaw plan` and `mergelaw compare` end to end on a saved fit: tables, JSON, errors."""

import json

import pytest
from typer.testing import CliRunner

from mergelaw.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def points_path(plan_table, tmp_path_factory):
    """A new setting's losses at k = 1, 2, 4 (physics is not in the fit)."""
    from mergelaw.simulate import simulate_curves

    table = simulate_curves(
        sizes_b=(0.5, 3.0, 14.0), domains=("physics",), methods=("average",), seed=9
    )
    rows = table[(table["n_params"] == 3e9) & table["k"].isin([1, 2, 4])]
    path = tmp_path_factory.mktemp("points") / "points.csv"
    rows[["k", "loss"]].to_csv(path, index=False)
    return path


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_target_prints_and_writes_json(plan_fit_path, tmp_path):
    out = tmp_path / "target.json"
    result = _run(
        "plan", plan_fit_path, "target", "--loss", 0.3, "--size", 3, "--family", "average/code",
        "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "experts for target" in result.output and "unreachable at this size" in result.output
    assert "flag: " in result.output and "provenance: data_hash" in result.output
    answer = json.loads(out.read_text())
    assert answer["query"] == "experts for target" and answer["flag"]
    decision = answer["decision"]["qwen2/average/code"]
    assert decision["status"] == "unreachable at this size" and decision["k"] == "inf"


def test_plan_stop_budget_forecast(plan_fit_path, points_path):
    result = _run("plan", plan_fit_path, "stop", "--size", 3, "--epsilon", 0.003)
    assert result.exit_code == 0, result.output
    assert "k80 (to k=9)" in result.output and "stop at k =" in result.output
    result = _run(
        "plan", plan_fit_path, "stop", "--size", 3, "--epsilon", 0.003, "--losses", points_path
    )
    assert result.exit_code == 0, result.output
    assert "CONTINUE" in result.output or "STOP" in result.output
    result = _run(
        "plan", plan_fit_path, "budget", "--budget", 30, "--base-costs", "0.5=1,3=5,14=20",
        "--expert-cost", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best within 30: N = " in result.output
    result = _run(
        "plan", plan_fit_path, "forecast", "--size", 72, "--family", "ties/code", "--k", "1,9"
    )
    assert result.exit_code == 0, result.output
    assert "expected loss" in result.output and "observed loss" in result.output
    result = _run("plan", plan_fit_path, "forecast", "--size", 3, "--points", points_path)
    assert result.exit_code == 0, result.output
    assert "few-point forecast" in result.output and "effective sample size" in result.output


def test_compare_prints_contrasts_and_verdicts(plan_fit_path, tmp_path):
    out = tmp_path / "compare.json"
    result = _run(
        "compare",
        plan_fit_path,
        "--methods",
        "average,ties",
        "--k",
        9,
        "--pooled-only",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "floor (pooled): " in result.output and "P(A<B)" in result.output
    table = json.loads(out.read_text())["table"]
    assert {row["quantity"] for row in table} == {"floor", "tail amplitude", "loss at k=9"}


def test_errors_are_one_line_with_exit_code_2(plan_fit_path, tmp_path):
    cases = [
        (["plan", tmp_path / "none.nc", "forecast", "--size", 3], "no such fit file"),
        (["plan", plan_fit_path, "forecast", "--size", 3, "--family", "physics"], "not a family"),
        (["plan", plan_fit_path, "target", "--loss", 0.5, "--size", -2], "--size -2: expected"),
        (
            [
                "plan",
                plan_fit_path,
                "budget",
                "--budget",
                1,
                "--base-costs",
                "3=x",
                "--expert-cost",
                1,
            ],
            "expected SIZE=COST",
        ),
        (["compare", plan_fit_path, "--methods", "average"], "expected two different methods"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_json_dash_writes_the_answer_alone_to_stdout(plan_fit_path, tmp_path, monkeypatch):
    """`--json -`: stdout is the JSON answer and nothing else (the table, flag and provenance
    go to stderr); list options take repeats as well as commas."""
    monkeypatch.chdir(tmp_path)
    result = _run(
        "plan", plan_fit_path, "forecast", "--size", 72, "--family", "ties/code", "--k", 1,
        "--k", 9, "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["query"] == "forecast" and answer["decision"]["k"] == [1.0, 9.0]
    assert "flag: " in result.stderr and "provenance: data_hash" in result.stderr
    result = _run(
        "compare", plan_fit_path, "--methods", "average", "--methods", "ties", "--k", 9,
        "--pooled-only", "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)["table"]
    assert {row["quantity"] for row in table} == {"floor", "tail amplitude", "loss at k=9"}
    assert "floor (pooled): " in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named '-'
