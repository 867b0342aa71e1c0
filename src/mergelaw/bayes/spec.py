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
from typing import Any

import numpy as np

from mergelaw.errors import MergelawError

#: raw -> value: exp (positive), identity, or exp(raw) - 1 (> -1: the offset b, which the law
#: needs above -1 only, so b = 0 is inside the support rather than at a log scale's far end).
TRANSFORMS = ("log", "identity", "log1p")
#: A pooled parameter's population: one across all groups, or one mean per merge method.
POPULATIONS = ("all", "method")
CHOICES = {
    "parameterisation": ("anchored", "natural"),
    "tail_exponent": ("fixed", "free"),
    "offset": ("family", "curve", "none"),
    "exponent_scope": ("family", "curve"),
    "spread": ("finite_pool", "inverse_k", "homoscedastic"),
    "membership": ("none", "inverse_k", "power"),
    "nugget": ("global", "method"),
    "noise_curve_scale": ("learnt", "fixed"),
    "floor_deviation_scale": ("learnt", "fixed"),
    "offset_deviation_scale": ("learnt", "fixed"),
    "tail_deviation_scale": ("learnt", "fixed"),
}
#: Group parameters of the floor's and tail's size laws: dropped on a table of < 3 base sizes.
SIZE_LAW_PARAMS = ("floor_drop", "beta", "gamma", "B")


@dataclass(frozen=True)
class ParamPrior:
    """Prior of one group parameter: transform(raw), raw ~ Normal(mean, scale) across groups,
    mean ~ N(prior_mean, prior_sd), scale ~ HalfNormal(pool_scale). ``population`` 'method'
    gives each merge method its own mean (one scale): a parameter whose value the merge rule
    sets, such as the tail's offset b (TIES rises near-linearly, b ~ 10; Average saturates,
    b ~ 0), pools within a method rather than across a bimodal mixture of methods.

    ``centred`` samples raw directly (right for parameters the data pin down tightly); otherwise
    raw = mean + scale * z with z ~ N(0, 1) (right for weakly identified ones, avoiding funnels).
    """

    transform: str
    prior_mean: float
    prior_sd: float
    pool_scale: float
    centred: bool = False
    pooled: bool = True  # False: raw ~ Normal(prior_mean, prior_sd) in a pooled spec too
    population: str = "all"  # "all": one population; "method": one mean per merge method

    def to_value(self, raw, math: Any = np):
        """The parameter from its raw (Normal) scale (see TRANSFORMS)."""
        if self.transform == "log":
            return math.exp(raw)
        if self.transform == "log1p":
            return math.exp(raw) - 1.0
        return raw

    def to_raw(self, value):
        """The raw (Normal) scale of a value: to_value's inverse."""
        value = np.asarray(value, dtype=float)
        if self.transform == "log":
            return np.log(value)
        if self.transform == "log1p":
            return np.log1p(value)
        return value

    def sample(self, mean, scale, rng: np.random.Generator):
        """Values for new groups from the population Normal(mean, scale) on the raw scale."""
        mean, scale = np.asarray(mean, dtype=float), np.asarray(scale, dtype=float)
        return self.to_value(mean + scale * rng.standard_normal(np.shape(mean)))

    def log_density(self, value, mean, scale):
        """Log density of values under the population Normal(mean, scale) of the raw scale, with
        the Jacobian of the transform (-inf where a log-transformed value is not positive)."""
        value = np.asarray(value, dtype=float)
        if self.transform in ("log", "log1p"):
            shifted = value + (1.0 if self.transform == "log1p" else 0.0)
            positive = shifted > 0
            raw = np.log(np.where(positive, shifted, 1.0))
            density = _normal_log_density(raw, mean, scale) - raw
            return np.where(positive, density, -np.inf)
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
    floor_deviation_scale: str = "learnt"  # "fixed": tau = floor_deviation_prior_sd, not learnt
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


def _target_accept(sampler: dict[str, Any], source: str) -> float | None:
    value = sampler.get("target_accept")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise MergelawError(
            f"{source}: [sampler].target_accept = {value!r} (expected a number in (0, 1))"
        )
    return float(value)


#: The keys a spec file may hold, per table; anything else is refused (a typo would otherwise be
#: ignored silently and the fit saved under a spec that does not say what was meant).
KNOWN_KEYS = {
    "the top level": {"name", "description", "pool", "mean", "noise", "sampler", "params"},
    "[mean]": {"parameterisation", "tail_exponent", "offset", "exponent_scope", "membership",
               "floor_deviation_prior_sd", "floor_deviation_scale", "floor_deviation_log_sd",
               "tail_deviation_prior_sd", "tail_deviation_scale", "offset_deviation_prior_sd",
               "offset_deviation_scale", "drop_from_k"},
    "[noise]": {"spread", "nugget", "nugget_prior_mode", "nugget_log_sd", "sigma_slope_prior_sd",
                "noise_curve_prior_sd", "noise_curve_scale"},
    "[sampler]": {"target_accept"},
    "[params.*]": {"transform", "prior_mean", "prior_sd", "pool_scale", "centred", "pooled",
                   "population"},
}  # fmt: skip


