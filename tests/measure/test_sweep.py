"""Sweeps end to end: rows against an independent recomputation, resume after SIGKILL, errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from mergelaw.curves import KEY_COLUMNS, read_curves  # noqa: E402
from mergelaw.errors import MergelawError  # noqa: E402
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
k = {{min = 1, max = 3}}
seeds = [0]
sampler = {{name = "exhaustive"}}
subsets_per_unit = {per_unit}

[experts]
d0 = "d0"
d1 = "d1"
d2 = "d2"

[eval]
max_length = 48
batch_tokens = 1024
models_per_forward = {mpf}

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


def _write_sweep(root: Path, per_unit=2, mpf=1, repeat=4, name="sweep.toml") -> Path:
    (root / "text").mkdir(exist_ok=True)
    for d, text in DOMAINS.items():
        (root / "text" / f"{d}.txt").write_text(text * repeat)
    path = root / name
    path.write_text(SWEEP.format(per_unit=per_unit, mpf=mpf))
    return path


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("sweep")
    base, experts = tiny.models(3, seed=4, scale=0.05)
    tiny.save(root, base, experts)
    return root


@pytest.fixture(scope="module")
def measured(sweep_root):
    path = _write_sweep(sweep_root)
    return run_sweep(read_sweep(path), sweep_root / "out", device="cpu", progress=False)


def test_table_is_valid_and_complete(measured, sweep_root):
    assert len(measured) == 3 * 7 * 3  # methods x subsets (k = 1..3 of 3) x domains
    again = read_curves(sweep_root / "out" / "curves.parquet")
    assert len(again) == len(measured)
    assert set(measured["k"]) == {1, 2, 3}
    assert (measured["in_domain"] == [d in s.split("|") for d, s in
            zip(measured["eval_domain"], measured["subset"])]).all()  # fmt: skip
    assert measured["n_tokens"].tolist() == [
        len(DOMAINS[d] * 4) - 1 for d in measured["eval_domain"]
    ]


def test_task_arithmetic_row_matches_an_independent_recomputation(measured, sweep_root):
    """Merge with plain state-dict arithmetic, evaluate with the model's own loss."""
    from transformers import LlamaForCausalLM

    row = measured[
        (measured["method"] == "task_arithmetic")
        & (measured["subset"] == "d0|d2")
        & (measured["eval_domain"] == "d1")
    ].iloc[0]
    base = LlamaForCausalLM.from_pretrained(sweep_root / "base")
    experts = [LlamaForCausalLM.from_pretrained(sweep_root / e).state_dict() for e in ("d0", "d2")]
    merged = {n: t + 0.8 / 2 * sum(e[n] - t for e in experts) for n, t in base.state_dict().items()}
    base.load_state_dict(merged)
    ids = torch.tensor(list((DOMAINS["d1"] * 4).encode()))
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, 47):  # windows of 48 overlapping by one token
        w = ids[start : start + 48][None]
        with torch.no_grad():
            total += base(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1)
        count += w.shape[1] - 1
    assert row["n_tokens"] == count
    assert row["loss"] == pytest.approx(total / count, rel=1e-5)
    assert row["method_params"] == '{"c":0.8,"combine":"mean","merge_embeddings":true}'


def test_rerun_measures_nothing_and_changes_nothing(measured, sweep_root):
    calls = []
    again = run_sweep(
        read_sweep(sweep_root / "sweep.toml"),
        sweep_root / "out",
        device="cpu",
        progress=False,
        on_unit=calls.append,
    )
    assert calls == []
    pd.testing.assert_frame_equal(again, measured)


def test_models_per_forward_gives_the_same_rows(measured, sweep_root, tmp_path):
    path = _write_sweep(sweep_root, per_unit=4, mpf=3, name="sweep_vmap.toml")
    table = run_sweep(read_sweep(path), tmp_path / "out", device="cpu", progress=False)
    a = measured.set_index(list(KEY_COLUMNS))["loss"]
    b = table.set_index(list(KEY_COLUMNS))["loss"].reindex(a.index)
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5)


def test_yaml_and_toml_sweeps_agree(sweep_root):
    import yaml

    toml_spec = read_sweep(sweep_root / "sweep.toml")
    import tomllib

    raw = tomllib.loads((sweep_root / "sweep.toml").read_text())
    (sweep_root / "sweep.yaml").write_text(yaml.safe_dump(raw))
    yaml_spec = read_sweep(sweep_root / "sweep.yaml")
    assert yaml_spec.methods == toml_spec.methods and yaml_spec.ks == toml_spec.ks
    assert yaml_spec.domains == toml_spec.domains


