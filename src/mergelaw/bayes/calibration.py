"""Simulation-based calibration (Talts et al. 2018) and interval coverage of the model.

Draw parameters and a table of losses from the prior (on a template table's structure), fit the
simulated table, and record where the true value falls among the posterior draws. Not yet run at
scale: about 30 s per simulated table on 2 cores for a 4-family template. If the sampler
and the model are right, the ranks of every parameter are uniform, and 90% intervals of the group
parameters cover the truth 90% of the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd
from scipy import stats

from mergelaw.bayes import numpyro_backend
from mergelaw.bayes.data import ModelData
from mergelaw.bayes.model import REPORTED
from mergelaw.bayes.spec import ModelSpec


@dataclass(frozen=True)
class CalibrationResult:
    ranks: pd.DataFrame  # one row per (simulation, population parameter): rank in 0..n_draws
    coverage: pd.DataFrame  # one row per (simulation, family, law parameter): covered or not
    n_draws: int  # thinned posterior draws each rank is counted among
    divergent_share: float

    def uniformity(self, bins: int = 10) -> pd.DataFrame:
        """Chi-square test of uniform ranks per population parameter (p-value; high is good)."""
        rows = []
        for param, group in self.ranks.groupby("param"):
            edges = np.linspace(0, self.n_draws + 1, bins + 1)
            counts, _ = np.histogram(group["rank"], bins=edges)
            result = stats.chisquare(counts)
            rows.append(
                {
                    "param": param,
                    "n": len(group),
                    "chi2": result.statistic,
                    "p_value": result.pvalue,
                }
            )
        return pd.DataFrame(rows)

    def coverage_by_param(self) -> pd.Series:
        return self.coverage.groupby("param")["covered"].mean()


#: The table structure SBC draws its tables on: 3 sizes x 3 domains x 2 methods = 6 families,
#: k = 1..9, 3 subsets per k (486 rows): small enough to refit a hundred times.
SBC_TEMPLATE = {
    "sizes_b": (0.5, 3.0, 14.0),
    "domains": ("biology", "code", "physics"),
    "methods": ("average", "ties"),
    "subsets_per_k": 3,
}


def sbc_template() -> ModelData:
    """The template's structure (its simulated losses are replaced by prior draws)."""
    from mergelaw.bayes.data import prepare
    from mergelaw.simulate import simulate_curves

    return prepare(simulate_curves(**SBC_TEMPLATE, seed=0))


def population_names(spec: ModelSpec) -> list[str]:
    """Sites shared by all families: pooled means and scales, the nugget and the spread slope."""
    names = ["nugget", "sigma_slope"]
    if spec.pool:
        for p in spec.required_params():
            names += [f"{p}_mean", f"{p}_scale"]
    return names


def calibrate(
    spec: ModelSpec,
    data: ModelData,
    *,
    n_sims: int,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    level: float = 0.9,
    seed: int = 0,
    target_accept: float = 0.99,
) -> CalibrationResult:
    """Fit ``n_sims`` tables drawn from the prior on ``data``'s structure; ranks and coverage."""
    prior = numpyro_backend.prior_predictive(spec, data, n_sims, seed)
    mcmc, _, _ = numpyro_backend.make_mcmc(
        spec,
        data,
        draws=draws,
        tune=tune,
        chains=chains,
        target_accept=target_accept,
        max_tree_depth=10,
        progress=False,
    )
    names = population_names(spec)
    reported = [
        n
        for n in REPORTED
        if n in prior and prior[n].ndim == 2 and prior[n].shape[1] == len(data.families)
    ]
    tail = (1.0 - level) / 2.0
    ranks, coverage, divergent = [], [], []
    for sim in range(n_sims):
        mcmc.run(
            jax.random.PRNGKey(seed + 1 + sim),
            y=prior["loss"][sim],
            extra_fields=numpyro_backend.EXTRA_FIELDS,
        )
        posterior = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        divergent.append(float(np.mean(mcmc.get_extra_fields()["diverging"])))
        for name in names:
            kept = posterior[name][::thin]
            ranks.append({"sim": sim, "param": name, "rank": int(np.sum(kept < prior[name][sim]))})
        for name in reported:
            lo, hi = np.quantile(posterior[name], [tail, 1.0 - tail], axis=0)
            truth = prior[name][sim]
            for family, covered in zip(data.families["label"], (lo <= truth) & (truth <= hi)):
                coverage.append(
                    {"sim": sim, "family": family, "param": name, "covered": bool(covered)}
                )
    n_kept = len(range(0, draws * chains, thin))
    return CalibrationResult(
        pd.DataFrame(ranks), pd.DataFrame(coverage), n_kept, float(np.mean(divergent))
    )
