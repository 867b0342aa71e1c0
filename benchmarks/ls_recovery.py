"""Recovery check of the least-squares baseline on tables simulated from the paper's parameters.

For each seed, simulate a paper-scale curves table (7 sizes x 9 domains x 3 methods, k = 1..9,
5 subsets per k), fit the joint law per (domain, method) with bootstrap intervals, and count how
often each true parameter falls inside its interval. Prints coverage per parameter and writes the
same text to benchmarks/results/ls_recovery.txt.

    python benchmarks/ls_recovery.py --seeds 20 --n-boot 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from mergelaw.io import atomic_path
from mergelaw.law import LAW_PARAM_NAMES
from mergelaw.least_squares import fit_least_squares
from mergelaw.paper import paper_law_params
from mergelaw.simulate import simulate_curves


def coverage_study(seeds: int, n_boot: int, level: float, subsets_per_k: int) -> pd.DataFrame:
    truth = paper_law_params().set_index(["method", "domain"])
    frames = []
    for seed in range(seeds):
        table = simulate_curves(seed=seed, subsets_per_k=subsets_per_k)
        fits = fit_least_squares(table, n_boot=n_boot, level=level, seed=seed)
        fits["truth"] = [
            truth.loc[(m, d), p] for m, d, p in zip(fits.method, fits.eval_domain, fits.param)
        ]
        fits["covered"] = (fits.lower <= fits.truth) & (fits.truth <= fits.upper)
        frames.append(fits)
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--subsets-per-k", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ls_recovery.txt"))
    args = parser.parse_args()
    start = time.perf_counter()
    fits = coverage_study(args.seeds, args.n_boot, args.level, args.subsets_per_k)
    elapsed = time.perf_counter() - start
    by_param = (
        fits.groupby("param", sort=False)
        .agg(
            coverage=("covered", "mean"),
            curves=("covered", "size"),
            median_width=("upper", lambda u: float((u - fits.loc[u.index, "lower"]).median())),
            boot_on_bound=("boot_on_bound", "mean"),
        )
        .reindex(list(LAW_PARAM_NAMES))
    )
    n_families = fits.groupby(["method", "eval_domain"]).ngroups
    median_r2 = fits.drop_duplicates(["seed", "method", "eval_domain"])["r2"].median()
    by_method = fits.pivot_table(index="param", columns="method", values="covered", aggfunc="mean")
    lines = [
        f"least-squares recovery: {args.seeds} seeds x {n_families}"
        f" curve families (7 sizes, k = 1..9, {args.subsets_per_k} subsets per k), "
        f"{args.n_boot} bootstrap fits each, {args.level:.0%} bias-corrected percentile intervals",
        "",
        by_param.to_string(float_format=lambda v: f"{v:.3f}"),
        "",
        "coverage by method:",
        by_method.reindex(list(LAW_PARAM_NAMES)).to_string(float_format=lambda v: f"{v:.3f}"),
        "",
        f"minimum coverage over parameters: {by_param['coverage'].min():.3f} (target >= 0.80)",
        f"median R^2 of the fits: {median_r2:.4f}",
        f"wall time: {elapsed:.0f} s",
    ]
    text = "\n".join(lines)
    print(text)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text + "\n")


if __name__ == "__main__":
    main()
