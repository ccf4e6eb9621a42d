"""The fully-actuated acrobot with Symplectic ODE-Net, end to end.

Reproduces the Hamiltonian experiment of Kidger et al. 2021 (*"Hey, that's not an ODE"*,
Table 3: the seminorm saves ~43% of the adjoint's backward function evaluations) and the
energy-shaping swing-up of Zhong et al. 2020, with a numeric success criterion.

- :func:`simulate`: the data set (9 constant controls, trajectories of 32 control periods from
  U(-pi, pi)^4, ground truth by DOP853 at rtol 1e-10), a physid data set of raw states
  ``[q1, q2, dq1, dq2]`` with the control of each trajectory.
- :func:`load_splits`: split 70/15/15 by trajectory, cut into windows of 8 points, as SymODEN's
  channels ``[cos q1, cos q2, sin q1, sin q2, dq1, dq2, u1, u2]``.
- :class:`Acrobot` is the system's experiment (the registry's ``acrobot``): ``fit`` trains one
  run with any gradient method, recording forward and backward NFE per epoch and where in time
  the backward evaluations and rejections fall; ``evaluate``, ``render`` and ``control`` take
  the run directory. ``control`` without a run uses the newest finished one, or fits one first.

The loss is the MSE over the whole window and all eight channels (the control channels
included, whose error is exactly zero since du/dt = 0), as in SymODEN's reference code.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from physid.envs import acrobot as sim
from physid.models.symoden import PRESETS, SymODEN, build_symoden
from torch import nn

import physid
from physid import control as ctl
from physid.controllers import AbstractController, IController
from physid.data import TrajectoryDataset, load_dataset, make_metadata, split_indices, windows
from physid.errors import ConfigError, DataError
from physid.experiment import (
    DTYPES,
    AbstractControlExperiment,
    BaseConfig,
    Options,
    SimulateOptions,
    option,
)
from physid.render import write_video
from physid.runs import RunDir, RunSummary
from physid.training import TrainResult, load_model_state, train

__all__ = [
    "SYSTEM",
    "MODEL",
    "CHANNELS",
    "PRESET_BUDGETS",
    "simulate",
    "default_data_path",
    "AcrobotSplits",
    "load_splits",
    "FitConfig",
    "SimulateConfig",
    "ControlConfig",
    "Acrobot",
    "window_loss",
    "load_run",
    "run_splits",
    "control",
    "oracle_control",
    "tip_criterion",
]

SYSTEM = "acrobot"
MODEL = "symoden"
CHANNELS = ("cos q1", "cos q2", "sin q1", "sin q2", "dq1", "dq2", "u1", "u2")
SPLIT = (0.7, 0.15, 0.15)

PRESET_BUDGETS: dict[str, dict[str, int]] = {
    "default": {"epochs": 30, "n_per_control": 32},
    "paper": {"epochs": 50, "n_per_control": 128},
}
"""What a preset sets besides SymODEN's size (:data:`physid.models.symoden.PRESETS`): the
epochs and the trajectories per constant control of the simulated data. ``paper`` is the
seminorm paper's setting (Kidger et al. 2021, Appendix B.3: 509,108 parameters, 128
trajectories per control, 50 epochs); ``default`` a small model that trains in minutes."""


# ---- data -------------------------------------------------------------------------------------


def simulate(
    out: str | Path | None = None,
    *,
    seed: int = 0,
    n_per_control: int = 128,
    n_steps: int = 32,
    params: sim.AcrobotParams | None = None,
) -> Path:
    """Simulate the seminorm paper's acrobot data set and write it with ``physid.data``.

    Args:
        out: the ``.npz`` to write (default ``data/acrobot-n{n_per_control}-seed{seed}.npz``).
        seed: seed of the initial states.
        n_per_control: trajectories per constant control (128 in the paper; fewer for tests).
        n_steps: control periods per trajectory (32).
        params: physical constants (SymODEN's by default).

    Returns:
        the path written. ``y`` is ``(9·n_per_control, n_steps + 1, 4)`` raw states, ``u`` the
        (constant) control at every sample.
    """
    params = params or sim.AcrobotParams()
    t, states, u = sim.simulate_constant_controls(
        n_per_control, seed=seed, n_steps=n_steps, params=params
    )
    path = Path(out) if out is not None else default_data_path(seed, n_per_control, n_steps)
    ds = TrajectoryDataset(
        t=t,
        y=states,
        u=np.repeat(u[:, None, :], len(t), axis=1),
        metadata=make_metadata(
            simulator=sim.ENV_ID,
            params=params,
            seed=seed,
            rtol=sim.TRUTH_RTOL,
            atol=sim.TRUTH_ATOL,
            system=SYSTEM,
            integrator="scipy DOP853, zero-order-hold control",
            control_period=sim.CONTROL_PERIOD,
            controls=[list(c) for c in sim.PAPER_CONTROLS],
            n_per_control=n_per_control,
            n_steps=n_steps,
            initial_states="U(-pi, pi)^4",
            state=["q1", "q2", "dq1", "dq2"],
        ),
    )
    return ds.save(path)


def default_data_path(seed: int, n_per_control: int, n_steps: int = 32) -> Path:
    """Where :func:`simulate` writes (and a fit caches) a data set by default."""
    suffix = "" if n_steps == 32 else f"-T{n_steps}"
    return Path("data") / f"acrobot-n{n_per_control}{suffix}-seed{seed}.npz"


@dataclasses.dataclass(frozen=True)
class AcrobotSplits:
    """Train/validation/test data in SymODEN's channels.

    Attributes:
        t: ``(time,)`` times of the whole trajectories.
        window: points per window.
        train, val, test: windows ``(N, window, 8)``.
        test_trajectories: the whole test trajectories ``(n, time, 8)``.
    """

    t: torch.Tensor
    window: int
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    test_trajectories: torch.Tensor

    @property
    def t_window(self) -> torch.Tensor:
        """``(window,)`` times of a window, starting at 0."""
        return self.t[: self.window] - self.t[0]

    def to(self, device: torch.device | str) -> AcrobotSplits:
        """The same splits on ``device``."""
        return dataclasses.replace(
            self,
            t=self.t.to(device),
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            test_trajectories=self.test_trajectories.to(device),
        )


def load_splits(
    dataset: TrajectoryDataset | str | Path,
    *,
    window: int = 8,
    split_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> AcrobotSplits:
    """Split a data set of :func:`simulate` 70/15/15 by trajectory and cut windows.

    Raises:
        DataError: the data set is not an acrobot data set with controls.
    """
    ds = dataset if isinstance(dataset, TrajectoryDataset) else load_dataset(dataset)
    if ds.state_dim != sim.STATE_DIM or ds.u is None or ds.u.shape[-1] != sim.CONTROL_DIM:
        raise DataError(
            "an acrobot data set holds states (trajectories, time, 4) and controls "
            f"(trajectories, time, 2); got y {ds.y.shape} and u "
            f"{None if ds.u is None else ds.u.shape}. Make one with `physid simulate acrobot`."
        )
    if ds.t.ndim != 1:
        raise DataError("an acrobot data set has one time grid shared by every trajectory.")
    if not 2 <= window <= ds.n_times:
        raise ConfigError(f"window must be in [2, {ds.n_times}], got {window}.")
    channels = torch.as_tensor(sim.to_channels(ds.y, ds.u), dtype=dtype)
    parts = split_indices(ds.n_trajectories, SPLIT, seed=split_seed)
    if any(len(p) == 0 for p in parts):
        raise DataError(
            f"{ds.n_trajectories} trajectories are too few for a 70/15/15 split; simulate more."
        )
    train_w, val_w, test_w = (windows(channels[torch.as_tensor(p)], window) for p in parts)
    return AcrobotSplits(
        t=torch.as_tensor(ds.t, dtype=dtype),
        window=window,
        train=train_w,
        val=val_w,
        test=test_w,
        test_trajectories=channels[torch.as_tensor(parts[2])],
    )


# ---- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateConfig(SimulateOptions):
    """Options of ``physid simulate acrobot`` (the seminorm paper's data: 9 constant controls,
    random initial states)."""

    seed: int = option(0, help="Seed of the initial states.")
    n_per_control: int = option(128, help="Trajectories per constant control (9 controls).")
    n_steps: int = option(32, help="Control periods (0.05 s) per trajectory.")

    def check(self) -> None:
        if self.n_per_control < 1 or self.n_steps < 1:
            raise ConfigError("n_per_control and n_steps must be at least 1.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(BaseConfig):
    """Every option of an acrobot fit (all recorded, resolved, in the run's ``config.json``).

    The shared options (method, solver, tolerances, seed, device, dtype, threads, epochs, run
    directory, resume, time limit, progress) are :class:`~physid.experiment.BaseConfig`'s.
    The ``default`` preset trains a small SymODEN (13,960 parameters) on 32 trajectories per
    control for 30 epochs: about 7 min on one CPU thread (measured: 16 per control, 40 epochs,
    adjoint: 284 s, test loss 2.1e-3, and the learned model swings the true acrobot up). The
    ``paper`` preset is the seminorm paper's setting (509,108 parameters, 128 trajectories per
    control, 50 epochs; Kidger et al. 2021, Appendix B.3).

    Attributes:
        model: ``symoden`` (Symplectic ODE-Net, :mod:`physid.models.symoden`).
        method: gradient method (``adjoint`` by default, as the paper's baseline).
        preset: SymODEN's size, and the defaults of ``epochs`` and ``n_per_control``
            (:data:`PRESET_BUDGETS`).
        epochs, n_per_control: ``None``: the preset's (30 and 32; ``paper``: 50 and 128). The
            resolved values are what ``config.json`` records.
        batch_size, lr, weight_decay: AdamW (the paper: batch 256, lr 1e-3, weight decay 0.01).
        solver, rtol, atol: the ODE solve (dopri5, 1e-4, 1e-4 in the paper).
        dtype: ``float32`` (as the reference) or ``float64``.
        window: points per training window (8).
        data: an existing data set; ``None`` simulates (and caches under ``data_dir``) one with
            ``data_seed``, ``n_per_control`` and ``n_steps``.
        split_seed: seed of the 70/15/15 split by trajectory.
        max_batches: at most this many batches per epoch (``None``: all; for quick tests).
        trace_backward: record where in time the backward evaluations and step decisions fall
            (``backward_trace.npz``).
    """

    system: ClassVar[str] = SYSTEM
    MODELS: ClassVar[tuple[str, ...]] = (MODEL,)
    RECORD_KEYS: ClassVar[tuple[str, ...]] = (*BaseConfig.RECORD_KEYS, "data_path")

    model: str = option(MODEL, help="The model: symoden (Symplectic ODE-Net).", choices=(MODEL,))
    method: str = option(
        "adjoint",
        help="Gradient method: naive, adjoint, seminorm or aca.",
        choices=lambda: tuple(physid.GRADIENT_METHODS),
    )
    rtol: float = option(1e-4, help="Relative tolerance of the training solves (paper: 1e-4).")
    atol: float = option(1e-4, help="Absolute tolerance of the training solves (paper: 1e-4).")
    dtype: str = option("float32", help="Floating-point type of the model.", choices=tuple(DTYPES))
    preset: str = option(
        "default",
        help="default (small SymODEN, 30 epochs, 32 trajectories per control) or paper "
        "(509,108 parameters, 50 epochs, 128 per control).",
        choices=tuple(PRESETS),
    )
    epochs: int | None = option(  # type: ignore[assignment]
        None, help="Training epochs (default: the preset's, 30 or 50)."
    )
    n_per_control: int | None = option(
        None, help="Simulated trajectories per constant control (default: the preset's, 32 or 128)."
    )
    batch_size: int = option(256, help="Windows per batch.")
    lr: float = option(1e-3, help="AdamW learning rate.")
    weight_decay: float = option(0.01, help="AdamW weight decay.")
    window: int = option(8, help="Points per training window.")
    data: str | None = option(None, help="A data set from 'physid simulate acrobot'.")
    data_seed: int = option(0, help="Seed of the simulated data set.")
    n_steps: int = option(32, help="Control periods per simulated trajectory.")
    data_dir: str = option("data", help="Cache folder of simulated data sets.")
    split_seed: int = option(0, help="Seed of the 70/15/15 split by trajectory.")
    max_batches: int | None = option(None, help="At most this many batches per epoch (tests).")
    trace_backward: bool = option(
        True, help="Record where in time the backward evaluations and steps fall."
    )

    def resolve(self) -> dict[str, Any]:
        budget = PRESET_BUDGETS.get(self.preset)
        if budget is None:  # an unknown preset: the choices check reports it
            return {}
        return {k: v for k, v in budget.items() if getattr(self, k) is None}

    def check(self) -> None:
        for name in ("batch_size", "n_per_control", "n_steps"):
            if _resolved(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not 2 <= self.window <= self.n_steps + 1:
            raise ConfigError(f"window must be in [2, n_steps + 1], got {self.window}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be positive, got {self.lr}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigError(f"max_batches must be at least 1, got {self.max_batches}.")

    @property
    def n_epochs(self) -> int:
        """``epochs``, resolved."""
        return _resolved(self, "epochs")

    @property
    def trajectories_per_control(self) -> int:
        """``n_per_control``, resolved."""
        return _resolved(self, "n_per_control")


def _resolved(config: FitConfig, name: str) -> int:
    value = getattr(config, name)
    if value is None:  # resolve() fills it for every known preset
        raise ConfigError(f"{name} was not resolved from preset {config.preset!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlConfig(Options):
    """Options of ``physid control acrobot``: the energy-shaping swing-up of the true acrobot.

    The model is a run's learned ``V``, ``g`` and ``M⁻¹``: ``run``, else the newest finished
    acrobot run under ``runs_dir``, else a run fitted first with the default options (the
    ``fit_*`` options shrink that fit, e.g. for tests); or, with ``oracle``, the true ones.
    """

    run: str | None = option(
        None,
        help="A fitted acrobot run (default: the newest finished one under --runs-dir; if there "
        "is none, the default model is fitted first).",
    )
    oracle: bool = option(False, help="Use the true V, M and g instead of a fitted run.")
    runs_dir: str = option("runs", help="Where to look for runs (and to fit one if none).")
    damping: float | None = option(
        None, help="Damping rate k [1/s] of u_damp = -g⁺ k M q̇ (default 4)."
    )
    input_damping: float | None = option(
        None, help="Use u_damp = -K_d q̇ with this K_d instead (Zhong et al.: 1)."
    )
    max_control: float = option(sim.MAX_TORQUE, help="Torque bound of the swing-up.")
    perturbation: float = option(
        0.05, help="Initial angle q1 in radians (hanging down, slightly off)."
    )
    steps: int = option(400, help="Control periods (0.05 s).")
    out: str | None = option(
        None, help="Output folder (default RUN/control; --oracle: RUNS_DIR/acrobot-oracle-control)."
    )
    video: bool = option(True, help="Write control.mp4.")
    fit_epochs: int | None = option(
        None, help="Epochs of the fit made when there is no run (default: the preset's)."
    )
    fit_n_per_control: int | None = option(
        None, help="Trajectories per control of that fit (default: the preset's)."
    )
    fit_max_batches: int | None = option(None, help="Batches per epoch of that fit (default all).")
    progress: bool = option(True, help="Show that fit's progress bar (on a terminal).")

    def check(self) -> None:
        if self.oracle and self.run is not None:
            raise ConfigError("give --run RUN or --oracle, not both.")
        if self.damping is not None and self.input_damping is not None:
            raise ConfigError("give --damping or --input-damping, not both.")
        for name in ("damping", "input_damping"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a number >= 0, got {value}.")
        if not (self.max_control > 0 and math.isfinite(self.max_control)):
            raise ConfigError(f"max_control must be positive, got {self.max_control}.")
        if not math.isfinite(self.perturbation):
            raise ConfigError(f"perturbation must be finite, got {self.perturbation}.")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}.")
        for name in ("fit_epochs", "fit_n_per_control", "fit_max_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")

    def damping_law(self) -> ctl.AbstractDamping | None:
        """The damping asked for (``None``: the default :data:`DEFAULT_DAMPING_RATE`)."""
        if self.input_damping is not None:
            return ctl.InputDamping(self.input_damping)
        if self.damping is not None:
            return ctl.MassDamping(self.damping)
        return None

    def fit_config(self) -> FitConfig:
        """The config of the fit made when no run exists: the defaults, under ``runs_dir``."""
        return FitConfig(
            runs_dir=self.runs_dir,
            epochs=self.fit_epochs,
            n_per_control=self.fit_n_per_control,
            max_batches=self.fit_max_batches,
            progress=self.progress,
        )


# ---- where the backward steps fall ------------------------------------------------------------


class _TracedField(nn.Module):
    """The model's vector field, recording the time of every evaluation while ``recording``."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.recording = False
        # (time, 1.0) per evaluation; (nan, 2.0) accepted / (nan, 3.0) rejected per decision
        self.events: list[tuple[float, float]] = []

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.recording:
            self.events.append((float(t), 1.0))
        return self.field(t, x)


class _RecordingController(AbstractController):
    """An integral controller that tells the traced field about each accept/reject decision."""

    def __init__(self, traced: _TracedField):
        self.inner = IController()
        self.traced = traced
        self.adaptive = self.inner.adaptive
        self.min_factor = self.inner.min_factor

    def reset(self, error_order: int | None) -> None:
        self.inner.reset(error_order)

    def decide(self, ratio):  # type: ignore[override]
        accept, factor = self.inner.decide(ratio)
        if self.traced.recording:
            self.traced.events.append((math.nan, 2.0 if accept else 3.0))
        return accept, factor


def _attempts(events: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Step attempts from an event log: the time reached by each attempt (the last evaluation
    before its decision, ``t + h`` for Dormand–Prince) and whether it was accepted."""
    where, accepted, last = [], [], math.nan
    for t, kind in events:
        if kind == 1.0:
            last = t
        else:
            where.append(last)
            accepted.append(kind == 2.0)
    return np.asarray(where, dtype=np.float64), np.asarray(accepted, dtype=bool)


# ---- fit --------------------------------------------------------------------------------------


def _dataset_for(config: FitConfig) -> Path:
    """The data set of a fit: ``config.data``, or the simulated one (made once, then cached)."""
    if config.data is not None:
        path = Path(config.data)
        if not path.exists():
            raise DataError(
                f"data set {path} does not exist; make one with `physid simulate acrobot`."
            )
        return path
    n_per_control = config.trajectories_per_control
    path = (
        Path(config.data_dir)
        / default_data_path(config.data_seed, n_per_control, config.n_steps).name
    )
    if not path.exists():
        simulate(path, seed=config.data_seed, n_per_control=n_per_control, n_steps=config.n_steps)
    return path


def window_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over the window: ``pred (window, B, 8)`` from odeint, ``target (B, window, 8)``."""
    return ((pred.transpose(0, 1) - target) ** 2).mean()


def _predict(
    func: nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    config: FitConfig,
    stats: physid.SolveStats | None = None,
    controller: Any = "i",
) -> torch.Tensor:
    """``odeint`` with the run's method, solver and tolerances: ``(window, B, 8)``."""
    return physid.odeint(
        func,
        x0,
        t,
        method=config.method,
        solver=config.solver,
        rtol=config.rtol,
        atol=config.atol,
        stats=stats,
        controller=controller,
        compile=config.compile,
    )


def _mean_loss(
    model: nn.Module,
    data: torch.Tensor,
    t: torch.Tensor,
    config: FitConfig,
    chunk: int = 1024,
) -> float:
    """MSE over windows ``(N, window, 8)`` (no gradient)."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data), chunk):
            xb = data[start : start + chunk]
            total += float(window_loss(_predict(model, xb[:, 0], t, config), xb)) * len(xb)
    return total / max(len(data), 1)


def _train(config: FitConfig, run: RunDir) -> TrainResult:
    """Fit SymODEN to the acrobot data with ``config.method`` into ``run`` (no evaluation).

    The run directory gets ``config.json`` (with the data set's path), ``metrics.jsonl`` (per
    epoch: train ``loss``, the mean over the epoch's batches of each batch's window MSE before
    its step; ``val_loss`` after the epoch; the epoch's totals of forward and backward NFE
    and steps of the training solves; ``batches``), ``model.pt`` (best by ``val_loss``, and
    last), ``plots/loss.png`` and, with ``trace_backward``, ``backward_trace.npz`` (times of the
    backward evaluations and of the accepted/rejected backward steps of this call's epochs).
    """
    device = config.torch_device()
    dtype = DTYPES[config.dtype]
    data_path = _dataset_for(config)
    splits = load_splits(
        data_path, window=config.window, split_seed=config.split_seed, dtype=dtype
    ).to(device)
    t = splits.t_window

    torch.manual_seed(config.seed)
    model = build_symoden(config.preset).to(dtype).to(device)
    traced = _TracedField(model)

    def make_controller() -> AbstractController:
        return _RecordingController(traced)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    trace = _BackwardTrace()

    def epoch_fn(epoch: int) -> dict[str, Any]:
        model.train()
        stats = physid.SolveStats()
        perm = torch.randperm(len(splits.train), generator=generator)
        batches = list(perm.split(config.batch_size))
        if config.max_batches is not None:
            batches = batches[: config.max_batches]
        total, count = 0.0, 0
        traced.events = []
        for idx in batches:
            xb = splits.train[idx.to(device)]
            pred = _predict(traced, xb[:, 0], t, config, stats, make_controller)
            loss = window_loss(pred, xb)
            optimizer.zero_grad(set_to_none=True)
            traced.recording = config.trace_backward
            try:
                loss.backward()
            finally:
                traced.recording = False
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        if config.trace_backward:
            trace.add(epoch, traced.events)
            traced.events = []
        val_loss = _mean_loss(model, splits.val, t, config)
        return {
            "loss": total / max(count, 1),
            "val_loss": val_loss,
            "batches": len(batches),
            **stats.as_dict(),
        }

    result = train(
        model,
        epoch_fn,
        optimizer=optimizer,
        epochs=config.n_epochs,
        run_dir=run,
        config={**config.to_dict(), "data_path": str(data_path)},
        select_metric="val_loss",
        resume=config.resume,
        resume_ignore=config.RESUME_IGNORE,
        progress=config.progress,
        description=f"acrobot {config.method}",
        generators=[generator],
        time_limit=config.time_limit,
    )
    if config.trace_backward and trace:
        trace.save(run / "backward_trace.npz", first_epoch=result.resumed_from)
    return result


class _BackwardTrace:
    """The backward evaluations and step decisions of each epoch, for ``backward_trace.npz``."""

    def __init__(self) -> None:
        self.evals: list[np.ndarray] = []
        self.epochs: list[np.ndarray] = []
        self.attempts: list[np.ndarray] = []
        self.accepted: list[np.ndarray] = []

    def __bool__(self) -> bool:
        return bool(self.evals)

    def add(self, epoch: int, events: Sequence[tuple[float, float]]) -> None:
        evals = np.asarray([e[0] for e in events if e[1] == 1.0], dtype=np.float32)
        where, accepted = _attempts(events)
        self.epochs.append(np.full(len(evals), epoch, dtype=np.int32))
        self.evals.append(evals)
        self.attempts.append(np.stack([where, np.full(len(where), epoch)], -1))
        self.accepted.append(accepted)

    def save(self, path: Path, *, first_epoch: int) -> None:
        """Arrays ``eval_t``, ``eval_epoch`` (one per backward evaluation), ``step_t``,
        ``step_epoch``, ``step_accepted`` (one per backward step attempt) and ``first_epoch``
        (the first epoch of this fit call: a resumed run traces only its new epochs)."""
        from physid._io import atomic_write

        att = np.concatenate(self.attempts) if self.attempts else np.zeros((0, 2))
        accepted = np.concatenate(self.accepted) if self.accepted else np.zeros(0, dtype=bool)
        with atomic_write(path, "wb") as fh:
            np.savez_compressed(
                fh,
                eval_t=np.concatenate(self.evals),
                eval_epoch=np.concatenate(self.epochs),
                step_t=att[:, 0],
                step_epoch=att[:, 1].astype(np.int32),
                step_accepted=accepted,
                first_epoch=np.asarray(first_epoch),
            )


# ---- runs -------------------------------------------------------------------------------------


def _device_for(config: FitConfig) -> torch.device:
    """The run's device when this machine has it, else the CPU (a run fitted on a GPU is
    evaluated, rendered and controlled anywhere)."""
    try:
        return config.torch_device()
    except ConfigError:
        return torch.device("cpu")


def load_run(
    run_dir: str | Path | RunDir, which: str = "best", *, device: str | torch.device = "cpu"
) -> tuple[SymODEN, FitConfig]:
    """The fitted model (``best`` or ``last``, in eval mode on ``device``) and the
    :class:`FitConfig` of a run.

    Raises:
        DataError: the folder is not an acrobot run, or has no checkpoint.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = FitConfig.from_run(run)
    model = build_symoden(config.preset).to(DTYPES[config.dtype])
    load_model_state(model, run, "last" if which == "last" else "best")
    model.eval()
    return model.to(device), config


def run_splits(
    run_dir: str | Path | RunDir,
    config: FitConfig | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> AcrobotSplits:
    """The data of a run, split as in its fit (the data set recorded in ``config.json``; if
    that is gone, the one its options simulate), in the run's dtype unless ``dtype``."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else FitConfig.from_run(run)
    recorded = run.read_config().get("data_path")
    path = Path(recorded) if recorded and Path(recorded).exists() else _dataset_for(config)
    return load_splits(
        path,
        window=config.window,
        split_seed=config.split_seed,
        dtype=dtype if dtype is not None else DTYPES[config.dtype],
    )


def _evaluate(config: FitConfig, run: RunDir, totals: dict[str, Any]) -> RunSummary:
    """Test metrics and plots of a run's best model.

    ``test_mse`` is the window loss of the test split: the MSE over its windows and all eight
    channels, as the training loss (``test_loss`` of earlier versions). ``train_mse`` is the
    training loss of the best epoch (the one of lowest ``val_loss``): the mean over that
    epoch's batches of each batch's window MSE, taken before its optimiser step. The extras add
    ``best_epoch``, ``best_val_loss``, the extrapolation over whole test trajectories from each
    one's first state (``test_trajectory_mse`` over all its points and channels,
    ``test_trajectory_mse_final`` at its last point, ``horizon_seconds``), ``n_parameters``,
    ``preset``, the step counts summed over training and ``batches_total``. Plots:
    ``test_error_vs_time.png`` and ``test_trajectory.png``.
    """
    from physid.evaluate import mse_over_time, plot_error_vs_time, plot_trajectories

    device = _device_for(config)
    model, _ = load_run(run, device=device)
    splits = run_splits(run, config).to(device)
    test_mse = _mean_loss(model, splits.test, splits.t_window, config)
    traj = splits.test_trajectories
    t_full = splits.t - splits.t[0]
    with torch.no_grad():
        pred = _predict(model, traj[:, 0], t_full, config).transpose(0, 1)
    err_t = mse_over_time(pred, traj)

    records = run.read_metrics()
    best_epoch, best_val, train_mse = None, None, None
    best = run.load_checkpoint().get("best") or {}
    if "epoch" in best:
        best_epoch = int(best["epoch"])
        best_val = float(best["metric"])
        train_mse = next((float(r["loss"]) for r in records if r["epoch"] == best_epoch), None)
    extras: dict[str, Any] = {
        "name": config.name,
        "preset": config.preset,
        "solver": config.solver,
        "rtol": config.rtol,
        "atol": config.atol,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "final_train_loss": float(records[-1]["loss"]) if records else None,
        "test_trajectory_mse": float(err_t.mean()),
        "test_trajectory_mse_final": float(err_t[-1]),
        "horizon_seconds": float(t_full[-1]),
        "n_test_trajectories": int(traj.shape[0]),
        "batches_total": int(sum(int(r.get("batches", 0)) for r in records)),
    }
    for key in (
        "steps_accepted",
        "steps_rejected",
        "backward_steps_accepted",
        "backward_steps_rejected",
    ):
        extras[key] = int(sum(int(r.get(key, 0)) for r in records))

    plots = run.plots
    t_np = t_full.cpu().numpy()
    plot_error_vs_time(
        t_np,
        {"SymODEN": err_t},
        plots / "test_error_vs_time.png",
        ylabel="MSE per channel",
        train_end=float(splits.t_window[-1]),
    )
    plot_trajectories(
        t_np,
        traj[..., :6].cpu().numpy(),
        plots / "test_trajectory.png",
        pred=pred[..., :6].cpu().numpy(),
        labels=list(CHANNELS[:6]),
        train_end=float(splits.t_window[-1]),
    )
    return RunSummary(
        system=SYSTEM,
        model=config.model,
        method=config.method,
        seed=config.seed,
        test_mse=test_mse,
        train_mse=train_mse,
        **totals,
        extras=extras,
    )


# ---- videos -----------------------------------------------------------------------------------


def _render_run(config: FitConfig, run: RunDir, out: Path, *, trajectory: int = 0) -> Path:
    """An MP4 of a run's prediction of one test trajectory (right) beside the truth (left)."""
    device = _device_for(config)
    model, _ = load_run(run, device=device)
    splits = run_splits(run, config)
    if not 0 <= trajectory < len(splits.test_trajectories):
        raise ConfigError(f"trajectory must be in [0, {len(splits.test_trajectories)}).")
    truth = splits.test_trajectories[trajectory]
    t_full = (splits.t - splits.t[0]).to(device)
    with torch.no_grad():
        pred = _predict(model, truth[None, 0].to(device), t_full, config)[:, 0].cpu()
    true_states = sim.from_channels(truth.double())[0].numpy()
    pred_states = sim.from_channels(pred.double())[0].numpy()
    frames = [
        np.concatenate([sim.render_frame(a), sim.render_frame(b)], axis=1)
        for a, b in zip(true_states, pred_states, strict=True)
    ]
    return write_video(out, frames, round(1 / sim.CONTROL_PERIOD))


def _render_data(dataset: Path, out: Path, trajectory: int) -> Path:
    """An MP4 of one trajectory of an acrobot data set."""
    ds = load_dataset(dataset)
    if ds.state_dim != sim.STATE_DIM:
        raise DataError(f"{dataset} is not an acrobot data set (state size {ds.state_dim}).")
    if not 0 <= trajectory < ds.n_trajectories:
        raise ConfigError(f"trajectory must be in [0, {ds.n_trajectories}).")
    frames = [sim.render_frame(s) for s in ds.y[trajectory]]
    return write_video(out, frames, round(1 / sim.CONTROL_PERIOD))


# ---- control ----------------------------------------------------------------------------------


def tip_criterion(params: sim.AcrobotParams | None = None) -> ctl.SuccessCriterion:
    """The issue's success: tip height ≥ 1.9 (of 2) and every |dq| < 0.1 over the last 2 s."""
    p = params or sim.AcrobotParams()
    return ctl.SuccessCriterion(
        measure=lambda s: sim.tip_height(s, p),
        threshold=0.95 * (p.l1 + p.l2),
        speed_tolerance=0.1,
        hold_time=2.0,
    )


DEFAULT_DAMPING_RATE = 4.0
"""Rate k [1/s] of the default :class:`~physid.control.MassDamping` (u_damp = −g⁺ k M q̇).

Measured on the true system from q1 = 0.05 (20 s, criterion of :func:`tip_criterion`): the oracle
succeeds for k = 1, 2, 4 (settled |dq| 0.05, 0, 0) with actuator work 134, 57 and 40 — the
least possible is the energy gap of 39.2. Zhong et al.'s K_d = I (identical for the true g = I)
still swings after 20 s (last-2-s tip height ≥ 1.85, |dq| up to 0.64)."""

MAX_TORQUE = sim.MAX_TORQUE
"""Torque bound of the swing-up (the environment's action bound). The oracle needs at most ~28;
the bound keeps a poorly learned g(q) (nearly singular) from asking for absurd torques."""


def _embedded(model: SymODEN, fn: Callable[[torch.Tensor], torch.Tensor]):
    dtype = next(model.parameters()).dtype

    def on_q(q: torch.Tensor) -> torch.Tensor:
        qq = q.to(dtype)
        return fn(torch.cat([torch.cos(qq), torch.sin(qq)], -1)).to(q.dtype)

    return on_q


def _true_step(params: sim.AcrobotParams) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        return sim.simulate(x, u[None], params)[-1]

    return step


def _swing_up(
    potential: Callable[[torch.Tensor], torch.Tensor],
    input_matrix: Callable[[torch.Tensor], torch.Tensor],
    inverse_mass: Callable[[torch.Tensor], torch.Tensor],
    out_dir: Path,
    *,
    damping: ctl.AbstractDamping | None,
    max_control: float | None,
    steps: int,
    perturbation: float,
    video: bool,
    extra: dict[str, Any],
) -> dict[str, Any]:
    damping = damping if damping is not None else ctl.MassDamping(DEFAULT_DAMPING_RATE)
    controller = ctl.EnergyShapingController(
        potential,
        input_matrix,
        inverse_mass=inverse_mass,
        damping=damping,
        max_control=max_control,
    )
    params = sim.AcrobotParams()
    state0 = np.array([perturbation, 0.0, 0.0, 0.0])
    result = ctl.run_closed_loop(
        controller, _true_step(params), state0, n_steps=steps, period=sim.CONTROL_PERIOD
    )
    return ctl.write_control_report(
        out_dir,
        result,
        tip_criterion(params),
        render_frame=(lambda s: sim.render_frame(s, params)) if video else None,
        coordinate_names=["q1", "q2"],
        extra={
            "initial_state": state0.tolist(),
            "measure": "tip height",
            "damping": damping.to_dict(),
            "max_control": max_control,
            **extra,
        },
    )


def control(
    run_dir: str | Path | RunDir,
    *,
    damping: ctl.AbstractDamping | None = None,
    max_control: float | None = MAX_TORQUE,
    steps: int = 400,
    perturbation: float = 0.05,
    out: str | Path | None = None,
    video: bool = True,
) -> dict[str, Any]:
    """Swing the true acrobot up with energy shaping from a run's learned V, g and M⁻¹.

    ``u = g(q)⁻¹ (2 ∂V/∂q) + u_damp`` (desired potential −V; ``u_damp`` by default
    ``MassDamping(4.0)``, see :mod:`physid.control`) with zero-order hold every 0.05 s, ``steps``
    periods from hanging down with ``q1 = perturbation``, torques clipped to ``max_control``.
    Writes ``control.json``, ``control_states.png`` and ``control.mp4`` into ``out`` (default
    ``run_dir/control``).

    Returns:
        the ``control.json`` record (``success``, ``final_measure`` = final tip height,
        ``energy``...).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    model, config = load_run(run)
    out_dir = Path(out) if out is not None else run / "control"
    return _swing_up(
        _embedded(model, model.potential),
        _embedded(model, model.input_matrix),
        _embedded(model, model.inverse_mass),
        out_dir,
        damping=damping,
        max_control=max_control,
        steps=steps,
        perturbation=perturbation,
        video=video,
        extra={
            "controller": "learned",
            "run": str(run),
            "method": config.method,
            "out": str(out_dir),
        },
    )


def oracle_control(
    out: str | Path,
    *,
    damping: ctl.AbstractDamping | None = None,
    max_control: float | None = MAX_TORQUE,
    steps: int = 400,
    perturbation: float = 0.05,
    video: bool = True,
) -> dict[str, Any]:
    """The same swing-up with the true V, M and g (a reference independent of learning)."""
    p = sim.AcrobotParams()
    return _swing_up(
        lambda q: sim.potential(q, p),
        lambda q: sim.input_matrix(q, p),
        lambda q: torch.linalg.inv(sim.mass_matrix(q, p)),
        Path(out),
        damping=damping,
        max_control=max_control,
        steps=steps,
        perturbation=perturbation,
        video=video,
        extra={"controller": "oracle", "out": str(out)},
    )


# ---- the experiment ---------------------------------------------------------------------------


def _say(message: str) -> None:
    """A line for the user on stderr (stdout carries the command's result)."""
    print(f"physid control acrobot: {message}", file=sys.stderr, flush=True)


class Acrobot(AbstractControlExperiment[FitConfig]):
    """The fully-actuated acrobot of the seminorm paper: Symplectic ODE-Net, then a swing-up."""

    name = SYSTEM
    Config = FitConfig
    Simulate = SimulateConfig
    Control = ControlConfig

    def _simulate(self, options: SimulateConfig) -> Path:
        return simulate(
            options.out,
            seed=options.seed,
            n_per_control=options.n_per_control,
            n_steps=options.n_steps,
        )

    def _fit(self, config: FitConfig, run: RunDir) -> TrainResult:
        return _train(config, run)

    def _evaluate(self, config: FitConfig, run: RunDir) -> RunSummary:
        return _evaluate(config, run, self.training_totals(run))

    def _render(self, config: FitConfig, run: RunDir, out: Path, **options: Any) -> Path:
        return _render_run(config, run, out, **options)

    def _render_dataset(self, dataset: Path, out: Path, trajectory: int) -> Path:
        return _render_data(dataset, out, trajectory)

    def _control(self, options: ControlConfig) -> dict[str, Any]:
        """The swing-up from ``options.run``, the newest finished acrobot run under
        ``options.runs_dir``, or (none there) a run fitted first with the default options
        (shrunk by ``options.fit_*``); with ``options.oracle``, from the true model. Says on
        stderr which run it uses."""
        if options.oracle:
            out = options.out or Path(options.runs_dir) / "acrobot-oracle-control"
            return oracle_control(
                out,
                damping=options.damping_law(),
                max_control=options.max_control,
                steps=options.steps,
                perturbation=options.perturbation,
                video=options.video,
            )
        if options.run is not None:
            run = RunDir.open(options.run)
            self.load_config(run)  # a DataError if it is another system's run
        else:
            run = self._newest_or_fit(options)
        return control(
            run,
            out=options.out,
            damping=options.damping_law(),
            max_control=options.max_control,
            steps=options.steps,
            perturbation=options.perturbation,
            video=options.video,
        )

    def _newest_or_fit(self, options: ControlConfig) -> RunDir:
        newest = RunDir.newest(options.runs_dir, system=SYSTEM)
        if newest is not None:
            _say(f"using the newest finished acrobot run, {newest}.")
            return newest
        config = options.fit_config()
        _say(
            f"no finished acrobot run under {options.runs_dir}; fitting the default acrobot "
            f"model first ({config.model}, {config.method}, preset {config.preset}: "
            f"{config.n_epochs} epochs on {config.trajectories_per_control} trajectories per "
            f"control, about 7 min on one CPU thread at full size) into {config.run_dir}."
        )
        run = self.fit(config)
        _say(f"fitted {run}; swinging up with its model.")
        return run
