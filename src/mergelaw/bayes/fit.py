"""Fitting the hierarchical law: ``fit(table, spec, backend)`` returns a self-describing ``Fit``.

A Fit holds the posterior (ArviZ InferenceData with named coords and the pointwise
log-likelihood), its diagnostics, the spec, the data hash and the versions it was made with.
``Fit.save``/``Fit.load`` round-trip it through netCDF; loading refuses a fit whose spec or data
no longer match what the caller has now.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from mergelaw import law, law_misfit
from mergelaw.bayes import diagnostics as diag
from mergelaw.bayes import predictive
from mergelaw.bayes.data import ModelData, merge_methods, method_index, prepare, size_law_note
from mergelaw.bayes.fit_meta import FitMeta, SamplerSettings
from mergelaw.bayes.model import (
    REPORTED,
    deviation_conditional,
    deviation_sums,
    has_floor_deviations,
    has_tail_deviations,
    tail_deviation_terms,
)
from mergelaw.bayes.spec import ModelSpec, load_spec, models_dir
from mergelaw.curves import FAMILY_COLUMNS
from mergelaw.errors import MergelawError
from mergelaw.io import atomic_path
from mergelaw.law import size_in_billions

Backend = Literal["numpyro", "pymc"]
DEFAULT_TARGET_ACCEPT = 0.99
_META_KEY = "mergelaw_meta"
_SPEC_KEY = "mergelaw_spec"


def _versions() -> dict[str, str]:
    packages = ("mergelaw", "numpyro", "jax", "pymc", "pytensor", "arviz", "numpy")
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = version(package)
        except Exception:  # a package not installed is recorded as such
            out[package] = "not installed"
    return out


@dataclass
class Fit:
    idata: object  # arviz.InferenceData
    spec: ModelSpec
    meta: FitMeta
    diagnostics: diag.Diagnostics | None  # None only while fit() assembles it

    @property
    def flag(self) -> str:
        return self.diagnostics.flag

    @property
    def families(self) -> pd.DataFrame:
        return self.meta.family_table

    def draws(self, name: str) -> np.ndarray:
        """Posterior draws of one variable, chains stacked: (n_draws, ...)."""
        values = self.idata.posterior[name].to_numpy()
        return values.reshape(-1, *values.shape[2:])

    @property
    def n_draws(self) -> int:
        """Draws of the posterior, chains stacked."""
        posterior = self.idata.posterior
        return posterior.sizes["chain"] * posterior.sizes["draw"]

    def deviation_scale(self, name: str, present: bool | None = None) -> np.ndarray | None:
        """Draws (S,) of the spread of a per-curve deviation ('floor_dev', 'noise_dev', 'b_dev':
        (S, methods) where learnt per merge method): the learnt scale's, or the spec's fixed
        one; None where the fit has no such deviation
        (``present``: whether it has, where its draws are not in the posterior yet)."""
        posterior = self.idata.posterior
        if f"{name}_scale" in posterior:
            return self.draws(f"{name}_scale")
        if not (name in posterior if present is None else present):
            return None
        fixed = {"floor_dev": self.spec.floor_deviation_prior_sd,
                 "noise_dev": self.spec.noise_curve_prior_sd,
                 "b_dev": self.spec.offset_deviation_prior_sd}  # fmt: skip
        return np.full(self.n_draws, fixed[name])

    def family_nugget(self) -> np.ndarray:
        """Nugget draws: (S,) for one nugget, (S, F) where each family takes its merge method's."""
        nugget = self.draws("nugget")
        return nugget if nugget.ndim == 1 else self.per_family(nugget)

    def per_family(self, draws: np.ndarray) -> np.ndarray:
        """(S, methods) draws of a per-method parameter as (S, F): each family its method's."""
        return draws[:, method_index(self.families)]

    def law_summary(self, level: float = 0.9) -> pd.DataFrame:
        """Posterior mean and central interval of the paper's parameters, per family."""
        tail = (1.0 - level) / 2.0
        rows = []
        names = [n for n in REPORTED if n in self.idata.posterior]
        for name in names:
            draws = self.draws(name)
            if draws.ndim == 1 or draws.shape[1] != len(self.families):
                continue  # per-curve parameters are summarised per curve elsewhere
            lo, hi = np.quantile(draws, [tail, 1.0 - tail], axis=0)
            for j, label in enumerate(self.families["label"]):
                rows.append(
                    {
                        "family": label,
                        "param": name,
                        "mean": float(draws[:, j].mean()),
                        "lower": float(lo[j]),
                        "upper": float(hi[j]),
                        "level": level,
                    }
                )
        return pd.DataFrame(rows)

    def observations(self) -> predictive.Observations:
        """The fitted table's structure and losses, as the fit keeps them."""
        arrays = {
            name: values.to_numpy() for name, values in self.idata.constant_data.data_vars.items()
        }
        return predictive.Observations.from_arrays(
            arrays, self.idata.observed_data["loss"].to_numpy()
        )

    def observations_for(
        self, rows: pd.DataFrame, new_curves: bool = False
    ) -> predictive.Observations:
        """The structure of ``rows`` (subset rows or per-k means) of this fit's curves, indexed by
        its families and curves: held-out k of fitted curves, say. A row of a family the fit has
        not seen is refused, and one of a curve it has not seen unless ``new_curves`` (held-out
        curves in grouped k-fold: indexed after the fitted curves, their per-curve parameters
        are drawn from the fitted population by ``predictive_draws``)."""
        families = self.families
        keys = list(FAMILY_COLUMNS)
        lookup = families[keys].reset_index().rename(columns={"index": "family"})
        merged = rows[keys].merge(lookup, on=keys, how="left")
        if merged["family"].isna().any():
            row = rows.iloc[int(np.flatnonzero(merged["family"].isna())[0])]
            name = "/".join(str(row[c]) for c in keys)
            raise MergelawError(f"rows of family {name!r}, which the fit has not seen")
        family = merged["family"].to_numpy(int)
        curves = self.meta.curve_table.reset_index()
        at = pd.DataFrame({"family": family, "n_params": rows["n_params"].to_numpy()})
        curve = at.merge(curves, on=["family", "n_params"], how="left")["index"]
        if curve.isna().any() and not new_curves:
            raise MergelawError("rows of a base size the fit has not seen for their family")
        unseen = at[curve.isna().to_numpy()].drop_duplicates().reset_index(drop=True)
        new_index = {
            (f, n): len(curves) + i for i, (f, n) in enumerate(unseen.itertuples(index=False))
        }
        curve = curve.to_numpy(float).copy()
        for i in np.flatnonzero(np.isnan(curve)):
            curve[i] = new_index[(at["family"][i], at["n_params"][i])]
        log_n = np.log(size_in_billions(rows["n_params"].to_numpy(float)))
        means_form = "loss" not in rows.columns
        return predictive.Observations(
            family=family,
            curve=curve.astype(int),
            x=log_n - np.log(float(self.meta.n_ref)),
            log_n=log_n,
            k=rows["k"].to_numpy(float),
            pool_size=rows["pool_size"].to_numpy(float),
            se=rows["se"].to_numpy(float) if means_form else None,
            y=rows["mean" if means_form else "loss"].to_numpy(float),
            in_domain=rows["in_domain"].to_numpy(float) if "in_domain" in rows.columns else None,
        )

    def predictive_draws(
        self,
        draws: int = predictive.DEFAULT_CHECK_DRAWS,
        obs: predictive.Observations | None = None,
        keep: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """E[L] and noise sd under ``draws`` evenly thinned posterior draws (or the draws
        ``keep`` indexes, chains stacked), of every fitted row or of the rows ``obs`` describes
        (held-out rows, indexed by this fit's families)."""
        if keep is None:
            keep = predictive.thin_index(self.draws("nugget").shape[0], draws)
        names = [*REPORTED, "sigma", "sigma_slope", "nugget"]
        values = {n: self.draws(n)[keep] for n in names if n in self.idata.posterior}
        obs = self.observations() if obs is None else obs
        values["nugget"] = self.family_nugget()[keep]
        if "decay" in values:
            values["decay"] = self.per_family(values["decay"])
        n_curves = len(self.meta.curves["family"])
        unseen = int(obs.curve.max()) + 1 - n_curves if len(obs.curve) else 0
        if unseen > 0:
            values = self._with_unseen_curves(values, keep, obs, n_curves)
        anchors = (self.spec.drop_from_k, float(self.meta.k_anchor))
        return predictive.mean_and_scale(values, obs, self.spec.spread, len(self.families), anchors)

    def _with_unseen_curves(
        self, values: dict, keep: np.ndarray, obs: predictive.Observations, n_curves: int
    ) -> dict:
        """Per-curve parameters of the curves of ``obs`` the fit has not seen (indices from
        ``n_curves`` on), appended as columns: the membership gap from its population (its
        merge method's, where the population has one per method), the floor deviation from
        N(0, tau), per draw."""
        rng = np.random.default_rng(0)
        out = dict(values)
        unseen = int(obs.curve.max()) + 1 - n_curves
        curve, first = np.unique(obs.curve, return_index=True)
        family = obs.family[first[curve >= n_curves]]  # of each unseen curve
        method = method_index(self.families)[family]
        if "gap" in values:
            prior = self.spec.params["gap"]
            if self.spec.is_pooled("gap"):
                mean = self.draws("gap_mean")[keep]
                scale = self.draws("gap_scale")[keep][:, None]
                # one mean per merge method: each unseen curve takes its own method's
                mean = mean[:, method] if mean.ndim == 2 else mean[:, None]
            else:
                mean, scale = prior.prior_mean, prior.prior_sd
            shape = (len(keep), unseen)
            fresh = prior.sample(np.broadcast_to(mean, shape), np.broadcast_to(scale, shape), rng)
            out["gap"] = np.concatenate([values["gap"], fresh], axis=1)
        for name in ("floor_dev", "noise_dev"):
            if name in values:
                tau = self.deviation_scale(name)[keep][:, None]
                fresh = tau * rng.standard_normal((len(keep), unseen))
                out[name] = np.concatenate([values[name], fresh], axis=1)
        fresh_b_dev = None
        if "b_dev" in values:
            tau = self.deviation_scale("b_dev")[keep]  # (S, methods) learnt, (S,) fixed
            tau = tau[:, method] if tau.ndim == 2 else tau[:, None]
            fresh_b_dev = tau * rng.standard_normal((len(keep), unseen))
            out["b_dev"] = np.concatenate([values["b_dev"], fresh_b_dev], axis=1)
        if "tail_dev" in values:
            tau = self.tail_deviation_scale(keep, family, fresh_b_dev)
            fresh = tau * rng.standard_normal((len(keep), unseen))
            out["tail_dev"] = np.concatenate([values["tail_dev"], fresh], axis=1)
        return out

    def tail_drop_scale(self) -> np.ndarray:
        """Draws (S, methods) of the spread of a curve's drop off its family's size law (nats):
        learnt per merge method, or the spec's fixed one."""
        if "tail_dev_scale" in self.idata.posterior:
            return self.draws("tail_dev_scale")
        methods = len(merge_methods(self.families))
        return np.full((self.n_draws, methods), self.spec.tail_deviation_prior_sd)

    def tail_deviation_scale(
        self, keep: np.ndarray, family: np.ndarray, b_dev: np.ndarray | None = None
    ) -> np.ndarray:
        """Draws (S, C) of the spread of the tail amplitude of curves (of ``family``, with
        offset deviations ``b_dev``, or None) around their family's size law, in amplitude
        units: the merge method's drop scale over the drop per unit amplitude under that
        draw's b."""
        posterior = self.idata.posterior
        b = self.draws("b")[keep][:, family] if "b" in posterior else 0.0
        alpha = self.draws("alpha")[keep][:, family] if "alpha" in posterior else 1.0
        scale = self.per_family(self.tail_drop_scale()[keep])[:, family]
        anchors = (self.spec.drop_from_k, float(self.meta.k_anchor))
        return law.amplitude_spread_for_drop(scale, b, alpha, anchors=anchors, b_dev=b_dev)

    def posterior_predictive(
        self, draws: int = predictive.DEFAULT_CHECK_DRAWS, seed: int = 0
    ) -> np.ndarray:
        """Replicated losses of every fitted row, one table per thinned draw: (draws, n_obs)."""
        mean, scale = self.predictive_draws(draws)
        return predictive.replicate(mean, scale, np.random.default_rng(seed))

    def curve_checks(self) -> pd.DataFrame:
        """Per-curve posterior predictive checks made when the fit was made (see predictive)."""
        return pd.DataFrame(self.meta.curve_checks)

    def save(self, path: str | Path) -> None:
        """Write to netCDF atomically, with the spec, metadata and diagnostics inside."""
        posterior = self.idata.posterior
        posterior.attrs[_META_KEY] = json.dumps(
            {**self.meta.to_dict(), "diagnostics": self.diagnostics.to_dict()}
        )
        posterior.attrs[_SPEC_KEY] = self.spec.to_json()
        with atomic_path(path) as tmp:
            diag.write_netcdf(self.idata, tmp)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        spec: ModelSpec | str | None = "current",
        table: pd.DataFrame | None = None,
    ) -> Fit:
        """Read a saved fit. It is refused if its spec differs from ``spec`` ('current': the spec
        file it was made from, as it is now, where that file still exists (its path, else the
        file of its name in models/); otherwise the spec saved inside the fit; None: no check)
        or its data from ``table``."""
        path = Path(path)
        if not path.exists():
            raise MergelawError(
                f"{path}: no such fit file (expected a .nc written by mergelaw fit)"
            )
        try:
            idata = diag.read_netcdf(path)
            raw = json.loads(idata.posterior.attrs[_META_KEY])
            saved_diagnostics = diag.Diagnostics.from_dict(raw.pop("diagnostics"))
            meta = FitMeta.from_dict(raw)
            saved_spec = ModelSpec.from_json(idata.posterior.attrs[_SPEC_KEY])
        except (KeyError, OSError, TypeError, ValueError) as exc:
            raise MergelawError(f"{path}: not a mergelaw fit ({type(exc).__name__})") from None
        current = None
        if spec == "current":
            current = _current_spec(saved_spec, meta.spec_source)
        elif spec is not None:
            current = load_spec(spec) if isinstance(spec, (str, Path)) else spec
        if current is not None and current.digest != saved_spec.digest:
            raise MergelawError(
                f"{path}: fitted with spec '{saved_spec.name}' (digest {saved_spec.digest}), "
                f"but {current.source or current.name} now has digest {current.digest}; "
                "refit, or load with the spec the fit was made with"
            )
        if table is not None:
            data_hash = prepare(table).data_hash
            if data_hash != meta.data_hash:
                raise MergelawError(
                    f"{path}: fitted to data {meta.data_hash}, but the table given hashes to "
                    f"{data_hash}; refit on this table"
                )
        return cls(idata, saved_spec, meta, saved_diagnostics)


