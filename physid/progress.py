"""Progress bars for long loops (rich), quiet when output is not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_enabled", "make_progress", "stderr_console"]


def stderr_console() -> Console:
    """A rich console on the current ``sys.stderr`` (looked up at call time, so that test
    runners that swap the stream see the output)."""
    return Console(file=sys.stderr)


def progress_enabled(requested: bool | None = True) -> bool:
    """Whether to draw a progress bar: requested (``None`` means yes) and stderr is a terminal."""
    if requested is False:
        return False
    stream = sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_progress(enabled: bool | None = True, *, transient: bool = False) -> Progress:
    """A rich :class:`~rich.progress.Progress` with bar, count, elapsed and remaining time.

    Args:
        enabled: ``False`` disables drawing; ``None`` or ``True`` draws only on a terminal.
        transient: remove the bar when done.

    Use as a context manager; ``progress.add_task(description, total=n)`` then
    ``progress.update(task, advance=1, description=...)``. A disabled bar accepts the same calls
    and draws nothing.
    """
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        disable=not progress_enabled(enabled),
        transient=transient,
    )
