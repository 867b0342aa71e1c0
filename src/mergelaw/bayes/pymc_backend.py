"""PyMC translation of the model program. PyMC-version-specific calls live here and only here."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import pymc as pm
import pytensor.tensor as pt

from mergelaw.bayes.data import ModelData
from mergelaw.bayes.model import merging_law
from mergelaw.bayes.spec import ModelSpec

warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")


@dataclass
class PymcBackend:
    """Adapter: each declaration becomes a PyMC variable with named dims."""

    math = pt

    def normal(self, name, loc, scale, dims=()):
        return pm.Normal(name, loc, scale, dims=dims or None)

    def half_normal(self, name, scale, dims=()):
        return pm.HalfNormal(name, scale, dims=dims or None)

    def gamma(self, name, shape, rate, dims=()):
        return pm.Gamma(name, alpha=shape, beta=rate, dims=dims or None)

    def deterministic(self, name, value, dims=()):
        return pm.Deterministic(name, value, dims=dims or None)

    def likelihood(self, name, loc, scale, observed):
        return pm.Normal(name, loc, scale, observed=observed, dims="obs")

    def potential(self, name, log_density):
        return pm.Potential(name, log_density)

    def segment_sum(self, values, index, n):
        return pt.inc_subtensor(pt.zeros(n)[index], values)


def build_model(spec: ModelSpec, data: ModelData, observed: bool = True) -> pm.Model:
    with pm.Model(coords=data.coords) as model:
        merging_law(spec, data, PymcBackend(), y=data.y if observed else None)
    return model


@dataclass
class PymcRun:
    idata: object  # arviz.InferenceData
    wall_time: float


def sample(
    spec: ModelSpec,
    data: ModelData,
    *,
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    target_accept: float,
    max_tree_depth: int,
    progress: bool,
    sampler: str = "pymc",
) -> PymcRun:
    """NUTS via PyMC's own sampler, or nutpie / numpyro through pm.sample's nuts_sampler."""
    model = build_model(spec, data)
    kwargs = {}
    if sampler == "pymc":
        kwargs["max_treedepth"] = max_tree_depth
        # PyMC forks its chain workers. If JAX is loaded, Python warns that forking a process
        # with JAX's threads may deadlock; the workers never call JAX, so fork stays (forkserver
        # would need an importable __main__, which notebooks and stdin scripts lack).
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=min(chains, 2),
            random_seed=seed,
            target_accept=target_accept,
            nuts_sampler=sampler,
            progressbar=progress,
            idata_kwargs={"log_likelihood": False},  # made per row after sampling (fit)
            compute_convergence_checks=False,
            **kwargs,
        )
    return PymcRun(idata, time.perf_counter() - start)
