"""Merge-method specs: a method of the registry with all of its parameters resolved (no torch).

``method_spec`` checks a name and its parameters against the registry
(``mergelaw.merge_methods``, which documents every step and parameter) and gives the flat
``MethodSpec`` the engine (``mergelaw.measure.merge``) runs; ``MethodSpec.params`` is what the
curves table records in ``method_params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mergelaw.config import validated
from mergelaw.curves import canonical_method_params
from mergelaw.errors import MergelawError
from mergelaw.merge_methods import DISJOINT, METHOD_NAMES, METHODS, MethodParameters


@dataclass(frozen=True)
class MethodSpec:
    """A merge method with all of its parameters resolved (defaults filled in); a parameter its
    steps do not take keeps the value here, which leaves that step out."""

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
        return {key: getattr(self, key) for key in METHODS[self.name].params.model_fields}

    @property
    def params_json(self) -> str:
        return canonical_method_params(self.params)

    @property
    def elects(self) -> bool:
        """Whether the consensus step runs: a disjoint combine keeps only the experts whose sign
        agrees with the elected one (the election is ``sign_method``'s, ties ``sign_tie``'s)."""
        return self.combine in DISJOINT

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
    method = METHODS.get(name)
    if method is None:
        raise MergelawError(
            f"{source}: unknown merge method {name!r} (expected one of: {', '.join(METHOD_NAMES)})"
        )
    given = {**method.defaults, **(params or {})}
    values = validated(method.params, given, source, MethodParameters(method=name))
    return MethodSpec(
        name=name, sparsify=method.sparsify, consensus=method.consensus, **values.model_dump()
    )
