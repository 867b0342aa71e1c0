"""Choosing among fits of one table by PSIS-LOO; where LOO is unreliable (Pareto k above
diagnostics.MAX_PARETO_K), grouped k-fold (mergelaw.bayes.kfold) is the fallback."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mergelaw.bayes import diagnostics as diag
from mergelaw.errors import MergelawError


def loo_scores(fits: Mapping[str, object]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """PSIS-LOO of each fit (by name: elpd_loo, se, p_loo, Pareto k counts, spec, flag) and,
    for two or more, ArviZ's ranking. Fits of different data are refused: their elpds are not
    comparable."""
    hashes = {f.meta.data_hash for f in fits.values()}
    if len(hashes) > 1:
        raise MergelawError(f"the fits were made on different data ({', '.join(sorted(hashes))})")
    scores = pd.DataFrame(
        [
            {"fit": name, "spec": f.spec.name, **diag.loo(f.idata), "flag": f.flag}
            for name, f in fits.items()
        ]
    )
    comparison = diag.compare({n: f.idata for n, f in fits.items()}) if len(fits) > 1 else None
    return scores, comparison


def unreliable_specs(scores: pd.DataFrame) -> list[str]:
    """The specs of the fits whose LOO has observations with a high Pareto k, once each."""
    return list(dict.fromkeys(scores.loc[scores["n_high_pareto_k"] > 0, "spec"]))
