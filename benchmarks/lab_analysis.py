"""How well the paper's law describes our measured curves: the lab's tiny bases
(data/curves/lab.parquet) and the real LM (data/curves/smollm2.parquet, SmolLM2-135M).

Four checks, each against what the paper reports:
1. per-curve R^2 of floor + A/(k+b) by weighted least squares (the paper: R^2 > 0.98), and of the
   joint law over the base sizes of each (arch, method, domain) family;
2. the share of the k=1 -> k=M gain reached by k = 5 and 6 (the paper: ~85% and ~90%), measured
   from the per-k means and implied by each curve's fitted b;
3. spread across subsets against k (the paper: variance shrinking like 1/k), next to the 1/k and
   the finite-population (M-k)/(k(M-1)) predictions for subsets drawn without replacement;
4. the floor against N: the loss at k = M per base size, and the joint fit's L* + B N^-beta.

A table of one or two base sizes skips the size-law parts of 1 and 4. A method measured at several
settings (TIES at two densities) is reported per setting. The last section puts every table's
headline numbers side by side with the paper's (its joint fits' R^2 from data/paper).

Prints the tables and writes them to benchmarks/results/lab_analysis.txt.

    python benchmarks/lab_analysis.py [--curves data/curves/lab.parquet --curves ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mergelaw.bayes.data import setting_labels
from mergelaw.curves import CURVE_COLUMNS, FAMILY_COLUMNS, aggregate_curves, read_curves
from mergelaw.io import atomic_path
from mergelaw.law import floor_loss, gain_fraction, size_in_billions, spread_factor
from mergelaw.least_squares import fit_curve, fit_joint

ROOT = Path(__file__).resolve().parents[1]


def stratified_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per-(curve, k) means with the in-domain share fixed at its expectation k/M.

    A curve's subset mean mixes subsets that hold the evaluated domain's own expert (their loss
    rises with k as its weight 1/k thins out) and subsets that don't (falling). Nine uniform
    draws at a k can hold 2/9 or 4/9 in-domain subsets by chance, which moves the mean; weighting
    the two strata by k/M and 1 - k/M removes that noise (NaN where a needed stratum is empty).
    """
    keys = [*CURVE_COLUMNS, "k"]
    strata = table.groupby([*keys, "in_domain"])["loss"].mean().unstack("in_domain")
    m = table.groupby(keys)["pool_size"].max()
    share = strata.index.get_level_values("k").to_numpy(float) / m.to_numpy(float)
    inside = strata.get(True, pd.Series(np.nan, index=strata.index)).to_numpy()
    outside = strata.get(False, pd.Series(np.nan, index=strata.index)).to_numpy()
    mixed = share * inside + (1 - share) * np.where(share == 1, 0.0, outside)
    out = m.rename("pool_size").reset_index()
    out["mean"] = mixed
    return out.dropna(subset=["mean"])


def curve_fits(means: pd.DataFrame, stratified: pd.DataFrame) -> pd.DataFrame:
    """One row per curve: its least-squares fit, R^2 and measured gain shares."""
    rows = []
    strata = dict(list(stratified.groupby(list(CURVE_COLUMNS), sort=True)))
    for key, g in means.groupby(list(CURVE_COLUMNS), sort=True):
        g = g.sort_values("k")
        k, y = g["k"].to_numpy(float), g["mean"].to_numpy(float)
        fit = fit_curve(k, y)
        s = strata[key].sort_values("k")
        fit_strat = fit_curve(s["k"].to_numpy(float), s["mean"].to_numpy(float))
        m = int(g["pool_size"].max())
        drop = y[0] - y[-1]
        measured = {
            f"measured_{j}": (y[0] - y[j - 1]) / drop if drop > 0 else np.nan for j in (5, 6)
        }
        law = {f"law_{j}": float(gain_fraction(j, fit.params["b"], m)) for j in (5, 6)}
        rows.append({**dict(zip(CURVE_COLUMNS, key)), "r2": fit.r2, "r2_stratified": fit_strat.r2,
                     "falls": drop > 0, "A_at_zero": "A" in fit.at_bound, "b": fit.params["b"],
                     "M": m,
                     **measured, **law})  # fmt: skip
    return pd.DataFrame(rows)


def family_fits(means: pd.DataFrame) -> pd.DataFrame:
    """One row per (arch, method, domain) family: the joint law over base sizes."""
    rows = []
    for key, g in means.groupby(list(FAMILY_COLUMNS), sort=True):
        n = size_in_billions(g["n_params"].to_numpy(float))
        fit = fit_joint(n, g["k"].to_numpy(float), g["mean"].to_numpy(float))
        p = fit.params
        sizes = np.sort(g["n_params"].unique())
        floors = floor_loss(size_in_billions(sizes.astype(float)), p["L_star"], p["B"], p["beta"])
        rows.append({**dict(zip(FAMILY_COLUMNS, key)), "r2": fit.r2, "beta": p["beta"],
                     "gamma": p["gamma"], "at_bound": ",".join(fit.at_bound),
                     **{f"floor_{int(s)}": f for s, f in zip(sizes, floors)}})  # fmt: skip
    return pd.DataFrame(rows)