def _current_spec(saved: ModelSpec, source: str) -> ModelSpec | None:
    """The spec file a fit was made from, as it is now: its recorded path where it exists; a
    spec from models/ (or a fit that recorded no path) by its name there. None where the file is
    gone: the spec saved inside the fit then stands, whatever the file was called."""
    shipped = models_dir().resolve()
    if source:
        path = Path(source)
        if path.is_file():
            return load_spec(path)
        if path.parent != shipped:
            return None
    candidate = shipped / f"{saved.name}.toml"
    return load_spec(candidate) if candidate.is_file() else None


def target_accept_of(spec: ModelSpec, given: float | None = None) -> float:
    """NUTS's target acceptance for a fit of ``spec``: ``given``, else the spec's [sampler]
    setting, else DEFAULT_TARGET_ACCEPT (what fits and simulation-based calibration both use)."""
    if given is not None:
        return given
    return spec.target_accept or DEFAULT_TARGET_ACCEPT


def fit(
    table: pd.DataFrame,
    spec: ModelSpec | str = "default",
    backend: Backend = "numpyro",
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float | None = None,
    max_tree_depth: int = 10,
    progress: bool = False,
    sampler: str = "pymc",
    source: str = "curves table",
) -> Fit:
    """Fit ``spec`` to a curves table (or a per-k means table) with NUTS.

    ``backend='numpyro'`` runs chains in parallel over XLA host devices; ``backend='pymc'`` uses
    PyMC with ``sampler`` 'pymc' (its own NUTS), 'nutpie' or 'numpyro'. The same seed gives the
    same posterior. ``target_accept`` None: the spec's [sampler] setting, else 0.99 (the first
    default left divergent draws at 0.95 where b is large, on paper-scale tables; fit_bench).
    """
    spec = load_spec(spec) if isinstance(spec, str) else spec
    data = prepare(table, source=source)
    target_accept = target_accept_of(spec, target_accept)
    settings = dict(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        progress=progress,
    )
    if backend == "numpyro":
        from mergelaw.bayes import numpyro_backend

        run = numpyro_backend.sample(spec, data, **settings)
        idata = diag.from_numpyro(run.mcmc, data.coords, run.dims)
        wall_time, sampler = run.wall_time, f"numpyro NUTS ({run.chain_method} chains)"
        restarts = run.restarts
    elif backend == "pymc":
        from mergelaw.bayes import pymc_backend

        run = pymc_backend.sample(spec, data, sampler=sampler, **settings)
        idata, wall_time, sampler = run.idata, run.wall_time, f"pymc ({sampler})"
        restarts = ()
    else:
        raise MergelawError(f"unknown backend {backend!r} (expected 'numpyro' or 'pymc')")
    result = fit_of_draws(idata, spec, data, backend, sampler, settings, wall_time)
    result.meta = replace(
        result.meta,
        means_misfit=law_misfit.per_method(table),
        notes=result.meta.notes + tuple(restarts),
    )
    return result


