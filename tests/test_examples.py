"""The examples run as documented: each README's command block, in a fresh folder.

The quickstart's commands are read from ``examples/quickstart/README.md`` (its first ``bash``
block), so the test and the README cannot drift apart. ``python make_pool.py`` runs as a script;
the ``mergelaw`` commands run in this process (no interpreter start-up and imports per command);
the fit gets a short sampler (2 chains x 300/300) to keep the suite's time: the documented
default's flag is in the README.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mergelaw.cli import app

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
SHORT_FIT = ["--draws", "300", "--tune", "300", "--chains", "2", "--no-progress"]


def readme_commands(readme: Path, block: int = 0) -> list[list[str]]:
    """The commands of the README's bash block number ``block``: comments, ``pip`` and ``cd``
    left out."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    assert len(blocks) > block, f"{readme}: no bash block {block}"
    commands = []
    for line in blocks[block].splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] not in ("pip", "cd"):
            commands.append(words)
    return commands


def test_quickstart_runs_as_documented(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("yaml")
    for name in ("make_pool.py", "sweep.yaml"):
        shutil.copy(QUICKSTART / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands(QUICKSTART / "README.md")
    assert [c[:2] for c in commands] == [
        ["python", "make_pool.py"],
        ["mergelaw", "measure"],
        ["mergelaw", "validate"],
        ["mergelaw", "fit"],
        ["mergelaw", "plan"],
        ["mergelaw", "plan"],
        ["mergelaw", "report"],
    ]
    runner = CliRunner()
    outputs, seconds = [], []
    for words in commands:
        start = time.perf_counter()
        if words[0] == "python":
            done = subprocess.run(
                [sys.executable, *words[1:]], capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        else:
            args = words[1:] + (SHORT_FIT if words[1] == "fit" else [])
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (words, result.output)
            outputs.append(result.output)
        seconds.append(time.perf_counter() - start)
    print("seconds per command:", [round(s) for s in seconds])
    pool, measure, validate, fit, stop, target, report = outputs

    experts = ("code", "math", "legal", "recipes", "weather", "sports")
    assert all(f"pool/{e}: " in pool for e in experts)
    for e in experts[:3]:
        assert (tmp_path / "pool" / e / "model.safetensors").is_file()
    for e in experts[3:]:
        assert (tmp_path / "pool" / e / "adapter_config.json").is_file()
    assert "378 rows, 63 subsets, 1 methods, 6 eval domains" in measure
    assert validate.startswith("ok: runs/quickstart/curves.parquet: 378 rows, 6 curves")
    assert "note: 1 base size(s): no size law" in fit and "flag: " in fit
    assert (tmp_path / "fit.nc").is_file()

    for output, name, answer in (
        (stop, "merge-stop.yaml", "llama/average/code @ 0.000139584B: stop at k = "),
        (target, "merge-target.yaml", "llama/average/code @ 0.000139584B: "),
    ):
        assert answer in output
        wrote = re.search(rf"wrote {name}: mergekit config of (\d) experts \((.*)\)", output)
        assert wrote, output
        import yaml

        config = yaml.safe_load((tmp_path / name).read_text())
        chosen = wrote.group(2).split(", ")
        assert chosen[0] == "code" and len(chosen) == int(wrote.group(1))
        assert config["merge_method"] == "linear"
        assert [Path(m["model"].split("+")[-1]).name for m in config["models"]] == chosen
    assert "experts reach loss 0.95" in target
    assert (tmp_path / "report.html").stat().st_size > 10_000 and "report" in report

    # and mergekit makes the planned model from the emitted config, offline, as documented
    if importlib.util.find_spec("mergekit") is None:
        return
    (mergekit,) = readme_commands(QUICKSTART / "README.md", block=1)
    assert mergekit[:2] == ["mergekit-yaml", "merge-stop.yaml"]
    executable = Path(sys.executable).parent / "mergekit-yaml"
    done = subprocess.run(
        [str(executable), *mergekit[1:]], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to copy tokenizer" not in done.stderr
    out = tmp_path / mergekit[2]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
