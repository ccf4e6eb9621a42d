"""Experiment grids: systems x models x methods x seeds (x any other option), run as jobs.

A grid comes from a TOML file (:func:`load_grid`) or from options (:func:`make_grid`)::

    out = "sweeps/table5"          # optional: where the sweep writes (relative to the current
                                   # folder, like every path of the options; --out wins)

    [grid]                         # axes: every combination is one job
    systems = ["three-body"]
    models = ["ode", "node"]
    methods = ["naive", "adjoint", "aca"]
    seeds = [0, 1, 2]
    # rtol = [1e-5, 1e-7]          # any other FitConfig option with a list of values

    [grid.hopper]                  # axes for one system only (replace the common ones)
    observed = [0.1, 0.2, 0.5]

    [options]                      # fixed options of every job
    epochs = 100

    [options.three-body]           # fixed options of one system's jobs
    rtol = 1e-7

Each job is one ``fit(FitConfig(...))`` of the system's experiment module
(:func:`physid.app.cli.system_module`); this module knows no system. A job runs in its own Python
process (``python -m physid.sweep JOB.json``), so a crash, a hang killed by the user or an
out-of-memory kill loses that job only. Jobs run on this machine in a bounded pool
(``workers`` processes at a time), or on a Ray cluster as Ray tasks (``ray_address``; Ray's
own scheduler places them, ``pip install 'physid[ray]'``). On a cluster the output directory
must be on a file system every node sees.

A job's state lives in its run directory, ``OUT/runs/<name>/``: ``job.json`` (what to run),
``status.json`` (``running``, ``done``, ``failed`` or ``interrupted``, with the error message;
written atomically) and ``job.log`` (the job's output). Running the same sweep again skips the
jobs that are ``done`` with the same options and runs the others again; an interrupted or failed
fit resumes from its last checkpoint (:func:`physid.training.train`). At the end
``OUT/sweep.json`` lists every job and its state, and :func:`aggregate` writes mean ± std over
seeds of every number in the runs' ``summary.json`` per grid cell: ``aggregate.json``,
``aggregate.md`` and ``plots/``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import itertools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import load_json, save_json, to_jsonable, write_text_atomic
from physid.errors import ConfigError, DataError, MissingDependencyError, PhysidError

__all__ = [
    "SWEEP_FORMAT",
    "STATES",
    "Grid",
    "Job",
    "SweepResult",
    "load_grid",
    "make_grid",
    "expand",
    "run_sweep",
    "execute_job",
    "read_status",
    "aggregate",
    "format_aggregate",
    "format_stats",
    "DISPLAY_METRICS",
]

SWEEP_FORMAT = "physid.sweep/1"
STATUS_FORMAT = "physid.sweep.status/1"
STATES = ("running", "done", "failed", "interrupted")
# Options the sweep sets itself: a grid may not.
_RESERVED = ("runs_dir", "run_name", "run_dir", "progress")
# Grid keys with a plural spelling in TOML and on the command line.
_PLURAL = {"systems": "system", "models": "model", "methods": "method", "seeds": "seed"}
_NAME_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")

DISPLAY_METRICS = (
    "test_mse",
    "test_loss",
    "test_mse_interp",
    "test_mse_extrap",
    "train_mse",
    "best_val_loss",
    "final_train_mse",
    "seconds",
    "seconds_total",
    "seconds_per_epoch",
    "nfe_forward",
    "nfe_backward",
    "nfe_forward_total",
    "nfe_backward_total",
    "nfe_forward_per_iter",
    "nfe_backward_per_iter",
)
"""Summary numbers shown in the aggregate's markdown table, in this order, when present (the
JSON holds every number)."""


# ---- the grid ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid of fits.

    Attributes:
        systems: the systems (``"three-body"``, ``"acrobot"``, ``"hopper"``).
        axes: option → list of values, for every system (``model``, ``method``, ``seed`` and
            any FitConfig option); every combination is a job.
        system_axes: system → axes that replace the common ones for that system.
        options: fixed FitConfig options of every job (an axis of the same name wins).
        system_options: system → fixed options of that system's jobs (over ``options``).
        out: the output directory named by the grid file (``None``: the caller decides).
    """

    systems: tuple[str, ...]
    axes: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    system_axes: Mapping[str, Mapping[str, tuple[Any, ...]]] = dataclasses.field(
        default_factory=dict
    )
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    system_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return to_jsonable(
            {
                "systems": list(self.systems),
                "axes": {k: list(v) for k, v in self.axes.items()},
                "system_axes": {
                    s: {k: list(v) for k, v in a.items()} for s, a in self.system_axes.items()
                },
                "options": dict(self.options),
                "system_options": {s: dict(o) for s, o in self.system_options.items()},
            }
        )