def fit_of_draws(
    idata,
    spec: ModelSpec,
    data: ModelData,
    backend: str,
    sampler: str,
    settings: dict,
    wall_time: float,
) -> Fit:
    """The Fit of posterior draws of ``spec`` on ``data`` (``idata``: the sampler's posterior
    and sample_stats, named as the model's sites): the integrated-out deviations drawn, the
    diagnostics, the pointwise log-likelihood, the table's structure and the per-curve checks
    added. ``settings``: the sampler's (SamplerSettings' fields; 'progress' is dropped)."""
    obs = predictive.Observations.from_data(data)
    source_path = str(Path(spec.source).resolve()) if spec.source else ""
    result = Fit(idata, spec, _meta(data, backend, sampler, settings, wall_time, source_path), None)
    if has_floor_deviations(spec, data):
        labels = list(data.curves["label"])
        for name, values in _deviation_draws(result, data, settings["seed"]).items():
            diag.with_posterior_variable(result.idata, name, values, "curve", labels)
    result.diagnostics = diag.diagnose(idata, settings["max_tree_depth"])
    idata = diag.with_observations(idata, data.y, _pointwise_log_likelihood(result, obs))
    result.idata = diag.with_constant_data(idata, obs.arrays())
    return _with_curve_checks(result, obs, list(data.curves["label"]))


