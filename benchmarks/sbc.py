"""Simulation-based calibration of the default model at scale, and group-parameter coverage.

Draws population and group parameters and a table of losses from the prior on a template table's
structure (3 sizes x 3 domains x 2 methods = 6 families, k = 1..9, 3 subsets per k), fits each
simulated table with NumPyro NUTS, and prints: the chi-square test of uniform ranks for every
population parameter (Talts et al. 2018; p-values should look uniform, none tiny), and the share of
90% central intervals of the group parameters (L_star, B, beta, A0, gamma, b per family) that
contain the truth (target 85-95%). Writes the same text to benchmarks/results/sbc.txt
(--one-size: the template at one base size, the spec without size laws; sbc_one_size.txt).

    python benchmarks/sbc.py                 # 40 simulated tables
    python benchmarks/sbc.py --one-size      # 40 tables of one base size
    python benchmarks/sbc.py --sims 4        # a smoke run
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import stats

from mergelaw.bayes.calibration import (  # one XLA host device per chain
    SBC_SETTINGS,
    SBC_SPEC,
    SLOW_TEST_SIMS,
    calibrate,
)
from mergelaw.bayes.data import prepare
from mergelaw.bayes.spec import load_spec
from mergelaw.io import atomic_path
from mergelaw.simulate import sbc_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=40)
    parser.add_argument("--draws", type=int, default=SBC_SETTINGS["draws"])
    parser.add_argument("--chains", type=int, default=SBC_SETTINGS["chains"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default=SBC_SPEC)
    parser.add_argument("--one-size", action="store_true", help="the template at one base size")
    parser.add_argument("--out", default=None, help="default: results/sbc[_one_size].txt")
    args = parser.parse_args()
    name = "sbc_one_size.txt" if args.one_size else "sbc.txt"
    out = args.out or str(Path(__file__).parent / "results" / name)
    spec = load_spec(args.spec)
    data = prepare(sbc_template(one_size=args.one_size))
    start = time.perf_counter()
    result = calibrate(
        spec,
        data,
        n_sims=args.sims,
        draws=args.draws,
        tune=args.draws,
        chains=args.chains,
        thin=args.chains * args.draws // 100,
        seed=args.seed,
    )
    wall = time.perf_counter() - start
    lines = [
        f"sbc: spec {spec.name}, {args.sims} tables drawn from the prior on a template of "
        f"{len(data.families)} families x {len(data.curves) // len(data.families)} sizes "
        f"({len(data.y)} rows); {args.chains} chains x {args.draws}/{args.draws}, ranks among "
        f"{result.n_draws} thinned draws; seed {args.seed}; {os.cpu_count()} CPU cores; "
        f"{wall:.0f} s ({wall / args.sims:.1f} s per table)",
        f"divergent share of all draws: {result.divergent_share:.4f}",
        "",
        "rank uniformity per population parameter (chi-square, 10 bins):",
    ]
    uniformity = result.uniformity()
    lines += uniformity.to_string(index=False, float_format=lambda v: f"{v:.3f}").splitlines()
    p_values = uniformity["p_value"].to_numpy()
    # Under calibration the p-values are themselves uniform; a KS test checks them jointly, and
    # Bonferroni over parameters guards the smallest one.
    lines += [
        f"smallest p-value {p_values.min():.3f} (Bonferroni threshold at 0.05: "
        f"{0.05 / len(p_values):.4f}); KS test of the p-values against U(0,1): "
        f"p = {stats.kstest(p_values, 'uniform').pvalue:.3f}",
        "",
        "90% interval coverage of group parameters (truth drawn from the prior):",
    ]
    coverage = result.coverage_by_param()
    lines += [f"  {name:<8} {share:.3f}" for name, share in coverage.items()]
    overall = result.coverage["covered"].mean()
    n = len(result.coverage)
    lines.append(
        f"  all      {overall:.3f} of {n} intervals (binomial sd at 0.90: "
        f"{np.sqrt(0.09 / n):.3f}); target 0.85-0.95"
    )
    prefix = result.first(SLOW_TEST_SIMS)
    lines += [
        "",
        f"the slow test's run (the first {SLOW_TEST_SIMS} tables): smallest rank p-value "
        f"{prefix.uniformity()['p_value'].min():.3f} (asserted > 0.001), coverage "
        f"{prefix.coverage['covered'].mean():.3f} (asserted in 0.85-0.95)",
    ]
    print("\n".join(lines))
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
