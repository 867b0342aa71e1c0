"""A fit made without sampling, for the tests of what reads fits (CLI, planning, report).

``fake_fit`` runs the real model program (numpyro_backend.model_fn) on a table, finds its
posterior mode by L-BFGS on the model's own log density, and takes draws around that mode in the
model's unconstrained space; ``fit.fit_of_draws`` then makes the Fit exactly as after NUTS (the
integrated deviations, diagnostics, log-likelihood, curve checks). Seconds instead of NUTS's tens
of seconds, and every site, name and shape is the model's, so what reads fits meets the real
thing. Its intervals are the jitter's, not the posterior's: tests that judge a posterior (does it
cover the truth?) use a real fit (conftest's ``plan_fit``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Spread of the draws around the mode, per unconstrained coordinate.
JITTER = 0.02
#: What the fake's record names as its sampler.
SAMPLER = "fake: posterior mode + jitter (tests)"


def fake_fit(
    table: pd.DataFrame,
    spec="default",
    *,
    chains: int = 4,
    draws: int = 500,
    seed: int = 0,
    jitter: float = JITTER,
):
    """A ``Fit`` of ``spec`` on ``table``: ``chains`` x ``draws`` draws around the posterior mode,
    seeded (the search starts from a draw of the prior)."""
    import arviz as az
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro import handlers
    from numpyro.distributions import biject_to
    from numpyro.infer.util import constrain_fn, potential_energy
    from scipy.optimize import minimize

    from mergelaw.bayes import numpyro_backend
    from mergelaw.bayes.data import prepare
    from mergelaw.bayes.fit import fit_of_draws, target_accept_of
    from mergelaw.bayes.spec import load_spec

    spec = load_spec(spec) if isinstance(spec, str) else spec
    data = prepare(table)
    model, dims = numpyro_backend.model_fn(spec, data)
    observed = {"y": data.y}
    trace = handlers.trace(handlers.seed(model, seed)).get_trace(**observed)
    start = {
        name: biject_to(site["fn"].support).inv(site["value"])
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    x0, unravel = ravel_pytree(start)  # the model's unconstrained space, flat
    density = jax.jit(
        jax.value_and_grad(lambda x: potential_energy(model, (), observed, unravel(x)))
    )

    def objective(x):
        value, grad = density(jnp.asarray(x))
        return float(value), np.asarray(grad, dtype=float)

    mode = minimize(objective, np.asarray(x0), jac=True, method="L-BFGS-B").x
    rng = np.random.default_rng(seed)
    around = mode + jitter * rng.standard_normal((chains * draws, mode.size))
    constrain = jax.vmap(
        lambda x: constrain_fn(model, (), observed, unravel(x), return_deterministic=True)
    )
    values = jax.jit(constrain)(jnp.asarray(around))
    posterior = {
        name: np.asarray(v).reshape(chains, draws, *np.shape(v)[1:]) for name, v in values.items()
    }
    stats = {
        "diverging": np.zeros((chains, draws), dtype=bool),
        "n_steps": np.full((chains, draws), 7),
        "energy": rng.standard_normal((chains, draws)),
    }
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=stats,
        coords=data.coords,
        dims={name: d for name, d in dims.items() if name in posterior},
    )
    settings = dict(
        draws=draws,
        tune=0,
        chains=chains,
        seed=seed,
        target_accept=target_accept_of(spec),
        max_tree_depth=10,
    )
    return fit_of_draws(idata, spec, data, "numpyro", SAMPLER, settings, 0.0)


def fit_without_sampling(table: pd.DataFrame, spec="default", *, seed: int = 0, **nuts_settings):
    """``fake_fit`` called the way ``fit.fit`` is, to stand in for it where code under test
    refits (grouped k-fold): NUTS's settings are taken and not used."""
    return fake_fit(table, spec, seed=seed)
