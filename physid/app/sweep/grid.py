"""A sweep's grid: axes (every combination is a job) and fixed options, from TOML or options.

The grid knows no system: :func:`physid.app.sweep.jobs.expand` checks it against each system's
fit options (the registry's ``Config``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import to_jsonable
from physid.errors import ConfigError, MissingDependencyError

__all__ = ["Grid", "load_grid", "make_grid", "parse_value", "PLURAL"]

PLURAL = {"systems": "system", "models": "model", "methods": "method", "seeds": "seed"}
"""Grid keys with a plural spelling in TOML and on the command line."""


@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid of fits.

    Attributes:
        systems: the systems (registry names: ``"three-body"``, ``"acrobot"``, ``"hopper"``).
        axes: option → list of values, for every system (``model``, ``method``, ``seed`` and
            any fit option); every combination is a job.
        system_axes: system → axes that replace the common ones for that system.
        options: fixed fit options of every job (an axis of the same name wins).
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


def as_axis(key: str, value: Any, where: str) -> tuple[Any, ...]:
    """``value`` as an axis (a non-empty list of values), else ConfigError."""
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
        name = PLURAL.get(key, key)
        if name in axes:
            raise ConfigError(f"{where}: '{key}' is given twice (singular and plural).")
        axes[name] = as_axis(key, value, where)
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
    systems = as_axis("systems", systems_value, where)
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
    if out is not None:
        check_out(out, f"{where}: 'out'")
    return Grid(
        systems=tuple(str(s) for s in systems),
        axes=_axes_from(common, where),
        system_axes={s: _axes_from(t, f"{where} [grid.{s}]") for s, t in per_system_axes.items()},
        options={k: v for k, v in options_table.items() if not isinstance(v, dict)},
        system_options={s: dict(t) for s, t in per_system_options.items()},
        out=out,
    )


def check_out(out: str | os.PathLike[str], what: str = "the sweep's output folder") -> Path:
    """``out`` as a path, if a sweep may write there: not empty, not a file-system root and
    not an existing file.

    Raises:
        ConfigError: otherwise.
    """
    text = os.fspath(out)
    path = Path(text)
    if not text.strip():
        raise ConfigError(f"{what} is empty; name a folder for the sweep.")
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"{what} is {text!r}, a file-system root; name a folder of its own.")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {text!r} is a file, not a folder.")
    return path


def _tomllib() -> Any:
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
    """Read a grid from a TOML file (see :mod:`physid.app.sweep` for its layout).

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
        common[PLURAL.get(name, name)] = as_axis(name, list(values), "the grid options")
    chosen = tuple(systems) or (base.systems if base else ())
    if not chosen:
        raise ConfigError("the grid names no system; give --system or a grid file.")
    # What is given here wins over the grid file's per-system tables too.
    given_axes = {n for n, v in (("model", models), ("method", methods), ("seed", seeds)) if v}
    given_axes |= {PLURAL.get(n, n) for n in (axes or {})}
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
