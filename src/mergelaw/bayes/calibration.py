"""Simulation-based calibration (Talts et al. 2018) and interval coverage of the model.

Draw parameters and a table of losses from the prior (on a template table's structure), fit the
simulated table, and record where the true value falls among the posterior draws. If the sampler
and the model are right, the ranks of every parameter are uniform, and 90% intervals of the group
parameters cover the truth 90% of the time (benchmarks/sbc.py; about 30 s per simulated table of
the three-size template on 2 cores, half that at one size).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd
from scipy import stats

from mergelaw.bayes import numpyro_backend
from mergelaw.bayes.data import ModelData
from mergelaw.bayes.fit import target_accept_of
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

    def first(self, n_sims: int) -> CalibrationResult:
        """The result of the first ``n_sims`` simulations alone (what a shorter run gives)."""
        return CalibrationResult(
            self.ranks[self.ranks["sim"] < n_sims],
            self.coverage[self.coverage["sim"] < n_sims],
            self.n_draws,
            self.divergent_share,
        )

    def coverage_by_param(self) -> pd.Series:
        return self.coverage.groupby("param")["covered"].mean()


#: The spec the slow SBC tests and benchmarks/sbc.py calibrate (benchmarks/results/sbc.txt and
#: sbc_one_size.txt: the template at three sizes, and at one size, where the spec drops its size
#: laws).
SBC_SPEC = "default"
#: Sampler settings of the SBC runs (benchmarks/sbc.py and the slow test; 100 thinned draws).
SBC_SETTINGS = {"draws": 300, "tune": 300, "chains": 2, "thin": 6}
#: The slow test refits this many tables: the benchmark's run, same seeds (20 left the smallest
#: rank p-value at 0.002: too close to any threshold to be a test).
SLOW_TEST_SIMS = 40


def simulation_seed(seed: int, sim: int) -> int:
    """The seed of simulation ``sim`` (its prior draw; its sampler takes the next integer)."""
    return seed * 1_000_003 + 2 * sim


def population_names(dims: dict[str, list[str]]) -> list[str]:
    """Sites shared by all families (pooled means and scales, the nugget(s), the spread's size
    slope, the floor deviations' scale), from a model's site dims (``numpyro_backend.model_fn``)."""
    shared = ([], ["merge_method"])
    return [
        name
        for name, site_dims in dims.items()
        if site_dims in shared and not name.endswith("_log") and name != "loss"
    ]


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
    target_accept: float | None = None,
) -> CalibrationResult:
    """Fit ``n_sims`` tables drawn from the prior on ``data``'s structure; ranks and coverage.
    ``target_accept`` None: what a fit uses (the spec's setting, else the package default)."""
    mcmc, _, _ = numpyro_backend.make_mcmc(
        spec,
        data,
        draws=draws,
        tune=tune,
        chains=chains,
        target_accept=target_accept_of(spec, target_accept),
        max_tree_depth=10,
        progress=False,
    )
    model, dims = numpyro_backend.model_fn(spec, data)
    names = population_names(dims)
    tail = (1.0 - level) / 2.0
    ranks, coverage, divergent = [], [], []
    for sim in range(n_sims):
        # each simulation has its own seeds, so a shorter run is a prefix of a longer one
        truth = numpyro_backend.prior_draw(model, simulation_seed(seed, sim))
        reported = [
            n
            for n in REPORTED
            if n in truth and truth[n].ndim == 1 and truth[n].shape[0] == len(data.families)
        ]
        mcmc.run(
            jax.random.PRNGKey(simulation_seed(seed, sim) + 1),
            y=truth["loss"],
            extra_fields=numpyro_backend.EXTRA_FIELDS,
        )
        posterior = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        divergent.append(float(np.mean(mcmc.get_extra_fields()["diverging"])))
        # Each run compiles its chains anew; without freeing that code, a long SBC run exhausts
        # the process's memory maps (LLVM "Cannot allocate memory" after about 40 tables).
        jax.clear_caches()
        gc.collect()
        for name in names:
            kept = posterior[name][::thin].reshape(len(posterior[name][::thin]), -1)
            true = np.reshape(truth[name], -1)
            for i in range(true.size):  # one rank per element (a nugget per merge method)
                label = name if true.size == 1 else f"{name}[{i}]"
                rank = int(np.sum(kept[:, i] < true[i]))
                ranks.append({"sim": sim, "param": label, "rank": rank})
        for name in reported:
            lo, hi = np.quantile(posterior[name], [tail, 1.0 - tail], axis=0)
            inside = (lo <= truth[name]) & (truth[name] <= hi)
            for family, covered in zip(data.families["label"], inside):
                coverage.append(
                    {"sim": sim, "family": family, "param": name, "covered": bool(covered)}
                )
    n_kept = len(range(0, draws * chains, thin))
    return CalibrationResult(
        pd.DataFrame(ranks), pd.DataFrame(coverage), n_kept, float(np.mean(divergent))
    )