def _run_cli(path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mergelaw = str(Path(sys.executable).parent / "mergelaw")  # the installed console script
    cmd = [mergelaw, "measure", str(path), "--out", str(out)]
    cmd += ["--no-progress", "--threads", "1"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_at_five_random_moments_then_resume_gives_the_uninterrupted_rows(
    sweep_root, tmp_path
):
    path = _write_sweep(sweep_root, per_unit=1, repeat=100, name="sweep_kill.toml")
    reference = run_sweep(read_sweep(path), tmp_path / "ref", device="cpu", progress=False)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    parts = out / "parts"
    while kills < 5:
        before = len(list(parts.glob("*.parquet"))) if parts.exists() else 0
        proc = _run_cli(path, out)
        deadline = time.monotonic() + 60
        # wait until this run has made progress, then kill at a random moment after it
        while time.monotonic() < deadline and proc.poll() is None:
            if parts.exists() and len(list(parts.glob("*.parquet"))) > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == 5, "the sweep finished before it was killed five times"
    proc = _run_cli(path, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    resumed = read_curves(out / "curves.parquet")
    assert not list(parts.glob(".*.tmp"))
    key = list(KEY_COLUMNS)
    assert len(resumed) == len(reference)
    assert not resumed.duplicated(key).any()
    merged = reference.merge(resumed, on=key, suffixes=("_ref", "_res"), validate="1:1")
    assert len(merged) == len(reference)
    assert np.allclose(merged["loss_ref"], merged["loss_res"], rtol=1e-6)
    assert (merged["n_tokens_ref"] == merged["n_tokens_res"]).all()


# ----------------------------------------------------------------------------- errors


def _edit(sweep_root: Path, old: str, new: str, name: str) -> Path:
    path = sweep_root / name
    path.write_text((sweep_root / "sweep.toml").read_text().replace(old, new))
    return path


def test_unknown_method_is_one_line(sweep_root, measured):
    path = _edit(sweep_root, 'name = "ties"', 'name = "slerp"', "bad_method.toml")
    with pytest.raises(MergelawError, match=r"methods\[1\]: unknown merge method 'slerp'") as e:
        read_sweep(path)
    assert "\n" not in str(e.value) and "bad_method.toml" in str(e.value)


def test_unknown_method_parameter_is_one_line(sweep_root, measured):
    path = _edit(sweep_root, "density = 0.3", "densty = 0.3", "bad_param.toml")
    with pytest.raises(MergelawError, match="unknown parameter 'densty' for method 'ties'"):
        read_sweep(path)


def test_missing_eval_domain_is_one_line(sweep_root, measured, tmp_path):
    path = _edit(sweep_root, '"text/d2.txt"', '"text/nope.txt"', "missing_domain.toml")
    with pytest.raises(MergelawError, match="eval domain 'd2': no such file") as e:
        run_sweep(read_sweep(path), tmp_path / "o", device="cpu", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o" / "curves.parquet").exists()


def test_empty_eval_text_is_one_line(sweep_root, measured, tmp_path):
    (sweep_root / "text" / "empty.txt").write_text("\n\n")
    path = _edit(sweep_root, '"text/d2.txt"', '"text/empty.txt"', "empty_domain.toml")
    with pytest.raises(MergelawError, match="eval text for domain 'd2' is empty") as e:
        run_sweep(read_sweep(path), tmp_path / "o", device="cpu", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o" / "curves.parquet").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("max_length = 48", 'max_length = 48\ndtype = "float16"',
         "'eval.dtype' = 'float16' (expected one of: auto, float32, bfloat16)"),
        ("max_length = 48", "max_length = 1",
         "'eval.max_length' = 1 (expected a whole number >= 2)"),
        ("seeds = [0]", "seeds = []", "'seeds' = [] (expected a non-empty list of whole numbers)"),
        ("seeds = [0]", 'seeds = ["0"]', "'seeds[0]' = '0' has the wrong type (expected a whole"),
        ('sampler = {{name = "exhaustive"}}', 'sampler = "random"',
         "'sampler.name' = 'random' (expected one of: exhaustive, uniform, nested, diverse,"),
        ('base = "base"\n', "", "missing 'base' (expected the base checkpoint directory)"),
        ("[eval.domains]", "[eval.texts]", "unknown setting 'eval.texts'"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_naming_the_key(tmp_path, old, new, message):
    assert old in SWEEP
    path = tmp_path / "bad.toml"
    path.write_text(SWEEP.replace(old, new).format(per_unit=2, mpf=1))
    with pytest.raises(MergelawError) as caught:
        read_sweep(path)
    assert str(caught.value).startswith(f"{path}: {message}") and "\n" not in str(caught.value)
