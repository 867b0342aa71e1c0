"""Forecasts for settings the fitted population never saw: another model family, another scale.

A population is fitted (the default spec, NumPyro) on one table, then every curve of another
table is forecast from a few of its per-k means, with the population as prior
(bayes.update.condition, what plan.forecast_from_points runs: NUTS on the new curve). Directions:

  paper -> lab      the paper's tables (mergelaw.simulate, the paper's fitted parameters:
                    7 sizes x 9 domains x 3 methods) -> every curve of data/curves/lab.parquet
  gpt2 -> llama     the lab's gpt2 curves -> its llama curves
  llama -> gpt2     and back
  lab -> smollm2    once data/curves/smollm2.parquet exists
  balanced          (--only balanced, its own file) the lab's gpt2 and llama populations ->
                    the other arch's curves of data/curves/lab_balanced.parquet (the S and M
                    bases re-measured with balanced subsets, two rounds of nine per k): from all
                    of its subsets, from each round alone, and lab.parquet's curves of the same
                    bases beside them

Points: the per-k means of the measured subsets at k in {1, 2, 4} and at k in {2, 4, 6}, corrected
for the experts the measured subsets hold, with their standard errors (mergelaw.expert_effects;
the MAE's targets are the same means at every larger measured k). Printed per direction and
design:

  predictive   coverage of the 90% predictive intervals of the per-k means (target 85-95%): the
               expected loss plus each mean's own error (its se) and the law's misfit of a
               per-k mean of its merge method, measured on the population's table
               (mergelaw.law_misfit; see forecast_curves). The paper's tables are simulated
               from the law, whose curves cannot show how far a measured curve sits off it: their
               population takes the update's MEANS_MISFIT (0.001) instead of their own floor
               (0.0003: every query mixes with it too, but its intervals cover the lab's means
               0.815 / 0.756 from k = 1, 2, 4 / 2, 4, 6, against 0.898 / 0.843 with 0.001, in a
               one-off run)
  credible     coverage of the 90% credible intervals of the expected loss against the curve's
               own full-data mean (floor + A/(k+b) fitted by least squares to all of its per-k
               means, A signed and b > -1 as in the Bayesian law: law_misfit.signed_curve_fit.
               The paper's bounds A, b >= 0 would draw a flat line through a rising TIES curve
               and miss the lab's Average curves, which bend at b ~ -0.2)
  MAE          of the posterior mean, beside the paper's three-point recipe (the curve through the
               three means; some have none) and a weighted least-squares fit of the same points
               (target: not worse than the better of the two); and, to say how much is left to
               gain, an oracle: the law through the same points with the offset b of the curve's
               own full-data fit, which has seen the means it is judged on
  time         per query, on this machine (target <= 10 s on 2 cores); the first query of each
               design also compiles its sampler (the designs anchor the curve at other k)

With --independent-errors, each design is also run from points drawn as the curve's full-data
mean plus N(0, se²) per point and judged against the full-data mean (credible and MAE lines): the
lab measured the same subsets at each k for every curve, so a corrected mean off the law by its
se at one k (k = 4 sits about +1 se above it on every Average, DARE and TA curve of both archs,
k = 5 about -1 se) is off alike on all of them, and the designs' MAE ranking rests on that one
realisation; these lines give each curve its own.

    python benchmarks/transfer.py                                  # the full run (~75 min)
    python benchmarks/transfer.py --paper-curves 24                # the paper's population
                                                                   # forecasts 24 lab curves
    python benchmarks/transfer.py --curves 6 --draws 300           # a smoke run (minutes)
    python benchmarks/transfer.py --only "gpt2 -> llama" --independent-errors
    python benchmarks/transfer.py --only balanced --independent-errors   # ~7 min with --fits
    python benchmarks/transfer.py --only "lab -> smollm2"          # one direction, its own file
                                                                   # (results/transfer_smollm2.txt)
    python benchmarks/transfer.py --spec method_offset --only "lab -> smollm2"
                                          # another spec's populations: its own file
                                          # (results/transfer_smollm2_method_offset.txt)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mergelaw import expert_effects, law, law_misfit
from mergelaw.bayes.fit import Fit, fit  # its NumPyro backend gives each chain a host device
from mergelaw.bayes.posterior import Posterior
from mergelaw.bayes.update import MEANS_MISFIT, Points, condition
from mergelaw.curves import format_subset, read_curves, subset_members
from mergelaw.io import atomic_path
from mergelaw.least_squares import fit_curve
from mergelaw.measure import samplers
from mergelaw.simulate import simulate_curves

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "transfer.txt"
CURVE_KEYS = ["arch", "n_params", "eval_domain", "method", "method_params"]
DESIGNS = {"k = 1, 2, 4": (1, 2, 4), "k = 2, 4, 6": (2, 4, 6)}
LEVEL = 0.9


def baselines(points: pd.DataFrame, ks: tuple, targets: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's three-point curve and a weighted least-squares fit of the same points."""
    m = points.set_index("k")["mean"]
    three = law.three_point_solution(*(m[float(k)] for k in ks), ks=ks)
    wls = fit_curve(points["k"].to_numpy(float), points["mean"].to_numpy(float), weighting="k")
    p = wls.params
    return {
        "three-point": np.asarray(law.curve_loss(targets, *three), dtype=float),
        "least squares": np.asarray(
            law.curve_loss(targets, p["floor"], p["amplitude"], p["b"]), dtype=float
        ),
    }


