"""Grouped K-fold cross-validation: the fallback where PSIS-LOO's Pareto k says it is unreliable.

Leaving out single rows is what PSIS-LOO approximates; when some rows are too influential (Pareto
k > 0.7) the approximation fails, and the honest alternative is to refit without them. Rows are
left out by whole curves (one family at one base size), so the score asks the question planning
asks: how well does the model predict a curve it has not seen, from the same family's other sizes
and the other families. Folds are stratified: each family's curves are dealt round the folds, so
every training set keeps every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import logsumexp

from mergelaw.bayes.fit import Fit, fit
from mergelaw.bayes.model import param_scope
from mergelaw.bayes.spec import ModelSpec, load_spec
from mergelaw.curves import FAMILY_COLUMNS
from mergelaw.errors import MergelawError


@dataclass(frozen=True)
class KFoldResult:
    spec: str
    folds: int
    elpd: float  # sum over rows of log p(y_i | rows outside y_i's fold)
    se: float
    pointwise: np.ndarray  # (n_rows,) in the table's row order
    fold_of_row: np.ndarray  # (n_rows,)
    flags: list[str]  # each fold fit's diagnostics flag

    @property
    def ok(self) -> bool:
        return all(flag == "ok" for flag in self.flags)


def assign_folds(table: pd.DataFrame, folds: int, seed: int = 0) -> np.ndarray:
    """Fold of every row: each family's curves (sizes) dealt round the folds, staggered."""
    keys = table[[*FAMILY_COLUMNS, "n_params"]].drop_duplicates()
    keys = keys.sort_values([*FAMILY_COLUMNS, "n_params"]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    smallest = keys.groupby(list(FAMILY_COLUMNS)).size().min()
    if folds < 2 or smallest < folds:
        raise MergelawError(
            f"grouped k-fold needs 2 <= folds <= the fewest sizes of any family ({smallest}); "
            f"got folds = {folds}"
        )
    # Sizes in a shuffled order, each family's deal shifted by one: in any fold, families leave out
    # different sizes, so (with two or more families) every size stays in every training set.
    sizes = np.sort(keys["n_params"].unique())
    rank = dict(zip(rng.permutation(sizes), range(len(sizes))))
    family = keys.groupby(list(FAMILY_COLUMNS), sort=True).ngroup().to_numpy()
    fold = (np.array([rank[n] for n in keys["n_params"]]) + family) % folds
    keys["fold"] = fold
    merged = table[[*FAMILY_COLUMNS, "n_params"]].merge(
        keys, on=[*FAMILY_COLUMNS, "n_params"], how="left"
    )
    return merged["fold"].to_numpy(int)


def heldout_log_density(trained: Fit, heldout: pd.DataFrame, draws: int = 1000) -> np.ndarray:
    """log p(y_i | training rows) for each held-out row: the fold fit's posterior averaged."""
    obs = trained.observations_for(heldout.reset_index(drop=True), new_curves=True)
    y = obs.y
    mean, scale = trained.predictive_draws(draws, obs)
    log_lik = stats.norm.logpdf(y, mean, scale)  # (S, n)
    return logsumexp(log_lik, axis=0) - np.log(log_lik.shape[0])


def grouped_kfold(
    table: pd.DataFrame,
    spec: ModelSpec | str = "default",
    *,
    folds: int = 5,
    seed: int = 0,
    **fit_settings,
) -> KFoldResult:
    """Refit ``spec`` ``folds`` times, each time without one fold of curves, and score the
    held-out rows. ``fit_settings`` go to ``fit`` (draws, tune, chains, target_accept, ...)."""
    spec = load_spec(spec) if isinstance(spec, str) else spec
    drawable = {"gap"}  # per curve, but a held-out curve's is drawn from its population
    per_curve = {param_scope(spec, name) for name in spec.required_params() if name not in drawable}
    if "curve" in per_curve:
        raise MergelawError(
            f"spec {spec.name!r} has parameters per curve; a held-out curve has none to predict "
            "with (grouped k-fold needs family-level parameters)"
        )
    table = table.reset_index(drop=True)
    fold_of_row = assign_folds(table, folds, seed)
    pointwise = np.empty(len(table))
    flags = []
    for j in range(folds):
        held = fold_of_row == j
        source = f"training rows of fold {j + 1} of {folds}"
        trained = fit(table[~held], spec, seed=seed + 1 + j, source=source, **fit_settings)
        flags.append(trained.flag)
        pointwise[held] = heldout_log_density(trained, table[held])
    return KFoldResult(
        spec=spec.name,
        folds=folds,
        elpd=float(pointwise.sum()),
        se=float(np.sqrt(len(pointwise) * np.var(pointwise))),
        pointwise=pointwise,
        fold_of_row=fold_of_row,
        flags=flags,
    )


def compare_kfold(results: list[KFoldResult]) -> pd.DataFrame:
    """Rank k-fold scores of several specs on the same table; differences with their se."""
    best = max(results, key=lambda r: r.elpd)
    rows = []
    for r in results:
        diff = r.pointwise - best.pointwise
        rows.append(
            {
                "spec": r.spec,
                "elpd_kfold": r.elpd,
                "se": r.se,
                "elpd_diff": float(diff.sum()),
                "dse": float(np.sqrt(len(diff) * np.var(diff))),
                "fold_fits_ok": r.ok,
            }
        )
    return pd.DataFrame(rows).sort_values("elpd_kfold", ascending=False).reset_index(drop=True)
