"""Model specifications: the TOML files under ``models/`` that both backends build from.

A spec says how the mean is parameterised, what the noise looks like, and each group parameter's
prior and pooling. Its ``digest`` hashes the parsed content (not comments or layout), so a saved
fit can tell whether the spec it was made with has changed.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from mergelaw.config import TABLES, Config, validated
from mergelaw.errors import MergelawError

#: raw -> value: exp (positive), identity, or about exp(raw) - 1 (> -1: the offset b, which the law
#: needs above -1 only, so b = 0 is inside the support rather than at a log scale's far end;
#: held below LOG1P_B_CAP).
Transform = Literal["log", "identity", "log1p"]
#: A pooled parameter's population: one across all groups, or one mean per merge method.
Population = Literal["all", "method"]
#: Group parameters of the floor's and tail's size laws: dropped on a table of < 3 base sizes.
SIZE_LAW_PARAMS = ("floor_drop", "beta", "gamma", "B")
#: log(1 + b) is held smoothly below this (b < e^10 - 1, about 22,000). Past a few hundred, b only
#: makes a straight line straighter, while the law's floor and amplitude grow like b and b^2 and
#: cancel in float64: on the whole lab table one chain of four stalled at b = 1.4e8 (gpt2 TIES
#: code), every draw at the maximum tree depth (benchmarks/transfer.py, lab -> smollm2).
LOG1P_B_CAP = 10.0


@dataclass(frozen=True)
class ParamPrior:
    """Prior of one group parameter: transform(raw), raw ~ Normal(mean, scale) across groups,
    mean ~ N(prior_mean, prior_sd), scale ~ HalfNormal(pool_scale). ``population`` 'method'
    gives each merge method its own mean (one scale): a parameter whose value the merge rule
    sets, such as the tail's offset b (TIES rises near-linearly, b ~ 10; Average saturates,
    b ~ 0), pools within a method rather than across a bimodal mixture of methods.

    ``centred`` samples raw directly (right for parameters the data pin down tightly); otherwise
    raw = mean + scale * z with z ~ N(0, 1) (right for weakly identified ones, avoiding funnels);
    'auto' (the membership gap only) decides by the table (``model.is_centred``).
    """

    transform: str
    prior_mean: float
    prior_sd: float
    pool_scale: float
    centred: bool | Literal["auto"] = False
    pooled: bool = True  # False: raw ~ Normal(prior_mean, prior_sd) in a pooled spec too
    population: str = "all"  # "all": one population; "method": one mean per merge method

    def to_value(self, raw, math: Any = np):
        """The parameter from its raw (Normal) scale (see Transform)."""
        if self.transform == "log":
            return math.exp(raw)
        if self.transform == "log1p":
            return math.exp(LOG1P_B_CAP - math.logaddexp(0.0, LOG1P_B_CAP - raw)) - 1.0
        return raw

    def to_raw(self, value):
        """The raw (Normal) scale of a value: to_value's inverse."""
        value = np.asarray(value, dtype=float)
        if self.transform == "log":
            return np.log(value)
        if self.transform == "log1p":
            headroom = LOG1P_B_CAP - np.log1p(value)  # softplus(cap - raw)
            return LOG1P_B_CAP - np.log(np.expm1(np.maximum(headroom, 1e-12)))
        return value

    def sample(self, mean, scale, rng: np.random.Generator):
        """Values for new groups from the population Normal(mean, scale) on the raw scale."""
        mean, scale = np.asarray(mean, dtype=float), np.asarray(scale, dtype=float)
        return self.to_value(mean + scale * rng.standard_normal(np.shape(mean)))

    def log_density(self, value, mean, scale):
        """Log density of values under the population Normal(mean, scale) of the raw scale, with
        the Jacobian of the transform (-inf where a log-transformed value is not positive)."""
        value = np.asarray(value, dtype=float)
        if self.transform == "log":
            positive = value > 0
            raw = np.log(np.where(positive, value, 1.0))
            density = _normal_log_density(raw, mean, scale) - raw
            return np.where(positive, density, -np.inf)
        if self.transform == "log1p":
            inside = (value > -1) & (np.log1p(np.maximum(value, -0.5)) < LOG1P_B_CAP)
            safe = np.where(inside, value, 0.0)
            held = np.log1p(safe)  # d raw / d held = 1 / (1 - e^(held - cap))
            jacobian = -held - np.log1p(-np.exp(held - LOG1P_B_CAP))
            density = _normal_log_density(self.to_raw(safe), mean, scale) + jacobian
            return np.where(inside, density, -np.inf)
        return _normal_log_density(value, mean, scale)


