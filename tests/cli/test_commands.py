"""The `mergelaw` command: each subcommand end to end, errors as one line with exit code 2."""

import json
from types import SimpleNamespace

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


# ---- conventions shared by every command (issue 15) -------------------------------------------


def test_piped_output_is_neither_wrapped_nor_cut(tmp_path):
    """A pipe gets whole lines: validate's ok line is one line, and table cells keep their
    text (rich alone wraps at 80 columns off a terminal and cuts cells to 'phys…')."""
    path = tmp_path / "a_folder_name_long_enough_to_push_the_line_past_eighty" / "curves.parquet"
    args = ["--domains", "physics,biology", "--methods", "average", "--sizes", "0.5,3"]
    assert runner.invoke(app, ["simulate", "--out", str(path), *args]).exit_code == 0
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 and len(result.stdout) > 100
    assert result.stdout.rstrip().endswith("k 1..9")
    fit = ["fit-ls", str(path), "--scope", "curve", "--n-boot", "10", "--interval", "percentile"]
    result = runner.invoke(app, fit)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert "physics" in result.stdout and "Qwen2.5-0.5B" in result.stdout
    assert "amplitude" in result.stdout and "average" in result.stdout


def test_list_options_take_commas_repeats_or_both(tmp_path):
    from mergelaw.errors import MergelawError, parse_values

    assert parse_values(["1,2", "4"], float, "--k") == [1.0, 2.0, 4.0]
    assert parse_values("a, b", str, "--x") == ["a", "b"]
    assert parse_values(None, float, "--k") is None
    with pytest.raises(MergelawError, match=r"^--k 'x': cannot read it \(expected numbers"):
        parse_values(["1", "x"], float, "--k")
    commas, repeated = tmp_path / "commas.csv", tmp_path / "repeated.csv"
    common = ["--methods", "average", "--sizes", "0.5", "--seed", "1"]
    result = runner.invoke(
        app, ["simulate", "--out", str(commas), "--domains", "code,biology,physics", *common]
    )
    assert result.exit_code == 0, result.output
    mixed = ["--domains", "code", "--domains", "biology,physics"]
    result = runner.invoke(app, ["simulate", "--out", str(repeated), *mixed, *common])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_curves(commas), read_curves(repeated))
    assert set(read_curves(commas)["eval_domain"]) == {"code", "biology", "physics"}
    result = runner.invoke(app, ["simulate", "--help"])
    assert "comma-separated or repeated" in result.stdout


def test_fit_filters_take_commas_too(table_path, tmp_path):
    out = tmp_path / "fit.nc"
    result = runner.invoke(app, ["fit", str(table_path), "--out", str(out), "--domain", "code,law"])
    assert result.exit_code == 2
    assert "column 'eval_domain' has no value 'law' (values: biology, code)" in result.stderr


def test_json_dash_goes_to_stdout_and_the_table_to_stderr(table_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit-ls", str(table_path), "--n-boot", "10", "--interval", "percentile"]
    result = runner.invoke(app, [*args, "--out-json", "-"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)  # stdout holds the JSON alone
    assert records[0]["param"] == "L_star" and len(records) == 2 * 6
    assert "least-squares fit (joint)" in result.stderr
    result = runner.invoke(app, [*args, "--out-csv", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("arch,") and "L_star" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no file named '-'


class _FakeFit:
    """What the fit command prints and saves, without sampling."""

    def __init__(self, failures: list[str]):
        from mergelaw.bayes.diagnostics import Diagnostics

        self.meta = SimpleNamespace(notes=())
        self.diagnostics = Diagnostics(
            max_rhat=1.2 if failures else 1.001, worst_rhat="b", min_ess_bulk=40.0,
            min_ess_tail=40.0, worst_ess="b", divergences=0, n_draws=80, saturated_share=0.0,
            mean_tree_steps=7.0, min_bfmi=0.9, failures=failures,
        )  # fmt: skip

    def save(self, path) -> None:
        path.write_text("a fit")

    def law_summary(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"family": ["qwen2/average/code"], "param": ["L_star"], "mean": [1.0],
             "lower": [0.9], "upper": [1.1]}
        )  # fmt: skip


@pytest.mark.parametrize(
    ("failures", "strict", "code"),
    [(["max R-hat 1.2 > 1.01"], True, 1), (["max R-hat 1.2 > 1.01"], False, 0), ([], True, 0)],
)
def test_fit_strict_exits_1_on_a_flagged_fit(table_path, tmp_path, monkeypatch, failures,
                                             strict, code):  # fmt: skip
    import mergelaw.bayes.fit

    monkeypatch.setattr(mergelaw.bayes.fit, "fit", lambda *a, **kw: _FakeFit(failures))
    out = tmp_path / "fit.nc"
    args = ["fit", str(table_path), "--out", str(out), *(["--strict"] if strict else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert out.read_text() == "a fit"  # saved all the same
    assert ("flag: FAILED: max R-hat" if failures else "flag: ok") in result.stdout
    assert ("exit code 1" in result.stderr) == (code == 1)


SWEEP = """\
base = "ckpt/base"
tokenizer = "bytes"
k = [1, 2]
experts = {a = "ckpt/a", b = "ckpt/b"}

[eval]
domains = {code = "text/code.txt"}

[[methods]]
name = "average"
"""


def test_measure_without_torch_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "sweep.toml").write_text(SWEEP)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, find_spec says None
    result = runner.invoke(app, ["measure", str(tmp_path / "sweep.toml"), "--out", "m"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "error: mergelaw measure needs torch, which is not installed: "
        "pip install 'mergelaw[measure]'\n"
    )
    result = runner.invoke(app, ["measure", str(tmp_path / "sweep.toml"), "--out", "m",
                                 "--device", "cuda"])  # fmt: skip
    assert result.exit_code == 2 and "pip install 'mergelaw[measure]'" in result.stderr


def test_an_import_error_of_an_extra_names_the_extra(monkeypatch):
    """Any command whose code hits a missing optional module says which extra installs it."""
    import typer

    from mergelaw import cli
    from mergelaw.cli.shared import OneLineUsage, command

    def needs_ray() -> None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    app_ = typer.Typer(cls=OneLineUsage)
    app_.callback()(cli.main)
    command(app_, {}, "needs-ray")(needs_ray)
    result = runner.invoke(app_, ["needs-ray"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: mergelaw needs-ray needs ray, which is not installed: pip install 'mergelaw[ray]'\n"
    )


def test_a_second_measure_on_a_locked_folder_refuses(tmp_path, monkeypatch):
    """While one run holds OUT's lock, a second refuses in one line before touching OUT."""
    import subprocess
    import sys

    import mergelaw.cli.measure

    (tmp_path / "sweep.toml").write_text(SWEEP)
    out = tmp_path / "out"
    monkeypatch.setattr(mergelaw.cli.measure, "require_measure_extra", lambda *a: None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mergelaw.io import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'mergelaw measure'):\n"
         "    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        (out / "parts").mkdir()
        (out / "parts" / ".unit.123.abc.tmp").write_text("the first run's temporary file")
        result = runner.invoke(app, ["measure", str(tmp_path / "sweep.toml"), "--out", str(out)])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == (
            f"error: {out}: another mergelaw measure (pid {holder.pid}) is writing to this "
            f"folder; wait for it to end, or remove {out / '.mergelaw.lock'} if it is no "
            "longer running\n"
        )
        assert (out / "parts" / ".unit.123.abc.tmp").exists()  # left alone
    finally:
        holder.kill()
        holder.wait()
