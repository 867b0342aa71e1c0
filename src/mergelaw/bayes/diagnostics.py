"""Everything that calls ArviZ: conversion, netCDF I/O, convergence diagnostics, LOO.

Keeping ArviZ in one module keeps its version-specific calls in one place (ArviZ 1.x, on Python
3.12, reorganises them). Note: ArviZ 0.23 with pandas 3 breaks ``az.summary`` when a dimension is
named ``method``; our dimensions are ``family``, ``curve`` and ``obs``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

#: Thresholds a fit must meet; a fit that misses any is flagged in every answer made from it.
MAX_RHAT = 1.01
MIN_ESS = 400
MIN_BFMI = 0.3
MAX_SATURATED_SHARE = 0.01
MAX_PARETO_K = 0.7

#: Sites that are bookkeeping, not parameters (non-centred draws are covered by what they feed).
_SKIP_SUFFIXES = ("_z",)


@dataclass(frozen=True)
class Check:
    """One diagnostic against its threshold, decided once: the report's row and, when it does not
    pass, the flag's words (``failure``)."""

    name: str
    value: str
    threshold: str
    passed: bool
    failure: str


@dataclass(frozen=True)
class Diagnostics:
    """Convergence summary of one fit; ``failures`` lists every threshold missed, in words."""

    max_rhat: float
    worst_rhat: str
    min_ess_bulk: float
    min_ess_tail: float
    worst_ess: str
    divergences: int
    n_draws: int
    saturated_share: float
    mean_tree_steps: float
    min_bfmi: float
    failures: list[str] = field(default_factory=list)
    misfit_curves: list[str] = field(default_factory=list)  # failed the predictive checks
    max_tree_depth: int = 10
    misfit_threshold: float | None = None  # the predictive checks' p-value bar, once run

    @property
    def checks(self) -> list[Check]:
        """Every threshold, passed or not, in the order the report shows them."""
        one_chain = math.isnan(self.max_rhat)
        ess = min(self.min_ess_bulk, self.min_ess_tail)
        saturated = self.saturated_share
        out = [
            Check("max R-hat", f"{self.max_rhat:.4f} ({self.worst_rhat})", f"<= {MAX_RHAT}",
                  not one_chain and self.max_rhat <= MAX_RHAT,
                  "1 chain: R-hat needs >= 2 chains to check convergence" if one_chain
                  else f"R-hat {self.max_rhat:.3f} > {MAX_RHAT} ({self.worst_rhat})"),
            Check("min ESS bulk / tail",
                  f"{self.min_ess_bulk:.0f} / {self.min_ess_tail:.0f} ({self.worst_ess})",
                  f">= {MIN_ESS}", not ess < MIN_ESS,
                  f"ESS bulk {self.min_ess_bulk:.0f} / tail {self.min_ess_tail:.0f} "
                  f"< {MIN_ESS} ({self.worst_ess})"),
            Check("divergent transitions", f"{self.divergences} of {self.n_draws}", "0",
                  self.divergences == 0, f"{self.divergences} divergent transitions"),
            Check("draws at max tree depth",
                  f"{saturated:.1%} (mean {self.mean_tree_steps:.0f} leapfrog steps)",
                  f"<= {MAX_SATURATED_SHARE:.0%}", saturated <= MAX_SATURATED_SHARE,
                  f"{saturated:.0%} of draws hit the maximum tree depth {self.max_tree_depth}"),
            Check("min BFMI", f"{self.min_bfmi:.2f}", f">= {MIN_BFMI}",
                  not self.min_bfmi < MIN_BFMI, f"BFMI {self.min_bfmi:.2f} < {MIN_BFMI}"),
        ]  # fmt: skip
        if self.misfit_threshold is not None:
            misfit = self.misfit_curves
            shown = ", ".join(misfit[:3]) + (" ..." if len(misfit) > 3 else "")
            out.append(Check(
                "curves failing the predictive check", str(len(misfit)),
                f"none with p < {self.misfit_threshold:.1e}", not misfit,
                f"{len(misfit)} curve(s) fail the predictive check "
                f"(p < {self.misfit_threshold:.1e}): {shown}",
            ))  # fmt: skip
        return out

    def with_checks(self, **changes) -> Diagnostics:
        """A copy with ``changes`` (e.g. the predictive checks' misfits) and its failures
        decided again from every check."""
        changed = replace(self, **changes)
        return replace(changed, failures=[c.failure for c in changed.checks if not c.passed])

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def flag(self) -> str:
        """One line that travels with every answer made from the fit."""
        return "ok" if self.ok else "FAILED: " + "; ".join(self.failures)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    @classmethod
    def from_dict(cls, saved: dict) -> Diagnostics:
        """From ``to_dict`` (as a saved fit holds it); ``ok`` is derived, not read."""
        return cls(**{k: v for k, v in saved.items() if k != "ok"})


