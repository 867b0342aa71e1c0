"""A fit's posterior as plain numpy draws: what the planning queries need, and nothing to sample.

``Posterior`` holds, per draw, each family's law (L_star, B, beta, A0, gamma, b, alpha), its
noise (sigma per family, sigma_slope, nugget) and the population distribution of the group
parameters (raw-scale mean and scale). It is built from a saved ``Fit`` (``from_fit``) or directly
from arrays (``from_draws``, ``point_mass``), so every query can be tested against the law's
closed forms with no sampling. ``curves(n_b)`` gives the mean curve floor + A·(k+b)^-alpha at one
base size; ``new_family`` draws a family the fit has not seen from the population.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from mergelaw import law as law_math
from mergelaw.bayes.data import merge_methods, method_index
from mergelaw.bayes.model import group_method, param_scope
from mergelaw.bayes.spec import SIZE_LAW_PARAMS, ModelSpec, ParamPrior, load_spec
from mergelaw.curves import FAMILY_COLUMNS
from mergelaw.errors import MergelawError

#: Per-family law parameters a Posterior carries (b = 0 and alpha = 1 where the spec lacks them).
LAW_NAMES = ("L_star", "B", "beta", "A0", "gamma", "b", "alpha", "decay")
#: Per-curve parameters, kept per fitted base size: the membership gap, the floor's deviation
#: from its size law, and (a fit without size laws) the curve itself.
PER_SIZE_NAMES = ("gap", "floor_dev", "tail_dev", "b_dev", "noise_dev", "L_star", "A0", "b")
#: Per-curve parameters kept whether or not the fit has size laws.
PER_CURVE_ALWAYS = ("gap", "floor_dev", "tail_dev", "b_dev", "noise_dev")
NEW_FAMILY = "new"
#: Pools a stratified forecast can be asked for: holding the target domain's expert, or not.
STRATA = ("with_own", "without_own")


def family_columns(draws: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The columns (families) at ``index`` of (S, F, ...) draws, C-ordered: numpy's
    ``draws[:, index]`` comes out Fortran-ordered, and later passes that mix it with C-ordered
    draws run slower."""
    return np.take(draws, index, axis=1)


