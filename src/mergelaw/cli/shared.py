"""What every command shares: the one-line error contract, quiet libraries, consoles, the
numeric-option check, and the options several command groups declare alike.

Every command reports bad input as one line on stderr (``error: ...``) and exits with code 2; no
traceback is shown unless MERGELAW_DEBUG=1. That holds for what typer refuses too (a missing
option, a value of the wrong type): ``OneLineUsage`` prints those as one line. Numeric options are
checked against the ranges of their command group (each module's ``RANGES``) before a command
starts. Library warnings and logging (JAX, ArviZ, PyMC, transformers) are silenced unless
``mergelaw --verbose``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from typer.core import TyperGroup

from mergelaw.errors import MergelawError, MissingExtraError, Range, check_options, first_line
from mergelaw.errors import plain as plain_text
from mergelaw.io import output_console

#: Ranges more than one command group uses.
SEED = Range(0, 2**32 - 1)
UNIT = Range(0, 1, open_low=True, open_high=True)
POSITIVE = Range(0, open_low=True)

#: Loggers of the libraries whose warnings stay off stderr unless --verbose.
LIBRARY_LOGGERS = ("jax", "absl", "arviz", "pymc", "pytensor", "numpyro", "transformers",
                   "huggingface_hub", "torch", "matplotlib", "ray")  # fmt: skip
_state = {"verbose": False}

console = output_console()
stderr_console = output_console(stderr=True)
error_console = output_console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

F = TypeVar("F", bound=Callable)

FitArg = Annotated[Path, typer.Argument(metavar="FIT", help="A fit written by mergelaw fit.")]
LevelOpt = Annotated[float, typer.Option(help="Credible interval level.")]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the answer as JSON; - writes it to stdout (the rest "
                 "goes to stderr)."),
]  # fmt: skip


class OneLineUsage(TyperGroup):
    """The root command group: usage errors (missing option, bad value, unknown command) are one
    line ``error: ...`` with exit code 2, like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer._click.ClickException as exc:  # typer's own click
            if type(exc).__name__ != "NoArgsIsHelpError":  # help already printed
                names, ctx = [], getattr(exc, "ctx", None)
                while ctx is not None:
                    names.insert(0, ctx.info_name)
                    ctx = ctx.parent
                command = " ".join(names)
                message = " ".join(exc.format_message().split()).rstrip(".")
                where, hint = (f"{command}: ", f" (see {command} --help)") if names else ("", "")
                error_console.print(f"error: {where}{message}{hint}", markup=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_console.print("error: aborted", markup=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def command(group: typer.Typer, ranges: Mapping[str, Range], name: str | None = None):
    """Declare the decorated function as ``group``'s command ``name``, its numeric options
    checked against ``ranges`` and its failures made one line (``one_line_errors``)."""

    def declare(function: F) -> F:
        group.command(name)(one_line_errors(function, ranges))
        return function

    return declare


def one_line_errors(command: F, ranges: Mapping[str, Range]) -> F:
    """Check the command's numeric options against ``ranges`` (its group's table), run it with
    library output quiet (unless --verbose), and turn any failure into one line on stderr and
    exit code 2 (MERGELAW_DEBUG=1 re-raises). List options (their values as typed) are checked
    by the command as it parses them; a missing optional dependency names its extra."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with library_output(_state["verbose"]):
            try:
                scalars = {k: v for k, v in kwargs.items() if not _typed_list(v)}
                check_options(scalars, ranges, option_flags(command))
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except Exception as exc:
                if debug():
                    raise
                if isinstance(exc, ImportError):
                    exc = MissingExtraError.of(exc, _command_name()) or exc
                message = first_line(exc)
                if not isinstance(exc, MergelawError | OSError):
                    message = f"{type(exc).__name__}: {message}"
                error_console.print(f"error: {plain_text(message)}", markup=False)
                raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _typed_list(value: object) -> bool:
    """A list option's values as the user typed them (strings, perhaps comma-separated)."""
    return isinstance(value, list | tuple) and any(isinstance(item, str) for item in value)


def _command_name() -> str:
    """The running command as typed (``mergelaw plan stop``); 'this command' outside one."""
    try:
        from typer._click.globals import get_current_context  # typer's own click, as above
    except ImportError:
        return "this command"
    ctx, names = get_current_context(silent=True), []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    return "mergelaw " + " ".join(names) if names else "this command"


@functools.cache
def option_flags(command: Callable) -> dict[str, str]:
    """Parameter name -> the option as the user types it (--json for json_out), from the
    command's typer annotations; arguments by their metavar."""
    flags = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        for info in getattr(hint, "__metadata__", ()):
            if isinstance(info, typer.models.OptionInfo):
                decls = [*info.param_decls]
                if isinstance(info.default, str) and info.default.startswith("-"):
                    decls.insert(0, info.default)
                long = [d.split("/")[0] for d in decls if d.startswith("--")]
                flags[name] = long[0] if long else "--" + name.replace("_", "-")
            elif isinstance(info, typer.models.ArgumentInfo):
                flags[name] = info.metavar or name.upper()
    return flags


@contextlib.contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Silence library warnings, logging below ERROR and transformers' progress bars for the
    duration of a command, unless ``verbose``; restore them afterwards."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    env = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    saved_env = {key: os.environ.get(key) for key in env}
    bars = _transformers_bars(None)
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        for key, value in env.items():
            os.environ.setdefault(key, value)
        _transformers_bars(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
        if bars:
            _transformers_bars(True)


def _transformers_bars(enable: bool | None) -> bool | None:
    """Whether transformers shows progress bars (None: not imported); set it when ``enable`` is
    given. Only touches transformers where a command already imported it."""
    hf = sys.modules.get("transformers.utils.logging")
    if hf is None:
        return None
    if enable is not None:
        (hf.enable_progress_bar if enable else hf.disable_progress_bar)()
    return bool(hf.is_progress_bar_enabled())


def debug() -> bool:
    return os.environ.get("MERGELAW_DEBUG") == "1"


def set_verbose(verbose: bool) -> None:
    """Whether the commands that follow show library output (``mergelaw --verbose``)."""
    _state["verbose"] = verbose or debug()
