"""The `mergelaw` command: each subcommand end to end, errors as one line with exit code 2."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from mergelaw.cli import app
from mergelaw.curves import read_curves

runner = CliRunner()


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "curves.parquet"
    result = _simulate_small(path)
    assert result.exit_code == 0, result.output
    return path


def _simulate_small(path):
    args = ["--domains", "code,biology", "--methods", "average", "--seed", "3"]
    return runner.invoke(app, ["simulate", "--out", str(path), *args])


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "simulate", "fit-ls"):
        assert command in result.stdout


def test_simulate_writes_a_valid_seeded_table(table_path, tmp_path):
    table = read_curves(table_path)
    assert set(table["eval_domain"]) == {"code", "biology"} and (table["seed"] == 3).all()
    again = tmp_path / "again.parquet"
    _simulate_small(again)
    pd.testing.assert_frame_equal(read_curves(again), table)


def test_validate_ok(table_path):
    result = runner.invoke(app, ["validate", str(table_path)])
    assert result.exit_code == 0
    assert "ok:" in result.stdout and "2 eval domains" in result.stdout


def test_validate_bad_table_one_line_exit_2(table_path, tmp_path):
    bad = read_curves(table_path)
    bad.loc[4, "loss"] = float("nan")
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "bad.csv: column 'loss' row 4" in lines[0]


def test_missing_file_and_bad_option_values(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2 and "no such file" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["simulate", "--out", str(tmp_path / "x.parquet"), "--sizes", "a,b"]
    )
    assert result.exit_code == 2 and "--sizes 'a,b': cannot read it" in result.stderr
    result = runner.invoke(
        app, ["simulate", "--out", str(tmp_path / "x.parquet"), "--methods", "dare_ties"]
    )
    assert result.exit_code == 2 and "no law parameters for method 'dare_ties'" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_fit_ls_prints_and_writes(table_path, tmp_path):
    csv, js = tmp_path / "fit.csv", tmp_path / "fit.json"
    result = runner.invoke(
        app,
        [
            "fit-ls",
            str(table_path),
            "--n-boot",
            "10",
            "--interval",
            "percentile",
            "--out-csv",
            str(csv),
            "--out-json",
            str(js),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "least-squares fit (joint)" in result.stdout and "L_star" in result.stdout
    fits = pd.read_csv(csv)
    assert len(fits) == 2 * 6 and set(fits["eval_domain"]) == {"code", "biology"}
    assert json.loads(js.read_text())[0]["param"] == "L_star"


def test_fit_ls_bad_level(table_path):
    result = runner.invoke(app, ["fit-ls", str(table_path), "--level", "1.5"])
    assert result.exit_code == 2 and "--level 1.5: expected a number in (0, 1)" in result.stderr


def test_fit_row_filters_refuse_unknown_values(table_path, tmp_path):
    out = tmp_path / "fit.nc"
    result = runner.invoke(
        app, ["fit", str(table_path), "--out", str(out), "--method", "average", "--method", "tiez"]
    )
    assert result.exit_code != 0
    assert "column 'method' has no value 'tiez' (values: average)" in result.output
    assert not out.exists()


def test_fit_row_filters_keep_only_the_named_rows(table_path):
    from mergelaw.cli import _only

    table = read_curves(table_path)
    kept = _only(table, "eval_domain", ["code"], table_path)
    assert set(kept["eval_domain"]) == {"code"}
    assert len(kept) == int((table["eval_domain"] == "code").sum()) > 0
    assert _only(table, "method", None, table_path) is table
