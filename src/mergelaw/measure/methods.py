"""Merge-method specifications: each method is a recipe over one engine (no torch here).

    merged = base + c * combine_i( w_i * Psi(v_i) ),     v_i = theta_i - theta_base

The engine (``mergelaw.measure.merge``) runs three stages:

1. sparsify  Psi: none | ``trim`` (TIES: keep the top-``density`` magnitudes) | ``dare`` (drop each
   coordinate with probability ``p``, then rescale).
2. consensus: none | sign election (TIES): per coordinate, keep the experts whose sign agrees with
   the elected sign.
3. combine:   ``sum`` | ``mean`` | ``disjoint_sum`` | ``disjoint_mean``, then scale by ``c``.

Every point where implementations disagree is a named parameter, recorded in the curves table's
``method_params`` (see ``MethodSpec.params``):

- ``combine``: task arithmetic as in the paper is ``mean`` (equal weights c/k); the official
  task-arithmetic code and mergekit's ``task_arithmetic`` take a scaled *sum* (``sum``).
- ``trim_scope``: ``tensor`` (mergekit, PEFT: top-density per tensor) or ``global`` (the official
  TIES code: top-density over the expert's whole task vector).
- ``trim_min_one``: keep at least one coordinate per tensor (mergekit) or floor(density * n)
  (PEFT, ``false``).
- ``sign_method``: ``sum`` elects the sign of the summed mass (mergekit ``sum``, PEFT ``total``,
  the paper); ``count`` the majority of signs (mergekit ``count``, PEFT ``frequency``).
- ``sign_tie``: when the election is exactly 0, ``positive`` (mergekit, PEFT) or ``global``
  (the official TIES code: the sign of the sum of elected signs over the whole tensor).
- ``divide_by``: the disjoint mean divides by the ``count`` of agreeing experts (PEFT, TIES paper)
  or by the sum of their ``weights`` (mergekit ``normalize``); equal under equal weights.
- ``rescale`` (DARE): ``inverse_keep`` multiplies survivors by 1/(1-p) (DARE paper, PEFT); ``l1``
  rescales each tensor to its original L1 norm (mergekit's default ``rescale: true``); ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mergelaw.curves import KNOWN_METHODS, canonical_method_params
from mergelaw.errors import MergelawError

COMBINES = ("sum", "mean", "disjoint_sum", "disjoint_mean")
TRIM_SCOPES = ("tensor", "global")
SIGN_METHODS = ("sum", "count")
SIGN_TIES = ("positive", "global")
DIVIDE_BY = ("count", "weights")
RESCALES = ("inverse_keep", "l1", "none")

# Defaults per method. Parameters not listed for a method are not accepted for it.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "average": {"c": 1.0, "combine": "mean"},
    "task_arithmetic": {"c": 0.8, "combine": "mean"},
    "ties": {
        "c": 1.0,
        "combine": "disjoint_mean",
        "density": 0.2,
        "trim_scope": "tensor",
        "trim_min_one": True,
        "sign_method": "sum",
        "sign_tie": "positive",
        "divide_by": "count",
    },
    "dare": {"c": 1.0, "combine": "mean", "p": 0.5, "rescale": "inverse_keep"},
    "dare_ties": {
        "c": 1.0,
        "combine": "disjoint_mean",
        "p": 0.5,
        "rescale": "inverse_keep",
        "sign_method": "sum",
        "sign_tie": "positive",
        "divide_by": "count",
    },
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "combine": COMBINES,
    "trim_scope": TRIM_SCOPES,
    "sign_method": SIGN_METHODS,
    "sign_tie": SIGN_TIES,
    "divide_by": DIVIDE_BY,
    "rescale": RESCALES,
}


@dataclass(frozen=True)
class MethodSpec:
    """A merge method with all of its parameters resolved (defaults filled in)."""

    name: str
    c: float = 1.0
    combine: str = "mean"
    sparsify: str | None = None  # None | "trim" | "dare"
    density: float = 1.0  # trim: fraction kept
    trim_scope: str = "tensor"
    trim_min_one: bool = True
    p: float = 0.0  # dare: drop probability
    rescale: str = "inverse_keep"
    consensus: bool = False
    sign_method: str = "sum"
    sign_tie: str = "positive"
    divide_by: str = "count"
    merge_embeddings: bool = True

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that define this method, as recorded in ``method_params``."""
        keys = [*_DEFAULTS[self.name], "merge_embeddings"]
        return {key: getattr(self, key) for key in keys}

    @property
    def params_json(self) -> str:
        return canonical_method_params(self.params)

    @property
    def random(self) -> bool:
        """Whether the merge depends on the seed (DARE drops)."""
        return self.sparsify == "dare"


def method_spec(
    name: str, params: dict[str, Any] | None = None, *, source: str = "method"
) -> MethodSpec:
    """Resolve a method name and its parameters into a ``MethodSpec``.

    Raises MergelawError (one line, naming ``source``) on an unknown method, an unknown
    parameter, or a value out of range.
    """
    if name not in _DEFAULTS:
        raise MergelawError(
            f"{source}: unknown merge method {name!r} (expected one of: {', '.join(KNOWN_METHODS)})"
        )
    given = dict(params or {})
    merge_embeddings = given.pop("merge_embeddings", True)
    if not isinstance(merge_embeddings, bool):
        raise MergelawError(
            f"{source}: merge_embeddings = {merge_embeddings!r} (expected true or false)"
        )
    allowed = _DEFAULTS[name]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise MergelawError(
            f"{source}: unknown parameter {unknown[0]!r} for method {name!r} "
            f"(expected some of: {', '.join([*allowed, 'merge_embeddings'])})"
        )
    values = {**allowed, **given}
    for key, value in values.items():
        values[key] = _check(key, value, name, source)
    sparsify = "trim" if "density" in allowed else "dare" if "p" in allowed else None
    return MethodSpec(
        name=name,
        sparsify=sparsify,
        consensus=name in ("ties", "dare_ties"),
        merge_embeddings=merge_embeddings,
        **values,
    )


def _check(key: str, value: Any, method: str, source: str) -> Any:
    where = f"{source}: parameter {key!r} of {method!r}"
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise MergelawError(
                f"{where} = {value!r} (expected one of: {', '.join(_CHOICES[key])})"
            )
        return value
    if key == "trim_min_one":
        if not isinstance(value, bool):
            raise MergelawError(f"{where} = {value!r} (expected true or false)")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MergelawError(f"{where} = {value!r} (expected a number)")
    value = float(value)
    if not math.isfinite(value):
        raise MergelawError(f"{where} = {value!r} (expected a finite number)")
    if key == "density" and not 0.0 < value <= 1.0:
        raise MergelawError(f"{where} = {value!r} (expected 0 < density <= 1)")
    if key == "p" and not 0.0 <= value < 1.0:
        raise MergelawError(f"{where} = {value!r} (expected a drop rate 0 <= p < 1)")
    return value
