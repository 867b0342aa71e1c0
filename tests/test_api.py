"""`import mergelaw as ml`: the user's verbs exist with docstrings, importing is cheap and
torch-free, and a small end-to-end path runs through the API alone."""

import subprocess
import sys

import pandas as pd
import pytest

import mergelaw as ml

VERBS = [
    "read_curves", "validate_curves", "write_curves", "simulate_curves", "measure_curves",
    "fit", "fit_least_squares", "load_fit", "posterior", "experts_for_target", "stopping",
    "sequential_stop", "budget", "forecast", "forecast_from_points", "compare_methods",
    "write_report",
]  # fmt: skip


@pytest.mark.parametrize("name", VERBS)
def test_each_verb_is_there_with_a_docstring(name):
    value = getattr(ml, name)
    assert callable(value) and name in ml.__all__ and name in dir(ml)
    assert value.__doc__ and len(value.__doc__.strip()) > 40


def test_every_exported_name_resolves():
    for name in ml.__all__:
        assert getattr(ml, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        _ = ml.nosuch


def test_importing_mergelaw_loads_no_heavy_module():
    """What `import mergelaw` loaded before the API (importlib.metadata only) it still loads:
    no torch, jax, PyMC, numpy or pandas until a name that needs them is used; and even the
    measuring verb imports torch only when it runs."""
    code = (
        "import sys\nimport mergelaw as ml\n"
        "heavy = ('torch', 'jax', 'pymc', 'numpyro', 'numpy', 'pandas', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "ml.measure_curves, ml.stopping, ml.fit\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "[]"], done.stdout + done.stderr


def test_curves_to_a_least_squares_fit_through_the_api(tmp_path):
    table = ml.simulate_curves(sizes_b=(0.5, 3.0), domains=("code",), methods=("average",),
                               seed=2)  # fmt: skip
    written = ml.write_curves(table, tmp_path / "curves.parquet")
    curves = ml.read_curves(tmp_path / "curves.parquet")
    pd.testing.assert_frame_equal(curves, written)
    ml.validate_curves(curves)
    bad = curves.assign(loss=curves["loss"].where(curves.index != 3))
    with pytest.raises(ml.MergelawError, match=r"column 'loss' row 3"):
        ml.validate_curves(bad)
    fits = ml.fit_least_squares(curves, scope="curve", n_boot=10, interval="percentile")
    assert set(fits["param"]) >= {"floor", "amplitude", "b"} and len(fits) == 2 * 3


def test_fit_reads_a_path_and_passes_options(tmp_path, monkeypatch):
    """ml.fit reads and validates a path and hands the table to the sampler (not run here)."""
    import mergelaw.bayes.fit

    seen = {}
    monkeypatch.setattr(mergelaw.bayes.fit, "fit", lambda *a, **kw: seen.update(args=a, kw=kw))
    table = ml.simulate_curves(sizes_b=(0.5,), domains=("code",), methods=("average",))
    ml.write_curves(table, tmp_path / "curves.csv")
    ml.fit(tmp_path / "curves.csv", "naive", draws=10)
    curves, spec, backend = seen["args"]
    assert len(curves) == len(table) and spec == "naive" and backend == "numpyro"
    assert seen["kw"] == {"draws": 10, "source": str(tmp_path / "curves.csv")}


def test_measure_curves_without_torch_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "sweep.toml").write_text(
        'base = "b"\ntokenizer = "bytes"\nk = [1]\nexperts = {a = "a", c = "c"}\n'
        '[eval]\ndomains = {code = "code.txt"}\n[[methods]]\nname = "average"\n'
    )
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ml.MergelawError, match=r"pip install 'mergelaw\[measure\]'"):
        ml.measure_curves(tmp_path / "sweep.toml", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plan_compare_and_report_through_the_api(fake_fit_path, tmp_path):
    """From a saved fit: load it, ask the planning queries (with the fit, its path or the
    posterior), compare two methods and write the report."""
    fit = ml.load_fit(fake_fit_path)
    post = ml.posterior(fit)
    stop = ml.stopping(fit, n_b=3, epsilon=0.003)
    assert stop.flag == fit.flag and set(stop.decision) == set(fit.families["label"])
    assert ml.stopping(post, n_b=3, epsilon=0.003).to_dict() == stop.to_dict()
    target = ml.experts_for_target(fake_fit_path, 0.3, n_b=3, family="average/code")
    assert target.decision["qwen2/average/code"]["status"] == "unreachable at this size"
    forecast = ml.forecast(post, n_b=72, family="ties/code", k=[1, 9])
    assert forecast.decision["k"] == [1, 9]
    costs = ml.CostModel(base={0.5: 1.0, 3.0: 5.0}, per_expert=2.0)
    assert ml.budget(post, costs, 30).decision["cost"] <= 30
    verdicts = ml.compare_methods(fit, "average", "ties", k=[9]).decision["verdicts"]
    assert {"floor", "tail amplitude", "loss at k=9"} <= set(verdicts)
    out = ml.write_report(fit, tmp_path / "report.html", size_b=3.0)
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
