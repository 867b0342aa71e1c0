"""The law's misfit of per-k means, per merge method: recovered from curves scattered off the law
by a known amount beyond their se, and floored where the law fits exactly."""

from pathlib import Path

import numpy as np
import pandas as pd

from mergelaw import law
from mergelaw.curves import read_curves
from mergelaw.law_misfit import MISFIT_FLOOR, curve_residual, per_method, signed_curve_fit

KS = np.arange(1.0, 10.0)


def _means_table(misfits: dict[str, float], n_curves: int = 60, se: float = 0.002, seed: int = 0):
    """Per-k means of curves floor + A/(k+b) (A signed, as TIES's rise), each mean off the law by
    N(0, misfit²) and off its own value by N(0, se²), with that se."""
    rng = np.random.default_rng(seed)
    rows = []
    for method, misfit in misfits.items():
        for curve in range(n_curves):
            floor, amplitude = rng.uniform(2.0, 4.0), rng.choice([-1, 1]) * rng.uniform(0.2, 1.0)
            b = rng.uniform(-0.3, 3.0)
            mean = law.curve_loss(KS, floor, amplitude, b)
            mean = mean + rng.normal(0, misfit, KS.size) + rng.normal(0, se, KS.size)
            columns = {"method": method, "eval_domain": "code", "n_params": 1e8 * (curve + 1)}
            rows.append(pd.DataFrame(columns | {"k": KS, "mean": mean, "se": se}))
    return pd.concat(rows, ignore_index=True)


def test_an_exact_law_fits_every_curve():
    for b in (-0.5, 0.0, 4.0, 200.0):
        for amplitude in (0.7, -0.3):
            y = law.curve_loss(KS, 3.0, amplitude, b)
            np.testing.assert_allclose(curve_residual(KS, y), 0.0, atol=1e-6)


def test_the_signed_fit_recovers_rising_curves_and_negative_offsets():
    """What the paper's bounds (A, b >= 0) cannot: a TIES-like rise and an early bend."""
    for floor, amplitude, b in ((3.0, -0.3, 4.0), (2.5, 0.2, -0.2), (4.0, 0.5, 0.0)):
        got = signed_curve_fit(KS, law.curve_loss(KS, floor, amplitude, b))
        np.testing.assert_allclose(got, (floor, amplitude, b), rtol=1e-4, atol=1e-6)


def test_misfits_are_recovered_per_method():
    table = _means_table({"average": 0.0, "ties": 0.004, "dare": 0.008})
    misfit = per_method(table)
    assert misfit["average"] == MISFIT_FLOOR
    np.testing.assert_allclose(misfit["ties"], 0.004, rtol=0.2)
    np.testing.assert_allclose(misfit["dare"], 0.008, rtol=0.15)


def test_curves_with_too_few_means_are_left_out():
    table = _means_table({"average": 0.004, "ties": 0.004}, n_curves=5)
    table = table[(table["method"] == "average") | (table["k"] <= 3)]
    assert set(per_method(table)) == {"average"}


def test_a_curves_table_is_read_through_its_corrected_means():
    """SmolLM2-135M's subset rows: TIES's rising curves follow the law less closely than
    Average's."""
    table = read_curves(Path(__file__).resolve().parents[1] / "data" / "curves" / "smollm2.parquet")
    misfit = per_method(table)
    assert set(misfit) == set(table["method"])
    assert misfit["ties"] > 3 * misfit["average"]
