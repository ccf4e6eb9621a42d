"""The registry of physical systems: one name, one :class:`~physid.experiment.AbstractExperiment`.

The command line, sweeps and reports find systems here and nowhere else. Entries are imported
lazily (a system pulls in its simulator, e.g. MuJoCo), so that ``import physid.app.registry``
and ``physid --help`` stay fast.

To add a system: write a final subclass of :class:`~physid.experiment.AbstractExperiment` (see
``models/experiments/three_body.py``) and add one :class:`Entry` below.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from pathlib import Path

from physid.errors import ConfigError, DataError
from physid.experiment import AbstractControlExperiment, AbstractExperiment
from physid.runs import RunDir

__all__ = ["Entry", "ENTRIES", "names", "get", "for_run", "for_dataset", "title"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where a system's experiment lives, and what the CLI shows before importing it.

    Attributes:
        name: the system's name (``physid fit NAME``).
        target: ``"module:Class"`` of its experiment.
        title: one line for ``--help``.
        control: the experiment drives a controller (``physid control NAME``).
    """

    name: str
    target: str
    title: str
    control: bool = False


ENTRIES: tuple[Entry, ...] = (
    Entry(
        "three-body",
        "physid.models.experiments.three_body:ThreeBody",
        "Three bodies under gravity, unknown masses (ACA paper, Table 5).",
    ),
    Entry(
        "acrobot",
        "physid.models.experiments.acrobot:Acrobot",
        "Fully-actuated acrobot, Symplectic ODE-Net, swing-up (seminorm paper, Table 3).",
        control=True,
    ),
    Entry(
        "hopper",
        "physid.models.experiments.hopper:Hopper",
        "MuJoCo hopper, latent ODE on irregular samples (ACA paper, Table 4).",
    ),
    Entry(
        "mujoco",
        "physid.models.experiments.mujoco:MuJoCo",
        "Any gymnasium MuJoCo task (--env), latent ODE with the hopper's protocol.",
    ),
)

_BY_NAME = {e.name: e for e in ENTRIES}


def names(*, control: bool = False) -> tuple[str, ...]:
    """Every registered system (``control=True``: those with a controller)."""
    return tuple(e.name for e in ENTRIES if e.control or not control)


def title(name: str) -> str:
    """The one-line description of a system (no import)."""
    return _entry(name).title


def _entry(name: str) -> Entry:
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"physid knows no system {name!r} (known: {', '.join(_BY_NAME)})."
        ) from None


@functools.cache
def get(name: str) -> AbstractExperiment:
    """The experiment of system ``name``.

    Raises:
        ConfigError: no such system.
    """
    entry = _entry(name)
    module_name, _, cls_name = entry.target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    experiment = cls()
    if not isinstance(experiment, AbstractExperiment) or experiment.name != name:
        raise TypeError(f"{entry.target} is not the experiment of {name!r}.")
    if entry.control != isinstance(experiment, AbstractControlExperiment):
        raise TypeError(f"{entry.target}: the registry's control flag does not match the class.")
    return experiment


def get_control(name: str) -> AbstractControlExperiment:
    """The experiment of a system with a controller.

    Raises:
        ConfigError: no such system, or it has no controller.
    """
    experiment = get(name)
    if not isinstance(experiment, AbstractControlExperiment):
        known = ", ".join(names(control=True)) or "none"
        raise ConfigError(f"{name} has no controller (systems with one: {known}).")
    return experiment


def for_run(path: str | os.PathLike[str]) -> tuple[AbstractExperiment, RunDir]:
    """The experiment a run directory belongs to, and the opened run.

    Raises:
        DataError: not a run directory; ConfigError: an unknown system.
    """
    run = RunDir.open(path)
    return get(run.system), run


def for_dataset(path: str | os.PathLike[str]) -> AbstractExperiment:
    """The experiment whose simulator wrote a data set (its metadata names the system).

    Raises:
        DataError: not a readable data set, or it names no system.
    """
    from physid.data import load_dataset

    src = Path(path)
    ds = load_dataset(src)
    system = ds.metadata.get("system")
    if not isinstance(system, str):
        raise DataError(f"{src}'s metadata does not name a system.")
    return get(system)
