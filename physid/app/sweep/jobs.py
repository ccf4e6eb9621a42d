"""A sweep's jobs: one fit each, named, placed in ``OUT/runs/<name>`` and validated up front.

A job's options are checked by building the system's fit options from the registry
(``registry.get(system).Config.from_dict(options)``), so that a typo fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from physid._io import to_jsonable
from physid.app import registry
from physid.app.sweep.grid import Grid
from physid.errors import ConfigError, DataError, PhysidError

__all__ = ["SWEEP_FORMAT", "RESERVED", "Job", "expand", "name_part"]

SWEEP_FORMAT = "physid.sweep/1"
RESERVED = ("runs_dir", "run_name", "progress")
"""Options the sweep sets itself: a grid may not."""
_NAME_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclasses.dataclass(frozen=True)
class Job:
    """One fit of a grid.

    Attributes:
        name: the run folder name, e.g. ``three-body-ode-aca-0``.
        system: the system.
        cell: the grid cell, every axis but the seed (``system``, ``model``, ``method``, ...).
        seed: the seed.
        config: the fit options (JSON values), run placement included.
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


def name_part(value: Any) -> str:
    """``value`` as a piece of a folder name (``yes``/``no`` for booleans)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _NAME_SAFE.sub("_", str(value)).strip("_") or "x"


def _defaults(config_cls: type) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(config_cls)
        if f.default is not dataclasses.MISSING
    }


def expand(grid: Grid, out: str | os.PathLike[str], *, cwd: str | None = None) -> list[Job]:
    """Every job of ``grid``, each validated by building its system's fit options.

    Args:
        grid: the grid.
        out: the sweep's output directory; runs go to ``out/runs/<name>``.
        cwd: where relative paths in the options are read from (default: the current one).

    Raises:
        ConfigError: an unknown system, an option the system's ``Config`` does not have, an
            option the sweep sets itself, a model the system does not fit, or an invalid value
            (the ``Config``'s own checks).
    """
    runs = Path(out).resolve() / "runs"
    base_dir = str(Path(cwd or os.getcwd()).resolve())
    return [job for system in grid.systems for job in _system_jobs(grid, system, runs, base_dir)]


def _system_axes(grid: Grid, system: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model/method/seed values, the other axes, the fixed options) of one system's jobs,
    checked against its Config's options."""
    config_cls = registry.get(system).Config
    known = config_cls.option_names()
    axes = {**grid.axes, **grid.system_axes.get(system, {})}
    options = {**grid.options, **grid.system_options.get(system, {})}
    for key in [*axes, *options]:
        if key in RESERVED:
            raise ConfigError(
                f"the sweep sets '{key}' itself; give the output folder with --out instead."
            )
        if key not in known:
            raise ConfigError(
                f"{system} has no option '{key}' (its options: {', '.join(sorted(known))})."
            )
    for key in axes:  # an axis replaces a fixed option of the same name
        options.pop(key, None)
    # model, method and seed are always part of a job's name and cell (default: the Config's).
    defaults = _defaults(config_cls)
    named: dict[str, Any] = {}
    for key in ("model", "method", "seed"):
        axis = axes.pop(key, None)
        if axis is None:
            axis = (options.pop(key),) if key in options else (defaults[key],)
        named[key] = axis
    return named, axes, options


def _system_jobs(grid: Grid, system: str, runs: Path, cwd: str) -> list[Job]:
    config_cls = registry.get(system).Config
    named, axes, options = _system_axes(grid, system)
    extra = list(axes)
    jobs: dict[str, Job] = {}
    combos = itertools.product(named["model"], named["method"], *(axes[k] for k in extra))
    for model, method, *values in combos:
        for seed in named["seed"]:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seeds must be integers, got {seed!r}.")
            chosen = dict(zip(extra, values, strict=True))
            run_method = method
            config: dict[str, Any] = {**options, **chosen}
            config.update(model=model, method=method, seed=seed, progress=False)
            config.setdefault("threads", 1)  # one process per job: one thread each
            name = _job_name(system, model, method, chosen, seed)
            config = to_jsonable({**config, "runs_dir": str(runs), "run_name": name})
            built = _validate(config_cls, name, config)
            # a default such as three-body's method "auto" resolves per job (to "forward" for
            # the known-form model, "aca" otherwise): the job is named and filed by what it runs
            resolved = getattr(built, "method", method)
            if resolved != method:
                run_method = resolved
                name = _job_name(system, model, run_method, chosen, seed)
                config.update(method=run_method, run_name=name)
                _validate(config_cls, name, config)
            if name in jobs:
                raise ConfigError(
                    f"two jobs of the grid would share the run folder {name!r}; "
                    "remove the duplicate values."
                )
            jobs[name] = Job(
                name=name,
                system=system,
                cell=to_jsonable(
                    {"system": system, "model": model, "method": run_method, **chosen}
                ),
                seed=int(seed),
                config=config,
                run_dir=str(runs / name),
                cwd=cwd,
            )
    return list(jobs.values())


def _job_name(system: str, model: Any, method: Any, chosen: Mapping[str, Any], seed: int) -> str:
    """A job's run folder name: ``<system>-<model>-<method>[-<axis><value>...]-<seed>``."""
    return "-".join(
        [system, name_part(model), name_part(method)]
        + [f"{k}{name_part(v)}" for k, v in chosen.items()]
        + [str(seed)]
    )


def _validate(config_cls: Any, job: str, config: Mapping[str, Any]) -> Any:
    """Build the job's Config (returned); its error names the job."""
    try:
        return config_cls.from_dict(config)
    except ConfigError as exc:
        raise ConfigError(f"job {job}: {exc}") from exc
    except PhysidError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job {job}: invalid options: {exc}.") from exc