def full_data_fit(means: pd.DataFrame) -> tuple[pd.Series, float]:
    """The curve's own expected loss at each measured k (the law fitted to all its per-k means)
    and that fit's offset b."""
    k = means["k"].to_numpy(float)
    params = law_misfit.signed_curve_fit(k, means["mean"].to_numpy(float))
    return pd.Series(law.curve_loss(k, *params), index=k), params[2]


def own_offset_forecast(points: pd.DataFrame, b: float, targets: np.ndarray) -> np.ndarray:
    """An oracle beside the baselines: the law through the points with the offset b of the
    curve's full-data fit (which has seen the targets), floor and amplitude by least squares
    weighted by k as the least-squares baseline's. How near the baselines come to it says how
    much a better estimate of b from three points could still gain."""
    k, y = points["k"].to_numpy(float), points["mean"].to_numpy(float)
    root = np.sqrt(k)
    design = np.stack([np.ones_like(k), law.tail_shape(k, b)], axis=1)
    floor, amplitude = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
    return np.asarray(law.curve_loss(targets, floor, amplitude, b), dtype=float)


def forecast_curves(
    post: Posterior, targets: pd.DataFrame, seed: int, independent_errors: bool = False
) -> pd.DataFrame:
    """One record per (curve, design, forecast k). The query is the update of the new curve
    given its points (what ``plan.forecast_from_points`` runs; its rows are arithmetic on these
    draws). The per-k means it is judged against are corrected means of a fixed design (the
    lab's nine subsets per k hold the evaluated domain's own expert in 2 of 9 at k = 5, where
    random subsets would in 5 of 9), so their predictive is the expected loss plus each mean's
    own error (its se) and the law's misfit of a per-k mean (the update's, measured on the
    population's table), not the answer's 'observed loss' of n random merges.

    ``independent_errors`` adds, per design, the same forecast from points drawn as the curve's
    full-data mean plus N(0, se²) each, judged against the full-data mean: every curve then has
    its own error at each k, where the lab's curves share one (the same subsets at each k for
    every curve, so a per-k mean off the law is off on all of them alike)."""
    records = []
    rng = np.random.default_rng(seed + 1)
    draw_errors = np.random.default_rng(seed + 2)
    for key, rows in targets.groupby(CURVE_KEYS, sort=True):
        means = expert_effects.per_k_means(rows)
        truth, own_b = full_data_fit(means)  # one fit per curve, shared by both designs
        n_b = float(key[1]) / 1e9
        for design, ks in DESIGNS.items():
            points = means[means["k"].isin(ks)]
            later = means[means["k"] > max(ks)]
            if len(points) < len(ks) or later.empty:
                continue
            variants = [(design, points, later["mean"].to_numpy(float))]
            if independent_errors:
                drawn = truth[points["k"]].to_numpy() + points["se"].to_numpy() * (
                    draw_errors.standard_normal(len(points))
                )
                variants.append((f"{design} (independent errors)", points.assign(mean=drawn),
                                 truth[later["k"]].to_numpy()))  # fmt: skip
            for label, given_points, measured in variants:
                records += _scores(post, key, label, ks, given_points, later, measured, truth,
                                   own_b, n_b, seed, rng)  # fmt: skip
    return pd.DataFrame(records)