def spread_by_k(table: pd.DataFrame, means: pd.DataFrame) -> pd.DataFrame:
    """Median over curves of var_k / var_1 (across subsets), against 1/k and (M-k)/(k(M-1))."""
    v = means.dropna(subset=["var"]).copy()
    first = v[v["k"] == 1].set_index(list(CURVE_COLUMNS))["var"]
    v["ratio"] = (
        v["var"].to_numpy()
        / first.reindex(pd.MultiIndex.from_frame(v[list(CURVE_COLUMNS)])).to_numpy()
    )
    out = v.groupby(["method", "k"])["ratio"].median().unstack("method")
    m = int(table["pool_size"].max())
    k = out.index.to_numpy(float)
    out.insert(0, "fpc (M-k)/(k(M-1))", spread_factor("finite_pool", k, np.full_like(k, m)))
    out.insert(0, "1/k", 1.0 / k)
    return out


def spread_slopes(means: pd.DataFrame, k_max: int) -> pd.Series:
    """Median over curves of the slope of log var against log k, for k = 1..k_max."""
    v = means[(means["k"] <= k_max) & (means["var"] > 0)]
    slopes = v.groupby(list(CURVE_COLUMNS)).apply(
        lambda g: np.polyfit(np.log(g["k"]), np.log(g["var"]), 1)[0], include_groups=False
    )
    return slopes.groupby(level="method").median()


def with_setting_names(table: pd.DataFrame) -> pd.DataFrame:
    """Methods measured at several settings renamed per setting ('ties[density=0.5]')."""
    return table.assign(method=setting_labels(table))


def is_ties(method: str) -> bool:
    return method.startswith("ties")


