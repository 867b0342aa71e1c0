"""Sampling efficiency of the default model against the naive parameterisation, side by side.

On the 60-curve simulated table (5 sizes x 4 domains x 3 methods, k = 1..9, 5 subsets per k):
the default spec and the naive one (the paper's parameters sampled directly, free exponent and
offset per curve) with NumPyro (parallel chains, one XLA host device each), and the default with
PyMC (its own NUTS, and the numpyro / nutpie samplers where installed). Then the default on a
paper-scale table (7 sizes x 9 domains x 4 methods: the paper's three and a DARE stand-in
simulated from task arithmetic, see ``mergelaw.simulate.with_dare_stand_in``). Prints wall
time, divergences, max R-hat, min bulk/tail ESS, ESS/s and mean tree steps, and writes the same
text to benchmarks/results/fit_bench.txt.

    python benchmarks/fit_bench.py                 # 4 chains x 1000/1000, as the issue states
    python benchmarks/fit_bench.py --quick         # 2 chains x 200/200, a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

# importing fit's NumPyro backend gives each chain an XLA host device
from mergelaw.bayes.fit import fit, target_accept_of
from mergelaw.bayes.spec import load_spec
from mergelaw.io import atomic_path
from mergelaw.simulate import simulate_curves

SIXTY_CURVES = {
    "sizes_b": (0.5, 1.5, 3.0, 7.0, 14.0),
    "domains": ("algebra", "biology", "code", "physics"),
    "methods": ("average", "task_arithmetic", "ties"),
}
#: The paper's three methods and the simulated DARE stand-in (the paper prints no DARE table).
PAPER_SCALE_METHODS = ("average", "task_arithmetic", "ties", "dare")
HEADER = (
    f"{'table':<12} {'spec':<8} {'sampler':<34} {'wall s':>7} {'div':>5} {'max R^':>7} "
    f"{'ESS bulk':>8} {'ESS tail':>8} {'ESS/s':>7} {'steps':>6}  flag"
)


def row(table_name: str, result) -> tuple[str, float]:
    d = result.diagnostics
    wall = result.meta.wall_time_s
    ess_per_s = min(d.min_ess_bulk, d.min_ess_tail) / wall
    line = (
        f"{table_name:<12} {result.spec.name:<8} {result.meta.sampler:<34} {wall:7.0f} "
        f"{d.divergences:5d} {d.max_rhat:7.3f} {d.min_ess_bulk:8.0f} {d.min_ess_tail:8.0f} "
        f"{ess_per_s:7.2f} {d.mean_tree_steps:6.0f}  {'ok' if d.ok else 'FAILED'}"
    )
    return line, ess_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 chains x 200/200")
    parser.add_argument(
        "--target-accept", type=float, default=None, help="(default: each spec's own, as a fit)"
    )
    parser.add_argument("--skip-pymc", action="store_true")
    parser.add_argument("--skip-paper-scale", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit_bench.txt"))
    args = parser.parse_args()
    settings = (
        {"draws": 200, "tune": 200, "chains": 2}
        if args.quick
        else {"draws": 1000, "tune": 1000, "chains": 4}
    )
    settings |= {"seed": 0, "target_accept": args.target_accept, "max_tree_depth": 10}
    accept = ", ".join(
        f"{name} {target_accept_of(load_spec(name), args.target_accept)}"
        for name in ("default", "naive")
    )
    lines = [
        f"fit_bench: {settings['chains']} chains x {settings['tune']} warm-up / "
        f"{settings['draws']} draws, target_accept {accept}, "
        f"max tree depth {settings['max_tree_depth']}, {os.cpu_count()} CPU cores",
        HEADER,
    ]
    print("\n".join(lines), flush=True)

    def record(table_name, result):
        line, ess_per_s = row(table_name, result)
        lines.append(line)
        print(line, flush=True)
        return ess_per_s

    sixty = simulate_curves(**SIXTY_CURVES, seed=0)
    default = record("60 curves", fit(sixty, "default", "numpyro", **settings))
    naive = record("60 curves", fit(sixty, "naive", "numpyro", **settings))
    ratio = f"ESS/s default / naive (NumPyro, same table, same run): {default / naive:.1f}x"
    if not args.skip_pymc:
        samplers = ["pymc", "numpyro"] + (["nutpie"] if importlib.util.find_spec("nutpie") else [])
        for sampler in samplers:
            record("60 curves", fit(sixty, "default", "pymc", sampler=sampler, **settings))
        if "nutpie" not in samplers:
            lines.append("(nutpie is not installed: its row is missing)")
    if not args.skip_paper_scale:
        start = time.perf_counter()
        paper = simulate_curves(seed=0, methods=PAPER_SCALE_METHODS)  # 7 x 9 x 4 = 252 curves
        record("paper scale", fit(paper, "default", "numpyro", **settings))
        lines.append(f"paper-scale table: {len(paper)} rows, {time.perf_counter() - start:.0f} s")
    lines += ["", ratio]
    print("\n".join(lines[-2:]))
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