def _scores(post, key, design, ks, points, later, measured, truth, own_b, n_b, seed, rng):
    """The records of one query: the curve ``key``'s forecast of the ``later`` per-k means
    (``measured``) from ``points``."""
    ahead = later["k"].to_numpy(float)
    given = Points.from_frame(points[["k", "mean", "se"]].assign(method=key[3]))
    start = time.perf_counter()
    updated = condition(post, given, n_b=n_b, seed=seed)
    seconds = time.perf_counter() - start
    expected = updated.curves.mean(ahead)[:, 0, :]  # (S, K)
    error = np.hypot(later["se"].to_numpy(float), updated.misfit)
    observed = expected + error * rng.standard_normal(expected.shape)
    tail = (1 - LEVEL) / 2
    (e_low, e_high), (o_low, o_high) = (
        np.quantile(d, [tail, 1 - tail], axis=0) for d in (expected, observed)
    )
    base = baselines(points, ks, ahead)
    oracle = own_offset_forecast(points, own_b, ahead)
    d = updated.summary()
    return [
        dict(zip(CURVE_KEYS, key))
        | {
            "design": design,
            "k": k,
            "measured": measured[i],
            "forecast": float(expected[:, i].mean()),
            "predictive_covered": bool(o_low[i] <= measured[i] <= o_high[i]),
            "credible_covered": bool(e_low[i] <= truth[k] <= e_high[i]),
            "predictive_width": o_high[i] - o_low[i],
            "three_point": base["three-point"][i],
            "least_squares": base["least squares"][i],
            "own_offset": oracle[i],
            "seconds": seconds,
            "ess": d["ess"],
            "rhat": d["rhat"],
            "divergences": d["divergences"],
            "conflict": d["prior_conflict_sd"],
        }
        for i, k in enumerate(ahead)
    ]


def summary_lines(name: str, scores: pd.DataFrame) -> list[str]:
    lines = []
    for design, s in scores.groupby("design", sort=False):
        err = (s["forecast"] - s["measured"]).abs()
        three = (s["three_point"] - s["measured"]).abs()
        has_three = three.notna()
        wls = (s["least_squares"] - s["measured"]).abs()
        oracle = (s["own_offset"] - s["measured"]).abs()
        per_query = s.drop_duplicates(CURVE_KEYS)
        warm = per_query["seconds"].iloc[1:]  # a design's first query compiles its sampler
        better = min(three[has_three].mean(), wls[has_three].mean())
        signed = {
            name: 1000 * (forecast - s["measured"])[has_three].mean()
            for name, forecast in (
                ("Bayes", s["forecast"]),
                ("three-point", s["three_point"]),
                ("least squares", s["least_squares"]),
            )
        }
        head = [
            f"{name}, points at {design}: {len(per_query)} curves, {len(s)} forecast per-k means",
            f"  90% credible intervals cover {s['credible_covered'].mean():.3f} of the curves' "
            "full-data means",
            f"  MAE {err.mean():.4f} nats; where the three-point curve exists "
            f"({has_three.mean():.0%} of the means): Bayes {err[has_three].mean():.4f}, "
            f"three-point {three[has_three].mean():.4f}, least squares {wls[has_three].mean():.4f} "
            f"(Bayes / better baseline {err[has_three].mean() / better:.2f}); least squares "
            f"everywhere {wls.mean():.4f}",
            f"  there, the law through the points with the curve's own full-data b (an oracle): "
            f"{oracle[has_three].mean():.4f} (least squares / oracle "
            f"{wls[has_three].mean() / oracle[has_three].mean():.2f})",
            "  there, the mean signed error (forecast - target, milli-nats): "
            + ", ".join(f"{name} {v:+.2f}" for name, v in signed.items()),
        ]
        if design.endswith("(independent errors)"):  # judged against the full-data means
            lines += head
            continue
        lines += [
            head[0],
            f"  90% predictive intervals cover {s['predictive_covered'].mean():.3f} of the "
            f"measured per-k means (median width {s['predictive_width'].median():.4f})",
            *head[1:],
            f"  per query {warm.median():.2f} s median, {warm.max():.2f} s max (first query, "
            f"compiling: {per_query['seconds'].iloc[0]:.1f} s); updates: ESS min "
            f"{per_query['ess'].min():.0f}, R-hat max {per_query['rhat'].max():.3f}, "
            f"{int(per_query['divergences'].sum())} divergences; points' distance from the "
            f"prior median {per_query['conflict'].median():.1f} sd",
            "  coverage (predictive) by k: "
            + ", ".join(
                f"{k:g}: {v:.2f}" for k, v in s.groupby("k")["predictive_covered"].mean().items()
            ),
            "  coverage (predictive) by method: "
            + ", ".join(
                f"{m}: {v:.2f}" for m, v in s.groupby("method")["predictive_covered"].mean().items()
            ),
        ]
    return lines


