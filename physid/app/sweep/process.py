"""One job, one Python process: the parent side (:func:`execute_job`) and the job's own side
(:func:`job_main`, run as ``python -m physid.app.sweep JOB.json``).

A process per job means a crash, a hang killed by the user or an out-of-memory kill loses that
job only. The job process runs ``registry.get(system).fit(Config.from_dict(options))`` and writes
its final ``status.json``; SIGINT and SIGTERM interrupt the fit (it keeps its last finished
epoch and its ``summary.json`` says ``interrupted``), the job is recorded as ``interrupted`` and
exits with code 130, and the next run of the sweep resumes it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import load_json, save_json
from physid.app import registry
from physid.app.sweep.jobs import Job
from physid.app.sweep.status import (
    JOB_MODULE,
    now,
    one_line,
    read_status,
    write_status,
)
from physid.errors import ConfigError, DataError, FitInterrupted, PhysidError
from physid.runs import RunDir

__all__ = ["execute_job", "job_main", "job_command", "stop_all"]

_FINAL = ("done", "failed", "interrupted")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def job_command(job_file: Path) -> list[str]:
    """The command that runs one job (a separate Python process)."""
    return [sys.executable, "-m", JOB_MODULE, str(job_file)]


def _job_env() -> dict[str, str]:
    """The job imports physid from where this process found it (a worktree, say)."""
    env = dict(os.environ)
    roots: list[str] = []
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("physid")
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.append(str(Path(location).resolve().parent))
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *([old] if old else [])]))
    env.setdefault("MPLBACKEND", "Agg")
    return env


_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a job process and its children (its own process group), then wait (SIGKILL
    after 10 s). The job records itself as interrupted."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_all() -> None:
    """Stop every job process this process started and that still runs."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        _stop(proc)


def _log_tail(log: Path, start: int = 0, lines: int = 1) -> str:
    """The last non-empty line(s) the job wrote to its log after byte ``start``."""
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(ln.strip() for ln in text[-lines:] if ln.strip())


def _death(returncode: int, log: Path, log_start: int) -> tuple[str, str]:
    """State and error of a job process that ended without writing its final status."""
    if returncode < 0:
        sig = -returncode
        try:
            sig_name: object = signal.Signals(sig).name
        except ValueError:
            sig_name = sig
        stopped = sig in _STOP_SIGNALS
        error = f"the job process was killed by signal {sig_name}" + (
            "; run the sweep again to resume it." if stopped else " (out of memory?)."
        )
        return ("interrupted" if stopped else "failed"), error
    tail = _log_tail(log, log_start)
    error = f"the job process exited with code {returncode}" + (
        f": {one_line(tail, 300)}" if tail else "."
    )
    return "failed", error


def execute_job(job_record: Mapping[str, Any]) -> dict[str, Any]:
    """Run one job in its own process and record its state in ``run_dir/status.json``.

    Used by the local pool (one thread per running job) and as the Ray task. Never raises for a
    failed fit: the outcome says ``failed`` and why. If this call is interrupted (Ctrl-C, or
    ``ray.cancel``) it stops the job's process, records ``interrupted`` and re-raises.

    Args:
        job_record: :meth:`Job.to_dict`.

    Returns:
        ``{"name", "state", "error", "returncode", "seconds", "host"}``.
    """
    job = Job.from_dict(job_record)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_status(run_dir) or {}
    base = {
        "name": job.name,
        "system": job.system,
        "cell": dict(job.cell),
        "seed": job.seed,
        "config": dict(job.config),
        "host": socket.gethostname(),
        "attempt": int(previous.get("attempt", 0)) + 1,
        "started": now(),
    }
    job_file = run_dir / "job.json"
    save_json(job_file, job.to_dict())
    log_path = run_dir / "job.log"
    cwd = job.cwd if Path(job.cwd).is_dir() else str(run_dir)
    t0 = time.perf_counter()
    # "running" is written before the process starts, so that the job's own final status
    # (written by the process) always comes after it.
    write_status(run_dir, {**base, "state": "running"})
    with open(log_path, "ab") as log:
        log.write(f"\n==== physid sweep: {job.name}, attempt {base['attempt']}, {now()}\n".encode())
        log.flush()
        log_start = log.tell()
        proc = subprocess.Popen(
            job_command(job_file),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=_job_env(),
            start_new_session=True,  # the terminal's Ctrl-C reaches the sweep, not the job
        )
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        try:
            returncode = proc.wait()
        except BaseException:
            _stop(proc)
            write_status(
                run_dir,
                {
                    **base,
                    "state": "interrupted",
                    "error": "the sweep was interrupted; run it again to resume this job.",
                    "finished": now(),
                    "seconds": time.perf_counter() - t0,
                },
            )
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
    seconds = time.perf_counter() - t0
    status = read_status(run_dir) or {}
    if status.get("state") in _FINAL:
        state, error = status["state"], status.get("error")
    else:  # the process died before it could say why
        state, error = _death(returncode, log_path, log_start)
        write_status(
            run_dir,
            {
                **base,
                "state": state,
                "error": error,
                "returncode": returncode,
                "finished": now(),
                "seconds": seconds,
            },
        )
    return {
        "name": job.name,
        "state": state,
        "error": error,
        "returncode": returncode,
        "seconds": seconds,
        "host": base["host"],
    }


