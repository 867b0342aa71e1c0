"""Sweeps on a real local Ray cluster (2 CPUs): same table as the local executor, worker kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from mergelaw.curves import KEY_COLUMNS, read_curves  # noqa: E402
from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.ray_executor import RayExecutor  # noqa: E402
from mergelaw.measure.sweep import read_sweep, run_sweep  # noqa: E402

DOMAINS = {
    "d0": "def add(a, b):\n    return a + b\n",
    "d1": "The court held that the contract was void for want of consideration. ",
    "d2": "Integrate x^2 dx from 0 to 1 to get 1/3; then 2 * 3 = 6. ",
}
SWEEP = """
base = "base"
name = "tiny"
tokenizer = "bytes"
seeds = [0]
sampler = "exhaustive"
subsets_per_unit = 1

[experts]
d0 = "d0"
d1 = "d1"
d2 = "d2"

[eval]
max_length = 48
batch_tokens = 1024

[eval.domains]
d0 = "text/d0.txt"
d1 = "text/d1.txt"
d2 = "text/d2.txt"

[[methods]]
name = "task_arithmetic"
c = 0.8

[[methods]]
name = "ties"
density = 0.3

[[methods]]
name = "dare"
p = 0.5
"""
N_UNITS = 3 * 7  # methods x subsets (k = 1..3 of 3), one subset per unit


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for this module; workers get one torch thread each."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny) -> Path:
    root = tmp_path_factory.mktemp("raysweep")
    base, experts = tiny.models(3, seed=4, scale=0.05)
    tiny.save(root, base, experts)
    (root / "text").mkdir()
    for d, text in DOMAINS.items():
        (root / "text" / f"{d}.txt").write_text(text * 30)
    (root / "sweep.toml").write_text(SWEEP)
    return root / "sweep.toml"


@pytest.fixture(scope="module")
def reference(sweep) -> pd.DataFrame:
    """The table of the default (local, serial) executor."""
    return run_sweep(read_sweep(sweep), sweep.parent / "local", device="cpu", progress=False)


def _same_rows(table: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert not table.duplicated(list(KEY_COLUMNS)).any()
    pd.testing.assert_frame_equal(
        table.drop(columns="timestamp"), reference.drop(columns="timestamp"), check_exact=True
    )


def test_ray_table_equals_the_local_executors(cluster, sweep, reference, tmp_path):
    """Three workers asked, two fit on 2 CPUs: the third waits and the sweep still finishes."""
    executor = RayExecutor(workers=3)
    table = run_sweep(
        read_sweep(sweep), tmp_path / "out", device="cpu", progress=False, executor=executor
    )
    _same_rows(table, reference)
    assert len(executor.hosts) == 2 and len({pid for _, pid in executor.hosts}) == 2
    assert len(list((tmp_path / "out" / "parts").glob("*.parquet"))) == N_UNITS


def _kill_worker_at(executor: RayExecutor, at: int, killed: list):
    """on_unit callback: SIGKILL the first worker's process once ``at`` units are stored."""

    def on_unit(i: int) -> None:
        if i == at and not killed:
            pid = executor.hosts[0][1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    return on_unit


def test_a_killed_worker_is_restarted_and_no_row_is_lost(cluster, sweep, reference, tmp_path):
    executor, killed = RayExecutor(workers=2, retries=2), []
    table = run_sweep(
        read_sweep(sweep),
        tmp_path / "out",
        device="cpu",
        progress=False,
        executor=executor,
        on_unit=_kill_worker_at(executor, 2, killed),
    )
    assert killed, "the sweep finished before a worker was killed"
    _same_rows(table, reference)


def test_without_retries_a_kill_fails_cleanly_and_resume_measures_only_the_rest(
    cluster, sweep, reference, tmp_path
):
    out, killed = tmp_path / "out", []
    executor = RayExecutor(workers=2, retries=0)
    with pytest.raises(
        MergelawError, match=r"ray: a worker died .* rerun to measure the rest"
    ) as e:
        run_sweep(
            read_sweep(sweep),
            out,
            device="cpu",
            progress=False,
            executor=executor,
            on_unit=_kill_worker_at(executor, 2, killed),
        )
    assert killed and "\n" not in str(e.value)
    stored = len(list((out / "parts").glob("*.parquet")))
    assert 3 <= stored < N_UNITS
    assert not (out / "curves.parquet").exists()
    resumed_units: list[int] = []
    table = run_sweep(
        read_sweep(sweep),
        out,
        device="cpu",
        progress=False,
        executor=RayExecutor(workers=2),
        on_unit=resumed_units.append,
    )
    assert len(resumed_units) == N_UNITS - stored
    _same_rows(table, reference)


def test_a_workers_own_error_arrives_as_one_line(cluster, sweep, tmp_path):
    bad = sweep.parent / "bad_expert.toml"
    bad.write_text(SWEEP.replace('d2 = "d2"', 'd2 = "text"'))  # not a checkpoint directory
    with pytest.raises(MergelawError, match=r"text: no such checkpoint|no \*\.safetensors") as e:
        run_sweep(
            read_sweep(bad), tmp_path / "o", device="cpu", progress=False,
            executor=RayExecutor(workers=1),
        )  # fmt: skip
    assert "\n" not in str(e.value)


def _mergelaw(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).parent / "mergelaw")  # the installed console script
    return subprocess.run(
        [exe, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


def test_cli_runs_on_an_existing_cluster(cluster, sweep, reference, tmp_path):
    """A second driver joins the running cluster; the sweep path is relative to its folder."""
    out = tmp_path / "cli"
    args = ["measure", sweep.name, "--out", str(out), "--no-progress", "--executor", "ray"]
    done = _mergelaw(*args, "--address", cluster, "--workers", "2", cwd=sweep.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_rows(read_curves(out / "curves.parquet"), reference)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "2"], "--workers needs --executor ray"),
        (["--executor", "ray", "--device", "cuda:1"], "--device cuda:1 with --executor ray"),
        (["--executor", "ray", "--workers", "0"], "--workers 0: expected a whole number >= 1"),
    ],
)
def test_cli_executor_errors_are_one_line(sweep, tmp_path, extra, message):
    from typer.testing import CliRunner

    from mergelaw.cli import app

    result = CliRunner().invoke(
        app, ["measure", str(sweep), "--out", str(tmp_path / "o"), "--no-progress", *extra]
    )
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
