"""Corrected per-k means against the lab's own all-subsets means: their error and their se.

At k = 1 and k = 8 the lab measured every subset of its 9-expert pools (9 of C(9, k) = 9), so
the mean over all subsets is known there. Each repeat drops 4 of those 9 subsets at one k, and
``mergelaw.expert_effects.per_k_means`` corrects the mean of the 5 left (the curve's other rows
pin the experts' effects): printed per merge method and k are the rms error of the corrected
mean against all 9, the rms of its se, their ratio (rms z, target about 1) and how often the 90%
interval covers. Side by side, in one run: the module's current settings, and the effects held at
1/k with the residual's variance power capped at 2 (the settings before the effects' decay was
fitted), and the plain mean of the 5.

    python benchmarks/per_k_means_holdout.py              # every lab curve, 3 repeats (~2 min)
    python benchmarks/per_k_means_holdout.py --repeats 1  # a quicker look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mergelaw import expert_effects
from mergelaw.curves import read_curves
from mergelaw.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "per_k_means_holdout.txt"
CURVE_KEYS = ["arch", "n_params", "eval_domain", "method", "method_params"]
SETTINGS = {
    "current": {},
    "1/k, p <= 2": {"decays": np.array([1.0]), "powers": np.linspace(0.0, 2.0, 17)},
}


def records(table: pd.DataFrame, repeats: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for key, rows in table.groupby(CURVE_KEYS, sort=True):
        for k in (1.0, 8.0):
            at_k = rows[rows["k"] == k]
            truth = float(at_k["loss"].mean())
            for _ in range(repeats):
                dropped = rng.choice(at_k.index.to_numpy(), size=4, replace=False)
                kept = rows.drop(index=dropped)
                plain = float(kept.loc[kept["k"] == k, "loss"].mean())
                base = {"method": key[3], "k": k}
                out.append(base | {"settings": "plain mean", "error": plain - truth, "se": np.nan})
                for name, settings in SETTINGS.items():
                    means = expert_effects.per_k_means(kept, **settings).set_index("k")
                    mean, se = float(means.loc[k, "mean"]), float(means.loc[k, "se"])
                    out.append(base | {"settings": name, "error": mean - truth, "se": se})
    return pd.DataFrame(out)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    def one(s: pd.DataFrame) -> pd.Series:
        rms = np.sqrt(np.mean(s["error"] ** 2))
        se = np.sqrt(np.mean(s["se"] ** 2))
        z = s["error"] / s["se"]
        return pd.Series({
            "rms error (1e-3)": 1e3 * rms,
            "rms se (1e-3)": 1e3 * se,
            "rms z": np.sqrt(np.mean(z**2)),
            "90% cover": np.mean(np.abs(z) <= 1.645) if z.notna().all() else np.nan,
        })  # fmt: skip

    order = ["plain mean", *SETTINGS]
    table = scores.groupby(["method", "k", "settings"], sort=True).apply(one, include_groups=False)
    return table.reindex(order, level="settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    table = read_curves(ROOT / "data" / "curves" / "lab.parquet")
    scores = records(table, args.repeats, args.seed)
    text = (
        f"per_k_means_holdout: every lab curve, k = 1 and 8, 4 of 9 subsets dropped, "
        f"{args.repeats} repeats, seed {args.seed}\n\n"
        + summary(scores).to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")
        + f"\n\nwall time: {time.perf_counter() - start:.0f} s\n"
    )
    print(text)
    with atomic_path(RESULT) as tmp:
        Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