# ---- inside the job process -------------------------------------------------------------------


class _Signals:
    """SIGINT and SIGTERM raise KeyboardInterrupt (the fit's interrupt path) and are remembered;
    :meth:`ignore` shields the final status write from a second signal."""

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def ignore(self) -> None:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signal.Signals(signum).name
        raise KeyboardInterrupt(self.received)


def _fit(job: Job, run_dir: Path) -> RunDir:
    """``registry.get(system).fit(Config.from_dict(options))``, into the sweep's run dir."""
    experiment = registry.get(job.system)
    run = experiment.fit(experiment.Config.from_dict(job.config))
    if run.path.resolve() != run_dir.resolve():
        raise ConfigError(
            f"{job.system}'s fit wrote {run}, not the sweep's run directory {run_dir}."
        )
    if not run.has_summary():
        raise DataError(f"the fit finished without writing {run.summary_path}.")
    return run


def _interrupted_message(run_dir: Path, signal_name: str | None) -> str:
    epochs = None
    with contextlib.suppress(DataError):
        epochs = RunDir(run_dir).read_summary().epochs_completed
    by = f" by {signal_name}" if signal_name else ""
    after = f" after {epochs} epoch(s)" if epochs is not None else ""
    return f"the fit was interrupted{by}{after}; run the sweep again to resume it."


def job_main(argv: Sequence[str]) -> int:
    """``python -m physid.app.sweep JOB.json``: run one job in this process and write its final
    ``status.json`` (``done``, ``failed`` or ``interrupted``).

    Returns:
        the exit code: 0 done, 1 failed, 130 interrupted (SIGINT or SIGTERM), 2 bad usage.
    """
    if len(argv) != 1:
        print("usage: python -m physid.app.sweep JOB.json", file=sys.stderr)
        return 2
    signals = _Signals()
    signals.install()
    job = Job.from_dict(load_json(Path(argv[0])))
    run_dir = Path(job.run_dir)
    started = read_status(run_dir) or {}
    base = {k: v for k, v in started.items() if k not in ("format", "state", "error", "pid")}
    base.update(name=job.name, system=job.system, config=dict(job.config))
    t0 = time.perf_counter()

    def finish(state: str, error: str | None = None, **extra: Any) -> None:
        signals.ignore()
        write_status(
            run_dir,
            {
                **base,
                "state": state,
                "error": error,
                "finished": now(),
                "seconds": time.perf_counter() - t0,
                **extra,
            },
        )

    try:
        write_status(run_dir, {**base, "state": "running", "pid": os.getpid()})
        run = _fit(job, run_dir)
        if not run.is_finished():  # the fit stopped without raising: its summary says so
            raise FitInterrupted("the fit was interrupted.", run=run)
    except (FitInterrupted, KeyboardInterrupt):
        signals.ignore()
        finish("interrupted", _interrupted_message(run_dir, signals.received))
        print(f"Interrupted: {_interrupted_message(run_dir, signals.received)}", file=sys.stderr)
        return FitInterrupted.exit_code
    except PhysidError as exc:
        finish("failed", one_line(str(exc)), error_type=type(exc).__name__)
        print(f"Error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        traceback.print_exc()
        finish(
            "failed",
            one_line(f"{type(exc).__name__}: {exc} (a bug; the traceback is in job.log)"),
            error_type=type(exc).__name__,
        )
        return 1
    finish("done")
    return 0
