"""Typed config files: one base model, and one adapter from pydantic's errors to one-line messages.

Every settings file mergelaw reads (model specs, sweeps, training recipes, lab pipelines, merge
method parameters) is declared as a ``Config`` model: unknown keys refused (a typo would
otherwise be ignored silently), values frozen, no quiet coercion (``1`` is not ``true``, ``"0.5"``
is not a number). ``validated`` checks a parsed table against one and turns the first problem
into a ``MergelawError`` naming the source, the key, the bad value and what was expected::

    sweep.toml: unknown setting 'eval.batch' (expected some of: batch_tokens, domains, ...)
    default.toml: [mean].offset = 'sometimes' (expected one of: family, curve, none)
    sweep.toml: 'eval.max_length' = 1 (expected a whole number >= 2)

A field's ``description``, when set, is what its messages say was expected of a missing or
out-of-range value. How keys are named differs by kind of file (a ``Wording``): dotted settings
by default, TOML tables for model specs.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from mergelaw.errors import MergelawError, Range

Model = TypeVar("Model", bound=BaseModel)
Location = tuple[str | int, ...]


class Config(BaseModel):
    """Base of every settings model: unknown keys refused, frozen, strict types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Wording:
    """How a kind of file names its keys: dotted settings (``'eval.dtype'``), under ``prefix``
    when the table sits inside another file (a mergekit config's ``mergelaw.`` section)."""

    noun: str = "setting"
    prefix: str = ""

    def key(self, loc: Location) -> str:
        """A key that is unknown or missing: ``'eval.batch'``."""
        return repr(self.prefix + dotted(loc))

    def value(self, loc: Location) -> str:
        """A key whose value is refused: ``'eval.dtype'``."""
        return self.key(loc)


class Tables(Wording):
    """TOML tables, as model specs name them: ``'nuget' in [noise]``, ``[mean].offset``."""

    def key(self, loc: Location) -> str:
        return f"'{loc[-1]}' in {_table(loc[:-1])}"

    def value(self, loc: Location) -> str:
        return f"{_table(loc[:-1])}.{loc[-1]}" if len(loc) > 1 else str(loc[-1])


DOTTED = Wording()
TABLES = Tables(noun="key")


def dotted(loc: Location) -> str:
    """A location as a dotted path: ``eval.domains``, ``bases[0].name``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _table(loc: Location) -> str:
    return f"[{'.'.join(map(str, loc))}]" if loc else "the top level"


def validated(model: type[Model], raw: Any, source: str, wording: Wording = DOTTED) -> Model:
    """``raw`` (a parsed table) checked against ``model``; a one-line MergelawError starting with
    ``source`` on the first problem (an unknown key before any other)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise MergelawError(f"{source}: {describe(model, errors[0], wording)}") from None


def describe(model: type[BaseModel], error: Any, wording: Wording = DOTTED) -> str:
    """One of pydantic's errors as mergelaw words it (without the source)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = sorted(_model_at(model, loc[:-1]).model_fields)
        return f"unknown {wording.noun} {wording.key(loc)} (expected some of: {', '.join(allowed)})"
    annotation, info = _resolve(model, loc)
    if kind == "missing":
        wanted = info.description if info is not None and info.description else None
        return f"missing {wording.key(loc)}" + (f" (expected {wanted})" if wanted else "")
    name = wording.value(loc) if loc else "the settings"
    shown = f"{name} = {error['input']!r}"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "int_from_float":
        return f"{shown} has the wrong type (expected {_type_name(annotation)})"
    if info is not None and info.description:
        return f"{shown} (expected {info.description})"
    return f"{shown} (expected {_expectation(error, annotation, info)})"


def _expectation(error: Any, annotation: Any, info: FieldInfo | None) -> str:
    kind = error["type"]
    choices = _choices(annotation)
    if kind == "literal_error" and choices:
        return f"one of: {', '.join(map(str, choices))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _range(annotation, info).describe(_type_name(annotation))
    if kind == "finite_number":
        return "a finite number"
    if kind == "too_short":
        return f"a non-empty {_type_name(annotation).removeprefix('a ')}"
    return error["msg"].removeprefix("Value error, ")


def _range(annotation: Any, info: FieldInfo | None) -> Range:
    """The bounds a value declares (``Field(gt=..., le=...)`` on its field, or inside its
    ``Annotated`` type, as in ``list[Annotated[int, Field(ge=0)]]``) as messages describe them."""
    items, stack = list(info.metadata) if info is not None else [], [annotation]
    while stack:
        current = stack.pop()
        if get_origin(current) is Annotated:
            stack.append(get_args(current)[0])
            items += get_args(current)[1:]
        elif get_origin(current) in (Union, types.UnionType):
            stack += get_args(current)
    bounds: dict[str, Any] = {}
    for item in items:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            for name, (side, open_) in _BOUNDS.items():
                if getattr(constraint, name, None) is not None:
                    bounds.update({side: getattr(constraint, name), f"open_{side}": open_})
    return Range(**bounds)


_BOUNDS = {"gt": ("low", True), "ge": ("low", False), "lt": ("high", True), "le": ("high", False)}


def _type_name(annotation: Any) -> str:
    """What a value of this type reads as in a message: 'a number', 'a table', ..."""
    annotation = _bare(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return f"one of: {', '.join(map(str, get_args(annotation)))}"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "text"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "a table"
    if origin is list:
        return f"a list of {_plural(get_args(annotation)[0])}"
    return "another type"


def _plural(annotation: Any) -> str:
    name = _type_name(annotation)
    plurals = {"a whole number": "whole numbers", "a number": "numbers", "a table": "tables"}
    return plurals.get(name, "values")


def _choices(annotation: Any) -> tuple:
    annotation = _bare(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _bare(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _resolve(model: type[BaseModel], loc: Location) -> tuple[Any, FieldInfo | None]:
    """The annotation at ``loc`` inside ``model``, and the field that declares it (None for an
    entry of a list or table)."""
    annotation: Any = model
    info = None
    for part in loc:
        annotation = _bare(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            annotation = info.annotation if info is not None else Any
        elif get_origin(annotation) in (dict, list):
            annotation, info = get_args(annotation)[-1], None
        else:
            return Any, None
    return annotation, info


def _model_at(model: type[BaseModel], loc: Location) -> type[BaseModel]:
    found = _bare(_resolve(model, loc)[0])
    return found if isinstance(found, type) and issubclass(found, BaseModel) else model