def _normal_log_density(x, mean, scale):
    return -0.5 * ((x - mean) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    pool: bool
    parameterisation: str
    tail_exponent: str
    offset: str
    exponent_scope: str
    spread: str
    nugget_prior_mode: float
    sigma_slope_prior_sd: float
    params: dict[str, ParamPrior] = field(default_factory=dict)
    source: str = ""
    membership: str = "none"
    nugget: str = "global"
    floor_deviation_prior_sd: float = 0.0
    drop_from_k: float = 1.0  # the anchored drop is L(drop_from_k) - L(k_anchor)
    target_accept: float | None = None  # [sampler]: NUTS's target for this model's geometry
    nugget_log_sd: float = 0.0  # > 0: log nugget ~ Normal(log mode, this); 0: Gamma(2, 1/mode)
    noise_curve_prior_sd: float = 0.0  # > 0: per-curve log noise factor ~ N(0, s), s ~ HN(this)
    noise_curve_scale: str = "learnt"  # "fixed": s = noise_curve_prior_sd, not learnt
    floor_deviation_scale: str = "learnt"  # "fixed": tau = floor_deviation_prior_sd; "auto":
    # learnt where the table has more base sizes than the floor law has parameters, else fixed
    floor_deviation_log_sd: float = 0.0  # > 0: learnt log tau ~ N(log prior_sd, this); 0: HN
    tail_deviation_prior_sd: float = 0.0  # > 0: per-curve drop off the size law, scale per method
    tail_deviation_scale: str = "learnt"  # "fixed": t = tail_deviation_prior_sd, not learnt
    offset_deviation_prior_sd: float = 0.0  # > 0: per-curve log(1 + b) off its family's, likewise
    offset_deviation_scale: str = "learnt"  # "fixed": s = offset_deviation_prior_sd, not learnt

    @property
    def digest(self) -> str:
        content = asdict(self)
        content.pop("source")
        text = json.dumps(content, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        content = asdict(self)
        content.pop("source")
        return json.dumps(content, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "") -> ModelSpec:
        content = json.loads(text)
        content["params"] = {k: ParamPrior(**v) for k, v in content["params"].items()}
        return cls(**content, source=source)

    def is_pooled(self, name: str) -> bool:
        """Whether group parameter ``name`` has a learnt population (mean and scale)."""
        return self.pool and self.params[name].pooled

    def required_params(self, size_law: bool = True, form: str = "subsets") -> list[str]:
        """Group parameters this spec's mean and noise need, in a fixed order. ``size_law``
        False (a table of < 3 base sizes) drops the size laws' parameters; a per-k means table
        (``form`` 'means') has no membership terms and takes its spread from the se column."""
        if self.parameterisation == "anchored":
            names = ["level", "drop", "floor_drop", "beta", "gamma"]
        else:
            names = ["L_star", "B", "beta", "A0", "gamma"]
        if not size_law:
            names = [n for n in names if n not in SIZE_LAW_PARAMS]
        if self.offset != "none":
            names.append("b")
        if self.tail_exponent == "free":
            names.append("alpha")
        if form == "subsets" and self.membership != "none":
            names.append("gap")
            if self.membership == "power":
                names.append("decay")
        if form == "subsets":
            names.append("sigma")
        return names


def models_dir() -> Path:
    """The source tree's models/ folder, or the copy inside an installed wheel."""
    source_tree = Path(__file__).resolve().parents[3] / "models"
    if source_tree.is_dir():
        return source_tree
    return Path(__file__).resolve().parents[1] / "_models"


def available_specs() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_spec(name_or_path: str | Path) -> ModelSpec:
    """Load a spec by name (a file in models/) or by path; one-line errors on anything off."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = models_dir() / f"{name_or_path}.toml"
    if not path.exists():
        raise MergelawError(
            f"{path}: no such model spec (expected a .toml path or one of: "
            f"{', '.join(available_specs())})"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MergelawError(f"{path}: not valid TOML ({exc})") from None
    return _parse(raw, str(path))


Deviation = Literal["learnt", "fixed"]
Sd = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]  # 0: that part of the model is off
Scale = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class MeanTable(Config):
    """[mean]: the law's parameterisation and the curves' deviations from it."""

    parameterisation: Literal["anchored", "natural"]
    tail_exponent: Literal["fixed", "free"]
    offset: Literal["family", "curve", "none"]
    exponent_scope: Literal["family", "curve"] = "family"
    membership: Literal["none", "inverse_k", "power"] = "none"
    floor_deviation_prior_sd: Sd = 0.0
    floor_deviation_scale: Literal["learnt", "fixed", "auto"] = "learnt"
    floor_deviation_log_sd: Sd = 0.0
    tail_deviation_prior_sd: Sd = 0.0
    tail_deviation_scale: Deviation = "learnt"
    offset_deviation_prior_sd: Sd = 0.0
    offset_deviation_scale: Deviation = "learnt"
    drop_from_k: Number = 1.0


class NoiseTable(Config):
    """[noise]: how the subsets' losses spread around the mean."""

    spread: Literal["finite_pool", "inverse_k", "homoscedastic"]
    nugget: Literal["global", "method"] = "global"
    nugget_prior_mode: Scale
    nugget_log_sd: Sd = 0.0
    sigma_slope_prior_sd: Scale
    noise_curve_prior_sd: Sd = 0.0
    noise_curve_scale: Deviation = "learnt"


class SamplerTable(Config):
    """[sampler]: NUTS settings this model's geometry needs."""

    target_accept: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None


class PriorTable(Config):
    """[params.NAME]: one group parameter's prior (``ParamPrior``)."""

    transform: Transform
    prior_mean: Number
    prior_sd: Scale
    pool_scale: Scale
    centred: Literal[True, False, "auto"] = False
    pooled: bool = True
    population: Population = "all"


class SpecFile(Config):
    """A model spec file, table by table."""

    name: str
    description: str = ""
    pool: bool
    mean: MeanTable
    noise: NoiseTable
    sampler: SamplerTable = SamplerTable()
    params: dict[str, PriorTable] = Field(default_factory=dict)


def _parse(raw: dict[str, Any], source: str) -> ModelSpec:
    file = validated(SpecFile, raw, source, TABLES)
    for name, table in file.params.items():
        if table.centred == "auto" and name != "gap":
            raise MergelawError(
                f"{source}: [params.{name}].centred = 'auto' is for the membership gap only "
                "(decided by how many merged models hold each curve's own expert); expected "
                "true or false"
            )
        if table.population == "method" and not table.pooled:
            raise MergelawError(
                f"{source}: [params.{name}].population = 'method' needs pooled = true (an "
                "unpooled parameter has no population)"
            )
    spec = ModelSpec(
        name=file.name,
        description=file.description,
        pool=file.pool,
        params={name: ParamPrior(**table.model_dump()) for name, table in file.params.items()},
        source=source,
        target_accept=file.sampler.target_accept,
        **file.mean.model_dump(),
        **file.noise.model_dump(),
    )
    required = spec.required_params()
    missing = [p for p in required if p not in spec.params]
    unused = [p for p in spec.params if p not in required]
    if missing:
        raise MergelawError(
            f"{source}: missing [params.{missing[0]}] "
            f"(this spec's mean needs: {', '.join(required)})"
        )
    if unused:
        raise MergelawError(
            f"{source}: [params.{unused[0]}] is not used by this spec's mean "
            f"(it needs: {', '.join(required)})"
        )
    if spec.tail_deviation_prior_sd > 0 and not (
        spec.floor_deviation_prior_sd > 0 and spec.parameterisation == "anchored"
    ):
        raise MergelawError(
            f"{source}: [mean].tail_deviation_prior_sd > 0 needs floor deviations "
            "(floor_deviation_prior_sd > 0) and the anchored parameterisation (its drop is the "
            "deviation's unit)"
        )
    if spec.offset_deviation_prior_sd > 0 and not (spec.offset == "family" and "b" in required):
        raise MergelawError(
            f"{source}: [mean].offset_deviation_prior_sd > 0 needs an offset b per family "
            "(offset = 'family') for the curves to deviate from"
        )
    return spec