def report(curves_path: Path) -> tuple[str, dict]:
    """The four checks for one table, as text, and its headline numbers for the comparison."""
    table = with_setting_names(read_curves(curves_path))
    means = aggregate_curves(table)
    curves = curve_fits(means, stratified_means(table))
    size_law = table.groupby("arch")["n_params"].nunique().min() >= 3
    families = family_fits(means) if size_law else None
    archs = table["arch"].nunique()
    lines = [f"lab_analysis: {curves_path.name}, {len(table)} rows, {len(curves)} curves "
             f"({archs} archs x {table['base_model'].nunique() // archs}"
             f" sizes x {table['method'].nunique()} methods x {table['eval_domain'].nunique()} "
             f"domains), k = 1..{table['k'].max()}", ""]  # fmt: skip
    pd.set_option("display.width", 160)
    pd.set_option("display.max_columns", 30)

    lines.append("1. Per-curve least squares, floor + A/(k+b) on the subset means (weights k)")
    by = curves.groupby(["method", "arch"])
    r2 = pd.DataFrame({
        "curves": by.size(),
        "falls (L1 > LM)": by["falls"].mean(),
        "A at 0": by["A_at_zero"].mean(),
        "R2 median": by["r2"].median(),
        "R2 min": by["r2"].min(),
        "R2 >= 0.98": by["r2"].apply(lambda r: float((r >= 0.98).mean())),
        "R2 strat. median": by["r2_stratified"].median(),
        "R2 strat. >= 0.98": by["r2_stratified"].apply(lambda r: float((r >= 0.98).mean())),
    })  # fmt: skip
    lines += [
        r2.round(3).to_string(),
        "   'strat.': the same fit on means with the in-domain share fixed at k/M",
        "   Median R2 per evaluated domain (every method but TIES; raw / stratified):",
    ]
    law_like = curves[~curves["method"].map(is_ties)]
    per_domain = law_like.groupby("eval_domain")[["r2", "r2_stratified"]].median().T.round(3)
    lines += [per_domain.to_string(), ""]
    if families is not None:
        fam = families.groupby(["method", "arch"])
        lines.append("   Joint law over the 3 base sizes per (arch, method, domain) family")
        joint = pd.DataFrame({"families": fam.size(), "R2 median": fam["r2"].median(),
                              "R2 min": fam["r2"].min(), "beta median": fam["beta"].median(),
                              "gamma median": fam["gamma"].median()})  # fmt: skip
        lines += [joint.round(3).to_string(), ""]
    else:
        lines += ["   (one base size per architecture: no joint law over sizes)", ""]

    lines.append("2. Share of the k=1 -> k=M gain reached at k = 5, 6 (curves that fall; median)")
    falling = curves[curves["falls"]]
    share = falling.groupby("method")[["measured_5", "measured_6", "law_5", "law_6"]].median()
    share.insert(0, "curves", falling.groupby("method").size())
    lines += [share.round(3).to_string(), "   (the paper: ~0.85 at k = 5 and ~0.90 at k = 6)", ""]
    headline = {
        "curves": len(curves),
        "R2 median (non-TIES)": law_like["r2"].median(),
        "R2 strat. median (non-TIES)": law_like["r2_stratified"].median(),
        "R2 >= 0.98 (non-TIES)": float((law_like["r2"] >= 0.98).mean()),
        "falling curves": float(curves["falls"].mean()),
        "gain share k=5": falling.loc[~falling["method"].map(is_ties), "measured_5"].median(),
        "gain share k=6": falling.loc[~falling["method"].map(is_ties), "measured_6"].median(),
    }

    lines.append("3. Spread across subsets: median over curves of var_k / var_1")
    lines += [spread_by_k(table, means).round(3).to_string()]
    slopes = spread_slopes(means, 7)
    lines += ["   slope of log var on log k, k = 1..7 (1/k gives -1): "
              + ", ".join(f"{m} {s:.2f}" for m, s in slopes.items()), ""]  # fmt: skip
    headline["var slope (non-TIES)"] = slopes[[m for m in slopes.index if not is_ties(m)]].median()
    if families is None:
        lines += ["4. Floor against N: one base size, nothing to compare", ""]
        return "\n".join(lines), headline

    lines.append("4. Floor against N: loss at k = M (mean over domains) and the joint fits' floor")
    top = means[means["k"] == means["pool_size"]]
    at_m = top.groupby(["arch", "method", "n_params"])["mean"].mean().unstack("n_params")
    floor_cols = [c for c in families.columns if c.startswith("floor_")]
    floors = families.groupby(["arch", "method"])[floor_cols].mean()
    floors.columns = [int(c.removeprefix("floor_")) for c in floors.columns]
    for arch in sorted(table["arch"].unique()):
        sizes = sorted(table.loc[table["arch"] == arch, "n_params"].unique())
        both = pd.concat(
            {"L(k=M)": at_m.loc[arch, sizes], "floor L*+B N^-beta": floors.loc[arch, sizes]},
            axis=1,
        )
        lines += [f"   {arch} (columns: N = total parameters)", both.round(3).to_string()]
    per_domain = top.groupby(["arch", "method", "eval_domain", "n_params"])["mean"].mean()
    rises = per_domain.groupby(level=[0, 1, 2]).apply(lambda x: bool((np.diff(x) > 0).any()))
    rising = rises[rises].reset_index()
    lines.append(f"   (arch, method, domain) whose L(k=M) does not fall with N: {len(rising)} of "
                 f"{len(rises)}: " + "; ".join(
                     f"{a}/{d}" for (a, d), _ in rising.groupby(["arch", "eval_domain"])
                 ))  # fmt: skip
    lines.append("")
    return "\n".join(lines), headline


def paper_headline() -> dict:
    """The paper's numbers on the same scale: its joint fits' R^2 (data/paper/joint_fits.csv,
    Average/TA/TIES over 9 domains), its reported gain shares and 1/k variance."""
    fits = pd.read_csv(ROOT / "data" / "paper" / "joint_fits.csv")
    non_ties = fits[fits["method"] != "ties"]
    return {"curves": len(fits), "R2 median (non-TIES)": non_ties["R2"].median(),
            "R2 strat. median (non-TIES)": np.nan,
            "R2 >= 0.98 (non-TIES)": float((non_ties["R2"] >= 0.98).mean()),
            "falling curves": 1.0, "gain share k=5": 0.85, "gain share k=6": 0.90,
            "var slope (non-TIES)": -1.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--curves",
        type=Path,
        action="append",
        help="a curves table (repeat for several; default: the shipped ones)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "lab_analysis.txt"
    )
    args = parser.parse_args()
    shipped = [ROOT / "data" / "curves" / f"{n}.parquet" for n in ("lab", "smollm2")]
    paths = args.curves or [p for p in shipped if p.is_file()]
    texts, side = [], {}
    for path in paths:
        text, headline = report(path)
        texts.append(text)
        side[path.stem] = headline
    side["paper (its fits)"] = paper_headline()
    texts.append("Side by side (non-TIES curves; the paper's R2 is its joint fits', the rest as it "
                 "reports them)\n" + pd.DataFrame(side).round(3).to_string() + "\n")  # fmt: skip
    text = "\n".join(texts)
    print(text)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text + "\n")


if __name__ == "__main__":
    main()