def _is_k_grid(k) -> bool:
    """Whether ``k`` is a 1-D sequence of k (a trailing axis of its own) rather than a scalar or
    an array of one k per draw and family."""
    return np.ndim(k) == 1


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
    gap: np.ndarray | None = None  # (S, F) own-expert gap at k = 1 (None: not fitted here)
    decay: np.ndarray | None = None  # (S, F)
    stratum: str | None = None  # None: the average over subsets; or one of STRATA

    @property
    def n_draws(self) -> int:
        return self.floor.shape[0]

    def in_stratum(self, stratum: str | None) -> CurveDraws:
        """The curve of pools that hold the evaluated domain's own expert ('with_own') or not
        ('without_own'); None: the average over all subsets (the law)."""
        if stratum is not None and stratum not in STRATA:
            raise MergelawError(f"pool {stratum!r} (expected one of: {', '.join(STRATA)})")
        if stratum is not None and self.gap is None:
            raise MergelawError(
                "this fit has no in-domain membership term at this base size (fit subset rows "
                "with the default spec, and ask at a fitted size)"
            )
        return dataclasses.replace(self, stratum=stratum)

    @cached_property
    def unit_alpha(self) -> bool:
        """Whether the tail exponent is 1 in every draw (the default spec): 1/(k+b) then."""
        return bool(np.all(self.alpha == 1.0))

    def tail_shape(self, k) -> np.ndarray:
        """The curve's k-dependence (k + b)^-alpha (law.tail_shape): (S, F) or (S, F, K), see
        ``mean`` for how k broadcasts."""
        k, b, alpha = self._k_axis(k)
        return law_math.tail_shape(k, b, alpha)

    def mean(self, k, draws_last: bool = False) -> np.ndarray:
        """E[L] at k experts: (S, F) for a scalar k or an array broadcasting against (S, F) (one
        k per draw and family), (S, F, K) for a 1-D sequence of k ((F, K, S) where
        ``draws_last``: each curve point's draws contiguous, to be sorted); in a stratum, the
        mean of its subsets (law.stratum_offset added)."""
        if _is_k_grid(k):
            return self._over_grid(k, lambda kk, _: self.mean(kk), draws_last)
        mean = np.multiply(self.amplitude, self.tail_shape(k))
        mean += self.floor
        if self.stratum is None:
            return mean
        k_arr, _, _ = self._k_axis(k)
        own = 1.0 if self.stratum == "with_own" else 0.0
        return mean + law_math.stratum_offset(k_arr, own, self.pool_size, self.gap, self.decay)

    def noise_sd(self, k, n_subsets=1, draws_last: bool = False) -> np.ndarray:
        """Sd of the mean loss of ``n_subsets`` random k-subsets around the curve (the fit's
        noise model: sigma²·spread(k, M) + nugget², divided by the number of subsets; a count
        per k broadcasts along k). Shapes as ``mean``'s. About the average over subsets (no
        stratum), a random subset's holding the own expert or not adds its variance
        (law.membership_variance); about a stratum's curve, it does not."""
        if _is_k_grid(k):
            counts = np.broadcast_to(np.asarray(n_subsets, dtype=float), np.shape(k))
            return self._over_grid(k, lambda kk, j: self.noise_sd(kk, counts[j]), draws_last)
        factor = law_math.spread_factor(self.spread, k, self.pool_size)
        scale = law_math.noise_scale(self.sigma, factor, self.nugget)
        if self.stratum is None and self.gap is not None:
            k_arr, _, _ = self._k_axis(k)
            membership = law_math.membership_variance(k_arr, self.pool_size, self.gap, self.decay)
            scale = np.sqrt(scale**2 + membership)
        if np.all(np.asarray(n_subsets) == 1):
            return scale  # one merge per k: nothing to average (and no pass to divide by 1)
        return scale / np.sqrt(n_subsets)

    def _over_grid(self, ks, value_at, draws_last: bool = False) -> np.ndarray:
        """``value_at(k, j)`` (S, F) at each k of a grid (j: its position), as (S, F, K), or
        (F, K, S) where ``draws_last``. One k at a time, so that every pass runs over all S·F
        values at once: broadcasting a short k axis last makes numpy loop S·F times over K
        values, several times slower."""
        ks = np.asarray(ks, dtype=float)
        n_fam = self.floor.shape[1]
        if draws_last:
            out = np.empty((n_fam, ks.size, self.n_draws))
            for j, kk in enumerate(ks):
                out[:, j, :] = value_at(float(kk), j).T
            return out
        out = np.empty((self.n_draws, n_fam, ks.size))
        for j, kk in enumerate(ks):
            out[..., j] = value_at(float(kk), j)
        return out

    def marginal_gain(self, k) -> np.ndarray:
        """L(k) - L(k+1) per draw (law.marginal_gain; k broadcasts as in ``mean``)."""
        k = np.asarray(k, dtype=float)
        if self.stratum is not None:
            return self.mean(k) - self.mean(k + 1.0)
        k, b, alpha = self._k_axis(k)
        return law_math.marginal_gain(k, self._expand(self.amplitude, k), b, alpha)

    def take(self, index: np.ndarray) -> CurveDraws:
        """The draws at ``index`` (resampling)."""
        return dataclasses.replace(self, **{n: a[index] for n, a in self._arrays().items()})

    def families(self, index: np.ndarray) -> CurveDraws:
        """The curves of the families at ``index`` (columns)."""
        arrays = {
            n: a if a.shape[1] == 1 else family_columns(a, index) for n, a in self._arrays().items()
        }
        return dataclasses.replace(self, labels=[self.labels[i] for i in index], **arrays)

    def _arrays(self) -> dict[str, np.ndarray]:
        names = ("floor", "amplitude", "b", "alpha", "sigma", "nugget", "gap", "decay")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def _k_axis(self, k):
        """k, b and alpha ready to broadcast: a 1-D sequence of k becomes a trailing axis; alpha
        is the number 1 where every draw has it (law's exact 1/(k+b) forms)."""
        b, alpha = self.b, 1.0 if self.unit_alpha else self.alpha
        if np.ndim(k) == 0:
            return float(k), b, alpha
        if not _is_k_grid(k):
            return np.asarray(k, dtype=float), b, alpha
        return np.asarray(k, dtype=float), b[..., None], np.expand_dims(alpha, -1)

    @staticmethod
    def _expand(array: np.ndarray, k) -> np.ndarray:
        return array[..., None] if _is_k_grid(k) else array