@dataclasses.dataclass(frozen=True)
class Job:
    """One fit of a grid.

    Attributes:
        name: the run folder name, e.g. ``three-body-ode-aca-0``.
        system: the system.
        cell: the grid cell, every axis but the seed (``system``, ``model``, ``method``, ...).
        seed: the seed.
        config: the FitConfig options (JSON values), run placement included.
        run_dir: the run directory (absolute).
        cwd: the directory relative paths in ``config`` are read from.
    """

    name: str
    system: str
    cell: Mapping[str, Any]
    seed: int
    config: Mapping[str, Any]
    run_dir: str
    cwd: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``job.json`` holds)."""
        return {
            "format": SWEEP_FORMAT,
            "name": self.name,
            "system": self.system,
            "cell": to_jsonable(dict(self.cell)),
            "seed": self.seed,
            "config": to_jsonable(dict(self.config)),
            "run_dir": self.run_dir,
            "cwd": self.cwd,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Job:
        """The job of a ``job.json``.

        Raises:
            DataError: a field is missing.
        """
        try:
            return cls(
                name=str(raw["name"]),
                system=str(raw["system"]),
                cell=dict(raw["cell"]),
                seed=int(raw["seed"]),
                config=dict(raw["config"]),
                run_dir=str(raw["run_dir"]),
                cwd=str(raw.get("cwd") or raw["run_dir"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a sweep job record (missing or bad field {exc}).") from exc


def _as_list(key: str, value: Any, where: str) -> tuple[Any, ...]:
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"{where}: '{key}' lists no values.")
        return tuple(value)
    raise ConfigError(
        f"{where}: '{key}' must be a list of values (an axis); put a fixed value under [options]."
    )


def _axes_from(table: Mapping[str, Any], where: str) -> dict[str, tuple[Any, ...]]:
    axes: dict[str, tuple[Any, ...]] = {}
    for key, value in table.items():
        name = _PLURAL.get(key, key)
        if name in axes:
            raise ConfigError(f"{where}: '{key}' is given twice (singular and plural).")
        axes[name] = _as_list(key, value, where)
    return axes


def _parse_grid(raw: Mapping[str, Any], where: str) -> Grid:
    unknown = sorted(set(raw) - {"out", "grid", "options"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            "a grid file has 'out', [grid] and [options]."
        )
    grid_table = raw.get("grid", {})
    options_table = raw.get("options", {})
    if not isinstance(grid_table, dict) or not isinstance(options_table, dict):
        raise ConfigError(f"{where}: [grid] and [options] must be tables.")
    common = {k: v for k, v in grid_table.items() if not isinstance(v, dict)}
    systems_value = common.pop("systems", common.pop("system", None))
    if systems_value is None:
        raise ConfigError(f"{where}: [grid] must list 'systems'.")
    systems = _as_list("systems", systems_value, where)
    per_system_axes = {k: v for k, v in grid_table.items() if isinstance(v, dict)}
    per_system_options = {k: v for k, v in options_table.items() if isinstance(v, dict)}
    for label, table in (("grid", per_system_axes), ("options", per_system_options)):
        stray = sorted(set(table) - set(systems))
        if stray:
            raise ConfigError(
                f"{where}: [{label}.{stray[0]}] names a system that is not in the grid's "
                f"systems ({', '.join(systems)})."
            )
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"{where}: 'out' must be a path (a string).")
    return Grid(
        systems=tuple(str(s) for s in systems),
        axes=_axes_from(common, where),
        system_axes={s: _axes_from(t, f"{where} [grid.{s}]") for s, t in per_system_axes.items()},
        options={k: v for k, v in options_table.items() if not isinstance(v, dict)},
        system_options={s: dict(t) for s, t in per_system_options.items()},
        out=out,
    )


def _tomllib() -> Any:
    import importlib

    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10
        try:
            return importlib.import_module("tomli")
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(
                "reading a grid file on Python 3.10 needs tomli: pip install tomli."
            ) from exc


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read a grid from a TOML file (see the module docstring for its layout).

    Raises:
        ConfigError: the file is missing, not TOML, or not a valid grid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"grid file {p} does not exist.")
    tomllib = _tomllib()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML ({exc}).") from exc
    return _parse_grid(raw, str(p))


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (``2`` → int, ``1e-5`` → float, ``true``,
    ``[0.5, 0.5]``); anything else stays a string."""
    tomllib = _tomllib()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def make_grid(
    systems: Sequence[str],
    *,
    models: Sequence[str] = (),
    methods: Sequence[str] = (),
    seeds: Sequence[int] = (),
    axes: Mapping[str, Sequence[Any]] | None = None,
    options: Mapping[str, Any] | None = None,
    base: Grid | None = None,
) -> Grid:
    """A grid from options, or ``base`` (a grid file) with the given axes and options replacing
    its own (its per-system ones included). Empty sequences keep ``base``'s axis (or the
    system's default)."""
    common: dict[str, tuple[Any, ...]] = dict(base.axes) if base else {}
    for name, values in (("model", models), ("method", methods), ("seed", seeds)):
        if values:
            common[name] = tuple(values)
    for name, values in (axes or {}).items():
        common[_PLURAL.get(name, name)] = _as_list(name, list(values), "the grid options")
    chosen = tuple(systems) or (base.systems if base else ())
    if not chosen:
        raise ConfigError("the grid names no system; give --system or a grid file.")
    # What is given here wins over the grid file's per-system tables too.
    given_axes = {n for n, v in (("model", models), ("method", methods), ("seed", seeds)) if v}
    given_axes |= {_PLURAL.get(n, n) for n in (axes or {})}
    given_options = set(options or {})
    system_axes = {
        s: {k: v for k, v in a.items() if k not in given_axes and k not in given_options}
        for s, a in (base.system_axes if base else {}).items()
    }
    system_options = {
        s: {k: v for k, v in o.items() if k not in given_options and k not in given_axes}
        for s, o in (base.system_options if base else {}).items()
    }
    return Grid(
        systems=chosen,
        axes=common,
        system_axes=system_axes,
        options={**(base.options if base else {}), **(options or {})},
        system_options=system_options,
        out=base.out if base else None,
    )


