"""NumPyro translation of the model program, and NUTS with parallel chains over XLA devices."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpyro

# One XLA host device per chain, so chains run in parallel; effective only before jax starts its
# backend, which is why this module sets it on import (tests set XLA_FLAGS themselves).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    numpyro.set_host_device_count(4)

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, Predictive, init_to_median

from mergelaw.bayes.data import ModelData
from mergelaw.bayes.model import merging_law
from mergelaw.bayes.spec import ModelSpec

# Float64: the nugget can be a thousandth of the loss scale, and both backends must agree closely.
numpyro.enable_x64()


@dataclass
class NumpyroBackend:
    """Adapter: each declaration becomes a numpyro site; dims are recorded for ArviZ."""

    coords: dict[str, list[str]]
    dims: dict[str, list[str]] = field(default_factory=dict)
    math = jnp

    def _shape(self, dims: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in dims)

    def normal(self, name, loc, scale, dims=()):
        self.dims[name] = list(dims)
        d = dist.Normal(loc, scale)
        shape = self._shape(dims)
        return numpyro.sample(name, d.expand(shape) if shape else d)

    def half_normal(self, name, scale, dims=()):
        self.dims[name] = list(dims)
        d = dist.HalfNormal(scale)
        shape = self._shape(dims)
        return numpyro.sample(name, d.expand(shape) if shape else d)

    def gamma(self, name, shape, rate, dims=()):
        self.dims[name] = list(dims)
        d = dist.Gamma(shape, rate)
        size = self._shape(dims)
        return numpyro.sample(name, d.expand(size) if size else d)

    def deterministic(self, name, value, dims=()):
        self.dims[name] = list(dims)
        return numpyro.deterministic(name, value)

    def likelihood(self, name, loc, scale, observed):
        self.dims[name] = ["obs"]
        return numpyro.sample(name, dist.Normal(loc, scale), obs=observed)

    def potential(self, name, log_density):
        return numpyro.factor(name, log_density)

    def segment_sum(self, values, index, n):
        return jax.ops.segment_sum(values, index, num_segments=n)


def model_fn(spec: ModelSpec, data: ModelData):
    """A numpyro model function ``model(y=None)`` for ``spec`` on ``data``'s structure, and the
    dims of its sites. The losses are an argument, so one sampler object serves many tables of
    the same structure (simulation-based calibration refits many)."""
    backend = NumpyroBackend(coords=data.coords)

    def model(y=None):
        merging_law(spec, data, backend, y=y)

    # Trace once so the dims are known before sampling.
    numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    return model, backend.dims


EXTRA_FIELDS = ("diverging", "num_steps", "energy")


@dataclass
class NumpyroRun:
    mcmc: MCMC
    dims: dict[str, list[str]]
    wall_time: float
    chain_method: str
    restarts: tuple[str, ...] = ()  # one line per chain restarted (``stuck_chains``)


#: A chain is stuck where its draws' mean energy sits this many energy sds (the chains' median)
#: above the lowest chain's while it takes more leapfrog steps a draw than twice that chain does
#: (a smaller step: a narrower region, so neither its density nor its volume holds mass worth a
#: draw). On the paper's table (seed 0) one chain of four sat 1,847 nats above the others (64
#: sd), 1,023 steps on every draw (the others 31-64), its average nugget at 6e-6 (13 prior sd
#: below the prior's mode) and its floor spread at 0.37 (the others 0.0008): R-hat 1.59, where
#: seed 1's four chains all agreed.
STUCK_ENERGY_SDS = 20.0
STUCK_STEPS_RATIO = 2.0


def dense_blocks(dims: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Sites NUTS adapts one dense mass matrix for, where their posterior is a ridge a diagonal
    one crosses slowly: each merge method's membership decay and its curves' gaps (rows at
    k > 1 measure gap * k^-decay, so a larger decay with larger gaps fits them alike). On the
    paper's table, where a curve holds its own expert at k = 1 in 5 of 9, log decay[average]
    and its curves' mean log |gap| correlated 0.71 across draws: R-hat 1.015, ESS 615."""
    sites = [f"{name}_{form}" for name in ("decay", "gap") for form in ("raw", "z")]
    present = tuple(site for site in sites if site in dims)  # as the table made them
    return [present] if len(present) == 2 else []


