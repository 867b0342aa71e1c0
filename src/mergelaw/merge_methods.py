"""The merge-method registry: each named method declared once, as a configured instance of one
engine (no torch here; ``mergelaw.measure.merge`` runs it, ``mergelaw.curves`` takes its names)::

    merged = base + c * combine_i( w_i * Psi(v_i) ),     v_i = theta_i - theta_base

The engine's steps, and the parameters each step takes (a ``Config`` model per step):

1. sparsify  Psi: none | ``trim`` (TIES: keep the top-``density`` magnitudes) | ``dare`` (drop each
   coordinate with probability ``p``, then rescale).
2. consensus: none | sign election (TIES): per coordinate, keep the experts whose sign agrees with
   the elected sign; a ``disjoint_*`` combine applies it.
3. combine:   ``sum`` | ``mean`` | ``disjoint_sum`` | ``disjoint_mean``, then scale by ``c``.

A method names its sparsify and consensus steps and the defaults it gives their parameters; its
parameter model is the union of its steps' models. Every point where implementations disagree is
a named parameter, recorded in the curves table's ``method_params``:

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
- ``merge_embeddings`` (every method): false leaves the embedding tensors at the base's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, create_model

from mergelaw.config import Config, Location, Wording

Sparsify = Literal["trim", "dare"]
Combine = Literal["sum", "mean", "disjoint_sum", "disjoint_mean"]
SPARSIFIERS: tuple[str, ...] = get_args(Sparsify)
COMBINES: tuple[str, ...] = get_args(Combine)
#: The combines that keep only the experts agreeing with the elected sign (the consensus step).
DISJOINT: tuple[str, ...] = ("disjoint_sum", "disjoint_mean")


class Combined(Config):
    """The combine step, which every method has, and what every method takes."""

    c: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    combine: Combine = "mean"
    merge_embeddings: bool = True


class Trimmed(Config):
    """Sparsify by TIES's trim."""

    density: Annotated[float, Field(gt=0.0, le=1.0, description="0 < density <= 1")] = 0.2
    trim_scope: Literal["tensor", "global"] = "tensor"
    trim_min_one: bool = True


class Dropped(Config):
    """Sparsify by DARE's random drops."""

    p: Annotated[float, Field(ge=0.0, lt=1.0, description="a drop rate 0 <= p < 1")] = 0.5
    rescale: Literal["inverse_keep", "l1", "none"] = "inverse_keep"


class Elected(Config):
    """The consensus step: TIES's sign election."""

    sign_method: Literal["sum", "count"] = "sum"
    sign_tie: Literal["positive", "global"] = "positive"
    divide_by: Literal["count", "weights"] = "count"


_SPARSIFY_PARAMS: dict[str, type[Config]] = {"trim": Trimmed, "dare": Dropped}


@dataclass(frozen=True)
class MergeMethod:
    """A named merge method: the engine's steps it runs and the defaults it gives their
    parameters (those not named keep their step's default)."""

    name: str
    sparsify: Sparsify | None = None
    consensus: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    @cached_property
    def params(self) -> type[Config]:
        """The model of this method's parameters: its steps' models together."""
        steps: list[type[Config]] = [Combined]
        if self.sparsify is not None:
            steps.append(_SPARSIFY_PARAMS[self.sparsify])
        if self.consensus:
            steps.append(Elected)
        return create_model(f"{self.name}_parameters", __base__=tuple(steps))


#: Every merge method mergelaw measures, by name.
METHODS: Mapping[str, MergeMethod] = MappingProxyType({
    m.name: m
    for m in (
        MergeMethod("average"),
        MergeMethod("task_arithmetic", defaults={"c": 0.8}),
        MergeMethod("ties", "trim", consensus=True, defaults={"combine": "disjoint_mean"}),
        MergeMethod("dare", "dare"),
        MergeMethod("dare_ties", "dare", consensus=True, defaults={"combine": "disjoint_mean"}),
    )
})  # fmt: skip
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


@dataclass(frozen=True)
class MethodParameters(Wording):
    """How messages name a method's parameters: ``parameter 'p' of 'dare'``."""

    method: str = ""
    noun: str = "parameter"

    def key(self, loc: Location) -> str:
        return f"'{loc[-1]}' for method '{self.method}'"

    def value(self, loc: Location) -> str:
        return f"parameter '{loc[-1]}' of '{self.method}'"
