"""Command-line options from option dataclasses (:class:`physid.experiment.Options`).

Every field declared with :func:`physid.experiment.option` becomes one ``--field-name`` option
with the field's type, default and help, so that the command line, the library and sweeps share
one declaration of each option (and its validation).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from physid.experiment import Options

__all__ = ["command_from_options"]


def _parameters(options: type[Options]) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(options)
    params = []
    for f in dataclasses.fields(options):
        if not f.metadata.get("cli", True):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if hints[f.name] is bool and "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices is not None and not callable(choices) and hints[f.name] is str:
            listed = ", ".join(str(c) for c in choices)
            if listed not in help_text:
                help_text = f"{help_text} ({listed})"
        annotation: Any = Annotated.__class_getitem__(  # type: ignore[attr-defined]
            (hints[f.name], typer.Option(flag, help=help_text))
        )
        default = None if f.default is dataclasses.MISSING else f.default
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def command_from_options(
    name: str,
    options: type[Options],
    run: Callable[[Options], None],
    *,
    help: str,
) -> Any:
    """A (typer-vendored) click command whose options are ``options``' fields; it builds the
    dataclass from what was typed and calls ``run`` with it. Invalid values raise the
    dataclass's ConfigError."""
    params = _parameters(options)

    def callback(**kwargs: Any) -> None:
        run(options(**kwargs))

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = help
    callback.__name__ = name.replace("-", "_")
    sub = typer.Typer(add_completion=False)
    sub.command(name)(callback)
    return typer.main.get_command(sub)