def make_mcmc(
    spec: ModelSpec,
    data: ModelData,
    *,
    draws: int,
    tune: int,
    chains: int,
    target_accept: float,
    max_tree_depth: int,
    progress: bool,
) -> tuple[MCMC, dict[str, list[str]], str]:
    """A NUTS sampler for ``spec`` on ``data``'s structure; run it with ``y=`` losses."""
    model, dims = model_fn(spec, data)
    chain_method = "parallel" if jax.local_device_count() >= chains else "sequential"
    kernel = NUTS(
        model,
        dense_mass=dense_blocks(dims) or False,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        init_strategy=init_to_median(num_samples=15),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=tune,
        num_samples=draws,
        num_chains=chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    return mcmc, dims, chain_method


def sample(spec: ModelSpec, data: ModelData, *, seed: int, **settings) -> NumpyroRun:
    """Sample the posterior of ``spec`` given ``data``'s losses (settings: see make_mcmc). A
    chain stuck far from the others (``stuck_chains``) is restarted from a healthy chain's last
    state, and every chain draws again; the run says so in ``restarts``."""
    mcmc, dims, chain_method = make_mcmc(spec, data, **settings)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), y=data.y, extra_fields=EXTRA_FIELDS)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    energy = np.asarray(extra["energy"])
    stuck = stuck_chains(energy, np.asarray(extra["num_steps"]))
    restarts = ()
    if stuck:
        healthy = [c for c in range(len(energy)) if c not in stuck]
        donor = {c: healthy[i % len(healthy)] for i, c in enumerate(stuck)}
        restarts = tuple(_restart_line(energy, c, donor[c], mcmc.num_samples) for c in stuck)
        source = np.array([donor.get(c, c) for c in range(len(energy))])
        mcmc.post_warmup_state = jax.tree.map(lambda x: np.asarray(x)[source], mcmc.last_state)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        mcmc.run(key, y=data.y, extra_fields=EXTRA_FIELDS)
    jax.block_until_ready(mcmc.get_samples())
    return NumpyroRun(mcmc, dims, time.perf_counter() - start, chain_method, restarts)


def stuck_chains(energy: np.ndarray, steps: np.ndarray) -> list[int]:
    """Chains (rows of ``energy`` and ``steps``, (chains, draws)) that a warm-up left where the
    posterior has no mass worth a draw: far above the lowest chain's energy and in a narrower
    region (see STUCK_ENERGY_SDS). Empty where every chain would be (none is then healthy)."""
    above, sd = _energy_above_lowest(energy)
    high = above > STUCK_ENERGY_SDS * sd
    narrow = steps.mean(axis=1) > STUCK_STEPS_RATIO * steps[np.argmin(above)].mean()
    stuck = [c for c in range(len(above)) if high[c] and narrow[c]]
    return stuck if len(stuck) < len(above) else []


def _energy_above_lowest(energy: np.ndarray) -> tuple[np.ndarray, float]:
    """Each chain's mean energy above the lowest chain's, and the chains' median energy sd."""
    mean = energy.mean(axis=1)
    return mean - mean.min(), float(np.median(energy.std(axis=1)))


def _restart_line(energy: np.ndarray, chain: int, donor: int, draws: int) -> str:
    above, sd = _energy_above_lowest(energy)
    gap = above[chain]
    return (
        f"chain {chain} sat {gap:.0f} nats of energy ({gap / sd:.0f} sd) above the lowest "
        f"chain, stuck where the posterior has no mass worth a draw; it was restarted from "
        f"chain {donor}'s last state and every chain drew {draws} more"
    )


def prior_predictive(
    spec: ModelSpec, data: ModelData, draws: int, seed: int
) -> dict[str, np.ndarray]:
    """Draws of every site, the losses included, from the prior."""
    model, _ = model_fn(spec, data)
    samples = Predictive(model, num_samples=draws)(jax.random.PRNGKey(seed), y=None)
    return {name: np.asarray(v) for name, v in samples.items()}


def prior_draw(model, seed: int) -> dict[str, np.ndarray]:
    """One draw of every site of ``model`` (from ``model_fn``) from the prior, run eagerly (no
    compilation per call)."""
    trace = numpyro.handlers.trace(
        numpyro.handlers.seed(model, jax.random.PRNGKey(seed))
    ).get_trace(y=None)
    return {
        name: np.asarray(site["value"])
        for name, site in trace.items()
        if site["type"] in ("sample", "deterministic")
    }