def _deviation_draws(result: Fit, data: ModelData, seed: int) -> dict[str, np.ndarray]:
    """Draws of every curve's floor deviation, and its tail deviation where the spec has one,
    each (chain, draw, curve): the sampler integrated them out, so they are drawn from their
    exact normal conditional given that draw's other parameters (``model.deviation_conditional``),
    seeded by the fit's seed."""
    at, count = data.at_cells(), data.cells.count
    obs = predictive.Observations.from_data(at)
    n_curves = len(data.curves)
    tau = result.deviation_scale("floor_dev", present=True)
    tails = has_tail_deviations(result.spec, data)
    rng = np.random.default_rng([seed, n_curves])
    to_curve = np.zeros((len(at.y), n_curves))
    to_curve[np.arange(len(at.y)), at.curve] = 1.0

    def curve_sum(values, _curve, _n):  # (draws, cells) -> (draws, curves): one matrix product
        return values @ to_curve

    def draw(keep, mean, scale):  # mean and scale at deviation 0
        regressor, tau_tail = None, 1.0
        if tails:
            posterior = result.idata.posterior
            alpha = result.draws("alpha")[keep] if "alpha" in posterior else 1.0
            b_dev = result.draws("b_dev")[keep] if "b_dev" in posterior else None
            regressor, tau_tail = tail_deviation_terms(
                result.spec, at, result.draws("b")[keep], alpha,
                result.tail_drop_scale()[keep], b_dev,
            )  # fmt: skip
        sums = deviation_sums(
            count / scale**2, at.y - mean, regressor, at.curve, n_curves, curve_sum
        )
        (m0, m1), (v00, v01, v11) = deviation_conditional(sums, tau[keep, None], tau_tail)
        z0 = rng.standard_normal(m0.shape)
        floor = m0 + np.sqrt(v00) * z0
        if not tails:
            return floor
        lower = v01 / np.sqrt(v00)  # Cholesky of the 2 x 2 covariance
        z1 = rng.standard_normal(m0.shape)
        tail = m1 + lower * z0 + np.sqrt(np.maximum(v11 - lower**2, 0.0)) * z1
        return np.concatenate([floor, tail], axis=1)

    values = _per_draw_chunk(result, obs, n_curves * (2 if tails else 1), draw)
    names = ("floor_dev", "tail_dev") if tails else ("floor_dev",)
    return {name: values[..., i * n_curves : (i + 1) * n_curves] for i, name in enumerate(names)}