@dataclass(frozen=True)
class Posterior:
    """Posterior draws of a fit, numpy only. Law arrays are (n_draws, n_families)."""

    families: pd.DataFrame  # FAMILY_COLUMNS + label, one row per family
    law: dict[str, np.ndarray]  # LAW_NAMES -> (S, F)
    sigma: np.ndarray  # (S, F): spread of single-expert losses at n_ref
    sigma_slope: np.ndarray  # (S,)
    nugget: np.ndarray  # (S,)
    # group param -> raw mean and scale (S,), or per merge method (S, methods)
    population: dict[str, tuple[np.ndarray, np.ndarray]]
    spec: ModelSpec
    n_ref: float
    k_anchor: float
    x_lo: float
    x_hi: float
    pool_size: float
    sizes_b: tuple[float, ...]
    flag: str = "ok"
    provenance: dict = field(default_factory=dict)
    size_law: bool = True  # False: fitted on < 3 sizes, curves exist at the fitted sizes only
    per_size: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)  # see PER_SIZE_NAMES
    floor_dev_scale: np.ndarray | None = None  # (S,): a new size's floor sits off the law by this
    tail_dev_scale: np.ndarray | None = None  # (S, F): and its drop by this (nats, its method's)
    b_dev_scale: np.ndarray | None = None  # (S, F) or (S,): and its log(1 + b) by this
    noise_dev_scale: np.ndarray | None = None  # (S,): a new curve's log noise factor's spread
    means_misfit: dict[str, float] | None = None  # per merge method (nats), mergelaw.law_misfit
    # the offset b's population is its fitted curves' (bends included): a new family's curves
    # take no bend of their own on top (fitted_curves_offset_population)
    offsets_of_curves: bool = False

    @property
    def n_draws(self) -> int:
        return self.sigma.shape[0]

    def require_size_law(self, query: str) -> None:
        """Refuse, in one line, a query that needs the floor's and tail's size laws."""
        if not self.size_law:
            sizes = ", ".join(f"{n:g}B" for n in self.sizes_b)
            raise MergelawError(
                f"{query} needs the size laws, but this fit has {len(self.sizes_b)} base size(s) "
                f"({sizes}) and none (fit >= 3 sizes); ask at a fitted size"
            )

    def fitted_size(self, n_b: float) -> float | None:
        """The fitted size equal to ``n_b`` (to 1e-5 relative: a size as printed, to six
        significant digits, is that size), or None."""
        for size in self.sizes_b:
            if abs(size - n_b) <= 1e-5 * size:
                return size
        return None

    def planning_size(self, n_b: float | None, option: str = "n_b") -> float:
        """``n_b``, or the fit's one base size when it is None (a fit of several sizes needs
        the size to plan for; ``option`` names it in the error)."""
        if n_b is not None:
            return n_b
        if len(self.sizes_b) != 1:
            sizes = ", ".join(f"{n:g}B" for n in self.sizes_b)
            raise MergelawError(
                f"{option}: this fit has {len(self.sizes_b)} base sizes ({sizes}); give the one "
                "to plan for (billions)"
            )
        return float(self.sizes_b[0])

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
        n_draws = fit.draws("sigma_slope" if "sigma_slope" in names else "nugget").shape[0]
        families = fit.families
        n_fam = len(families)
        meta = fit.meta
        curves = meta.curve_table
        size_law = meta.size_law

        def family_draws(name: str) -> np.ndarray:
            draws = fit.draws(name) if name in names else None
            if name == "decay" and draws is not None:  # one per merge method
                return fit.per_family(draws)
            if draws is None or (not size_law and name in PER_SIZE_NAMES):
                return np.full((n_draws, n_fam), _DEFAULT.get(name, 0.0))
            return draws

        law = {name: family_draws(name) for name in LAW_NAMES}
        bend = fit.deviation_scale("b_dev")  # (S, methods) learnt per method, (S,) fixed
        per_size: dict[float, dict[str, np.ndarray]] = {}
        for n_params, rows in curves.groupby("n_params"):
            column = np.full(n_fam, -1)
            column[rows["family"].to_numpy(int)] = rows.index.to_numpy()
            present = column >= 0
            extras = {}
            for name in PER_SIZE_NAMES:
                if (
                    name in names
                    and fit.draws(name).shape[1] == len(curves)
                    and (name in PER_CURVE_ALWAYS or not size_law)
                ):
                    values = np.full((n_draws, n_fam), np.nan)
                    values[:, present] = fit.draws(name)[:, column[present]]
                    extras[name] = values
            per_size[float(n_params) / 1e9] = extras
        population = {}
        offsets_of_curves = False
        for name in spec.required_params(size_law=size_law, form=meta.data_form):
            prior = spec.params[name]
            if spec.is_pooled(name):
                population[name] = (fit.draws(f"{name}_mean"), fit.draws(f"{name}_scale"))
            elif name in SIZE_LAW_PARAMS:  # see fitted_groups_population
                population[name] = (np.full(n_draws, prior.prior_mean),
                                    np.full(n_draws, prior.prior_sd))  # fmt: skip
            elif name == "b" and "b_dev" in names:  # bent curves: see the function
                population[name] = fitted_curves_offset_population(
                    prior, fit.draws("b"), fit.draws("b_dev"), families, curves
                )
                offsets_of_curves = True
            else:
                population[name] = fitted_groups_population(
                    prior, fit.draws(name), param_scope(spec, name, size_law), families, curves
                )
        sizes = sorted(per_size)
        if not size_law:  # no size law: the family's law is its curve at the largest fitted size
            law.update({n: v for n, v in per_size[sizes[-1]].items() if n in law})
        slope = fit.draws("sigma_slope") if "sigma_slope" in names else np.zeros(n_draws)
        nugget = fit.family_nugget()
        return cls(
            families=families,
            law=law,
            sigma=fit.draws("sigma") if "sigma" in names else np.zeros((n_draws, n_fam)),
            sigma_slope=slope,
            nugget=nugget,
            population=population,
            spec=spec,
            n_ref=meta.n_ref,
            k_anchor=meta.k_anchor,
            x_lo=meta.x_lo,
            x_hi=meta.x_hi,
            pool_size=float(pool_size if pool_size is not None else meta.pool_size),
            sizes_b=tuple(sizes),
            flag=fit.flag,
            provenance={
                "data_hash": meta.data_hash,
                "spec": spec.name,
                "spec_digest": spec.digest,
                "backend": meta.backend,
                "n_draws": n_draws,
            },
            size_law=size_law,
            per_size=per_size,
            floor_dev_scale=fit.deviation_scale("floor_dev"),
            tail_dev_scale=(fit.per_family(fit.tail_drop_scale()) if "tail_dev" in names else None),
            b_dev_scale=bend if bend is None or bend.ndim == 1 else fit.per_family(bend),
            noise_dev_scale=fit.deviation_scale("noise_dev"),
            means_misfit=meta.means_misfit,
            offsets_of_curves=offsets_of_curves,
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
        population's raw mean and scale per group parameter (scalars or (S,); (S, methods) for
        one per merge method, in sorted method order). The anchors (n_ref, x_lo, x_hi)
        follow from ``sizes_b`` as in ``bayes.data.prepare``."""
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
        for name, pair in (population or {}).items():
            mean, scale = (np.asarray(a, dtype=float) for a in pair)  # (S, methods): per method
            pop[name] = tuple(
                a.copy() if a.ndim == 2 else np.broadcast_to(a, (n_draws,)).copy()
                for a in (mean, scale)
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
        return self.family_curves(n_b, families)[1]

    def family_curves(
        self, n_b: float, families: Sequence[str] | str | None = None
    ) -> tuple[Posterior, CurveDraws, np.ndarray]:
        """The posterior the named families live in (this one; for 'new', a family drawn from
        the population), their curves at ``n_b`` and their indices there: for queries that also
        read the families' size laws (``law_at``)."""
        names = [families] if isinstance(families, str) else families
        if names is not None and NEW_FAMILY in names:
            if list(names) != [NEW_FAMILY]:
                raise MergelawError("'new' cannot be combined with other families in one query")
            source, index = self.new_family(), np.array([0])
        else:
            source = self
            index = (
                np.arange(len(self.labels))
                if names is None
                else np.array([self.family_index(f) for f in names])
            )
        return source, source._curves(n_b, index), index

    def law_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The law draws (LAW_NAMES -> (S, len(index))) of the families at ``index``: the arrays
        themselves, not copies, when that is every family in order (read them, never write)."""
        if _every(index, len(self.labels)):
            return self.law
        return {name: family_columns(value, index) for name, value in self.law.items()}

    def _curves(self, n_b: float, index: np.ndarray) -> CurveDraws:
        n_b = _positive_size(n_b)
        fitted = self.fitted_size(n_b)
        if fitted is None:
            self.require_size_law(f"a curve at {n_b:g}B (not a fitted size)")
        extras = {n: family_columns(v, index) for n, v in self.per_size.get(fitted, {}).items()}
        p = self.law_at(index)
        if not self.size_law:  # the fitted curve at this size; no size law to evaluate
            floor, amplitude, b = extras["L_star"], extras["A0"], extras["b"]
        else:
            floor = law_math.floor_loss(n_b, p["L_star"], p["B"], p["beta"])
            amplitude = law_math.tail_amplitude(n_b, p["A0"], p["gamma"])
            # a fitted size: the curve's own deviations; a new size: drawn at their spreads
            fresh = self.family_normals
            dev = {name: extras.get(name) for name in ("b_dev", "floor_dev", "tail_dev")}
            if dev["b_dev"] is None and self.b_dev_scale is not None:
                dev["b_dev"] = _columns(self.b_dev_scale, index) * fresh(index, 0)
            if dev["floor_dev"] is None and self.floor_dev_scale is not None:
                dev["floor_dev"] = self.floor_dev_scale[:, None] * fresh(index, 1)
            if dev["tail_dev"] is None and self.tail_dev_scale is not None:
                spread = law_math.amplitude_spread_for_drop(
                    _columns(self.tail_dev_scale, index), p["b"], p["alpha"],
                    anchors=(self.spec.drop_from_k, self.k_anchor), b_dev=dev["b_dev"],
                )  # fmt: skip
                dev["tail_dev"] = spread * fresh(index, 2)
            floor, amplitude, b = law_math.curve_off_size_laws(
                floor, amplitude, p["b"], p["alpha"],
                anchors=(self.spec.drop_from_k, self.k_anchor), **dev,
            )  # fmt: skip
        sigma = law_math.sigma_at_size(
            _columns(self.sigma, index), self.sigma_slope[:, None], n_b / self.n_ref
        )
        nugget = _columns(self.nugget, index)
        curve_factor = self.curve_noise_factor(extras.get("noise_dev"), index)
        sigma, nugget = sigma * curve_factor, nugget * curve_factor
        gap = extras.get("gap")
        if gap is None and "gap" in self.population:
            gap = self._new_curve_gap(index)
        return CurveDraws(
            labels=[self.labels[i] for i in index],
            n_b=n_b,
            floor=floor,
            amplitude=amplitude,
            b=b,
            alpha=p["alpha"],
            sigma=sigma,
            nugget=nugget,
            spread=self.spec.spread,
            pool_size=self.pool_size,
            gap=gap,
            decay=p["decay"] if gap is not None else None,
        )

    def curve_noise_factor(
        self, deviation: np.ndarray | None, index: np.ndarray
    ) -> np.ndarray | float:
        """exp(noise deviation) of the curves of the families at ``index``: the fitted ones'
        draws, or for curves the fit has not seen (a new size or family) fresh draws from
        N(0, noise_dev_scale); 1 where the spec has no per-curve noise."""
        if deviation is not None:
            return np.exp(deviation)
        if self.noise_dev_scale is None:
            return 1.0
        return np.exp(self.noise_dev_scale[:, None] * self.family_normals(index, 3))

    def _new_curve_gap(self, index: np.ndarray) -> np.ndarray:
        """Own-expert gaps (S, len(index)) of curves at a size the fit has not seen: drawn from
        the gap's population (its method's, where it has one per method), each family's from its
        own stream, so that a random merge's spread there counts whether it holds the own expert
        (CurveDraws.noise_sd)."""

        def per_family(values: np.ndarray) -> np.ndarray:
            if values.ndim == 1:
                return values[:, None]
            return values[:, method_index(self.families)[index]]

        mean, scale = (per_family(a) for a in self.population["gap"])
        return self.spec.params["gap"].to_value(mean + scale * self.family_normals(index, 4))

    def family_normals(self, index: np.ndarray, stream: int) -> np.ndarray:
        """Standard normal draws (S, len(index)) for the families at ``index``, each family's
        seeded by its label and ``stream`` (0 bend, 1 floor, 2 drop, 3 noise factor, 4 gap): a
        family's deviations at a new size are the same whichever families a query asks about
        with it (and at every new size)."""
        columns = [
            np.random.default_rng([stream, zlib.crc32(self.labels[i].encode())]).standard_normal(
                self.n_draws
            )
            for i in index
        ]
        return np.stack(columns, axis=1) if columns else np.empty((self.n_draws, 0))

    def select(self, families: Sequence[str]) -> Posterior:
        """This posterior restricted to the named families, in that order: for a query that
        evaluates the same few families at many sizes (columns taken once, not per size)."""
        index = np.array([self.family_index(f) for f in families], dtype=int)

        def per_family(values):
            if values is None or values.ndim < 2:
                return values
            return family_columns(values, index)

        return dataclasses.replace(
            self,
            families=self.families.iloc[index].reset_index(drop=True),
            law={name: per_family(value) for name, value in self.law.items()},
            sigma=per_family(self.sigma),
            per_size={
                size: {name: per_family(value) for name, value in extras.items()}
                for size, extras in self.per_size.items()
            },
            tail_dev_scale=per_family(self.tail_dev_scale),
            b_dev_scale=per_family(self.b_dev_scale),
        )

    def population_draws(
        self,
        per_draw: int = 1,
        rng: np.random.Generator | None = None,
        method: str | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Group parameters of new families, ``per_draw`` for each posterior draw: value arrays
        (S·per_draw,), and the posterior draw each came from. A parameter with one population
        per merge method (pooled by method, or not pooled: its method's fitted groups) takes
        ``method``'s; a method the fit has not seen draws from the spec's prior, and no method
        (None) takes one fitted method at random per new family, for all its parameters."""
        if not self.population:
            raise MergelawError(
                "this posterior has no population distribution (a new family cannot be drawn)"
            )
        rng = np.random.default_rng(0) if rng is None else rng
        source = np.repeat(np.arange(self.n_draws), per_draw)
        fitted = merge_methods(self.families)
        if method in fitted:
            chosen = np.full(source.size, fitted.index(method))
        elif method is None:  # one method per new family, for all its parameters
            chosen = rng.integers(len(fitted), size=source.size)
        values = {}
        for name, (mean, scale) in self.population.items():
            prior = self.spec.params[name]
            mean, scale = mean[source], scale[source]
            if mean.ndim == 2:  # one mean (and maybe scale) per fitted merge method
                if method in fitted or method is None:
                    column = chosen
                elif scale.ndim == 2:  # an unseen method, a parameter not pooled: its prior
                    column, mean = None, np.full(source.size, prior.prior_mean)
                    scale = np.full(source.size, prior.prior_sd)
                else:  # an unseen method: its mean from the prior, the pooled spread around it
                    column = None
                    mean = prior.prior_mean + prior.prior_sd * rng.standard_normal(source.size)
                if column is not None:
                    mean, scale = _take_method(mean, column), _take_method(scale, column)
            values[name] = prior.sample(mean, scale, rng)
        return values, source

    def law_of(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The paper's parameters (LAW_NAMES) of group-parameter values (anchored or natural),
        through the model's own arithmetic."""
        values = dict(values)
        if self.spec.parameterisation == "anchored":
            sizes = {}
            if self.size_law:
                sizes = {"n_ref": self.n_ref, "ratio_lo": np.exp(self.x_lo),
                         "ratio_hi": np.exp(self.x_hi)}  # fmt: skip
                sizes |= {n: values[n] for n in ("floor_drop", "beta", "gamma")}
            values.update(
                law_math.anchored_law(
                    values["level"],
                    values["drop"],
                    k_anchor=self.k_anchor,
                    k_low=self.spec.drop_from_k,
                    b=values.get("b", 0.0),
                    alpha=values.get("alpha", 1.0),
                    **sizes,
                )
            )
        n = np.shape(values["L_star"])
        return {
            name: np.broadcast_to(values[name] if name in values else _DEFAULT[name], n)
            for name in LAW_NAMES
        }

    def misfit_of(self, method: str | None) -> float | None:
        """How far the law misses a per-k mean of a ``method`` curve beyond its se, as measured
        on the fitted table (mergelaw.law_misfit); for a method the fit has not seen, the root
        mean square over the fitted methods'. None: a fit that did not measure it."""
        if not self.means_misfit:
            return None
        if method in self.means_misfit:
            return self.means_misfit[method]
        return float(np.sqrt(np.mean(np.square(list(self.means_misfit.values())))))

    def _new_family_gap_population(self, source: np.ndarray, method: str | None) -> dict:
        """The gap's population for a new family's curves at sizes the fit has not seen: its
        merge method's where the population has one per method (for no or an unseen method, the
        first fitted method's: the default gap has one population for all)."""
        if "gap" not in self.population:
            return {}
        fitted = merge_methods(self.families)
        column = np.full(source.size, fitted.index(method) if method in fitted else 0)
        return {"gap": tuple(_take_method(a[source], column) for a in self.population["gap"])}

    def _new_family_scale(
        self, values: np.ndarray | None, source: np.ndarray, method: str | None = None
    ) -> np.ndarray | None:
        """A new family's draws (S,) of a per-method scale (the nugget, the deviations') given
        per family (S, F), or one for all (S,): its merge method's where the fit has that
        method, else the root mean square over the fitted families' (the lab's TIES nugget is
        30 times Average's: their mixture would call an Average curve's points six times
        noisier than they are)."""
        if values is None or values.ndim == 1:
            return None if values is None else values[source]
        same = np.flatnonzero(self.families["method"].to_numpy() == method)
        if same.size:
            return values[source, same[0]]
        return np.sqrt(np.mean(values[source] ** 2, axis=1))

    def new_family(self, per_draw: int = 1, seed: int = 0, method: str | None = None) -> Posterior:
        """A one-family posterior drawn from the population: a domain or method not in the fit
        (every new family is alike a priori but for what the spec gives each merge ``method``:
        its noise floor, and its population mean where a parameter has one per method; see
        ``population_draws``). Per-curve parameters (the membership gap; without size laws, the
        curve itself) are drawn for each fitted size."""
        rng = np.random.default_rng(seed)
        values, source = self.population_draws(per_draw, rng, method)
        law = {name: value[:, None] for name, value in self.law_of(values).items()}
        sigma = values.get("sigma", np.zeros(source.size))
        per_size = {}
        for size in self.sizes_b:
            fresh = (
                values
                if size == self.sizes_b[0]
                else self.population_draws(per_draw, rng, method)[0]
            )
            extras = {"gap": fresh["gap"][:, None]} if "gap" in fresh else {}
            if not self.size_law:
                extras |= {
                    n: v[:, None] for n, v in self.law_of(fresh).items() if n in PER_SIZE_NAMES
                }
            per_size[size] = extras
        return Posterior(
            families=_family_frame([f"?/?/{NEW_FAMILY}"]).assign(label=NEW_FAMILY),
            law=law,
            sigma=sigma[:, None],
            sigma_slope=self.sigma_slope[source],
            nugget=self._new_family_scale(self.nugget, source, method),
            population=self._new_family_gap_population(source, method),
            spec=self.spec,
            n_ref=self.n_ref,
            k_anchor=self.k_anchor,
            x_lo=self.x_lo,
            x_hi=self.x_hi,
            pool_size=self.pool_size,
            sizes_b=self.sizes_b,
            flag=self.flag,
            provenance=self.provenance,
            size_law=self.size_law,
            per_size=per_size,
            floor_dev_scale=self._new_family_scale(self.floor_dev_scale, source),
            tail_dev_scale=self._new_family_scale(self.tail_dev_scale, source, method),
            b_dev_scale=None
            if self.offsets_of_curves
            else self._new_family_scale(self.b_dev_scale, source, method),
            noise_dev_scale=self._new_family_scale(self.noise_dev_scale, source),
            means_misfit=self.means_misfit,
        )


#: Fewest fitted groups of a merge method whose spread stands for a new group's; with fewer, a
#: new group of that method draws from the spec's prior.
MIN_GROUPS_PER_METHOD = 3


def fitted_groups_population(
    prior: ParamPrior, draws: np.ndarray, scope: str, families: pd.DataFrame, curves: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Where a new group of a parameter the spec leaves unpooled comes from: per posterior draw
    and merge method, the mean and sd (raw scale) of the method's fitted groups, (S, methods)
    each; a method with fewer than MIN_GROUPS_PER_METHOD takes the spec's prior. The fit has no
    population for such a parameter, and the prior knows nothing of merge methods: drawn from it,
    a new TIES curve's offset b sat near 0 (log1p b ~ N(0, 1)) where every fitted TIES family's
    is 3-12, and a forecast from its first points bent too early (predictive coverage of TIES
    0.67-0.87 in benchmarks/results/transfer*.txt, the other methods' 0.98-1.00). A parameter of
    one value per merge method (scope 'merge_method') is its method's value, exactly.

    Not for the size laws' parameters: three sizes leave a family's exponents to the prior (the
    spec's notes), so their spread across families is a mixture of unidentified posteriors, and
    drawn from it, gpt2's betas overflowed N^-beta at the llama bases' sizes."""
    raw = prior.to_raw(draws)
    if scope == "merge_method":
        return raw, np.zeros_like(raw)
    methods = group_method(scope, families, curves)
    mean = np.full((raw.shape[0], len(merge_methods(families))), prior.prior_mean)
    scale = np.full_like(mean, prior.prior_sd)
    for m in range(mean.shape[1]):
        groups = raw[:, methods == m]
        if groups.shape[1] >= MIN_GROUPS_PER_METHOD:
            mean[:, m], scale[:, m] = groups.mean(axis=1), groups.std(axis=1, ddof=1)
    return mean, scale


def fitted_curves_offset_population(
    prior: ParamPrior,
    family_b: np.ndarray,
    bends: np.ndarray,
    families: pd.DataFrame,
    curves: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """Where a new curve's offset b comes from: per posterior draw and merge method, the mean and
    sd of log(1 + b) over the method's fitted curves, each its family's b bent by the curve's own
    deviation (fitted_groups_population of the curves' offsets); a method with fewer than
    MIN_GROUPS_PER_METHOD families takes the spec's prior. A curve's rows pin the sum, not how
    it splits between family and bend (across draws the two trade off), and the bends are the
    fitted curves' spread within their families: the families' spread plus a fresh bend at the
    spec's fixed 0.3 counted it twice, about 0.42 for a new Average, DARE or TA curve of the
    lab's gpt2 and llama fits, where their fitted curves spread 0.25-0.35 per draw (forecasts:
    benchmarks/results/transfer_*.txt)."""
    curve_b = law_math.offset_off_family(family_b[:, curves["family"].to_numpy(int)], bends)
    mean, scale = fitted_groups_population(prior, curve_b, "curve", families, curves)
    few = np.bincount(method_index(families), minlength=mean.shape[1]) < MIN_GROUPS_PER_METHOD
    mean[:, few], scale[:, few] = prior.prior_mean, prior.prior_sd
    return mean, scale


def _take_method(values: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Each row's value of its merge method ``column`` from values per method (S, methods);
    values for all methods (S,) as they are."""
    return values[np.arange(len(column)), column] if values.ndim == 2 else values


def _columns(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(S, len(index)) of draws given per family (S, F), or one for every family (S,): the array
    itself where index is every family in order (a copy by index would be slower to compute on
    and to make)."""
    if values.ndim == 1:
        return values[:, None]
    return values if _every(index, values.shape[1]) else family_columns(values, index)


def _every(index: np.ndarray, n_families: int) -> bool:
    """Whether ``index`` is every family, in order."""
    return len(index) == n_families and np.array_equal(index, np.arange(n_families))


#: Law values a spec or a fit does not have: no offset, alpha 1, decay 1, and (no size law) a
#: floor and tail that do not change with N.
_DEFAULT = {"b": 0.0, "alpha": 1.0, "decay": 1.0, "B": 0.0, "beta": 0.0, "gamma": 0.0}


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