def from_numpyro(mcmc, coords: dict, dims: dict):
    """InferenceData of a NumPyro run, with named coords (the observations and their pointwise
    log-likelihood are added by ``with_observations``: the sampler saw cell statistics)."""
    sampled = mcmc.get_samples()
    dims = {name: d for name, d in dims.items() if name in sampled}
    return az.from_numpyro(mcmc, coords=coords, dims=dims, log_likelihood=False)


def with_observations(idata, y: np.ndarray, log_likelihood: np.ndarray):
    """Add the observed losses and their pointwise log-likelihood ((chain, draw, obs)) as the
    'loss' of the observed_data and log_likelihood groups, which LOO reads."""
    import xarray as xr

    posterior = idata.posterior
    obs = np.arange(len(y)).astype(str)
    observed = xr.Dataset({"loss": ("obs", np.asarray(y, dtype=float))}, coords={"obs": obs})
    pointwise = xr.Dataset(
        {"loss": (("chain", "draw", "obs"), log_likelihood)},
        coords={"chain": posterior["chain"], "draw": posterior["draw"], "obs": obs},
    )
    for group in ("observed_data", "log_likelihood"):
        if group in idata.groups():
            delattr(idata, group)
    idata.add_groups(observed_data=observed, log_likelihood=pointwise)
    return idata


def with_posterior_variable(idata, name: str, values: np.ndarray, dim: str, labels: list[str]):
    """Add a variable drawn after sampling, (chain, draw, dim), to the posterior group."""
    import xarray as xr

    posterior = idata.posterior
    idata.posterior[name] = xr.DataArray(
        values,
        dims=("chain", "draw", dim),
        coords={"chain": posterior["chain"], "draw": posterior["draw"], dim: labels},
    )
    return idata


def with_constant_data(idata, arrays: dict[str, np.ndarray]):
    """Keep the observation-level structure (k, size, family of every row) in the fit, so a saved
    fit can make predictive draws and checks without the table."""
    import xarray as xr

    dataset = xr.Dataset(
        {name: ("obs", np.asarray(values)) for name, values in arrays.items()},
        coords={"obs": idata.observed_data["obs"].to_numpy()},
    )
    if "constant_data" in idata.groups():
        del idata.constant_data
    idata.add_groups(constant_data=dataset)
    return idata


def parameter_names(idata) -> list[str]:
    return [
        name
        for name in idata.posterior.data_vars
        if not name.endswith(_SKIP_SUFFIXES) and idata.posterior[name].size > 0
    ]


