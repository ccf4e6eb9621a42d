"""A job's state: ``status.json`` in its run directory (written atomically).

States: ``running``, ``done``, ``failed`` (with the error) and ``interrupted`` (SIGINT or
SIGTERM, to the job or to the sweep; a rerun of the sweep resumes the fit from its checkpoint).
A job is done only when its status says so, with the same options, and its run is finished
(:meth:`physid.runs.RunDir.is_finished`: a summary that does not say ``interrupted``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from physid._io import load_json, save_json, to_jsonable
from physid.app.sweep.jobs import Job
from physid.errors import DataError
from physid.runs import RunDir

__all__ = [
    "STATES",
    "STATUS_FORMAT",
    "read_status",
    "write_status",
    "is_done",
    "running_pid",
    "now",
    "one_line",
]

STATUS_FORMAT = "physid.sweep.status/1"
STATES = ("running", "done", "failed", "interrupted")
STATUS = "status.json"
JOB_MODULE = "physid.app.sweep"
"""The module a job process runs (``python -m physid.app.sweep JOB.json``)."""


def now() -> str:
    """The time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``status.json`` of a job's run directory, or ``None`` if it has none (or it is
    unreadable)."""
    path = Path(run_dir) / STATUS
    if not path.is_file():
        return None
    try:
        raw = load_json(path)
    except DataError:
        return None
    return raw if isinstance(raw, dict) else None


def write_status(run_dir: str | os.PathLike[str], status: Mapping[str, Any]) -> None:
    """Write ``status.json`` atomically."""
    save_json(Path(run_dir) / STATUS, {"format": STATUS_FORMAT, **status})


def is_done(job: Job) -> bool:
    """The job finished with the same options: its status says ``done`` and its run's summary
    is final (not interrupted)."""
    status = read_status(job.run_dir)
    return (
        status is not None
        and status.get("state") == "done"
        and status.get("config") == to_jsonable(dict(job.config))
        and RunDir(job.run_dir).is_finished()
    )


def running_pid(job: Job) -> int | None:
    """The pid of this job's process if it is still running on this machine (a sweep killed
    without a chance to stop its jobs leaves them running)."""
    status = read_status(job.run_dir)
    if not status or status.get("state") != "running" or status.get("host") != socket.gethostname():
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            if JOB_MODULE.encode() not in cmdline.read_bytes():
                return None  # the pid was reused by another program
    return pid
