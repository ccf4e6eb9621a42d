"""The experiment contract: what every physical system implements, and the options all fits share.

A system (three-body, acrobot, hopper, ...) is one final subclass of :class:`AbstractExperiment`
(``control`` too where it applies: :class:`AbstractControlExperiment`). Its options are
dataclasses: a :class:`BaseConfig` subclass for ``fit`` (the options every fit has — model,
method, solver, tolerances, seed, device, dtype, threads, epochs, run directory, resume, time
limit, progress — declared and validated here, once) and a :class:`SimulateOptions` subclass for
``simulate``. Each option is declared with :func:`option` (its help text); the application layer
builds the command line from these declarations, and sweeps validate their grids against them.

This module knows no system: systems import it, never the other way round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from physid.device import check_device_name
from physid.errors import ConfigError, DataError, FitInterrupted, PhysidError
from physid.runs import RunDir, RunSummary, check_run_name

if typing.TYPE_CHECKING:
    from physid.training import TrainResult

__all__ = [
    "option",
    "Options",
    "BaseConfig",
    "SimulateOptions",
    "AbstractExperiment",
    "AbstractControlExperiment",
    "DTYPES",
    "torch_threads",
]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
    cli: bool = True,
    flag: str | None = None,
) -> Any:
    """Declare one option of a config dataclass.

    Args:
        default: the default value (immutable).
        help: one line for ``--help`` and the docs.
        choices: the allowed values (or a function returning them, evaluated when validating).
        cli: offer the option on the command line (``False`` for internal options).
        flag: the command-line spelling when it is not ``--field-name``.
    """
    return dataclasses.field(
        default=default,
        metadata={"help": help, "choices": choices, "cli": cli, "flag": flag},
    )


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"{len(args)} values ({', '.join(_type_name(a) for a in args)})"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` as the declared type ``tp`` (ints become floats, lists tuples), or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except ConfigError:
                continue
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}.")
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, args[0], v) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}.")
        return tuple(_coerce(name, a, v) for a, v in zip(args, value, strict=True))
    else:
        return value
    if not ok:
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}.")
    return value


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` and restore the previous count afterwards
    (``None``: leave torch's setting). Small models on a shared CPU run fastest on one thread."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_T = TypeVar("_T", bound="Options")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """A frozen dataclass of declared options: values are coerced to their declared types and
    checked against their ``choices`` on construction; subclasses add checks in
    :meth:`validate` and may fill derived values in :meth:`resolve`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        for name, value in self.resolve().items():
            object.__setattr__(self, name, _coerce(name, hints[name], value))
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is None:
                continue
            allowed = choices() if callable(choices) else choices
            value = getattr(self, f.name)
            if value is not None and value not in allowed:
                listed = ", ".join(str(c) for c in allowed)
                raise ConfigError(f"{f.name} must be one of {listed}, got {value!r}.")
        self._shared_checks()
        self.check()

    def resolve(self) -> dict[str, Any]:
        """Values derived from others (e.g. a preset's), applied before validation."""
        return {}

    def _shared_checks(self) -> None:
        """Checks a base class makes for all its subclasses (before :meth:`check`)."""

    def check(self) -> None:
        """A subclass's own checks beyond types and choices; raise :class:`ConfigError`."""

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-ready."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls: type[_T], raw: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> _T:
        """Build from a mapping; unknown keys (other than ``ignore``) are a ConfigError."""
        names = set(cls.option_names())
        unknown = sorted(set(raw) - names - set(ignore))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for {cls.__qualname__}; "
                f"known: {', '.join(sorted(names))}."
            )
        return cls(**{k: v for k, v in raw.items() if k in names})


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value}.")


def _adaptive_solvers() -> tuple[str, ...]:
    import physid
    from physid.solvers import get_tableau

    return tuple(s for s in physid.SOLVER_NAMES if get_tableau(s).adaptive)


