"""A fit's posterior as plain numpy draws: what the planning queries need, and nothing to sample.

``Posterior`` holds, per draw, each family's law (L_star, B, beta, A0, gamma, b, alpha), its
noise (sigma per family, sigma_slope, nugget) and the population distribution of the group
parameters (raw-scale mean and scale). It is built from a saved ``Fit`` (``from_fit``) or directly
from arrays (``from_draws``, ``point_mass``), so every query can be tested against the law's
closed forms with no sampling. ``curves(n_b)`` gives the mean curve floor + A·(k+b)^-alpha at one
base size; ``new_family`` draws a family the fit has not seen from the population.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from mergelaw.bayes.model import anchored_law, param_scope, spread_factor
from mergelaw.bayes.spec import ModelSpec, load_spec
from mergelaw.curves import FAMILY_COLUMNS
from mergelaw.errors import MergelawError

#: Per-family law parameters a Posterior carries (b = 0 and alpha = 1 where the spec lacks them).
LAW_NAMES = ("L_star", "B", "beta", "A0", "gamma", "b", "alpha")
NEW_FAMILY = "new"


@dataclass(frozen=True)
class CurveDraws:
    """Draws of the mean curve floor + amplitude·(k+b)^-alpha at one base size, and its noise.

    Arrays are (n_draws, n_families); ``nugget`` is (n_draws, 1). ``sigma`` is the spread of
    single-expert losses at this size, scaled by the spec's spread factor at each k.
    """

    labels: list[str]
    n_b: float
    floor: np.ndarray
    amplitude: np.ndarray
    b: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    nugget: np.ndarray
    spread: str
    pool_size: float

    @property
    def n_draws(self) -> int:
        return self.floor.shape[0]

    @cached_property
    def unit_alpha(self) -> bool:
        """Whether the tail exponent is 1 in every draw (the default spec): 1/(k+b) then."""
        return bool(np.all(self.alpha == 1.0))

    def shape(self, k) -> np.ndarray:
        """(k + b)^-alpha; k broadcasts against a trailing axis: (S, F) or (S, F, K)."""
        k, b, alpha = self._k_axis(k)
        return 1.0 / (k + b) if self.unit_alpha else (k + b) ** (-alpha)

    def mean(self, k) -> np.ndarray:
        """E[L] at k experts: (S, F) for scalar k, (S, F, K) for a sequence."""
        floor, amplitude = (self._expand(a, k) for a in (self.floor, self.amplitude))
        return floor + amplitude * self.shape(k)

    def noise_sd(self, k, n_subsets=1) -> np.ndarray:
        """Sd of the mean loss of ``n_subsets`` random k-subsets around the curve (the fit's
        noise model: sigma²·spread(k, M) + nugget², divided by the number of subsets; a count
        per k broadcasts along k)."""
        k_arr = np.asarray(k, dtype=float)
        factor = np.maximum(
            spread_factor(self.spread, k_arr, np.full_like(k_arr, self.pool_size)), 0
        )
        sigma, nugget = (self._expand(a, k) for a in (self.sigma, self.nugget))
        return np.sqrt((sigma**2 * factor + nugget**2) / n_subsets)

    def marginal_gain(self, k) -> np.ndarray:
        """L(k) - L(k+1) per draw."""
        k = np.asarray(k, dtype=float)
        return self._expand(self.amplitude, k) * (self.shape(k) - self.shape(k + 1.0))

    def take(self, index: np.ndarray) -> CurveDraws:
        """The draws at ``index`` (resampling)."""
        arrays = {
            name: getattr(self, name)[index]
            for name in ("floor", "amplitude", "b", "alpha", "sigma", "nugget")
        }
        return CurveDraws(
            self.labels, self.n_b, **arrays, spread=self.spread, pool_size=self.pool_size
        )

    def families(self, index: np.ndarray) -> CurveDraws:
        """The curves of the families at ``index`` (columns)."""
        arrays = {
            name: getattr(self, name)[:, index] for name in ("floor", "amplitude", "b", "alpha")
        }
        return CurveDraws(
            [self.labels[i] for i in index],
            self.n_b,
            **arrays,
            sigma=self.sigma[:, index],
            nugget=self.nugget,
            spread=self.spread,
            pool_size=self.pool_size,
        )

    def _k_axis(self, k):
        b, alpha = self.b, self.alpha
        if np.ndim(k) == 0:
            return float(k), b, alpha
        return np.asarray(k, dtype=float), b[..., None], alpha[..., None]

    @staticmethod
    def _expand(array: np.ndarray, k) -> np.ndarray:
        return array if np.ndim(k) == 0 else array[..., None]


@dataclass(frozen=True)
class Posterior:
    """Posterior draws of a fit, numpy only. Law arrays are (n_draws, n_families)."""

    families: pd.DataFrame  # FAMILY_COLUMNS + label, one row per family
    law: dict[str, np.ndarray]  # LAW_NAMES -> (S, F)
    sigma: np.ndarray  # (S, F): spread of single-expert losses at n_ref
    sigma_slope: np.ndarray  # (S,)
    nugget: np.ndarray  # (S,)
    population: dict[str, tuple[np.ndarray, np.ndarray]]  # group param -> raw mean, scale (S,)
    spec: ModelSpec
    n_ref: float
    k_anchor: float
    x_lo: float
    x_hi: float
    pool_size: float
    sizes_b: tuple[float, ...]
    flag: str = "ok"
    provenance: dict = field(default_factory=dict)

    @property
    def n_draws(self) -> int:
        return self.sigma.shape[0]

    @cached_property
    def labels(self) -> list[str]:
        return list(self.families["label"])

    @classmethod
    def from_fit(cls, fit, *, pool_size: float | None = None) -> Posterior:
        """The draws of a ``Fit`` (chains stacked). ``pool_size`` (M, for the finite-pool spread)
        defaults to the fitted table's largest pool (older fits: its largest k)."""
        spec = fit.spec
        for name in ("b", "alpha"):
            if name in spec.required_params() and param_scope(spec, name) == "curve":
                raise MergelawError(
                    f"spec {spec.name!r} gives {name} per (family, size) curve; planning queries "
                    "need one law per family (fit with the default spec)"
                )
        names = set(fit.idata.posterior.data_vars)
        n_draws = fit.draws("nugget").shape[0]
        n_fam = len(fit.families)
        law = {
            name: fit.draws(name) if name in names else np.full((n_draws, n_fam), _DEFAULT[name])
            for name in LAW_NAMES
        }
        population = {}
        for name in spec.required_params():
            if spec.pool:
                population[name] = (fit.draws(f"{name}_mean"), fit.draws(f"{name}_scale"))
            else:
                prior = spec.params[name]
                population[name] = (
                    np.full(n_draws, prior.prior_mean),
                    np.full(n_draws, prior.prior_sd),
                )
        meta = fit.meta
        sizes = sorted({n / 1e9 for n in meta["curves"]["n_params"]})
        slope = fit.draws("sigma_slope") if "sigma_slope" in names else np.zeros(n_draws)
        return cls(
            families=fit.families,
            law=law,
            sigma=fit.draws("sigma") if "sigma" in names else np.zeros((n_draws, n_fam)),
            sigma_slope=slope,
            nugget=fit.draws("nugget"),
            population=population,
            spec=spec,
            n_ref=float(meta["n_ref"]),
            k_anchor=float(meta["k_anchor"]),
            x_lo=float(meta["x_lo"]),
            x_hi=float(meta["x_hi"]),
            pool_size=float(
                pool_size if pool_size is not None else meta.get("pool_size", meta["k_anchor"])
            ),
            sizes_b=tuple(sizes),
            flag=fit.flag,
            provenance={
                "data_hash": meta["data_hash"],
                "spec": spec.name,
                "spec_digest": spec.digest,
                "backend": meta.get("backend", ""),
                "n_draws": n_draws,
            },
        )

    @classmethod
    def from_draws(
        cls,
        families: pd.DataFrame | Sequence[str],
        law: Mapping[str, np.ndarray],
        *,
        sigma: np.ndarray | float = 0.01,
        sigma_slope: np.ndarray | float = 0.0,
        nugget: np.ndarray | float = 0.002,
        population: Mapping[str, tuple] | None = None,
        spec: ModelSpec | str = "default",
        sizes_b: Sequence[float] = (0.5, 3.0, 14.0),
        k_anchor: float = 9.0,
        pool_size: float | None = None,
        flag: str = "ok",
        provenance: Mapping | None = None,
    ) -> Posterior:
        """A posterior from arrays of draws: law values (S, F) (b, alpha optional), noise, and the
        population's raw mean and scale per group parameter (scalars or (S,)). The anchors
        (n_ref, x_lo, x_hi) follow from ``sizes_b`` as in ``bayes.data.prepare``."""
        spec = load_spec(spec) if isinstance(spec, str) else spec
        families = _family_frame(families)
        n_fam = len(families)
        first = np.asarray(law["L_star"], dtype=float)
        n_draws = first.shape[0]
        full = {}
        for name in LAW_NAMES:
            value = law[name] if name in law else _DEFAULT[name]
            full[name] = np.broadcast_to(np.asarray(value, dtype=float), (n_draws, n_fam)).copy()
        sizes = np.asarray(sorted(sizes_b), dtype=float)
        n_ref = float(np.exp(np.mean(np.log(sizes))))
        pop = {}
        for name, (mean, scale) in (population or {}).items():
            pop[name] = (
                np.broadcast_to(np.asarray(mean, dtype=float), (n_draws,)).copy(),
                np.broadcast_to(np.asarray(scale, dtype=float), (n_draws,)).copy(),
            )
        return cls(
            families=families,
            law=full,
            sigma=np.broadcast_to(np.asarray(sigma, dtype=float), (n_draws, n_fam)).copy(),
            sigma_slope=np.broadcast_to(np.asarray(sigma_slope, dtype=float), (n_draws,)).copy(),
            nugget=np.broadcast_to(np.asarray(nugget, dtype=float), (n_draws,)).copy(),
            population=pop,
            spec=spec,
            n_ref=n_ref,
            k_anchor=float(k_anchor),
            x_lo=float(np.log(sizes.min() / n_ref)),
            x_hi=float(np.log(sizes.max() / n_ref)),
            pool_size=float(pool_size if pool_size is not None else k_anchor),
            sizes_b=tuple(float(s) for s in sizes),
            flag=flag,
            provenance=dict(provenance or {"data_hash": "none", "spec": spec.name}),
        )

    @classmethod
    def point_mass(
        cls,
        families: pd.DataFrame | Sequence[str],
        law: Mapping[str, float | Sequence[float]],
        *,
        n_draws: int = 4,
        **kwargs,
    ) -> Posterior:
        """A posterior whose every draw equals ``law`` (one value per family, or one for all):
        queries on it must reproduce the closed forms exactly."""
        n_fam = len(families)
        law = {
            name: np.broadcast_to(np.asarray(value, dtype=float), (n_draws, n_fam))
            for name, value in law.items()
        }
        return cls.from_draws(families, law, **kwargs)

    def family_index(self, family: str) -> int:
        """Index of a family by its label, or by a unique part of it ('ties/code', 'code')."""
        labels = self.labels
        if family in labels:
            return labels.index(family)
        hits = [i for i, label in enumerate(labels) if _label_matches(label, family)]
        if len(hits) == 1:
            return hits[0]
        what = "matches several families" if hits else "is not a family of this fit"
        raise MergelawError(
            f"family {family!r} {what} (expected one of: {', '.join(labels)}, or 'new')"
        )

    def curves(self, n_b: float, families: Sequence[str] | str | None = None) -> CurveDraws:
        """Mean-curve draws at base size ``n_b`` (billions) for the named families (None: all;
        'new': a family the fit has not seen, drawn from the population)."""
        if isinstance(families, str):
            families = [families]
        if families is not None and NEW_FAMILY in families:
            if list(families) != [NEW_FAMILY]:
                raise MergelawError("'new' cannot be combined with other families in one query")
            return self.new_family().curves(n_b)
        index = (
            np.arange(len(self.labels))
            if families is None
            else np.array([self.family_index(f) for f in families])
        )
        return self._curves(n_b, index)

    def _curves(self, n_b: float, index: np.ndarray) -> CurveDraws:
        n_b = _positive_size(n_b)
        every = len(index) == len(self.labels) and np.array_equal(index, np.arange(len(index)))
        p = self.law if every else {name: value[:, index] for name, value in self.law.items()}
        log_n = np.log(n_b)
        floor = p["L_star"] + p["B"] * np.exp(-p["beta"] * log_n)
        amplitude = p["A0"] * np.exp(-p["gamma"] * log_n)
        x = log_n - np.log(self.n_ref)
        sigma = self.sigma[:, index] * np.exp(-self.sigma_slope[:, None] * x)
        return CurveDraws(
            labels=[self.labels[i] for i in index],
            n_b=n_b,
            floor=floor,
            amplitude=amplitude,
            b=p["b"],
            alpha=p["alpha"],
            sigma=sigma,
            nugget=self.nugget[:, None],
            spread=self.spec.spread,
            pool_size=self.pool_size,
        )

    def population_draws(
        self, per_draw: int = 1, rng: np.random.Generator | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Group parameters of new families, ``per_draw`` for each posterior draw: value arrays
        (S·per_draw,), and the posterior draw each came from."""
        if not self.population:
            raise MergelawError(
                "this posterior has no population distribution (a new family cannot be drawn)"
            )
        rng = np.random.default_rng(0) if rng is None else rng
        source = np.repeat(np.arange(self.n_draws), per_draw)
        values = {}
        for name, (mean, scale) in self.population.items():
            raw = mean[source] + scale[source] * rng.standard_normal(source.size)
            transform = self.spec.params[name].transform
            values[name] = np.exp(raw) if transform == "log" else raw
        return values, source

    def law_of(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The paper's parameters (LAW_NAMES) of group-parameter values (anchored or natural),
        through the model's own arithmetic."""
        values = dict(values)
        if self.spec.parameterisation == "anchored":
            values.update(
                anchored_law(
                    values, k_anchor=self.k_anchor, n_ref=self.n_ref, x_lo=self.x_lo, x_hi=self.x_hi
                )
            )
        n = np.shape(values["L_star"])
        return {
            name: np.broadcast_to(values[name] if name in values else _DEFAULT[name], n)
            for name in LAW_NAMES
        }

    def new_family(self, per_draw: int = 1, seed: int = 0) -> Posterior:
        """A one-family posterior drawn from the population: a domain or method not in the fit
        (the model has no method or domain effects, so every new family is alike a priori)."""
        values, source = self.population_draws(per_draw, np.random.default_rng(seed))
        law = {name: value[:, None] for name, value in self.law_of(values).items()}
        sigma = values.get("sigma", np.zeros(source.size))
        return Posterior(
            families=_family_frame([f"?/?/{NEW_FAMILY}"]).assign(label=NEW_FAMILY),
            law=law,
            sigma=sigma[:, None],
            sigma_slope=self.sigma_slope[source],
            nugget=self.nugget[source],
            population={},
            spec=self.spec,
            n_ref=self.n_ref,
            k_anchor=self.k_anchor,
            x_lo=self.x_lo,
            x_hi=self.x_hi,
            pool_size=self.pool_size,
            sizes_b=self.sizes_b,
            flag=self.flag,
            provenance=self.provenance,
        )


_DEFAULT = {"b": 0.0, "alpha": 1.0}


def _positive_size(n_b: float) -> float:
    n_b = float(n_b)
    if not np.isfinite(n_b) or n_b <= 0:
        raise MergelawError(f"base size {n_b} is not a positive number of billions")
    return n_b


def _label_matches(label: str, query: str) -> bool:
    parts, wanted = label.split("/"), query.split("/")
    return any(parts[i : i + len(wanted)] == wanted for i in range(len(parts)))


def _family_frame(families: pd.DataFrame | Sequence[str]) -> pd.DataFrame:
    if isinstance(families, pd.DataFrame):
        return families.reset_index(drop=True)
    rows = []
    for label in families:
        parts = label.split("/")
        if len(parts) != 3:
            raise MergelawError(f"family label {label!r} is not 'arch/method/eval_domain'")
        rows.append(dict(zip(("arch", "method", "eval_domain"), parts), method_params="{}"))
    frame = pd.DataFrame(rows, columns=list(FAMILY_COLUMNS))
    frame["label"] = list(families)
    return frame