def _pointwise_log_likelihood(result: Fit, obs: predictive.Observations) -> np.ndarray:
    """log Normal(y | E[L], sd) of every row under every draw, (chain, draw, obs), from the law's
    one home (``predictive.mean_and_scale``)."""

    def log_density(keep, mean, scale):
        return stats.norm.logpdf(obs.y, mean, scale)

    return _per_draw_chunk(result, obs, len(obs.y), log_density)


def _per_draw_chunk(
    result: Fit, obs: predictive.Observations, width: int, compute, chunk: int = 250
) -> np.ndarray:
    """``compute(keep, mean, scale)`` -> (len(keep), width) over every posterior draw, a chunk of
    draws at a time (E[L] and sd of all draws x rows at once would take GBs), as
    (chain, draw, width)."""
    posterior = result.idata.posterior
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])
    out = np.empty((shape[0] * shape[1], width))
    for start in range(0, len(out), chunk):
        keep = np.arange(start, min(start + chunk, len(out)))
        out[keep] = compute(keep, *result.predictive_draws(obs=obs, keep=keep))
    return out.reshape(*shape, width)


def _with_curve_checks(result: Fit, obs: predictive.Observations, curve_labels: list[str]) -> Fit:
    """Run the per-curve predictive checks; curves that fail them flag the fit."""
    mean, scale = result.predictive_draws(obs=obs)
    checks = predictive.curve_checks(mean, scale, obs, curve_labels)
    result.meta = replace(result.meta, curve_checks=checks.to_dict(orient="list"))
    misfit = list(checks.loc[checks["misfit"], "curve"])
    result.diagnostics = result.diagnostics.with_checks(
        misfit_curves=misfit, misfit_threshold=float(checks.attrs["threshold"])
    )
    return result