def _methods() -> tuple[str, ...]:
    import physid

    return tuple(physid.GRADIENT_METHODS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseConfig(Options):
    """The options every fit has; a system's config subclasses it (and may change defaults).

    Subclasses set the class variables ``system`` (the registry name) and ``MODELS``, and may
    extend ``RESUME_IGNORE`` (options that may change when a run resumes) and ``RECORD_KEYS``
    (keys a system stores in ``config.json`` besides its options, such as facts about the data).
    """

    system: ClassVar[str] = ""
    MODELS: ClassVar[tuple[str, ...]] = ()
    RESUME_IGNORE: ClassVar[tuple[str, ...]] = (
        "epochs",
        "device",
        "threads",
        "progress",
        "resume",
        "time_limit",
        "runs_dir",
        "run_name",
        "compile",
        "physid_version",
    )
    RECORD_KEYS: ClassVar[tuple[str, ...]] = ("system", "physid_version")

    model: str = option("", help="The model to fit.")
    method: str = option(
        "aca", help="Gradient method: naive, adjoint, seminorm or aca.", choices=_methods
    )
    solver: str = option("dopri5", help="Adaptive ODE solver.", choices=_adaptive_solvers)
    compile: bool = option(
        False,
        help="Solve through the compiled fast path (docs/fast-path.md): the same steps and "
        "numbers, faster after a one-time compile; falls back with one warning.",
    )
    rtol: float = option(1e-6, help="Relative tolerance of the training solves.")
    atol: float = option(1e-8, help="Absolute tolerance of the training solves.")
    seed: int = option(0, help="Random seed (initialisation, batches).")
    device: str = option("cpu", help="Where tensors live: auto, cpu, cuda or cuda:N.")
    dtype: str = option("float64", help="Floating-point type of the model.", choices=tuple(DTYPES))
    threads: int | None = option(1, help="CPU threads for torch (none: torch's default).")
    epochs: int = option(1, help="Training epochs.")
    runs_dir: str = option("runs", help="Parent folder of run directories.")
    run_name: str | None = option(None, help="Run folder name (default SYSTEM-MODEL-METHOD-SEED).")
    resume: bool = option(
        True,
        help="Continue an interrupted run (--resume) or start afresh (--fresh).",
        flag="--resume/--fresh",
    )
    time_limit: float | None = option(
        None, help="Stop after the epoch that passes this many seconds."
    )
    progress: bool = option(True, help="Show progress bars (on a terminal).")

    def _shared_checks(self) -> None:
        cls = type(self)
        if cls.MODELS and self.model not in cls.MODELS:
            raise ConfigError(
                f"{cls.system} models are {', '.join(cls.MODELS)}; got {self.model!r}."
            )
        _positive("rtol", self.rtol)
        _positive("atol", self.atol)
        _positive("time_limit", self.time_limit)
        check_device_name(self.device)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}.")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}.")
        if self.run_name is not None:
            check_run_name(self.run_name)

    @property
    def name(self) -> str:
        """The run's label, e.g. ``ode-aca`` (the default run name adds system and seed)."""
        return f"{self.model}-{self.method}"

    @property
    def run_dir(self) -> RunDir:
        """``runs_dir / (run_name or SYSTEM-NAME-SEED)``."""
        name = self.run_name or f"{type(self).system}-{self.name}-{self.seed}"
        return RunDir(Path(self.runs_dir) / name)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def torch_device(self) -> torch.device:
        """The resolved device (``auto``: CUDA when available)."""
        from physid.device import resolve_device

        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-ready, with ``system`` first (``config.json``)."""
        return {"system": type(self).system, **super().to_dict()}

    @classmethod
    def from_run(cls: type[_C], run: RunDir) -> _C:
        """The config stored in a run's ``config.json``.

        Raises:
            DataError: the run belongs to another system, or its config is not valid (an
                unknown option, a value of the wrong type...).
        """
        raw = run.read_config()
        if raw.get("system") != cls.system:
            raise DataError(f"{run} is a {raw.get('system')} run, not a {cls.system} run.")
        try:
            return cls.from_dict(raw, ignore=cls.RECORD_KEYS)
        except ConfigError as exc:
            raise DataError(f"{run.config_path} is not a valid {cls.system} config: {exc}") from exc


_C = TypeVar("_C", bound=BaseConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateOptions(Options):
    """Options of ``simulate``; a system's subclass adds its own (sizes, seeds...)."""

    out: str | None = option(None, help="The .npz to write (default: under data/).")


