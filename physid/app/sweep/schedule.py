"""Running a sweep: which jobs to run, where (a local pool of processes or Ray tasks), the
sweep's record ``OUT/sweep.json`` and its table.

Jobs run on this machine in a bounded pool (``workers`` processes at a time), or on a Ray
cluster as Ray tasks (``ray_address``; Ray's own scheduler places them, ``pip install
'physid[ray]'``). On a cluster the output directory must be on a file system every node sees.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import save_json
from physid.app.sweep.aggregate import aggregate, format_aggregate
from physid.app.sweep.grid import Grid, check_out
from physid.app.sweep.jobs import SWEEP_FORMAT, Job, expand
from physid.app.sweep.process import execute_job, stop_all
from physid.app.sweep.status import STATES, is_done, now, one_line, read_status, running_pid
from physid.app.sweep.status import write_status as _write_status
from physid.errors import ConfigError, MissingDependencyError, PhysidError

__all__ = ["SweepResult", "run_sweep", "print_result"]

_FINAL = ("done", "failed", "interrupted")
OnDone = Callable[[Job, dict[str, Any]], None]


@dataclasses.dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        out: the sweep's output directory.
        jobs: every job of the grid.
        outcomes: job name → ``{"state", "error", "seconds", "ran", ...}``.
        aggregate: the aggregate (see :func:`~physid.app.sweep.aggregate.aggregate`), ``None``
            if no job is done.
        backend: ``"local"`` or ``"ray"``.
    """

    out: Path
    jobs: list[Job]
    outcomes: dict[str, dict[str, Any]]
    aggregate: dict[str, Any] | None
    backend: str

    def count(self, state: str) -> int:
        """How many jobs ended in ``state``."""
        return sum(1 for o in self.outcomes.values() if o.get("state") == state)

    @property
    def failed(self) -> list[str]:
        """Names of the jobs that did not finish (failed or interrupted)."""
        return [n for n, o in self.outcomes.items() if o.get("state") != "done"]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "running a sweep on Ray needs Ray: pip install 'physid[ray]'."
        ) from exc
    return ray


def _run_local(todo: Sequence[Job], workers: int, on_done: OnDone) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
    futures = {pool.submit(execute_job, job.to_dict()): job for job in todo}
    try:
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the job could not even be started (e.g. a full disk)
                error = f"the job could not run: {type(exc).__name__}: {one_line(str(exc), 300)}"
                outcome = {"name": job.name, "state": "failed", "error": error}
            on_done(job, outcome)
    except BaseException:
        for future in futures:
            future.cancel()
        stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(
    todo: Sequence[Job],
    address: str,
    cpus_per_job: float,
    gpus_per_job: float,
    on_done: OnDone,
) -> None:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(f"cannot connect to a Ray cluster at {address!r}: {exc}") from exc
    try:
        task = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=0)(execute_job)
        refs = {task.options(name=job.name).remote(job.to_dict()): job for job in todo}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    job = refs[ref]
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # a worker crash, a lost node, a cancellation
                        error = f"the Ray task failed: {one_line(str(exc), 300)}"
                        outcome = {"name": job.name, "state": "failed", "error": error}
                        with contextlib.suppress(OSError, PhysidError):
                            status = read_status(job.run_dir) or {}
                            if status.get("state") not in _FINAL:
                                _write_status(
                                    job.run_dir, {**status, "state": "failed", "error": error}
                                )
                    on_done(job, outcome)
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C does), so that killing the
    sweep stops its jobs and records them as interrupted. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    sigs = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _plan(jobs: Sequence[Job]) -> tuple[dict[str, dict[str, Any]], list[Job]]:
    """The outcomes of the jobs left alone (done, or still running elsewhere) and the jobs to
    run."""
    outcomes: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        pid = running_pid(job)
        if pid is not None:
            outcomes[job.name] = {
                "state": "running",
                "error": f"still running in process {pid} (from an earlier sweep); left alone.",
                "seconds": None,
                "ran": False,
            }
        elif is_done(job):
            status = read_status(job.run_dir) or {}
            outcomes[job.name] = {
                "state": "done",
                "error": None,
                "seconds": status.get("seconds"),
                "ran": False,
            }
        else:
            todo.append(job)
    return outcomes, todo