def prior_predictive(
    table: pd.DataFrame, spec: ModelSpec | str = "default", draws: int = 500, seed: int = 0
) -> dict[str, np.ndarray]:
    """Draws of every parameter and of the losses ('loss', (draws, n_obs)) from the prior, on the
    table's structure: what the spec believes before seeing the losses."""
    from mergelaw.bayes import numpyro_backend

    spec = load_spec(spec) if isinstance(spec, str) else spec
    return numpyro_backend.prior_predictive(spec, prepare(table), draws, seed)


def _meta(
    data: ModelData, backend: str, sampler: str, settings: dict, wall_time: float, source: str
) -> FitMeta:
    return FitMeta(
        backend=backend,
        sampler=sampler,
        settings=SamplerSettings(**{k: v for k, v in settings.items() if k != "progress"}),
        data_hash=data.data_hash,
        data_form=data.form,
        n_obs=len(data.y),
        n_ref=float(data.n_ref),
        k_anchor=float(data.k_anchor),
        pool_size=float(data.pool_size.max()),
        x_lo=float(data.x_lo),
        x_hi=float(data.x_hi),
        families=data.families.to_dict(orient="list"),
        curves=data.curves.to_dict(orient="list"),
        wall_time_s=wall_time,
        versions=_versions(),
        n_sizes=data.n_sizes,
        size_law=data.size_law,
        notes=(note,) if (note := size_law_note(data.n_sizes)) else (),
        spec_source=source,
    )