class AbstractExperiment(ABC, Generic[_C]):
    """One physical system end to end: simulate data, fit a model, evaluate, render.

    Subclasses are final; they set :attr:`name`, :attr:`Config`, :attr:`Simulate` and implement
    the ``_``-methods. The public methods add what every system shares: the run directory, the
    thread count, the interrupt record, the summary file, default output paths.
    """

    name: ClassVar[str]
    """The registry name, e.g. ``"three-body"`` (its one-line title lives in the registry)."""
    Config: ClassVar[type[BaseConfig]]
    Simulate: ClassVar[type[SimulateOptions]]

    @property
    def models(self) -> tuple[str, ...]:
        return self.Config.MODELS

    # ---- simulate ---------------------------------------------------------------------------

    def simulate(self, options: SimulateOptions | None = None, **overrides: Any) -> Path:
        """Write a data set (``.npz``); returns its path."""
        opts = options if options is not None else self.Simulate(**overrides)
        if not isinstance(opts, self.Simulate):
            raise ConfigError(f"{self.name} simulate takes {self.Simulate.__name__}.")
        return _writing(lambda: self._simulate(opts))

    @abstractmethod
    def _simulate(self, options: Any) -> Path: ...

    # ---- fit --------------------------------------------------------------------------------

    def fit(self, config: _C | None = None, **overrides: Any) -> RunDir:
        """Fit a model (then evaluate it); returns the run directory.

        Raises:
            FitInterrupted: the fit was stopped (Ctrl-C, SIGTERM) after its last checkpoint;
                running it again resumes it. The run's ``summary.json`` says ``interrupted``.
        """
        cfg = config if config is not None else self.Config(**overrides)
        if not isinstance(cfg, self.Config):
            raise ConfigError(f"{self.name} fit takes {self.Config.__name__}.")
        run = cfg.run_dir
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"{run} exists and is not a folder; choose another run name.")
        with torch_threads(cfg.threads):
            try:
                result = _writing(lambda: self._fit(cfg, run))
            except KeyboardInterrupt:
                self._record_interrupt(cfg, run)
                raise
            if result.interrupted:
                self._record_interrupt(cfg, run)
            self.evaluate(run)
        return run

    def _record_interrupt(self, cfg: BaseConfig, run: RunDir) -> None:
        records = run.read_metrics()
        summary = RunSummary(
            system=self.name,
            model=cfg.model,
            method=cfg.method,
            seed=cfg.seed,
            interrupted=True,
            **self.training_totals(run),
        )
        _writing(lambda: run.write_summary(summary))
        kept = (
            f"{run.checkpoint_path} holds epoch {len(records) - 1}"
            if records
            else "nothing to keep yet"
        )
        raise FitInterrupted(
            f"the fit was interrupted; {kept}: run the same command again to resume.",
            run=run,
        )

    @abstractmethod
    def _fit(self, config: Any, run: RunDir) -> TrainResult:
        """Train into ``run`` with :func:`physid.training.train` and return its result; no
        evaluation (the caller evaluates a finished fit and records an interrupted one)."""

    @staticmethod
    def _stopped(run: RunDir) -> str | None:
        if not run.has_checkpoint():
            return None
        return str(run.load_checkpoint().get("stopped") or "")

    # ---- evaluate ---------------------------------------------------------------------------

    def load_config(self, run: RunDir | str | Path) -> Any:
        """The config of one of this system's runs."""
        return self.Config.from_run(run if isinstance(run, RunDir) else RunDir(run))

    def evaluate(self, run: RunDir | str | Path) -> RunSummary:
        """Test metrics and plots of a fitted run; writes ``summary.json`` and ``plots/``."""
        run = RunDir.open(run)
        cfg = self.load_config(run)
        if not run.has_checkpoint():
            raise DataError(
                f"{run} has no model yet ({run.checkpoint_path} is missing): fit it first."
            )
        summary = self._evaluate(cfg, run)
        summary.interrupted = self._stopped(run) == "interrupted"
        _writing(lambda: run.write_summary(summary))
        return summary

    @abstractmethod
    def _evaluate(self, config: Any, run: RunDir) -> RunSummary: ...

    def training_totals(self, run: RunDir) -> dict[str, Any]:
        """``seconds``, ``nfe_forward``, ``nfe_backward`` summed over ``metrics.jsonl`` and
        ``epochs_completed`` (and ``compile_seconds``) — the fixed training keys of a
        :class:`RunSummary`."""
        records = run.read_metrics()
        totals = run.metric_totals("seconds", "compile_seconds", "nfe_forward", "nfe_backward")
        return {
            "seconds": totals["seconds"],
            "compile_seconds": totals["compile_seconds"],
            "nfe_forward": _int_if_whole(totals["nfe_forward"]),
            "nfe_backward": _int_if_whole(totals["nfe_backward"]),
            "epochs_completed": len(records),
        }

    # ---- render -----------------------------------------------------------------------------

    def render(
        self, run: RunDir | str | Path, out: str | Path | None = None, **options: Any
    ) -> Path:
        """A video of a run's predictions beside the truth (default ``RUN/video.mp4``).

        ``options`` are the system's rendering options (frames, fps, which trajectory...)."""
        run = RunDir.open(run)
        cfg = self.load_config(run)
        path = _video_path(out, run.video_path)
        return _writing(lambda: self._render(cfg, run, path, **options))

    @abstractmethod
    def _render(self, config: Any, run: RunDir, out: Path, **options: Any) -> Path: ...

    def render_dataset(
        self, dataset: str | Path, out: str | Path | None = None, *, trajectory: int = 0
    ) -> Path:
        """A video of one trajectory of a data set (default: beside it, same stem, ``.mp4``)."""
        src = Path(dataset)
        if src.is_dir():
            raise DataError(f"{src} is a folder, not a data set (.npz).")
        path = _video_path(out, src.with_suffix(".mp4"))
        return _writing(lambda: self._render_dataset(src, path, trajectory))

    @abstractmethod
    def _render_dataset(self, dataset: Path, out: Path, trajectory: int) -> Path: ...


class AbstractControlExperiment(AbstractExperiment[_C]):
    """A system whose fitted models drive a controller on the true simulator."""

    Control: ClassVar[type[Options]]

    def control(self, options: Options | None = None, **overrides: Any) -> dict[str, Any]:
        """Run the controller; returns its record (``control.json``)."""
        opts = options if options is not None else self.Control(**overrides)
        return _writing(lambda: self._control(opts))

    @abstractmethod
    def _control(self, options: Any) -> dict[str, Any]: ...


_R = TypeVar("_R")


def _writing(action: Callable[[], _R]) -> _R:
    """Run ``action``; an ``OSError`` (unwritable folder, full disk, a file where a folder
    should be) becomes one :class:`ConfigError` sentence naming the path and the cause."""
    try:
        return action()
    except PhysidError:
        raise
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "a file"
        cause = exc.strerror or str(exc)
        raise ConfigError(f"cannot access {where}: {cause}.") from exc


def _video_path(out: str | Path | None, default: Path) -> Path:
    path = Path(out) if out is not None else default
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"videos are written as MP4: give a path ending in .mp4, not {path}.")
    return path


def _int_if_whole(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x