def _check_keys(raw: dict[str, Any], source: str) -> None:
    """One line naming the first unknown key (and its table) of a spec file."""
    tables = [("the top level", raw, "the top level")]
    for name in ("mean", "noise", "sampler"):
        tables.append((f"[{name}]", raw.get(name, {}), f"[{name}]"))
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise MergelawError(f"{source}: [params] must be a table of parameter tables")
    tables += [(f"[params.{p}]", t, "[params.*]") for p, t in params.items()]
    for where, table, kind in tables:
        if not isinstance(table, dict):
            raise MergelawError(f"{source}: {where} must be a table")
        unknown = sorted(set(table) - KNOWN_KEYS[kind])
        if unknown:
            raise MergelawError(
                f"{source}: unknown key '{unknown[0]}' in {where} (expected some of: "
                f"{', '.join(sorted(KNOWN_KEYS[kind]))})"
            )


def _parse(raw: dict[str, Any], source: str) -> ModelSpec:
    _check_keys(raw, source)

    def get(table: dict, key: str, where: str, kind: type | tuple[type, ...]):
        if key not in table:
            raise MergelawError(f"{source}: missing key '{key}' in {where}")
        value = table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise MergelawError(f"{source}: {where}.{key} = {value!r} has the wrong type")
        return value

    mean = raw.get("mean", {})
    noise = raw.get("noise", {})
    settings = {
        "parameterisation": get(mean, "parameterisation", "[mean]", str),
        "tail_exponent": get(mean, "tail_exponent", "[mean]", str),
        "offset": get(mean, "offset", "[mean]", str),
        "exponent_scope": mean.get("exponent_scope", "family"),
        "spread": get(noise, "spread", "[noise]", str),
        "membership": mean.get("membership", "none"),
        "nugget": noise.get("nugget", "global"),
        "noise_curve_scale": noise.get("noise_curve_scale", "learnt"),
        "floor_deviation_scale": mean.get("floor_deviation_scale", "learnt"),
        "offset_deviation_scale": mean.get("offset_deviation_scale", "learnt"),
        "tail_deviation_scale": mean.get("tail_deviation_scale", "learnt"),
    }
    for key, value in settings.items():
        if value not in CHOICES[key]:
            raise MergelawError(
                f"{source}: {key} = {value!r} (expected one of: {', '.join(CHOICES[key])})"
            )
    params = {}
    for name, table in raw.get("params", {}).items():
        where = f"[params.{name}]"
        prior = ParamPrior(
            transform=get(table, "transform", where, str),
            prior_mean=float(get(table, "prior_mean", where, (int, float))),
            prior_sd=float(get(table, "prior_sd", where, (int, float))),
            pool_scale=float(get(table, "pool_scale", where, (int, float))),
            centred=bool(table.get("centred", False)),
            pooled=bool(table.get("pooled", True)),
            population=table.get("population", "all"),
        )
        if prior.population not in POPULATIONS:
            raise MergelawError(
                f"{source}: {where}.population = {prior.population!r} "
                f"(expected one of: {', '.join(POPULATIONS)})"
            )
        if prior.population == "method" and not prior.pooled:
            raise MergelawError(
                f"{source}: {where}.population = 'method' needs pooled = true (an unpooled "
                "parameter has no population)"
            )
        if prior.transform not in TRANSFORMS:
            raise MergelawError(
                f"{source}: {where}.transform = {prior.transform!r} "
                f"(expected one of: {', '.join(TRANSFORMS)})"
            )
        if prior.prior_sd <= 0 or prior.pool_scale <= 0:
            raise MergelawError(f"{source}: {where} prior_sd and pool_scale must be > 0")
        params[name] = prior
    spec = ModelSpec(
        name=get(raw, "name", "the top level", str),
        description=raw.get("description", ""),
        pool=get(raw, "pool", "the top level", bool),
        floor_deviation_prior_sd=float(mean.get("floor_deviation_prior_sd", 0.0)),
        floor_deviation_log_sd=float(mean.get("floor_deviation_log_sd", 0.0)),
        tail_deviation_prior_sd=float(mean.get("tail_deviation_prior_sd", 0.0)),
        offset_deviation_prior_sd=float(mean.get("offset_deviation_prior_sd", 0.0)),
        nugget_log_sd=float(noise.get("nugget_log_sd", 0.0)),
        noise_curve_prior_sd=float(noise.get("noise_curve_prior_sd", 0.0)),
        drop_from_k=float(mean.get("drop_from_k", 1.0)),
        target_accept=_target_accept(raw.get("sampler", {}), source),
        nugget_prior_mode=float(get(noise, "nugget_prior_mode", "[noise]", (int, float))),
        sigma_slope_prior_sd=float(get(noise, "sigma_slope_prior_sd", "[noise]", (int, float))),
        params=params,
        source=source,
        **settings,
    )
    required = spec.required_params()
    missing = [p for p in required if p not in params]
    unused = [p for p in params if p not in required]
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