def population(name: str, table: pd.DataFrame, args) -> tuple[Posterior, str]:
    """The population's fit, or the one saved under --fits by an earlier run of the same spec,
    data and sampler settings (Fit.load refuses another spec or table)."""
    start = time.perf_counter()
    saved = None
    if args.fits is not None:
        stem = f"{name}_{Path(args.spec).stem}_seed{args.seed}_{args.chains}x{args.draws}.nc"
        saved = args.fits / stem
    if saved is not None and saved.exists():
        result, how = Fit.load(saved, table=table), f"read from {saved.name} (made in"
        how += f" {result.meta.wall_time_s:.0f} s)"
    else:
        result = fit(table, args.spec, seed=args.seed, chains=args.chains, tune=args.draws,
                     draws=args.draws)  # fmt: skip
        how = f"fit in {time.perf_counter() - start:.0f} s"
        if saved is not None:
            result.save(saved)
    # the paper's tables are simulated from the law: no real misfit to measure (their own is the
    # floor for every method), so the update takes MEANS_MISFIT; a fit saved before fits
    # measured it gets it here
    simulated = name == "paper"
    measured = None if simulated else result.meta.means_misfit or law_misfit.per_method(table)
    result.meta = dataclasses.replace(result.meta, means_misfit=measured)
    shown = ", ".join(f"{m} {v:.4f}" for m, v in sorted((measured or {}).items()))
    misfit = shown or f"none, the update's {MEANS_MISFIT}"
    line = (
        f"population {name}: {table.groupby(CURVE_KEYS).ngroups} curves, {len(table)} rows, "
        f"{how}, flag {result.flag}; the law's misfit of a per-k mean: {misfit}"
    )
    print(line, flush=True)
    return Posterior.from_fit(result), line


