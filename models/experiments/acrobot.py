"""The fully-actuated acrobot with Symplectic ODE-Net, end to end.

Reproduces the Hamiltonian experiment of Kidger et al. 2021 (*"Hey, that's not an ODE"*,
Table 3: the seminorm saves ~43% of the adjoint's backward function evaluations) and the
energy-shaping swing-up of Zhong et al. 2020, with a numeric success criterion.

- :func:`simulate`: the data set (9 constant controls, trajectories of 32 control periods from
  U(-pi, pi)^4, ground truth by DOP853 at rtol 1e-10), a physid data set of raw states
  ``[q1, q2, dq1, dq2]`` with the control of each trajectory.
- :func:`load_splits`: split 70/15/15 by trajectory, cut into windows of 8 points, as SymODEN's
  channels ``[cos q1, cos q2, sin q1, sin q2, dq1, dq2, u1, u2]``.
- :func:`fit`: one run (any gradient method), forward and backward NFE per epoch, where in time
  the backward evaluations and rejections fall; :func:`evaluate`, :func:`render`,
  :func:`control` take the run directory.

The loss is the MSE over the whole window and all eight channels (the control channels
included, whose error is exactly zero since du/dt = 0), as in SymODEN's reference code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from physid.envs import acrobot as sim
from physid.models.symoden import PRESETS, SymODEN, build_symoden
from torch import nn

import physid
from physid import control as ctl
from physid._io import load_json, save_json
from physid.controllers import AbstractController, IController
from physid.data import TrajectoryDataset, load_dataset, make_metadata, split_indices, windows
from physid.errors import ConfigError, DataError
from physid.render import write_video
from physid.training import load_model_state, train

__all__ = [
    "SYSTEM",
    "MODEL",
    "CHANNELS",
    "simulate",
    "AcrobotSplits",
    "load_splits",
    "FitConfig",
    "window_loss",
    "fit",
    "load_run",
    "evaluate",
    "render",
    "render_dataset",
    "control",
    "oracle_control",
    "tip_criterion",
]

SYSTEM = "acrobot"
MODEL = "symoden"
CHANNELS = ("cos q1", "cos q2", "sin q1", "sin q2", "dq1", "dq2", "u1", "u2")
SPLIT = (0.7, 0.15, 0.15)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    """Where :func:`simulate` writes (and :func:`fit` caches) a data set by default."""
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


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Every option of an acrobot fit.

    The defaults train the small ``default`` preset (13,960 parameters) on 32 trajectories per
    control for 30 epochs: about 7 min on one CPU thread (measured: 16 per control, 40 epochs,
    adjoint: 284 s, test loss 2.1e-3, and the learned model swings the true acrobot up).
    :meth:`paper` gives the seminorm paper's setting (509,108 parameters, 128 trajectories per
    control, 50 epochs).

    Attributes:
        method: gradient method (``naive``, ``adjoint``, ``seminorm``, ``aca``).
        preset: SymODEN size (``default`` or ``paper``).
        seed: model initialisation and batch order.
        epochs, batch_size, lr, weight_decay: AdamW training (the paper: lr 1e-3, wd 0.01,
            batch 256).
        solver, rtol, atol: the ODE solve (dopri5, 1e-4, 1e-4 in the paper).
        window: points per training window (8).
        data: an existing data set; ``None`` simulates (and caches) one with ``data_seed``,
            ``n_per_control`` and ``n_steps``.
        data_dir: the cache folder for simulated data sets.
        split_seed: seed of the 70/15/15 split.
        max_batches: at most this many batches per epoch (``None``: all; for quick tests).
        runs_dir, run_name: the run directory is ``runs_dir/run_name`` (default name
            ``acrobot-symoden-{method}-{seed}``).
        dtype: ``float32`` (as the reference) or ``float64``.
        threads: torch CPU threads during the fit (``None`` leaves torch's setting; on a small
            shared CPU one thread is much faster than two for these small networks).
        trace_backward: record where in time the backward evaluations and step decisions fall.
        resume: continue an interrupted run with the same options.
        progress: draw a progress bar.
        time_limit: stop after the epoch in which this many seconds have passed.
    """

    method: str = "adjoint"
    preset: str = "default"
    seed: int = 0
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    solver: str = "dopri5"
    rtol: float = 1e-4
    atol: float = 1e-4
    window: int = 8
    data: str | None = None
    data_seed: int = 0
    n_per_control: int = 32
    n_steps: int = 32
    data_dir: str = "data"
    split_seed: int = 0
    max_batches: int | None = None
    runs_dir: str = "runs"
    run_name: str | None = None
    dtype: str = "float32"
    threads: int | None = 1
    trace_backward: bool = True
    resume: bool = True
    progress: bool = True
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.method not in physid.GRADIENT_METHODS:
            raise ConfigError(
                f"method must be one of {', '.join(physid.GRADIENT_METHODS)}, got {self.method!r}."
            )
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}.")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}.")
        for name in ("epochs", "batch_size", "n_per_control", "n_steps"):
            if int(getattr(self, name)) < (0 if name == "epochs" else 1):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.window < 2 or self.window > self.n_steps + 1:
            raise ConfigError(f"window must be in [2, n_steps + 1], got {self.window}.")
        if not (self.lr > 0 and self.rtol > 0 and self.atol > 0):
            raise ConfigError("lr, rtol and atol must be positive.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigError(f"max_batches must be >= 1, got {self.max_batches}.")

    @classmethod
    def paper(cls, **overrides: Any) -> FitConfig:
        """The seminorm paper's setting (Kidger et al. 2021, Appendix B.3)."""
        base = {"preset": "paper", "n_per_control": 128, "epochs": 50}
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``system`` and ``model`` are added for the CLI."""
        return {"system": SYSTEM, "model": MODEL, **dataclasses.asdict(self)}

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        return Path(self.runs_dir) / (
            self.run_name or f"{SYSTEM}-{MODEL}-{self.method}-{self.seed}"
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
    if config.data is not None:
        path = Path(config.data)
        if not path.exists():
            raise DataError(
                f"data set {path} does not exist; make one with `physid simulate acrobot`."
            )
        return path
    path = (
        Path(config.data_dir)
        / default_data_path(config.data_seed, config.n_per_control, config.n_steps).name
    )
    if not path.exists():
        simulate(
            path, seed=config.data_seed, n_per_control=config.n_per_control, n_steps=config.n_steps
        )
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


def fit(config: FitConfig | None = None) -> Path:
    """Fit SymODEN to the acrobot data with ``config.method``; returns the run directory.

    The run directory gets ``config.json``, ``metrics.jsonl`` (per epoch: train ``loss``,
    ``val_loss``, forward and backward NFE and steps of the training solves), ``model.pt``,
    ``summary.json`` (test loss of the best model, NFE summed over training, parameter count)
    and, with ``trace_backward``, ``backward_trace.npz`` (times of the backward evaluations and
    of the accepted/rejected backward steps) and ``plots/``.
    """
    config = config or FitConfig()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    try:
        return _fit(config)
    finally:
        torch.set_num_threads(threads)


def _fit(config: FitConfig) -> Path:
    dtype = _DTYPES[config.dtype]
    data_path = _dataset_for(config)
    splits = load_splits(data_path, window=config.window, split_seed=config.split_seed, dtype=dtype)
    t = splits.t_window

    torch.manual_seed(config.seed)
    model = build_symoden(config.preset).to(dtype)
    traced = _TracedField(model)

    def make_controller() -> AbstractController:
        return _RecordingController(traced)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    trace_epochs: list[np.ndarray] = []
    trace_evals: list[np.ndarray] = []
    trace_attempts: list[np.ndarray] = []
    trace_accepted: list[np.ndarray] = []

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
            xb = splits.train[idx]
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
            evals = np.asarray([e[0] for e in traced.events if e[1] == 1.0], dtype=np.float32)
            where, accepted = _attempts(traced.events)
            trace_epochs.append(np.full(len(evals), epoch, dtype=np.int32))
            trace_evals.append(evals)
            trace_attempts.append(np.stack([where, np.full(len(where), epoch)], -1))
            trace_accepted.append(accepted)
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
        epochs=config.epochs,
        run_dir=config.run_dir,
        config={**config.to_dict(), "data_path": str(data_path)},
        select_metric="val_loss",
        resume=config.resume,
        progress=config.progress,
        description=f"acrobot {config.method}",
        generators=[generator],
        time_limit=config.time_limit,
    )
    run = result.run_dir
    if result.best_epoch is not None:
        load_model_state(model, run, "best")
    test_loss = _mean_loss(model, splits.test, t, config)
    history = result.history
    summary = {
        "system": SYSTEM,
        "model": MODEL,
        "method": config.method,
        "seed": config.seed,
        "preset": config.preset,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_metric,
        "test_loss": test_loss,
        "final_train_loss": history[-1]["loss"] if history else math.nan,
        **{
            f"{key}_total": int(sum(int(r.get(key, 0)) for r in history))
            for key in physid.SolveStats().as_dict()
        },
        "batches_total": int(sum(int(r.get("batches", 0)) for r in history)),
        "seconds": float(sum(float(r.get("seconds", 0.0)) for r in history)),
        "interrupted": result.interrupted,
    }
    save_json(run / "summary.json", summary)
    if config.trace_backward and trace_evals:
        _save_trace(
            run / "backward_trace.npz",
            trace_evals,
            trace_epochs,
            trace_attempts,
            trace_accepted,
            resumed_from=result.resumed_from,
        )
    return run


def _save_trace(path: Path, evals, epochs, attempts, accepted, *, resumed_from: int) -> None:
    att = np.concatenate(attempts) if attempts else np.zeros((0, 2))
    arrays = {
        "eval_t": np.concatenate(evals),
        "eval_epoch": np.concatenate(epochs),
        "step_t": att[:, 0],
        "step_epoch": att[:, 1].astype(np.int32),
        "step_accepted": np.concatenate(accepted) if accepted else np.zeros(0, dtype=bool),
        "first_epoch": np.asarray(resumed_from),
    }
    np.savez_compressed(path, **arrays)


# ---- runs -------------------------------------------------------------------------------------


def load_run(run_dir: str | Path, which: str = "best") -> tuple[SymODEN, FitConfig, dict[str, Any]]:
    """The fitted model, its :class:`FitConfig` and the raw ``config.json`` of a run.

    Raises:
        DataError: the folder is not an acrobot run.
    """
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{run} is not a run directory (no config.json).")
    raw = load_json(cfg_path)
    if not isinstance(raw, dict) or raw.get("system") != SYSTEM:
        raise DataError(f"{run} is not an acrobot run (system {raw.get('system')!r}).")
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    config = FitConfig(**{k: v for k, v in raw.items() if k in fields})
    model = build_symoden(config.preset).to(_DTYPES[config.dtype])
    load_model_state(model, run, which)  # type: ignore[arg-type]
    model.eval()
    return model, config, raw


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """Test metrics of a run: window MSE, and the extrapolation over whole test trajectories
    (from each one's first state over all its points). Writes ``evaluation.json`` and plots.
    """
    from physid.evaluate import mse_over_time, plot_error_vs_time, plot_trajectories

    run = Path(run_dir)
    model, config, raw = load_run(run)
    splits = load_splits(
        raw.get("data_path") or _dataset_for(config),
        window=config.window,
        split_seed=config.split_seed,
        dtype=_DTYPES[config.dtype],
    )
    window_loss = _mean_loss(model, splits.test, splits.t_window, config)
    traj = splits.test_trajectories
    t_full = splits.t - splits.t[0]
    with torch.no_grad():
        pred = _predict(model, traj[:, 0], t_full, config).transpose(0, 1)
    err_t = mse_over_time(pred, traj)
    record = {
        "test_window_loss": window_loss,
        "test_trajectory_mse": float(err_t.mean()),
        "test_trajectory_mse_final": float(err_t[-1]),
        "horizon_seconds": float(t_full[-1]),
        "n_test_trajectories": int(traj.shape[0]),
    }
    plots = run / "plots"
    plot_error_vs_time(
        t_full.numpy(),
        {"SymODEN": err_t},
        plots / "test_error_vs_time.png",
        ylabel="MSE per channel",
        train_end=float(splits.t_window[-1]),
    )
    plot_trajectories(
        t_full.numpy(),
        traj[..., :6].numpy(),
        plots / "test_trajectory.png",
        pred=pred[..., :6].numpy(),
        labels=list(CHANNELS[:6]),
        train_end=float(splits.t_window[-1]),
    )
    save_json(run / "evaluation.json", record)
    return record


def render(source: str | Path, out: str | Path, *, trajectory: int = 0) -> Path:
    """An MP4 of an acrobot data set's trajectory, or of a run's prediction beside the truth.

    Args:
        source: a data set (``.npz``) or a run directory.
        out: the MP4 to write.
        trajectory: which (test) trajectory.
    """
    src = Path(source)
    if src.is_dir():
        model, config, raw = load_run(src)
        splits = load_splits(
            raw.get("data_path") or _dataset_for(config),
            window=config.window,
            split_seed=config.split_seed,
            dtype=_DTYPES[config.dtype],
        )
        if not 0 <= trajectory < len(splits.test_trajectories):
            raise ConfigError(f"trajectory must be in [0, {len(splits.test_trajectories)}).")
        truth = splits.test_trajectories[trajectory]
        with torch.no_grad():
            pred = _predict(model, truth[None, 0], splits.t - splits.t[0], config)[:, 0]
        true_states = sim.from_channels(truth.double())[0].numpy()
        pred_states = sim.from_channels(pred.double())[0].numpy()
        frames = [
            np.concatenate([sim.render_frame(a), sim.render_frame(b)], axis=1)
            for a, b in zip(true_states, pred_states, strict=True)
        ]
    else:
        ds = load_dataset(src)
        if ds.state_dim != sim.STATE_DIM:
            raise DataError(f"{src} is not an acrobot data set (state size {ds.state_dim}).")
        if not 0 <= trajectory < ds.n_trajectories:
            raise ConfigError(f"trajectory must be in [0, {ds.n_trajectories}).")
        frames = [sim.render_frame(s) for s in ds.y[trajectory]]
    return write_video(out, frames, round(1 / sim.CONTROL_PERIOD))


def render_dataset(dataset: str | Path, out: str | Path, *, trajectory: int = 0) -> Path:
    """An MP4 of one trajectory of an acrobot data set (see :func:`render`)."""
    if Path(dataset).is_dir():
        raise DataError(f"{dataset} is a folder, not a data set (.npz).")
    return render(dataset, out, trajectory=trajectory)


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
    run_dir: str | Path,
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
    model, config, _ = load_run(run_dir)
    out_dir = Path(out) if out is not None else Path(run_dir) / "control"
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
        extra={"controller": "learned", "run": str(run_dir), "method": config.method},
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
        extra={"controller": "oracle"},
    )
