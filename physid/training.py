"""The generic fit loop: epochs, checkpoints, best-model selection, NaN guard, resume.

:func:`train` knows no physical system. The caller supplies ``epoch_fn(epoch)``, which runs one
epoch (its optimisation steps, and any validation) and returns a mapping of numbers; ``train``
does everything around it:

- ``config.json`` (the resolved options) is written atomically at the start;
- ``metrics.jsonl`` gets one line per finished epoch: ``epoch``, ``seconds``,
  ``compile_seconds`` (of those, compiling the fast path), ``lr`` (of the first parameter group
  when the epoch started) and whatever ``epoch_fn`` returned;
- ``model.pt`` holds ``"best"`` (the model with the best ``select_metric`` so far) and
  ``"last"`` (model, optimiser and scheduler states, RNG states, the epoch), rewritten
  atomically after every epoch;
- a non-finite loss (or parameters, or a :class:`SolverError` with status ``NON_FINITE``)
  restores the last good state, cuts the learning rate and retries the epoch; after
  ``nan_retries`` consecutive failures it raises :class:`TrainingError`;
- Ctrl-C (:class:`KeyboardInterrupt`) leaves ``model.pt`` at the last finished epoch and returns
  with ``interrupted=True``; calling :func:`train` again on the same run directory resumes from
  there and, given the same ``epoch_fn``, ends with the same parameters as a run that was never
  interrupted (global torch, numpy and ``random`` RNG states, and any ``generators`` passed in,
  are checkpointed).

Epochs are numbered from 0.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from physid._io import (
    load_json,
    package_version,
    to_jsonable,
)
from physid.errors import ConfigError, DataError, SolverError, SolverStatus, TrainingError
from physid.progress import make_progress
from physid.runs import RunDir

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochFn",
    "TrainResult",
    "train",
    "load_checkpoint",
    "load_model_state",
    "train_least_squares",
]

CHECKPOINT_FORMAT = "physid.training/1"
EpochFn = Callable[[int], Mapping[str, Any]]
_RESUME_IGNORE_DEFAULT = (
    "epochs",
    "device",
    "progress",
    "resume",
    "time_limit",
    "physid_version",
)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run_dir: the run directory.
        epochs_completed: epochs finished in total, before a resume included.
        best_epoch: the epoch of the best ``select_metric`` (``None`` if no epoch finished).
        best_metric: its value (``nan`` if no epoch finished).
        interrupted: the loop stopped on Ctrl-C.
        stopped_early: the loop stopped because ``time_limit`` was reached.
        resumed_from: the first epoch this call ran (0 for a fresh run).
        nan_events: non-finite epochs that were retried during this call.
        seconds: wall-clock time of this call.
        history: one record per finished epoch (as in ``metrics.jsonl``), resumed ones included.
    """

    run_dir: Path
    epochs_completed: int
    best_epoch: int | None
    best_metric: float
    interrupted: bool
    stopped_early: bool
    resumed_from: int
    nan_events: int
    seconds: float
    history: list[dict[str, Any]]

    @property
    def last(self) -> dict[str, Any]:
        """The record of the last finished epoch (empty if none)."""
        return self.history[-1] if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the history)."""
        return {
            "run_dir": str(self.run_dir),
            "epochs_completed": self.epochs_completed,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "interrupted": self.interrupted,
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
            "nan_events": self.nan_events,
            "seconds": self.seconds,
        }


def _rng_state(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """Every RNG state as tensors, numbers and strings (a checkpoint loads weights-only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global RNG)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), list(internal), gauss_next],
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], generators: Sequence[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ConfigError(
            f"the checkpoint holds {len(saved)} generator state(s) but {len(generators)} "
            "generator(s) were passed to train; pass the same generators to resume."
        )
    for g, s in zip(generators, saved, strict=True):
        g.set_state(s.cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _number(value: Any) -> Any:
    """Metric values: tensors and numpy scalars become Python numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _check_same_options(
    run: RunDir,
    cfg: Mapping[str, Any],
    resume_ignore: Collection[str],
    resume_added: Mapping[str, Any] | None,
) -> None:
    """Refuse to resume ``run`` with options other than those in its ``config.json``.

    Raises:
        ConfigError: an option differs (named), other than ``resume_ignore`` ones.
    """
    if not run.config_path.exists():
        return
    old_cfg = load_json(run.config_path)
    if isinstance(old_cfg, dict):
        changed = _compare_configs(old_cfg, cfg, resume_ignore, resume_added)
        if changed:
            raise ConfigError(
                f"{run} was made with different options ({', '.join(changed)}); "
                "use a new run directory, or start afresh with --fresh."
            )


def _compare_configs(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    ignore: Collection[str],
    added: Mapping[str, Any] | None = None,
) -> list[str]:
    """Keys whose values differ; an option in ``added`` that ``old`` predates counts as its
    value there (runs made before the option existed behaved as that value)."""
    old = {**(added or {}), **old}
    keys = (set(old) | set(new)) - set(ignore)
    return sorted(k for k in keys if old.get(k) != new.get(k))


def load_checkpoint(run_dir: str | Path | RunDir) -> dict[str, Any]:
    """Read a run's ``model.pt`` as written by :func:`train` (weights only: it cannot run code).

    Raises:
        DataError: the file is missing, unreadable, or not a physid training checkpoint.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    ckpt = run.load_checkpoint()
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"{run.checkpoint_path} is not a physid training checkpoint; start afresh with --fresh."
        )
    return ckpt


def load_model_state(
    model: nn.Module, run_dir: str | Path | RunDir, which: Literal["best", "last"] = "best"
) -> int:
    """Load the ``best`` (default) or ``last`` model of a run into ``model``.

    Returns:
        the epoch that state comes from.

    Raises:
        DataError: the run has no such checkpoint, or it does not fit ``model``.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    ckpt = load_checkpoint(run)
    entry = ckpt.get(which)
    if not entry:
        raise DataError(f"{run.checkpoint_path} holds no '{which}' model yet.")
    try:
        model.load_state_dict(entry["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise DataError(
            f"the '{which}' model in {run.checkpoint_path} does not fit this model: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return int(entry["epoch"])


def train(
    model: nn.Module,
    epoch_fn: EpochFn,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    run_dir: str | Path | RunDir,
    config: Mapping[str, Any] | None = None,
    scheduler: Any = None,
    scheduler_interval: Literal["epoch", "manual"] = "epoch",
    select_metric: str = "loss",
    select_mode: Literal["min", "max"] = "min",
    resume: bool = True,
    resume_ignore: Collection[str] = _RESUME_IGNORE_DEFAULT,
    resume_added: Mapping[str, Any] | None = None,
    progress: bool = True,
    description: str = "fit",
    nan_retries: int = 3,
    nan_lr_factor: float = 0.5,
    time_limit: float | None = None,
    generators: Sequence[torch.Generator] = (),
    plot: bool = True,
) -> TrainResult:
    """Fit ``model`` for ``epochs`` epochs of ``epoch_fn``, with checkpoints and resume.

    Args:
        model: the module being fitted; its ``state_dict`` is checkpointed.
        epoch_fn: ``epoch_fn(epoch) -> {"loss": ..., ...}`` runs one epoch (zero_grad, backward,
            ``optimizer.step()`` as often as it likes) and returns numbers (floats, ints or
            one-element tensors). It must return ``select_metric``.
        optimizer: the optimiser ``epoch_fn`` steps; checkpointed.
        epochs: total number of epochs (a resumed run continues up to this number).
        run_dir: the run directory (created).
        config: every resolved option of the run, written to ``config.json``; the CLI reads
            its ``"system"`` key. On resume, keys other than ``resume_ignore`` must be equal.
        scheduler: an LR scheduler (checkpointed). With ``scheduler_interval="epoch"``,
            ``train`` calls ``scheduler.step()`` after every finished epoch
            (``step(metric)`` for ``ReduceLROnPlateau``); with ``"manual"``, ``epoch_fn``
            steps it.
        scheduler_interval: see ``scheduler``.
        select_metric: the metric that picks the ``best`` model.
        select_mode: ``"min"`` or ``"max"``.
        resume: continue from the run's ``model.pt`` when it exists; ``False`` starts afresh
            (and overwrites the run's files).
        resume_ignore: config keys allowed to change on resume.
        resume_added: options added to the config after some runs were made, with the value
            those older runs behaved as (a run without the key resumes if the value matches).
        progress: draw a progress bar (only on a terminal).
        description: the progress bar's label.
        nan_retries: consecutive non-finite epochs retried before giving up.
        nan_lr_factor: the learning rate is multiplied by this at each retry.
        time_limit: stop after the epoch during which this many seconds have passed.
        generators: extra ``torch.Generator`` objects ``epoch_fn`` draws from; their states
            are checkpointed so that a resumed run is identical.
        plot: write ``plots/loss.png`` at the end.

    Returns:
        a :class:`TrainResult`. The checkpoint records how the loop ended (``"stopped"``:
        ``"done"``, ``"time_limit"`` or ``"interrupted"``).

    Raises:
        TrainingError: the loss stayed non-finite for ``nan_retries + 1`` tries, or
            ``epoch_fn`` did not return ``select_metric``.
        ConfigError: an invalid option, or resuming a run made with different options.
        DataError: an existing ``model.pt`` is unreadable.
    """
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}.")
    if select_mode not in ("min", "max"):
        raise ConfigError(f"select_mode must be 'min' or 'max', got {select_mode!r}.")
    if scheduler_interval not in ("epoch", "manual"):
        raise ConfigError(
            f"scheduler_interval must be 'epoch' or 'manual', got {scheduler_interval!r}."
        )
    if nan_retries < 0 or not (0.0 < nan_lr_factor <= 1.0):
        raise ConfigError("nan_retries must be >= 0 and nan_lr_factor in (0, 1].")
    loop = _Loop(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generators=generators,
        run=(run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).create(),
        select_metric=select_metric,
        sign=1.0 if select_mode == "min" else -1.0,
        select_mode=select_mode,
    )
    cfg: dict[str, Any] = dict(to_jsonable(dict(config or {})))
    cfg.setdefault("physid_version", package_version())
    if resume and loop.run.has_checkpoint():
        loop.resume(cfg, resume_ignore, resume_added)
    else:
        loop.start_afresh()
    loop.run.write_config(cfg)
    loop.run_epochs(
        epoch_fn,
        epochs,
        step_scheduler=scheduler is not None and scheduler_interval == "epoch",
        progress=progress,
        description=description,
        nan_retries=nan_retries,
        nan_lr_factor=nan_lr_factor,
        time_limit=time_limit,
    )
    if plot and loop.history:
        from physid.evaluate import plot_loss_curve

        plot_loss_curve(loop.run.metrics_path, loop.run.plots / "loss.png")
    return loop.result()


class _Loop:
    """The state of one :func:`train` call: the best model so far, the last good snapshot, the
    history; and the three things it does — resume, run epochs, write checkpoints."""

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generators: Sequence[torch.Generator],
        run: RunDir,
        select_metric: str,
        select_mode: str,
        sign: float,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.generators = generators
        self.run = run
        self.select_metric, self.select_mode, self.sign = select_metric, select_mode, sign
        self.t_start = time.perf_counter()
        self.best_metric = math.nan
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.good: dict[str, Any] = {}
        self.saved_epoch: int | None = None
        self.stopped = "done"
        self.nan_events = 0

    # ---- start ------------------------------------------------------------------------------

    def start_afresh(self) -> None:
        self.run.write_metrics([])
        self.run.checkpoint_path.unlink(missing_ok=True)
        self.good = self.snapshot(-1)

    def resume(
        self,
        cfg: Mapping[str, Any],
        resume_ignore: Collection[str],
        resume_added: Mapping[str, Any] | None,
    ) -> None:
        run = self.run
        ckpt = load_checkpoint(run)
        if (
            ckpt.get("select_metric") != self.select_metric
            or ckpt.get("select_mode") != self.select_mode
        ):
            raise ConfigError(
                f"{run} selects its best model by {ckpt.get('select_mode')} "
                f"{ckpt.get('select_metric')!r}, not {self.select_mode} {self.select_metric!r}; "
                "use a new run directory or start afresh."
            )
        _check_same_options(run, cfg, resume_ignore, resume_added)
        last = ckpt["last"]
        try:
            self.restore(last)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"the checkpoint in {run.checkpoint_path} does not fit this model or optimiser "
                f"({str(exc).splitlines()[0]}); start afresh with --fresh."
            ) from exc
        self.start_epoch = int(last["epoch"]) + 1
        if ckpt.get("best"):
            self.best_epoch = int(ckpt["best"]["epoch"])
            self.best_metric = float(ckpt["best"]["metric"])
            self.best_state = ckpt["best"]["model"]
        self.history = [r for r in run.read_metrics() if int(r["epoch"]) < self.start_epoch]
        run.write_metrics(self.history)
        self.good = last
        self.saved_epoch = int(last["epoch"])

    # ---- snapshots and checkpoints ------------------------------------------------------------

    def snapshot(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": _cpu_state_dict(self.model),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": None
            if self.scheduler is None
            else copy.deepcopy(self.scheduler.state_dict()),
            "rng": _rng_state(self.generators),
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        if self.scheduler is not None and snap.get("scheduler") is not None:
            self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
        _set_rng_state(snap["rng"], self.generators)

    def write_checkpoint(self, stopped: str | None) -> None:
        best = (
            None
            if self.best_state is None
            else {"epoch": self.best_epoch, "metric": self.best_metric, "model": self.best_state}
        )
        self.run.save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "select_metric": self.select_metric,
                "select_mode": self.select_mode,
                "stopped": stopped,
                "best": best,
                "last": self.good,
            }
        )
        self.saved_epoch = int(self.good["epoch"])

    # ---- epochs -----------------------------------------------------------------------------

    def run_epochs(
        self,
        epoch_fn: EpochFn,
        epochs: int,
        *,
        step_scheduler: bool,
        progress: bool,
        description: str,
        nan_retries: int,
        nan_lr_factor: float,
        time_limit: float | None,
    ) -> None:
        epoch = self.start_epoch
        with make_progress(progress) as bar:
            console = bar.console
            task = bar.add_task(description, total=max(epochs, 1), completed=self.start_epoch)
            consecutive_nan = 0
            try:
                while epoch < epochs:
                    lr_start = _lr(self.optimizer)
                    compiled0 = _compile_seconds()
                    t0 = time.perf_counter()
                    metrics, failure = self._one_epoch(epoch_fn, epoch)
                    seconds = time.perf_counter() - t0
                    compile_seconds = _compile_seconds() - compiled0
                    if failure is not None:
                        self.nan_events += 1
                        consecutive_nan += 1
                        self.restore(self.good)
                        if consecutive_nan > nan_retries:
                            raise TrainingError(
                                f"training failed at epoch {epoch}: {failure} after "
                                f"{nan_retries} retr{'y' if nan_retries == 1 else 'ies'} with "
                                f"the learning rate cut to {_lr(self.optimizer):.3g}; lower the "
                                "learning rate or tighten the solver tolerances."
                            )
                        _scale_lr(self.optimizer, self.scheduler, nan_lr_factor)
                        console.print(
                            f"[yellow]epoch {epoch}: {failure}; restored epoch {epoch - 1} and "
                            f"cut the learning rate to {_lr(self.optimizer):.3g} "
                            f"(retry {consecutive_nan}/{nan_retries}).[/yellow]",
                            highlight=False,
                        )
                        continue
                    consecutive_nan = 0
                    value = float(metrics[self.select_metric])
                    self._keep_if_best(epoch, value)
                    if step_scheduler:
                        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                            self.scheduler.step(value)
                        else:
                            self.scheduler.step()
                    record: dict[str, Any] = {
                        "epoch": epoch,
                        "seconds": seconds,
                        "compile_seconds": compile_seconds,
                        "lr": lr_start,
                    }
                    record.update({k: v for k, v in metrics.items() if k != "epoch"})
                    self.history.append(record)
                    self.run.append_metrics(record)
                    self.good = self.snapshot(epoch)
                    epoch += 1
                    limited = (
                        time_limit is not None
                        and time.perf_counter() - self.t_start > time_limit
                        and epoch < epochs
                    )
                    self.stopped = "time_limit" if limited else "done"
                    self.write_checkpoint(None if epoch < epochs and not limited else self.stopped)
                    bar.update(
                        task,
                        completed=epoch,
                        description=f"{description} {self.select_metric} {value:.4g} "
                        f"(best {self.best_metric:.4g})",
                    )
                    if limited:
                        break
                if self.start_epoch >= epochs and self.saved_epoch is not None:
                    # Resumed with nothing left to train (e.g. an interrupted run asked for
                    # fewer epochs than it had done): the run is finished, not interrupted.
                    self.write_checkpoint("done")
            except KeyboardInterrupt:
                # The caller says how to resume (physid.experiment raises FitInterrupted).
                self.stopped = "interrupted"
                self.restore(self.good)
                if self.good["epoch"] >= 0:
                    self.write_checkpoint("interrupted")

    def _one_epoch(self, epoch_fn: EpochFn, epoch: int) -> tuple[dict[str, Any], str | None]:
        """Run one epoch: its metrics, and why it failed (``None`` if it did not)."""
        try:
            raw = epoch_fn(epoch)
        except SolverError as exc:
            if exc.status not in (SolverStatus.NON_FINITE, SolverStatus.NON_FINITE_STEP_SIZE):
                raise
            return {}, f"the solver met a non-finite state ({exc})"
        metrics = {str(k): _number(v) for k, v in dict(raw).items()}
        if self.select_metric not in metrics:
            raise TrainingError(
                f"epoch_fn returned no {self.select_metric!r} "
                f"(it returned {', '.join(metrics) or 'nothing'})."
            )
        guarded = {self.select_metric, "loss"} & set(metrics)
        bad = [k for k in sorted(guarded) if not _is_finite_number(metrics[k])]
        if bad:
            return metrics, f"{', '.join(bad)} is not finite"
        if not _params_finite(self.model):
            return metrics, "the parameters became non-finite"
        return metrics, None

    def _keep_if_best(self, epoch: int, value: float) -> None:
        if self.best_epoch is None or self.sign * value < self.sign * self.best_metric:
            self.best_metric, self.best_epoch = value, epoch
            self.best_state = _cpu_state_dict(self.model)

    def result(self) -> TrainResult:
        return TrainResult(
            run_dir=self.run.path,
            epochs_completed=int(self.good["epoch"]) + 1,
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            interrupted=self.stopped == "interrupted",
            stopped_early=self.stopped == "time_limit",
            resumed_from=self.start_epoch,
            nan_events=self.nan_events,
            seconds=time.perf_counter() - self.t_start,
            history=self.history,
        )


def _compile_seconds() -> float:
    """Seconds the compiled fast path has spent compiling in this process so far."""
    from physid.compiled import compile_stats

    return float(compile_stats().seconds)


def _scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * factor
    base = getattr(scheduler, "base_lrs", None)
    if isinstance(base, list):
        scheduler.base_lrs = [b * factor for b in base]
    last = getattr(scheduler, "_last_lr", None)
    if isinstance(last, list):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


# ---- least squares ------------------------------------------------------------------------------


def train_least_squares(
    model: nn.Module,
    fun: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    set_params: Callable[[torch.Tensor], None],
    run_dir: str | Path | RunDir,
    config: Mapping[str, Any] | None = None,
    lower: torch.Tensor | Sequence[float] | float | None = None,
    options: Any = None,
    record_fn: Callable[[Any], Mapping[str, Any]] | None = None,
    resume: bool = True,
    resume_ignore: Collection[str] = _RESUME_IGNORE_DEFAULT,
    resume_added: Mapping[str, Any] | None = None,
    progress: bool = True,
    description: str = "fit",
    time_limit: float | None = None,
    plot: bool = True,
) -> TrainResult:
    """Fit ``model`` by Levenberg-Marquardt (:func:`physid.levenberg_marquardt`) into a run
    directory laid out as :func:`train`'s, with checkpoints and resume.

    One iteration (trial step, accepted or not) is one "epoch" of the run: ``metrics.jsonl`` gets
    ``epoch``, ``seconds``, ``compile_seconds``, ``loss`` (the cost ``||r||²`` after the
    iteration), ``trial_loss``, ``accepted``, ``lam``, ``radius``, ``rho``, ``step_norm``,
    ``gradient_cosine`` and whatever ``record_fn(iteration)`` returns (solve counts, metrics).
    ``model.pt`` (format :data:`CHECKPOINT_FORMAT`, weights only) holds ``best`` and ``last``
    (the current point: LM never accepts a step that raises the cost, so both are the same
    model), ``last["lm_state"]`` (the :class:`~physid.lstsq.LMState`, to resume),
    ``last["lm_status"]`` and, once the fit ends, ``lm_report`` (:meth:`LMResult.to_dict
    <physid.lstsq.LMResult.to_dict>`: singular values, standard errors, covariance, status).
    Ctrl-C keeps the last iteration's checkpoint and returns ``interrupted=True``; calling again
    continues from the saved state and ends where an uninterrupted fit ends. A finished fit
    (converged, or its iteration budget spent) is not run again unless the budget grew.

    Args:
        model: the module whose parameters are ``x``; its ``state_dict`` is checkpointed.
        fun: ``x (p,) -> (r (m,), J (m, p))``.
        x0: ``(p,)`` the starting point (ignored when resuming).
        set_params: writes ``x`` into ``model`` (before each checkpoint and at the end).
        run_dir, config, resume, resume_ignore, resume_added, progress, description,
            time_limit, plot: as for :func:`train` (an iteration stands for an epoch).
        lower: lower bounds of ``x`` (a reparameterisation; :func:`physid.levenberg_marquardt`).
        options: :class:`physid.LMOptions` (its ``max_iterations`` is the budget).
        record_fn: extra numbers for an iteration's record.

    Returns:
        a :class:`TrainResult`; ``epochs_completed`` counts iterations.

    Raises:
        ConfigError: resuming a run made with different options, or by another optimiser.
        DataError: an unreadable checkpoint.
        SolverError, TrainingError: the residuals cannot be evaluated at the starting point.
    """
    from physid.lstsq import LMOptions, LMState, levenberg_marquardt

    opts = options if options is not None else LMOptions()
    run = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).create()
    cfg: dict[str, Any] = dict(to_jsonable(dict(config or {})))
    cfg.setdefault("physid_version", package_version())
    t_start = time.perf_counter()
    state: LMState | None = None
    status: str | None = None
    report: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if resume and run.has_checkpoint():
        ckpt = load_checkpoint(run)
        _check_same_options(run, cfg, resume_ignore, resume_added)
        last = ckpt.get("last") or {}
        if not isinstance(last.get("lm_state"), dict):
            raise ConfigError(
                f"{run} was not fitted by Levenberg-Marquardt; use a new run directory, or "
                "start afresh with --fresh."
            )
        try:
            state = LMState.from_dict(last["lm_state"])
            model.load_state_dict(last["model"])
        except (RuntimeError, KeyError, TypeError, ConfigError) as exc:
            raise DataError(
                f"the checkpoint in {run.checkpoint_path} does not fit this model "
                f"({str(exc).splitlines()[0]}); start afresh with --fresh."
            ) from exc
        status = last.get("lm_status")
        report = ckpt.get("lm_report")
        history = [r for r in run.read_metrics() if int(r["epoch"]) < state.iteration]
        run.write_metrics(history)
    else:
        run.write_metrics([])
        run.checkpoint_path.unlink(missing_ok=True)
    run.write_config(cfg)
    resumed_from = state.iteration if state is not None else 0

    def checkpoint(
        st: LMState, x: torch.Tensor, lm_status: str | None, stopped: str | None
    ) -> None:
        set_params(x)
        weights = _cpu_state_dict(model)
        epoch = max(st.iteration - 1, 0)
        run.save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "optimizer": "lm",
                "select_metric": "loss",
                "select_mode": "min",
                "stopped": stopped,
                "best": {"epoch": epoch, "metric": float(st.cost), "model": weights},
                "last": {
                    "epoch": epoch,
                    "model": weights,
                    "lm_state": st.to_dict(),
                    "lm_status": lm_status,
                },
                "lm_report": report,
            }
        )

    finished = status is not None and (
        status in ("gtol", "ftol", "xtol", "zero_cost")
        or (status == "max_iterations" and state is not None)
        and state.iteration >= opts.max_iterations
    )
    interrupted = stopped_early = False
    if state is not None and finished:
        ckpt = load_checkpoint(run)
        ckpt["stopped"] = "done"
        run.save_checkpoint(ckpt)
    else:
        clock = {"t": time.perf_counter(), "compiled": _compile_seconds()}
        saved: dict[str, Any] = {"state": state}

        def callback(it: Any, st: LMState) -> bool:
            now, compiled = time.perf_counter(), _compile_seconds()
            record: dict[str, Any] = {
                "epoch": it.iteration - 1,
                "seconds": now - clock["t"],
                "compile_seconds": compiled - clock["compiled"],
                "loss": it.cost,
                "trial_loss": it.trial_cost,
                "accepted": it.accepted,
                "lam": it.lam,
                "radius": it.radius,
                "rho": it.rho,
                "step_norm": it.step_norm,
                "gradient_cosine": it.gradient_cosine,
            }
            if record_fn is not None:
                record.update({k: _number(v) for k, v in record_fn(it).items()})
            if it.note:
                record["note"] = it.note
            clock["t"], clock["compiled"] = now, compiled
            history.append(record)
            run.append_metrics(record)
            checkpoint(st, torch.as_tensor(it.x, dtype=x0.dtype), None, None)
            saved["state"] = st
            bar.update(
                task, completed=st.iteration, description=f"{description} loss {st.cost:.4g}"
            )
            return time_limit is not None and time.perf_counter() - t_start > time_limit

        with make_progress(progress) as bar:
            task = bar.add_task(
                description, total=max(opts.max_iterations, 1), completed=resumed_from
            )
            try:
                res = levenberg_marquardt(
                    fun, x0, lower=lower, options=opts, state=state, callback=callback
                )
            except KeyboardInterrupt:
                interrupted = True
                last_state = saved["state"]
                if last_state is not None:
                    ckpt = load_checkpoint(run)
                    ckpt["stopped"] = "interrupted"
                    run.save_checkpoint(ckpt)
                    model.load_state_dict(ckpt["last"]["model"])
        if not interrupted:
            stopped_early = res.status == "stopped"
            report = res.to_dict()
            if not history:
                # Nothing to step (converged at the start): one record of the starting point.
                record0: dict[str, Any] = {
                    "epoch": 0,
                    "seconds": time.perf_counter() - t_start,
                    "compile_seconds": 0.0,
                    "loss": res.cost,
                    "accepted": False,
                }
                if record_fn is not None:
                    record0.update({k: _number(v) for k, v in record_fn(None).items()})
                history.append(record0)
                run.append_metrics(record0)
            checkpoint(
                res.state,
                res.x,
                res.status,
                "time_limit" if stopped_early else "done",
            )
    if plot and history:
        from physid.evaluate import plot_loss_curve

        plot_loss_curve(
            run.metrics_path, run.plots / "loss.png", xlabel="Levenberg-Marquardt iteration"
        )
    last_epoch = int(history[-1]["epoch"]) if history else None
    return TrainResult(
        run_dir=run.path,
        epochs_completed=len(history),
        best_epoch=last_epoch,
        best_metric=float(history[-1]["loss"]) if history else math.nan,
        interrupted=interrupted,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        nan_events=0,
        seconds=time.perf_counter() - t_start,
        history=history,
    )