def run_sweep(
    grid: Grid,
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    cpus_per_job: float = 1.0,
    gpus_per_job: float = 0.0,
    progress: bool = True,
    console: Any = None,
) -> SweepResult:
    """Run every job of ``grid`` not already done; write ``sweep.json`` and the aggregate.

    Args:
        grid: the grid.
        out: the output directory (runs in ``out/runs``).
        workers: jobs at a time on this machine (default: the CPU count).
        ray_address: run the jobs as Ray tasks on this cluster (``"auto"``: the one this
            machine belongs to; ``"local"``: a new local instance). If Ray is already
            initialised in this process, that instance is used.
        cpus_per_job, gpus_per_job: the resources each Ray task asks for.
        progress: draw a progress bar over the jobs (on a terminal).
        console: a rich console for the table (default: none printed).

    Returns:
        a :class:`SweepResult`. A failed or interrupted job does not raise: it is listed with
        its error.

    Raises:
        ConfigError: an invalid grid, or ``workers < 1``.
        MissingDependencyError: ``ray_address`` given without Ray installed.
        KeyboardInterrupt: the sweep itself was interrupted (Ctrl-C, SIGTERM, SIGHUP); its
            running jobs are stopped and recorded as interrupted.
    """
    from physid.progress import make_progress

    out_dir = check_out(out).resolve()
    jobs = expand(grid, out_dir)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}.")
    if ray_address is not None:
        _import_ray()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes, todo = _plan(jobs)
    backend = "local" if ray_address is None else "ray"
    lock = threading.Lock()

    def write_sweep(state: str) -> None:
        record = {
            "format": SWEEP_FORMAT,
            "updated": now(),
            "state": state,
            "backend": backend,
            "workers": workers if backend == "local" else None,
            "ray_address": ray_address,
            "grid": grid.to_dict(),
            "counts": {s: sum(1 for o in outcomes.values() if o["state"] == s) for s in STATES},
            "jobs": [
                {
                    "name": j.name,
                    "run_dir": os.path.relpath(j.run_dir, out_dir),
                    "cell": dict(j.cell),
                    "seed": j.seed,
                    **outcomes.get(j.name, {"state": "pending", "error": None}),
                }
                for j in jobs
            ],
        }
        save_json(out_dir / "sweep.json", record)

    write_sweep("running")
    with make_progress(progress) as bar:
        task = bar.add_task(f"sweep ({len(jobs) - len(todo)} already done)", total=len(todo))

        def on_done(job: Job, outcome: Mapping[str, Any]) -> None:
            with lock:
                outcomes[job.name] = {
                    "state": outcome["state"],
                    "error": outcome.get("error"),
                    "seconds": outcome.get("seconds"),
                    "ran": True,
                }
                ended = [o["state"] for o in outcomes.values() if o.get("ran")]
                counts = ", ".join(f"{ended.count(s)} {s}" for s in _FINAL if s in ended)
                bar.update(task, advance=1, description=f"sweep: {counts}")
                write_sweep("running")

        try:
            with _stop_signals():
                if ray_address is None:
                    _run_local(todo, workers, on_done)
                else:
                    _run_ray(todo, ray_address, cpus_per_job, gpus_per_job, on_done)
        except BaseException:
            for job in todo:
                if job.name not in outcomes:
                    status = read_status(job.run_dir) or {}
                    state = status.get("state")
                    if state not in _FINAL:
                        state = "interrupted" if status else "pending"
                    error = status.get("error") or "the sweep was interrupted."
                    outcomes[job.name] = {"state": state, "error": error}
            with contextlib.suppress(Exception):
                write_sweep("interrupted")
            raise
    done_runs = [Path(j.run_dir) for j in jobs if outcomes.get(j.name, {}).get("state") == "done"]
    agg = aggregate(out_dir, runs=done_runs) if done_runs else None
    write_sweep("finished")
    result = SweepResult(out_dir, jobs, outcomes, agg, backend)
    if console is not None:
        print_result(result, console)
    return result


def print_result(result: SweepResult, console: Any) -> None:
    """Print the job table (failed jobs with their error) and the aggregate table."""
    from rich.table import Table

    table = Table(title=f"sweep {result.out}", show_lines=False)
    for col in ("job", "state", "seconds", "error"):
        table.add_column(col, overflow="fold")
    for job in result.jobs:
        o = result.outcomes.get(job.name, {})
        state = o.get("state", "?")
        if state == "done" and not o.get("ran", True):
            state = "done (skipped)"
        colour = {"done": "green", "failed": "red", "interrupted": "yellow"}.get(
            o.get("state", ""), ""
        )
        secs = o.get("seconds")
        table.add_row(
            job.name,
            f"[{colour}]{state}[/{colour}]" if colour else state,
            "" if secs is None else f"{secs:.1f}",
            o.get("error") or "",
        )
    console.print(table)
    if result.aggregate is not None:
        console.print(
            format_aggregate(result.aggregate), markup=False, highlight=False, soft_wrap=True
        )
    n = len(result.jobs)
    console.print(
        f"{result.count('done')} of {n} jobs done, {result.count('failed')} failed, "
        f"{result.count('interrupted')} interrupted; {result.out / 'sweep.json'}",
        highlight=False,
    )
