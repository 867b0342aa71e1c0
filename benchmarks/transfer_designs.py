"""How much transfer.py's k = 1, 2, 4 ranking rests on the lab's one subset design.

The lab measured the same nine subsets at each k for every curve of an arch, so a per-k mean off
the law is off alike on every curve, and transfer.py's ranking of the Bayesian forecast against
the paper's three-point curve and least squares is one realisation of that shared error. Each
design here keeps a random 5 of the 9 subsets at each of k = 1, 2, 4 (one choice for every curve:
as shared as the lab's own), makes the points from them (expert-corrected per-k means, as
transfer.py does), and scores the forecasts of the curves' measured per-k means at every larger k
(all their subsets) where the three-point curve exists. Printed per direction and design: the MAE
of the posterior mean, of the three-point curve and of least squares, and Bayes / the better of
the two; then how many designs Bayes wins and the ratios' median.

    python benchmarks/transfer_designs.py --fits DIR       # 8 designs, transfer.py's directions
    python benchmarks/transfer_designs.py --designs 3 --only "gpt2 -> llama"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from transfer import CURVE_KEYS, ROOT, baselines, population, transfer_directions

from mergelaw import expert_effects
from mergelaw.bayes.update import Points, condition
from mergelaw.io import atomic_path

RESULT = ROOT / "benchmarks" / "results" / "transfer_designs.txt"
KS = (1, 2, 4)
KEPT = 5  # of the nine subsets at each k


def design_rows(targets: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The rows at k = 1, 2, 4 of KEPT subsets drawn at each k, the same for every curve."""
    kept = []
    for k in KS:
        subsets = np.sort(targets.loc[targets["k"] == k, "subset"].unique())
        kept += list(rng.choice(subsets, min(KEPT, len(subsets)), replace=False))
    return targets[targets["k"].isin(KS) & targets["subset"].isin(kept)]


def design_errors(post, targets: pd.DataFrame, measured: dict, rng, seed: int) -> dict:
    """Absolute errors of the three forecasts of every larger measured per-k mean, from one
    design's points, where the three-point curve exists."""
    errors: dict[str, list[float]] = {"Bayes": [], "three-point": [], "least squares": []}
    for key, rows in design_rows(targets, rng).groupby(CURVE_KEYS, sort=True):
        later = measured[key][measured[key]["k"] > max(KS)]
        points = expert_effects.per_k_means(rows)
        if later.empty or len(points) < len(KS):
            continue
        ahead = later["k"].to_numpy(float)
        base = baselines(points, KS, ahead)
        if np.isnan(base["three-point"]).any():
            continue
        given = Points.from_frame(points[["k", "mean", "se"]].assign(method=key[3]))
        updated = condition(post, given, n_b=float(key[1]) / 1e9, seed=seed)
        truth = later["mean"].to_numpy(float)
        forecasts = {"Bayes": updated.curves.mean(ahead)[:, 0, :].mean(axis=0), **base}
        for name, forecast in forecasts.items():
            errors[name] += list(np.abs(forecast - truth))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", type=int, default=8)
    parser.add_argument("--only", default=None, help="one direction, e.g. 'gpt2 -> llama'")
    parser.add_argument("--fits", type=Path, default=None, help="as transfer.py's --fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    args.spec, args.chains, args.draws = "default", 4, 1000  # transfer.py's populations

    start = time.perf_counter()
    directions = transfer_directions(args.seed, args.only, parser)
    lines = [
        f"transfer_designs: {args.designs} designs of {KEPT} subsets at each k = 1, 2, 4 (the "
        f"same for every curve); forecasts of every larger measured per-k mean; seed {args.seed}",
        "",
    ]
    for name, source, targets in directions:
        post, line = population(name.split(" -> ")[0], source, args)
        measured = {
            key: expert_effects.per_k_means(rows)
            for key, rows in targets.groupby(CURVE_KEYS, sort=True)
        }
        block, ratios = [line], []
        for design in range(args.designs):
            rng = np.random.default_rng([args.seed, design])
            errors = design_errors(post, targets, measured, rng, args.seed)
            mae = {k: float(np.mean(v)) for k, v in errors.items()}
            ratios.append(mae["Bayes"] / min(mae["three-point"], mae["least squares"]))
            block.append(
                f"  {name} design {design}: {len(errors['Bayes'])} means, MAE Bayes "
                f"{mae['Bayes']:.4f}, three-point {mae['three-point']:.4f}, least squares "
                f"{mae['least squares']:.4f} (Bayes / better {ratios[-1]:.2f})"
            )
        wins = sum(r < 1 for r in ratios)
        block += [
            f"  {name}: Bayes better in {wins} of {len(ratios)} designs; Bayes / better median "
            f"{np.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}",
            "",
        ]
        print("\n".join(block), flush=True)
        lines += block
    lines.append(f"wall time: {time.perf_counter() - start:.0f} s")
    text = "\n".join(lines) + "\n"
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