def sample_curves(table: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None:
        return table
    keys = table[CURVE_KEYS].drop_duplicates().sample(n, random_state=seed)
    return table.merge(keys, on=CURVE_KEYS)


def balanced_directions(
    lab: pd.DataFrame, path: Path
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """The lab's populations forecasting the other architecture's curves re-measured with the
    balanced sampler (data/lab/pipeline_balanced.toml: the same recipe, its own run), from all
    of its subsets and from each round's nine alone (a balanced design the size of the lab's);
    first the same bases' curves in lab.parquet (nine uniform subsets per k), side by side."""
    table = read_curves(path)
    rounds = balanced_round_tables(table, path.with_suffix(".provenance.json"))
    bases = table["base_model"].unique()
    directions = []
    for source, target in (("gpt2", "llama"), ("llama", "gpt2")):
        population = lab[lab["arch"] == source]
        designs = [
            ("uniform: lab.parquet, same bases", lab[lab["base_model"].isin(bases)]),
            ("balanced", table),
            *((f"balanced round {i}", t) for i, t in enumerate(rounds)),
        ]
        directions += [
            (f"{source} -> {target} ({label})", population, t[t["arch"] == target])
            for label, t in designs
        ]
    return directions


def balanced_round_tables(table: pd.DataFrame, provenance: Path) -> list[pd.DataFrame]:
    """The rows of each round of a balanced sweep: that round's M windows at every k (its
    sampler's settings from the table's provenance)."""
    sweep = json.loads(provenance.read_text())["pipeline"]["settings"]["sweep"]
    sampler, (seed,) = sweep["sampler"], sweep["seeds"]
    if sampler["name"] != "balanced":
        raise SystemExit(f"{provenance}: sampler {sampler['name']!r}, expected 'balanced'")
    pool = sorted({e for s in table["subset"] for e in subset_members(s)})
    ks = sorted(int(k) for k in table["k"].unique())
    rounds = samplers.balanced_rounds(pool, ks, int(sampler["n"]), int(seed))
    return [
        table[table["subset"].isin({format_subset(w) for k in ks for w in windows[k]})]
        for windows in rounds
    ]


def transfer_directions(
    seed: int, only: str | None, parser: argparse.ArgumentParser
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(name, the population's table, the table forecast) of every direction, of ``only``, or,
    for ``only = "balanced"``, of the directions on the balanced re-measure (an unknown name is
    the parser's error); lab -> smollm2 once its curves exist."""
    lab = read_curves(ROOT / "data" / "curves" / "lab.parquet")
    directions = [
        ("paper -> lab", simulate_curves(seed=seed), lab),
        ("gpt2 -> llama", lab[lab["arch"] == "gpt2"], lab[lab["arch"] == "llama"]),
        ("llama -> gpt2", lab[lab["arch"] == "llama"], lab[lab["arch"] == "gpt2"]),
    ]
    smollm2 = ROOT / "data" / "curves" / "smollm2.parquet"
    if smollm2.exists():
        directions.append(("lab -> smollm2", lab, read_curves(smollm2)))
    if only is None:
        return directions
    balanced = ROOT / "data" / "curves" / "lab_balanced.parquet"
    measured = balanced_directions(lab, balanced) if balanced.exists() else []
    if only == "balanced" and measured:
        return measured
    names = [name for name, _, _ in directions + measured]
    if only not in names:
        parser.error(
            f"--only {only!r}: expected one of {names}" + ", or 'balanced'" * bool(measured)
        )
    return [d for d in directions + measured if d[0] == only]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000, help="tune = draws, per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--curves", type=int, default=None, help="forecast a sample of curves")
    parser.add_argument(
        "--paper-curves", type=int, default=None,
        help="forecast a sample of this many lab curves from the paper's population",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--independent-errors", action="store_true",
        help="also forecast from points with each curve's own error (see forecast_curves)",
    )  # fmt: skip
    parser.add_argument(
        "--only",
        default=None,
        help="one direction, e.g. 'lab -> smollm2', or 'balanced': the directions on "
        "data/curves/lab_balanced.parquet (default: all but those)",
    )
    parser.add_argument("--spec", default="default", help="the populations' spec")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {RESULT}")
    parser.add_argument(
        "--fits", type=Path, default=None,
        help="save each population's fit here, and read it back on later runs of the same settings",
    )  # fmt: skip
    parser.add_argument(
        "--records", type=Path, default=None,
        help="also write every forecast's record (one row per curve, design and k) to this parquet",
    )  # fmt: skip
    args = parser.parse_args()

    start = time.perf_counter()
    directions = transfer_directions(args.seed, args.only, parser)
    smollm2 = ROOT / "data" / "curves" / "smollm2.parquet"
    out = args.out
    if out is None:
        slug = "" if args.only is None else "_" + re.sub(r"\W+", "_", args.only.split(" -> ")[-1])
        slug = slug.rstrip("_")
        slug += "" if args.spec == "default" else f"_{Path(args.spec).stem}"
        out = RESULT.with_name(f"transfer{slug}.txt")
    lines = [
        f"transfer: {args.spec} spec, populations fitted with {args.chains} chains x "
        f"{args.draws}/{args.draws}; points are per-k means corrected for the experts their "
        f"subsets hold; {LEVEL:.0%} intervals; seed {args.seed}",
        "",
    ]
    records = []
    fitted: dict[str, tuple[Posterior, str]] = {}  # the balanced directions share populations
    for name, source, targets in directions:
        source_name = name.split(" -> ")[0]
        if source_name not in fitted:
            fitted[source_name] = population(source_name, source, args)
        post, line = fitted[source_name]
        n = args.paper_curves if name.startswith("paper") and args.paper_curves else args.curves
        scores = forecast_curves(post, sample_curves(targets, n, args.seed), args.seed,
                                 args.independent_errors)  # fmt: skip
        records.append(scores.assign(direction=name))
        block = [line, *summary_lines(name, scores), ""]
        print("\n".join(block), flush=True)
        lines += block
    if not smollm2.exists() and args.only is None:
        lines.append("lab -> smollm2: not run (data/curves/smollm2.parquet does not exist yet)")
    lines.append(f"wall time: {time.perf_counter() - start:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text)
    if args.records is not None:
        with atomic_path(args.records) as tmp:
            pd.concat(records, ignore_index=True).to_parquet(tmp)


if __name__ == "__main__":
    main()