def _fit_fields(module: Any) -> dict[str, Any]:
    config_cls = getattr(module, "FitConfig", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{module.__name__} has no FitConfig dataclass.")
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _default_model(module: Any, fields: Mapping[str, Any]) -> str | None:
    if "model" in fields:
        f = fields["model"]
        return None if f.default is dataclasses.MISSING else str(f.default)
    model = getattr(module, "MODEL", None)
    return None if model is None else str(model)


def _name_part(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _NAME_SAFE.sub("_", str(value)).strip("_") or "x"


def expand(grid: Grid, out: str | os.PathLike[str], *, cwd: str | None = None) -> list[Job]:
    """Every job of ``grid``, each validated by building its system's ``FitConfig``.

    Args:
        grid: the grid.
        out: the sweep's output directory; runs go to ``out/runs/<name>``.
        cwd: where relative paths in the options are read from (default: the current one).

    Raises:
        ConfigError: an unknown system, an option the system's FitConfig does not have, an
            option the sweep sets itself, a model the system does not fit, or an invalid value
            (FitConfig's own check).
    """
    from physid.app.cli import system_module

    runs = Path(out).resolve() / "runs"
    base_dir = str(Path(cwd or os.getcwd()).resolve())
    jobs: list[Job] = []
    names: set[str] = set()
    for system in grid.systems:
        module = system_module(system)
        fields = _fit_fields(module)
        axes = {**grid.axes, **grid.system_axes.get(system, {})}
        options = {**grid.options, **grid.system_options.get(system, {})}
        known = sorted(fields)
        for key in [*axes, *options]:
            if key in _RESERVED:
                raise ConfigError(
                    f"the sweep sets '{key}' itself; give the output folder with --out instead."
                )
            if key != "model" and key not in fields:
                raise ConfigError(
                    f"{system} has no option '{key}' (its options: {', '.join(known)})."
                )
        for key in axes:  # an axis replaces a fixed option of the same name
            options.pop(key, None)
        default_model = _default_model(module, fields)
        models = axes.pop("model", None)
        if "model" in options:
            models = (options.pop("model"),)
        if models is None:
            models = (default_model,)
        if "model" not in fields:
            wrong = [m for m in models if m != default_model]
            if wrong:
                raise ConfigError(
                    f"{system} is fitted with model {default_model!r}, not {wrong[0]!r}."
                )
        for needed in ("method", "seed"):
            if needed not in fields:
                raise ConfigError(f"{system}'s FitConfig has no '{needed}': it cannot be swept.")
        methods = axes.pop("method", None) or (
            (options.pop("method"),) if "method" in options else (fields["method"].default,)
        )
        seeds = axes.pop("seed", None) or (
            (options.pop("seed"),) if "seed" in options else (fields["seed"].default,)
        )
        extra = list(axes)
        placement: Callable[[Path], dict[str, Any]]
        if "runs_dir" in fields and "run_name" in fields:

            def placement(d: Path) -> dict[str, Any]:
                return {"runs_dir": str(d.parent), "run_name": d.name}

        elif "run_dir" in fields:

            def placement(d: Path) -> dict[str, Any]:
                return {"run_dir": str(d)}

        else:
            raise ConfigError(
                f"{system}'s FitConfig has neither run_name nor run_dir: a sweep cannot place "
                "its runs."
            )
        for model, method, *values in itertools.product(models, methods, *(axes[k] for k in extra)):
            for seed in seeds:
                if isinstance(seed, bool) or not isinstance(seed, int):
                    raise ConfigError(f"seeds must be integers, got {seed!r}.")
                cell: dict[str, Any] = {"system": system, "model": model, "method": method}
                cell.update(zip(extra, values, strict=True))
                name = "-".join(
                    [system, _name_part(model), _name_part(method)]
                    + [f"{k}{_name_part(v)}" for k, v in zip(extra, values, strict=True)]
                    + [str(seed)]
                )
                if name in names:
                    raise ConfigError(
                        f"two jobs of the grid would share the run folder {name!r}; "
                        "remove the duplicate values."
                    )
                names.add(name)
                run_dir = runs / name
                config: dict[str, Any] = {**options, **dict(zip(extra, values, strict=True))}
                config.update(method=method, seed=seed, progress=False)
                if "model" in fields:
                    config["model"] = model
                if "threads" in fields and "threads" not in config:
                    config["threads"] = 1  # one process per job: one thread each
                config.update(placement(run_dir))
                config = to_jsonable(config)
                _validate(module, system, config)
                jobs.append(
                    Job(
                        name=name,
                        system=system,
                        cell=to_jsonable(cell),
                        seed=int(seed),
                        config=config,
                        run_dir=str(run_dir),
                        cwd=base_dir,
                    )
                )
    return jobs


def _validate(module: Any, system: str, config: Mapping[str, Any]) -> None:
    try:
        cfg = module.FitConfig(**config)
        resolved = getattr(cfg, "resolved", None)
        if callable(resolved):
            resolved()
    except PhysidError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {system} options: {exc}.") from exc


# ---- one job ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``status.json`` of a job's run directory, or ``None`` if it has none (or it is
    unreadable)."""
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return None
    try:
        raw = load_json(path)
    except DataError:
        return None
    return raw if isinstance(raw, dict) else None


def _write_status(run_dir: Path, status: Mapping[str, Any]) -> None:
    save_json(run_dir / "status.json", {"format": STATUS_FORMAT, **status})


def _is_done(job: Job) -> bool:
    status = read_status(job.run_dir)
    return (
        status is not None
        and status.get("state") == "done"
        and status.get("config") == to_jsonable(dict(job.config))
        and (Path(job.run_dir) / "summary.json").is_file()
    )


def _running_pid(job: Job) -> int | None:
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
    except (ProcessLookupError, PermissionError, OSError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            if b"physid.sweep" not in cmdline.read_bytes():
                return None  # the pid was reused by another program
    return pid


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    import importlib.util

    # The job imports physid and the experiment modules from where this process found them.
    roots: list[str] = []
    for package in ("physid", "models"):
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(package)
            for location in (spec.submodule_search_locations or []) if spec else []:
                roots.append(str(Path(location).resolve().parent))
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *([old] if old else [])]))
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _job_command(job_file: Path) -> list[str]:
    """The command that runs one job (a separate Python process)."""
    return [sys.executable, "-m", "physid.sweep", str(job_file)]


_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a job process and its children (its own process group), then wait."""
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


def _stop_all() -> None:
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
        "started": _now(),
    }
    job_file = run_dir / "job.json"
    save_json(job_file, job.to_dict())
    log_path = run_dir / "job.log"
    cwd = job.cwd if Path(job.cwd).is_dir() else str(run_dir)
    t0 = time.perf_counter()
    # "running" is written before the process starts, so that the job's own final status
    # (written by the process) always comes after it.
    _write_status(run_dir, {**base, "state": "running"})
    with open(log_path, "ab") as log:
        log.write(
            f"\n==== physid sweep: {job.name}, attempt {base['attempt']}, {_now()}\n".encode()
        )
        log.flush()
        log_start = log.tell()
        proc = subprocess.Popen(
            _job_command(job_file),
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
            _write_status(
                run_dir,
                {
                    **base,
                    "state": "interrupted",
                    "error": "the sweep was interrupted; run it again to resume this job.",
                    "finished": _now(),
                    "seconds": time.perf_counter() - t0,
                },
            )
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
    seconds = time.perf_counter() - t0
    status = read_status(run_dir) or {}
    if status.get("state") in ("done", "failed", "interrupted"):
        state, error = status["state"], status.get("error")
    else:  # the process died before it could say why
        if returncode < 0:
            sig = -returncode
            sig_name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            stopped = sig in (signal.SIGTERM, signal.SIGINT)
            state = "interrupted" if stopped else "failed"
            error = f"the job process was killed by signal {sig_name}" + (
                "; run the sweep again to resume it." if stopped else " (out of memory?)."
            )
        else:
            tail = _log_tail(log_path, log_start)
            state = "failed"
            error = f"the job process exited with code {returncode}" + (
                f": {_one_line(tail, 300)}" if tail else "."
            )
        _write_status(
            run_dir,
            {
                **base,
                "state": state,
                "error": error,
                "returncode": returncode,
                "finished": _now(),
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


def _job_main(argv: Sequence[str]) -> int:
    """``python -m physid.sweep JOB.json``: run one job in this process and write its final
    ``status.json`` (``done``, ``failed`` or ``interrupted``)."""
    if len(argv) != 1:
        print("usage: python -m physid.sweep JOB.json", file=sys.stderr)
        return 2
    job_file = Path(argv[0])
    job = Job.from_dict(load_json(job_file))
    run_dir = Path(job.run_dir)
    started = read_status(run_dir) or {}
    base = {k: v for k, v in started.items() if k not in ("format", "state", "error", "pid")}
    base.update(name=job.name, system=job.system, config=dict(job.config))
    t0 = time.perf_counter()
    _write_status(run_dir, {**base, "state": "running", "pid": os.getpid()})

    def finish(state: str, error: str | None = None, **extra: Any) -> None:
        _write_status(
            run_dir,
            {
                **base,
                "state": state,
                "error": error,
                "finished": _now(),
                "seconds": time.perf_counter() - t0,
                **extra,
            },
        )

    try:
        from physid.app.cli import system_module

        module = system_module(job.system)
        result = module.fit(module.FitConfig(**job.config))
        if result is not None and Path(result).resolve() != run_dir.resolve():
            raise ConfigError(
                f"{job.system}'s fit wrote {result}, not the sweep's run directory {run_dir}."
            )
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            raise DataError(f"the fit finished without writing {summary_path}.")
        summary = load_json(summary_path)
        if isinstance(summary, dict) and summary.get("interrupted"):
            finish("interrupted", "the fit was interrupted; run the sweep again to resume it.")
            return 1
    except PhysidError as exc:
        finish("failed", _one_line(str(exc)), error_type=type(exc).__name__)
        print(f"Error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        traceback.print_exc()
        finish(
            "failed",
            _one_line(f"{type(exc).__name__}: {exc} (a bug; the traceback is in job.log)"),
            error_type=type(exc).__name__,
        )
        return 1
    finish("done")
    return 0


# ---- the sweep --------------------------------------------------------------------------------


@dataclasses.dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        out: the sweep's output directory.
        jobs: every job of the grid.
        outcomes: job name → ``{"state", "error", "seconds", "ran", ...}``.
        aggregate: the aggregate (see :func:`aggregate`), ``None`` if no job is done.
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


def _run_local(
    todo: Sequence[Job], workers: int, on_done: Callable[[Job, dict[str, Any]], None]
) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
    futures = {pool.submit(execute_job, job.to_dict()): job for job in todo}
    try:
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the job could not even be started (e.g. a full disk)
                error = f"the job could not run: {type(exc).__name__}: {_one_line(str(exc), 300)}"
                outcome = {"name": job.name, "state": "failed", "error": error}
            on_done(job, outcome)
    except BaseException:
        for future in futures:
            future.cancel()
        _stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(
    todo: Sequence[Job],
    address: str,
    cpus_per_job: float,
    gpus_per_job: float,
    on_done: Callable[[Job, dict[str, Any]], None],
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
                        error = f"the Ray task failed: {_one_line(str(exc), 300)}"
                        outcome = {"name": job.name, "state": "failed", "error": error}
                        with contextlib.suppress(OSError, PhysidError):
                            status = read_status(job.run_dir) or {}
                            if status.get("state") not in ("done", "failed", "interrupted"):
                                _write_status(
                                    Path(job.run_dir),
                                    {**status, "state": "failed", "error": error},
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
def _stop_signals() -> Any:
    """Within: SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C does), so that killing the
    sweep stops its jobs and records them as interrupted. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    names = ("SIGTERM", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
        console: a rich console for the table (default: stdout).

    Returns:
        a :class:`SweepResult`. A failed job does not raise: it is listed with its error.

    Raises:
        ConfigError: an invalid grid, or ``workers < 1``.
        MissingDependencyError: ``ray_address`` given without Ray installed.
    """
    from physid.progress import make_progress

    out_dir = Path(out).resolve()
    jobs = expand(grid, out_dir)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}.")
    if ray_address is not None:
        _import_ray()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        pid = _running_pid(job)
        if pid is not None:
            outcomes[job.name] = {
                "state": "running",
                "error": f"still running in process {pid} (from an earlier sweep); left alone.",
                "seconds": None,
                "ran": False,
            }
        elif _is_done(job):
            status = read_status(job.run_dir) or {}
            outcomes[job.name] = {
                "state": "done",
                "error": None,
                "seconds": status.get("seconds"),
                "ran": False,
            }
        else:
            todo.append(job)
    backend = "local" if ray_address is None else "ray"
    lock = threading.Lock()
    counts = {"done": 0, "failed": 0}

    def write_sweep(state: str) -> None:
        record = {
            "format": SWEEP_FORMAT,
            "updated": _now(),
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
                counts["done" if outcome["state"] == "done" else "failed"] += 1
                bar.update(
                    task,
                    advance=1,
                    description=f"sweep: {counts['done']} done, {counts['failed']} failed",
                )
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
                    if state not in ("done", "failed", "interrupted"):
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


# ---- aggregation ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _stats(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "n": n,
        "values": list(values),
    }


def _cell_of(run_dir: Path) -> tuple[dict[str, Any], int | None] | None:
    """The grid cell and seed of a run: from ``job.json`` (a sweep run), else from
    ``config.json`` (system, model, method)."""
    job_file = run_dir / "job.json"
    if job_file.is_file():
        with contextlib.suppress(DataError):
            job = Job.from_dict(load_json(job_file))
            return dict(job.cell), job.seed
    try:
        cfg = load_json(run_dir / "config.json")
    except DataError:
        return None
    if not isinstance(cfg, dict) or "system" not in cfg:
        return None
    cell = {k: cfg.get(k) for k in ("system", "model", "method")}
    seed = cfg.get("seed")
    return cell, seed if isinstance(seed, int) else None


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Run directories under ``root`` (folders holding ``config.json`` and ``summary.json``),
    sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "config.json" in filenames and "summary.json" in filenames:
            found.append(Path(dirpath))
    return sorted(found)


def aggregate(
    root: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    plots: bool = True,
    runs: Sequence[str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """Mean ± std over seeds, per grid cell, of every number in the runs' ``summary.json``.

    A run counts when its ``status.json`` says ``done`` (or it has none, for runs made
    outside a sweep). The standard deviation is the sample one (n - 1); ``None`` for a single
    seed. Writes ``aggregate.json``, ``aggregate.md`` and ``plots/<system>-<model>-*.png``
    (the first of :data:`DISPLAY_METRICS` vs method, and NFE vs method) into ``out``.

    Args:
        root: a sweep's output directory (its runs are under ``root/runs``), or any folder
            holding run directories.
        out: where to write (default ``root``).
        metrics: the columns of the markdown table (default: :data:`DISPLAY_METRICS` present).
        plots: write the plots.
        runs: only these run directories (default: every one under ``root``).

    Returns:
        ``{"cells": [{"cell", "n", "seeds", "runs", "metrics": {key: {"mean", "std", ...}}}],
        "axes", "metrics"}``.

    Raises:
        DataError: no finished run under ``root``.
    """
    root_dir = Path(root)
    out_dir = Path(out) if out is not None else root_dir
    search = root_dir / "runs" if (root_dir / "runs").is_dir() else root_dir
    groups: dict[str, dict[str, Any]] = {}
    candidates = find_runs(search) if runs is None else [Path(r) for r in runs]
    for run in candidates:
        status = read_status(run)
        if status is not None and status.get("state") != "done":
            continue
        found = _cell_of(run)
        if found is None:
            continue
        cell, seed = found
        try:
            summary = load_json(run / "summary.json")
        except DataError:
            continue
        if not isinstance(summary, dict):
            continue
        key = repr(sorted(cell.items(), key=lambda kv: kv[0]))
        group = groups.setdefault(key, {"cell": cell, "seeds": [], "runs": [], "values": {}})
        group["seeds"].append(seed)
        group["runs"].append(os.path.relpath(run, out_dir))
        for name, value in summary.items():
            if name == "seed" or name in cell or not _is_number(value):
                continue
            group["values"].setdefault(name, []).append(float(value))
    if not groups:
        raise DataError(f"no finished run directory (config.json + summary.json) under {root}.")
    axes: list[str] = []
    for group in groups.values():
        for k in group["cell"]:
            if k not in axes:
                axes.append(k)
    cells = []
    for group in groups.values():
        cells.append(
            {
                "cell": group["cell"],
                "n": len(group["runs"]),
                "seeds": group["seeds"],
                "runs": group["runs"],
                "metrics": {k: _stats(v) for k, v in sorted(group["values"].items())},
            }
        )
    cells.sort(key=lambda c: [str(c["cell"].get(a, "")) for a in axes])
    present = {k for c in cells for k in c["metrics"]}
    shown = [m for m in (metrics or DISPLAY_METRICS) if m in present]
    if metrics:
        missing = [m for m in metrics if m not in present]
        if missing:
            have = ", ".join(sorted(present))
            raise ConfigError(f"no run's summary.json has {missing[0]!r} (they have: {have}).")
    result: dict[str, Any] = {
        "format": "physid.aggregate/1",
        "axes": axes,
        "metrics": shown,
        "std": "sample standard deviation over seeds (n - 1); null for one seed",
        "cells": cells,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        result["plots"] = [os.path.relpath(p, out_dir) for p in _plot_aggregate(result, out_dir)]
    save_json(out_dir / "aggregate.json", result)
    write_text_atomic(out_dir / "aggregate.md", format_aggregate(result) + "\n")
    return result


def _sig(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits, without an exponent between 1e-3 and 1e6."""
    if x == 0 or not math.isfinite(x) or not 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}"
    rounded = round(x, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{rounded:.{max(digits, 7)}g}"


def format_stats(stats: Mapping[str, Any] | None) -> str:
    """``mean ± std`` (4 and 2 significant digits), the mean alone for one seed."""
    if not stats:
        return "—"
    mean, std = stats["mean"], stats.get("std")
    return _sig(mean, 4) if std is None else f"{_sig(mean, 4)} ± {_sig(std, 2)}"


def format_aggregate(result: Mapping[str, Any]) -> str:
    """The aggregate as a markdown table: one row per cell, ``mean ± std`` per metric."""
    axes = list(result["axes"])
    metrics = list(result["metrics"])
    head = [*axes, "n", *metrics]
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * len(axes) + ["---:"] * (1 + len(metrics))) + " |",
    ]
    for c in result["cells"]:
        row = [str(c["cell"].get(a, "")) for a in axes] + [str(c["n"])]
        row += [format_stats(c["metrics"].get(m)) for m in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _plot_aggregate(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Per (system, model): the main metric vs method, and NFE vs method (bars, ± std)."""
    from matplotlib.figure import Figure

    by_sm: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in result["cells"]:
        key = (str(c["cell"].get("system")), str(c["cell"].get("model")))
        by_sm.setdefault(key, []).append(c)
    extra_axes = [a for a in result["axes"] if a not in ("system", "model", "method")]
    written: list[Path] = []
    plots = out_dir / "plots"
    for (system, model), cells in by_sm.items():
        present = {k for c in cells for k in c["metrics"]}
        methods = list(dict.fromkeys(str(c["cell"].get("method")) for c in cells))
        series = list(
            dict.fromkeys(", ".join(f"{a}={c['cell'].get(a)}" for a in extra_axes) for c in cells)
        )

        def lookup(method: str, label: str, key: str, cells: list[Mapping[str, Any]] = cells):
            for c in cells:
                lab = ", ".join(f"{a}={c['cell'].get(a)}" for a in extra_axes)
                if str(c["cell"].get("method")) == method and lab == label:
                    return c["metrics"].get(key)
            return None

        main = next((m for m in DISPLAY_METRICS if m in present), None)
        nfe = [k for k in present if k.startswith(("nfe_forward", "nfe_backward"))]
        nfe = sorted(nfe, key=lambda k: (not k.startswith("nfe_forward"), k))[:2]
        for kind, keys in (("metric", [main] if main else []), ("nfe", nfe)):
            if not keys:
                continue
            bars = [(k, s) for k in keys for s in series]
            fig = Figure(figsize=(max(4.0, 1.2 * len(methods) * max(1, len(bars) / 2)), 3.4))
            ax = fig.add_subplot()
            width = 0.8 / len(bars)
            all_values = []
            for i, (k, s) in enumerate(bars):
                means, errs = [], []
                for m in methods:
                    st = lookup(m, s, k)
                    means.append(math.nan if st is None else st["mean"])
                    errs.append(0.0 if st is None or st.get("std") is None else st["std"])
                all_values += [v for v in means if math.isfinite(v)]
                label = k if not s else (f"{k} ({s})" if len(keys) > 1 else s)
                xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(methods))]
                ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
            ax.set_xticks(range(len(methods)), methods)
            ax.set_xlabel("gradient method")
            positive = [v for v in all_values if v > 0]
            if positive and len(positive) == len(all_values) and max(positive) > 20 * min(positive):
                ax.set_yscale("log")
            ax.set_ylabel(keys[0] if kind == "metric" else "function evaluations")
            title = f"{system} {model}: " + (keys[0] if kind == "metric" else "NFE") + " vs method"
            ax.set_title(title, fontsize=10)
            if len(bars) > 1:
                ax.legend(fontsize=7)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            name = f"{_name_part(system)}-{_name_part(model)}-" + (
                keys[0] if kind == "metric" else "nfe"
            )
            path = plots / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
            written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(_job_main(sys.argv[1:]))
