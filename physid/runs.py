"""Run directories: what ``physid fit`` writes, in one place.

A run directory holds

- ``config.json``: every option of the fit, resolved, plus ``system`` and ``physid_version``;
- ``metrics.jsonl``: one JSON record per finished epoch;
- ``model.pt``: the ``best`` and ``last`` checkpoints (tensors, numbers and strings only, so
  that it loads with ``torch.load(weights_only=True)``: a checkpoint cannot run code);
- ``summary.json``: the final numbers, a :class:`RunSummary`;
- ``plots/``, and whatever else a system writes (videos, control results).

:class:`RunDir` owns reading and writing those files; every other module (the fit loop, the
experiments, the CLI, sweeps and reports) goes through it. Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from physid._io import (
    append_jsonl,
    load_json,
    load_torch,
    read_jsonl,
    save_json,
    save_torch,
    write_text_atomic,
)
from physid.errors import ConfigError, DataError

__all__ = ["RunDir", "RunSummary", "check_run_name", "SUMMARY_KEYS"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "model.pt"
SUMMARY = "summary.json"
PLOTS = "plots"
VIDEO = "video.mp4"


def check_run_name(name: str) -> str:
    """``name`` if it is one plain path component (a run directory's name), else ConfigError.

    Rejects empty names, ``.`` and ``..``, separators, absolute paths, hidden names (a leading
    ``.``: physid's temporary files) and control characters, so that a run stays inside its
    ``runs_dir``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a run name must be a non-empty string.")
    bad = (
        name in (".", "..")
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or os.sep in name
        or (os.altsep is not None and os.altsep in name)
        or any(ord(c) < 32 for c in name)
        or Path(name).is_absolute()
        or len(name) > 255
    )
    if bad:
        raise ConfigError(
            f"run name {name!r} must be a single plain folder name (no '/', '..' or leading "
            "'.'); the run directory is RUNS_DIR/RUN_NAME."
        )
    return name


SUMMARY_KEYS = (
    "system",
    "model",
    "method",
    "seed",
    "test_mse",
    "train_mse",
    "seconds",
    "compile_seconds",
    "nfe_forward",
    "nfe_backward",
    "epochs_completed",
    "interrupted",
)
"""The keys every ``summary.json`` has, whatever the system (then the system's extras)."""


@dataclasses.dataclass
class RunSummary:
    """The final numbers of a run, as stored in ``summary.json``.

    The fixed keys mean the same for every system; ``extras`` holds what one system adds
    (learned masses, baselines, control results...). ``summary.json`` is flat: the fixed keys,
    then the extras.

    Attributes:
        system, model, method, seed: what was fitted (``method`` is ``None`` for models that are
            not ODEs, such as the LSTM baselines).
        test_mse: the system's headline test error (its definition is in the system's docs).
        train_mse: the training error of the model that was kept.
        seconds: wall-clock seconds of the training epochs, summed (resumed epochs included).
        compile_seconds: of those, seconds spent compiling the fast path (``--compile``; 0
            when it is off or every kernel came from the on-disk cache's earlier compiles).
        nfe_forward, nfe_backward: function evaluations of the training solves, summed over
            every epoch and batch.
        epochs_completed: epochs finished, before a resume included.
        interrupted: the fit was stopped (Ctrl-C, SIGTERM) before its last epoch; a rerun
            resumes it.
        extras: system-specific numbers (JSON values).
    """

    system: str
    model: str
    method: str | None
    seed: int
    test_mse: float | None = None
    train_mse: float | None = None
    seconds: float = 0.0
    compile_seconds: float = 0.0
    nfe_forward: float = 0
    nfe_backward: float = 0
    epochs_completed: int = 0
    interrupted: bool = False
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extras) & set(SUMMARY_KEYS))
        if clash:
            raise ConfigError(f"summary extras may not redefine fixed keys: {', '.join(clash)}.")

    def to_dict(self) -> dict[str, Any]:
        """The flat ``summary.json`` record."""
        fixed = {k: getattr(self, k) for k in SUMMARY_KEYS}
        return {**fixed, **self.extras}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunSummary:
        """A summary read back from ``summary.json`` (extras are the keys beyond the fixed ones).

        Raises:
            DataError: a fixed key is missing.
        """
        missing = [k for k in ("system", "model", "seed") if k not in raw]
        if missing:
            raise DataError(f"a run summary needs {', '.join(missing)}.")
        fixed = {k: raw[k] for k in SUMMARY_KEYS if k in raw}
        extras = {k: v for k, v in raw.items() if k not in SUMMARY_KEYS}
        fixed.setdefault("method", None)
        return cls(**fixed, extras=extras)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        """A fixed key or an extra by name."""
        return self.to_dict().get(key, default)