def diagnose(idata, max_tree_depth: int) -> Diagnostics:
    """R-hat, bulk/tail ESS, divergences, tree-depth saturation, BFMI, against the thresholds."""
    names = parameter_names(idata)
    chains = idata.posterior.sizes["chain"]
    # R-hat compares chains: one chain has none (a valid fit, flagged below)
    rhat = _flat(az.rhat(idata, var_names=names)) if chains > 1 else pd.Series({"-": np.nan})
    bulk = _flat(az.ess(idata, var_names=names, method="bulk"))
    tail = _flat(az.ess(idata, var_names=names, method="tail"))
    stats = idata.sample_stats
    diverging = stats["diverging"].to_numpy()
    steps = stats["n_steps"].to_numpy()
    saturated = float(np.mean(steps >= 2**max_tree_depth - 1))
    bfmi = float(np.min(az.bfmi(idata))) if "energy" in stats else float("nan")
    ess = pd.concat([bulk, tail], axis=1).min(axis=1)
    diagnostics = dict(
        max_rhat=float(rhat.max()) if chains > 1 else float("nan"),
        worst_rhat=str(rhat.idxmax()) if chains > 1 else "one chain",
        min_ess_bulk=float(bulk.min()),
        min_ess_tail=float(tail.min()),
        worst_ess=str(ess.idxmin()),
        divergences=int(diverging.sum()),
        n_draws=int(diverging.size),
        saturated_share=saturated,
        mean_tree_steps=float(steps.mean()),
        min_bfmi=bfmi,
    )
    return Diagnostics(**diagnostics, max_tree_depth=max_tree_depth).with_checks()


def _flat(dataset) -> pd.Series:
    """One value per scalar element of each variable, labelled 'L_star[qwen2/average/code]'."""
    values = {}
    for name, array in dataset.data_vars.items():
        if array.ndim == 0:
            values[name] = float(array)
            continue
        dim = array.dims[0]
        for label, value in zip(array[dim].to_numpy(), array.to_numpy().ravel()):
            values[f"{name}[{label}]"] = float(value)
    return pd.Series(values).dropna()  # constants have no R-hat or ESS


def loo(idata, pointwise: bool = False) -> dict:
    """PSIS-LOO: elpd, its standard error, p_loo, and how many points have Pareto k > 0.7
    (``pointwise``: also every observation's Pareto k, as an array under 'pareto_k')."""
    with warnings.catch_warnings():  # high Pareto k is reported in the result, not as a warning
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        result = az.loo(idata, pointwise=True)
    pareto_k = result.pareto_k.to_numpy()
    return {
        "elpd_loo": float(result.elpd_loo),
        "se": float(result.se),
        "p_loo": float(result.p_loo),
        "n_points": int(pareto_k.size),
        "n_high_pareto_k": int(np.sum(pareto_k > MAX_PARETO_K)),
        "max_pareto_k": float(np.max(pareto_k)),
        **({"pareto_k": pareto_k} if pointwise else {}),
    }


def loo_check(loo: dict) -> Check:
    """PSIS-LOO's reliability as a check: no observation with Pareto k above MAX_PARETO_K."""
    high, n = loo["n_high_pareto_k"], loo["n_points"]
    return Check(
        "PSIS-LOO Pareto k",
        f"{high} of {n} above {MAX_PARETO_K} (max {loo['max_pareto_k']:.2f}); elpd_loo "
        f"{loo['elpd_loo']:.1f} ± {loo['se']:.1f}, p_loo {loo['p_loo']:.1f}",
        f"none > {MAX_PARETO_K}",
        high == 0,
        f"{high} of {n} observations have Pareto k > {MAX_PARETO_K}",
    )


def compare(idatas: dict[str, object]) -> pd.DataFrame:
    """ArviZ's LOO comparison of several fits of the same data."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        warnings.filterwarnings("ignore", message="The inplace keyword")  # arviz 0.23, pandas 3
        return az.compare(idatas, ic="loo")


def summary(idata, var_names: list[str], hdi_prob: float = 0.9) -> pd.DataFrame:
    return az.summary(idata, var_names=var_names, hdi_prob=hdi_prob, kind="stats")


def write_netcdf(idata, path: Path) -> None:
    idata.to_netcdf(str(path))


def read_netcdf(path: Path):
    return az.from_netcdf(str(path))
