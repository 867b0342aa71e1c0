"""Errors raised on bad input, and the checks of command-line values that raise them.

Each message is one line naming the file, column, option or value at fault and what was expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class MergelawError(ValueError):
    """Bad input to mergelaw; the CLI prints its message as one line and exits with code 2."""


class CurvesTableError(MergelawError):
    """A curves table that breaks the data contract of ``mergelaw.curves``."""


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: finite numbers between ``low`` and ``high`` (None: no
    bound), each bound included unless ``open_low`` / ``open_high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: float) -> bool:
        value = float(value)
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self, kind: str = "a number") -> str:
        """'a number > 0', 'a whole number >= 1', 'a number in (0, 1)', ... (always finite)."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{kind} in {left}{number(self.low)}, {number(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {number(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.open_high else '<='} {number(self.high)}"
        return f"a finite {kind.removeprefix('a ')}"

    def check(self, option: str, value: Any) -> None:
        """Raise a one-line MergelawError naming ``option`` unless every number in ``value``
        (a number or a list of numbers; None passes) is in range."""
        if value is None or isinstance(value, str | bool):
            return
        for item in value if isinstance(value, list | tuple) else [value]:
            if not self.contains(item):
                kind = "a whole number" if isinstance(item, int) else "a number"
                raise MergelawError(f"{option} {number(item)}: expected {self.describe(kind)}")


def check_options(
    values: Mapping[str, Any], ranges: Mapping[str, Range], flags: Mapping[str, str]
) -> None:
    """Check each value whose parameter name has a range; ``flags`` names its option."""
    for name, allowed in ranges.items():
        if name in values:
            allowed.check(flags.get(name, name), values[name])


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none): what a
    one-line error quotes of a library's failure."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def number(value: Any) -> str:
    """A number as a user typed it: 3, 0.5, -0.1, nan (never a numpy repr such as
    np.float64(0.5))."""
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    return f"{value:g}" if isinstance(value, float) else str(value)


_NUMPY_SCALAR = re.compile(r"\bnp\.(?:float|int|uint|bool|str)\w*\(([^()]*)\)")


def shown(value: object) -> str:
    """A table cell as a message shows it: repr of the Python value (-0.1, 'x', nan), never a
    numpy scalar's repr."""
    return repr(value.item() if hasattr(value, "item") else value)


def plain(message: str) -> str:
    """``message`` with numpy scalar reprs (np.float64(-0.1)) written as plain values (-0.1)."""
    return _NUMPY_SCALAR.sub(r"\1", message)


#: How a list option reads, in every command's --help and error messages.
LIST_SYNTAX = "comma-separated or repeated"


def parse_values(
    values: str | Sequence[str] | None,
    convert: Callable[[str], Any],
    option: str,
    allowed: Range | None = None,
) -> list | None:
    """The values of a list option, given comma-separated, repeated, or both (``--k 1,2 --k 4``
    is [1, 2, 4]): the one parser every list option of every command uses. Each value is
    converted and, with ``allowed``, checked; None (the option not given) stays None. A bad
    value is refused in one line naming the option and the text it came in."""
    if values is None:
        return None
    texts = [values] if isinstance(values, str) else list(values)
    expected = {float: "numbers", int: "whole numbers"}.get(convert, "values")
    out: list = []
    for text in texts:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise MergelawError(
                f"{option} {text!r}: empty list (expected {expected}, {LIST_SYNTAX})"
            )
        try:
            out.extend(convert(item) for item in items)
        except ValueError:
            raise MergelawError(
                f"{option} {text!r}: cannot read it (expected {expected}, {LIST_SYNTAX})"
            ) from None
    if allowed is not None:
        allowed.check(option, out)
    return out


#: The extra that installs each optional module (``pip install 'mergelaw[EXTRA]'``).
EXTRAS: dict[str, str] = {
    "torch": "measure",
    "transformers": "measure",
    "safetensors": "measure",
    "tokenizers": "measure",
    "yaml": "measure",
    "tqdm": "measure",
    "ray": "ray",
}


class MissingExtraError(MergelawError):
    """An optional dependency is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, what: str = "this command") -> None:
        self.module = module
        self.extra = EXTRAS.get(module.partition(".")[0])
        hint = f"pip install 'mergelaw[{self.extra}]'" if self.extra else f"pip install {module}"
        super().__init__(f"{what} needs {module}, which is not installed: {hint}")

    @classmethod
    def of(cls, exc: ImportError, what: str = "this command") -> MissingExtraError | None:
        """The error for an ImportError of a module an extra installs; None for any other."""
        name = getattr(exc, "name", None) or ""
        return cls(name.partition(".")[0], what) if name.partition(".")[0] in EXTRAS else None