class RunDir:
    """One run directory and the files in it.

    Args:
        path: the folder (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __truediv__(self, name: str) -> Path:
        """A path inside the run: ``run / "plots"``."""
        return self.path / name

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.path.name

    # ---- the files --------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def plots(self) -> Path:
        """The folder of the run's plots (not created)."""
        return self.path / PLOTS

    @property
    def video_path(self) -> Path:
        """Where ``physid render RUN`` writes by default."""
        return self.path / VIDEO

    def create(self) -> RunDir:
        """Create the folder (and its parents).

        Raises:
            ConfigError: the path exists and is not a folder.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} exists and is not a folder; choose another run name.")
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ---- config.json --------------------------------------------------------------------------

    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a run directory: a folder whose ``config.json`` names a system."""
        p = Path(path)
        if not (p / CONFIG).is_file():
            return False
        try:
            raw = load_json(p / CONFIG)
        except DataError:
            return False
        return isinstance(raw, dict) and isinstance(raw.get("system"), str)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory.

        Raises:
            DataError: ``path`` does not exist, is not a folder, or has no readable
                ``config.json`` that names a system.
        """
        run = cls(path)
        run.read_config()
        return run

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict (it names the run's ``system``).

        Raises:
            DataError: the folder or its ``config.json`` is missing or malformed.
        """
        if not self.path.exists():
            raise DataError(f"run directory {self.path} does not exist.")
        if not self.path.is_dir():
            raise DataError(f"{self.path} is not a run directory.")
        if not self.config_path.is_file():
            raise DataError(f"{self.path} is not a run directory: it has no {CONFIG}.")
        raw = load_json(self.config_path)
        if not isinstance(raw, dict) or not isinstance(raw.get("system"), str):
            raise DataError(f"{self.config_path} does not name a system.")
        return raw

    @property
    def system(self) -> str:
        """The system named by ``config.json``."""
        return str(self.read_config()["system"])

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        save_json(self.config_path, dict(config))

    # ---- metrics.jsonl ----------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records (empty if there are none yet)."""
        return read_jsonl(self.metrics_path) if self.metrics_path.exists() else []

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record."""
        append_jsonl(self.metrics_path, dict(record))

    def write_metrics(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``records``, atomically."""
        import json

        from physid._io import to_jsonable

        text = "".join(json.dumps(to_jsonable(dict(r)), allow_nan=False) + "\n" for r in records)
        write_text_atomic(self.metrics_path, text)

    def metric_totals(self, *keys: str) -> dict[str, float]:
        """Each key summed over the epochs (missing values count as 0)."""
        records = self.read_metrics()
        return {k: float(sum(_num(r.get(k)) for r in records)) for k in keys}

    # ---- model.pt ---------------------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Write ``model.pt`` atomically. It must hold only tensors, numbers, strings, and
        lists/tuples/dicts of them (it is read back with ``weights_only=True``)."""
        save_torch(self.checkpoint_path, dict(checkpoint))

    def load_checkpoint(self) -> dict[str, Any]:
        """Read ``model.pt`` with ``weights_only=True``: a crafted file cannot run code.

        Raises:
            DataError: the file is missing, truncated, not a checkpoint, or holds objects other
                than tensors, numbers and strings.
        """
        try:
            ckpt = load_torch(self.checkpoint_path, weights_only=True)
        except DataError as exc:
            raise DataError(
                f"{exc} It may be truncated, or hold objects other than tensors, numbers and "
                "strings (which physid refuses to load); fit again with --fresh."
            ) from exc
        if not isinstance(ckpt, dict):
            raise DataError(
                f"{self.checkpoint_path} is not a physid checkpoint; fit again with --fresh."
            )
        return ckpt

    # ---- summary.json -----------------------------------------------------------------------

    def has_summary(self) -> bool:
        return self.summary_path.is_file()

    def read_summary(self) -> RunSummary:
        """``summary.json`` as a :class:`RunSummary`.

        Raises:
            DataError: it is missing or malformed.
        """
        raw = load_json(self.summary_path)
        if not isinstance(raw, dict):
            raise DataError(f"{self.summary_path} is not a JSON object.")
        return RunSummary.from_dict(raw)

    def write_summary(self, summary: RunSummary) -> None:
        """Write ``summary.json`` atomically."""
        save_json(self.summary_path, summary.to_dict())

    def is_finished(self) -> bool:
        """A summary exists, can be read and does not say the fit was interrupted."""
        try:
            self.require_finished()
        except DataError:
            return False
        return True

    def require_finished(self) -> RunDir:
        """This run, for reading its results (tables made from finished runs).

        Raises:
            DataError: it has no summary, or its fit was interrupted.
        """
        if not self.has_summary():
            raise DataError(f"{self.path} has no summary.json: fit it first.")
        if self.read_summary().interrupted:
            raise DataError(f"{self.path} is unfinished: run its fit again to resume it.")
        return self

    # ---- finding runs -----------------------------------------------------------------------

    @classmethod
    def find(cls, root: str | os.PathLike[str], *, system: str | None = None) -> list[RunDir]:
        """Every run directory under ``root`` (``root`` itself included), sorted by path.

        Hidden folders and the insides of a run (its ``plots/``...) are not searched.
        """
        return sorted(cls._walk(Path(root), system), key=lambda r: str(r.path))

    @classmethod
    def _walk(cls, folder: Path, system: str | None) -> Iterator[RunDir]:
        if not folder.is_dir():
            return
        if cls.is_run(folder):
            if system is None or cls(folder).system == system:
                yield cls(folder)
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if not child.name.startswith("."):
                yield from cls._walk(child, system)

    @classmethod
    def newest(cls, root: str | os.PathLike[str], *, system: str) -> RunDir | None:
        """The finished run of ``system`` under ``root`` whose summary was written last."""
        done = [r for r in cls.find(root, system=system) if r.is_finished()]
        if not done:
            return None
        return max(done, key=lambda r: (r.summary_path.stat().st_mtime_ns, str(r.path)))


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0
