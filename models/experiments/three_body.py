"""The three-body experiment of the ACA paper (Zhuang et al. 2020, Table 5), end to end.

- Data: the true system (:mod:`envs.three_body`, DOP853 at 1e-12) on the training grid (1000
  points on [0, 1]) and the test grid (2000 points half a training step off it, covering
  [0, 2], t[0] = 0). :func:`simulate` writes both as one physid data set (merged time grid).
- Models: ``ode`` (the known form, 3 unknown masses), ``node`` (augmented-input neural ODE),
  ``lstm`` and ``lstm-aug`` (sequence baselines).
- :func:`fit` follows the reference code: Adam (lr 0.1, betas (0.5, 0.5)), lr x 0.95 before
  every step, 100 full-batch epochs, loss = mean over training times of 0.01^t x the squared
  position error summed over the 9 coordinates; the kept model is the one with the lowest
  unweighted training error. LSTMs: lr 0.01 x 0.999 per epoch, 5000 epochs, windows of 20.
- Metric: mean over the test times of the squared position error summed over the 9 coordinates
  (:func:`position_mse`).
- :class:`ThreeBody` is the system's experiment (the registry's ``three-body``): its
  ``simulate``, ``fit``, ``evaluate`` and ``render`` are what ``physid`` runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from physid.envs.three_body import (
    ThreeBodyParams,
    default_initial_state,
    eval_times,
    random_system,
    train_times,
)
from physid.envs.three_body import simulate as simulate_truth
from physid.models.known_form import KnownFormThreeBody
from physid.models.lstm import LSTMBaseline
from physid.models.node import NODE_SCALINGS, AugmentedNODE, PairwiseNODE
from torch import nn

import physid
from physid.data import TrajectoryDataset, load_dataset, make_metadata, windows
from physid.errors import ConfigError, DataError
from physid.experiment import DTYPES, AbstractExperiment, BaseConfig, SimulateOptions, option
from physid.render import write_video
from physid.runs import RunDir, RunSummary
from physid.training import (
    TrainResult,
    load_checkpoint,
    load_model_state,
    train,
    train_least_squares,
)

__all__ = [
    "SYSTEM",
    "ENV_ID",
    "MODELS",
    "PAPER_TABLE5",
    "ThreeBodyData",
    "make_data",
    "simulate",
    "load_data",
    "position_mse",
    "training_loss",
    "FitConfig",
    "SimulateConfig",
    "ThreeBody",
    "build_model",
    "load_run",
    "predict",
    "force_law",
]

SYSTEM = "three-body"
ENV_ID = "physid/ThreeBody-v0"
MODELS = ("ode", "node", "node-pair", "lstm", "lstm-aug")
ODE_MODELS = ("ode", "node", "node-pair")
OPTIMIZERS = ("auto", "lm", "adam")
# Options added after runs were made, with the value those runs behaved as (resume compares).
RESUME_ADDED: dict[str, Any] = {"node_scaling": "none", "optimizer": "adam"}
# Adam learning rate when none is given: the paper's 0.1, except for node-pair, whose
# force-law coefficients multiply d/|d|^3 (up to 356 at the close encounter): at 0.1 all three
# seeds tried stall at a training MSE of 0.13-0.38 (README, "A NODE that extrapolates").
DEFAULT_LR = {"ode": 0.1, "node": 0.1, "node-pair": 0.01}
TRUTH_TOL = 1e-12
POSITION_LABELS = tuple(f"{axis}{i}" for i in (1, 2, 3) for axis in "xyz")

PAPER_TABLE5: dict[str, tuple[float, float]] = {
    "lstm": (0.59, 0.12),
    "lstm-aug": (0.49, 0.06),
    "node-adjoint": (3.47, 0.67),
    "node-naive": (0.21, 0.11),
    "node-aca": (0.16, 0.06),
    "ode-adjoint": (0.0025, 0.0012),
    "ode-naive": (0.0025, 0.0013),
    "ode-aca": (0.0007, 0.0005),
}
"""Test MSE (mean, std over 3 runs) of Zhuang et al. 2020, Table 5."""


# ---- data -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ThreeBodyData:
    """Ground truth of one system on the training and test grids.

    Attributes:
        params: the true system.
        t_train: ``(1000,)``; y_train: ``(1000, 18)``.
        t_test: ``(2000,)``; y_test: ``(2000, 18)``.
    """

    params: ThreeBodyParams
    t_train: np.ndarray
    y_train: np.ndarray
    t_test: np.ndarray
    y_test: np.ndarray

    @property
    def y0(self) -> np.ndarray:
        """The initial state ``(18,)``."""
        return self.y_train[0]

    @property
    def train_end(self) -> float:
        return float(self.t_train[-1])


def _grids(n_train: int, n_test: int, train_end: float) -> tuple[np.ndarray, np.ndarray]:
    return train_times(n_train, train_end), eval_times(n_test, n_train, train_end)


def make_data(
    params: ThreeBodyParams | None = None,
    y0: np.ndarray | None = None,
    *,
    n_train: int = 1000,
    n_test: int = 2000,
    train_end: float = 1.0,
    rtol: float = TRUTH_TOL,
    atol: float = TRUTH_TOL,
) -> ThreeBodyData:
    """Simulate the true system on the training and test grids (default: the paper's system)."""
    params = params if params is not None else ThreeBodyParams()
    y0 = default_initial_state() if y0 is None else np.asarray(y0, dtype=np.float64)
    t_train, t_test = _grids(n_train, n_test, train_end)
    merged = np.union1d(t_train, t_test)
    y = simulate_truth(params, y0, merged, rtol=rtol, atol=atol)
    return ThreeBodyData(
        params=params,
        t_train=t_train,
        y_train=y[np.searchsorted(merged, t_train)],
        t_test=t_test,
        y_test=y[np.searchsorted(merged, t_test)],
    )


def _systems(seed: int | None, n_trajectories: int) -> list[tuple[ThreeBodyParams, np.ndarray]]:
    if n_trajectories < 1:
        raise ConfigError(f"n_trajectories must be >= 1, got {n_trajectories}.")
    if seed is None:
        if n_trajectories != 1:
            raise ConfigError("several trajectories need --seed (random systems from a seed).")
        return [(ThreeBodyParams(), default_initial_state())]
    return [random_system(seed + i) for i in range(n_trajectories)]


def default_data_path(seed: int | None, n_trajectories: int = 1) -> Path:
    """Where :func:`simulate` writes by default."""
    name = (
        "paper"
        if seed is None
        else f"seed{seed}" + (f"-n{n_trajectories}" if n_trajectories > 1 else "")
    )
    return Path("data") / f"three-body-{name}.npz"


def simulate(
    out: str | Path | None = None,
    *,
    seed: int | None = None,
    n_trajectories: int = 1,
    n_train: int = 1000,
    n_test: int = 2000,
    train_end: float = 1.0,
    rtol: float = TRUTH_TOL,
    atol: float = TRUTH_TOL,
) -> Path:
    """Simulate three-body data and write it as a physid data set.

    Args:
        out: the ``.npz`` to write (default ``data/three-body-paper.npz`` or
            ``data/three-body-seed{seed}.npz``).
        seed: ``None``: the paper's system (masses 1.1, 1.1, 0.9 and its initial state);
            an integer: random unequal-mass systems from seeds ``seed, seed + 1, ...``
            (:func:`envs.three_body.random_system`).
        n_trajectories: number of systems (one trajectory each).
        n_train, n_test, train_end: the grids (see :func:`envs.three_body.eval_times`).
        rtol, atol: DOP853 tolerances of the ground truth.

    Returns:
        the path written. ``t`` is the union of the two grids, ``y`` ``(n, len(t), 18)``; the
        metadata holds each system's parameters and the grid sizes (:func:`load_data` splits).
    """
    systems = _systems(seed, n_trajectories)
    t_train, t_test = _grids(n_train, n_test, train_end)
    merged = np.union1d(t_train, t_test)
    ys = np.stack([simulate_truth(p, y0, merged, rtol=rtol, atol=atol) for p, y0 in systems])
    path = Path(out) if out is not None else default_data_path(seed, n_trajectories)
    ds = TrajectoryDataset(
        t=merged,
        y=ys,
        metadata=make_metadata(
            simulator=ENV_ID,
            params=[p.to_dict() for p, _ in systems],
            seed=seed,
            rtol=rtol,
            atol=atol,
            system=SYSTEM,
            integrator="scipy DOP853",
            n_train=n_train,
            n_test=n_test,
            train_end=train_end,
            state=[
                *(f"r{i}_{a}" for i in (1, 2, 3) for a in "xyz"),
                *(f"v{i}_{a}" for i in (1, 2, 3) for a in "xyz"),
            ],
        ),
    )
    return ds.save(path)


def load_data(path: str | Path, trajectory: int = 0) -> ThreeBodyData:
    """Read one system of a data set written by :func:`simulate`.

    Raises:
        DataError: not a three-body data set, or its grids do not match its metadata.
        ConfigError: ``trajectory`` out of range.
    """
    ds = load_dataset(path)
    meta = ds.metadata
    if meta.get("system") != SYSTEM or ds.state_dim != 18:
        raise DataError(f"{path} is not a three-body data set (system {meta.get('system')!r}).")
    if not 0 <= trajectory < ds.n_trajectories:
        raise ConfigError(f"trajectory must be in [0, {ds.n_trajectories}), got {trajectory}.")
    t_train, t_test = _grids(int(meta["n_train"]), int(meta["n_test"]), float(meta["train_end"]))
    t = ds.t if ds.t.ndim == 1 else ds.t[trajectory]
    i_train, i_test = np.searchsorted(t, t_train), np.searchsorted(t, t_test)
    if (
        i_train.max() >= len(t)
        or i_test.max() >= len(t)
        or not (np.array_equal(t[i_train], t_train) and np.array_equal(t[i_test], t_test))
    ):
        raise DataError(f"{path}: the time grid does not hold the training and test grids.")
    p = meta["params"][trajectory]
    params = ThreeBodyParams(masses=tuple(p["masses"]), k1=p["k1"], k2=p["k2"])
    y = ds.y[trajectory]
    return ThreeBodyData(params, t_train, y[i_train], t_test, y[i_test])


def position_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over time of the squared position error summed over the 9 coordinates.

    Args:
        pred, truth: ``(T, 18)`` states or ``(T, 9)`` positions.
    """
    return float(np.mean(_position_sq_error(pred, truth)))


def training_loss(
    pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, weight_base: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference code's training loss: mean over time of ``weight_base**t`` x the squared
    position error summed over the 9 coordinates.

    Args:
        pred, target: ``(T, 18)`` states or ``(T, 9)`` positions; t: ``(T,)``.

    Returns:
        ``(loss, squared_error)``; ``squared_error`` ``(T,)`` is unweighted (its mean is the
        unweighted training error).
    """
    sq = (pred[..., :9] - target[..., :9]).pow(2).sum(-1)
    return (weight_base**t * sq).mean(), sq


def _position_sq_error(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)[..., :9]
    y = np.asarray(truth, dtype=np.float64)[..., :9]
    return np.sum((p - y) ** 2, axis=-1)


# ---- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateConfig(SimulateOptions):
    """Options of ``physid simulate three-body``."""

    seed: int | None = option(
        None, help="Random unequal-mass systems from this seed (default: the paper's system)."
    )
    n_trajectories: int = option(1, help="Systems to simulate (more than one needs --seed).")
    n_train: int = option(1000, help="Training points on [0, train_end].")
    n_test: int = option(2000, help="Test points on [0, 2 train_end].")
    train_end: float = option(1.0, help="End of the training window.")

    def check(self) -> None:
        if self.n_trajectories < 1:
            raise ConfigError(f"n_trajectories must be >= 1, got {self.n_trajectories}.")
        if self.n_train < 2 or self.n_test < 2 or not self.train_end > 0:
            raise ConfigError("n_train and n_test must be >= 2 and train_end positive.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(BaseConfig):
    """Every option of a three-body fit (all recorded in the run's ``config.json``).

    The shared options (method, solver, tolerances, seed, device, dtype, threads, epochs, run
    directory, resume, time limit, progress) are :class:`~physid.experiment.BaseConfig`'s; the
    defaults here follow the paper's protocol.

    Attributes:
        model: ``ode`` (3 unknown masses), ``node`` (the paper's augmented-input NODE),
            ``node-pair`` (:class:`physid.models.node.PairwiseNODE`: learned central pair
            forces, not in the paper), ``lstm`` or ``lstm-aug``.
        method: gradient method of the ODE models; ignored by LSTMs. ``auto`` (the default)
            resolves to ``forward`` for ``ode`` (and Levenberg-Marquardt), else ``aca``.
        optimizer: ``lm``: Levenberg-Marquardt on the residuals of the training loss, with
            forward-sensitivity Jacobians (``ode`` only, ``method="forward"``; one record per
            iteration in ``metrics.jsonl``; the summary adds the final Jacobian's singular
            values and the masses' standard errors); ``adam``: the paper's optimiser.
            ``auto`` (the default) resolves to ``lm`` for ``ode`` unless ``method`` names a
            reverse-mode method, else ``adam``; ``physid fit three-body --method aca`` is the
            paper's Adam fit. The resolved values are recorded.
        lm_iterations: the Levenberg-Marquardt budget (trial steps; ``epochs`` is Adam's);
            a resumed run may raise it.
        solver, rtol, atol, max_steps: the training solve. The default 1e-7 (the paper used
            1e-5) comes from ``scripts/three_body_gradient_vs_tol.py``: with a 0.1% error in one
            mass, dopri5 at 1e-5 gets the loss wrong by a factor 4 (its own error dominates)
            and the mass gradient by 175%; at 1e-7 by 0.3% and 1%, for about twice the NFE.
            The solver alone then costs a test MSE of ~1e-8 (2e-4 at 1e-5).
        eval_rtol, eval_atol: tolerances of the test solve (``None``: the training ones).
        epochs, lr, betas, lr_decay: Adam for the ODE models (the reference: 100, 0.1,
            (0.5, 0.5), 0.95 applied before every step). ``lr=None``: :data:`DEFAULT_LR` of
            the model (0.1; 0.01 for ``node-pair``); the resolved value is recorded.
        loss_weight_base: the loss weights the error at time t by ``base**t`` (0.01).
        node_scaling: conditioning of the NODE's network (``NODE_SCALINGS``): ``none`` is the
            paper's; ``inputs`` divides each block of augmented inputs by its RMS over the
            training data (the d/|d|^3 block reaches 325 at the close encounter, which
            saturates tanh at once with lr 0.1); ``inputs+outputs`` also scales the output by
            the RMS acceleration. Fixed buffers, same 5,509 parameters.
        lstm_epochs, lstm_lr, lstm_betas, lstm_lr_decay, lstm_hidden, lstm_window,
            lstm_context, lstm_dtype: the LSTM baselines (5000 epochs, lr 0.01 x 0.999 per
            epoch, windows of 20 points, rollout from the first 10; float32, 2.4x faster than
            float64 on the CPU, about 0.12 s per epoch).
        system_seed: ``None``: the paper's system; an integer: a random unequal-mass system.
        data, trajectory: an existing data set (from ``physid simulate three-body``) and the
            system in it, instead of simulating.
        plots: write the evaluation plots at the end of the fit.
    """

    system: ClassVar[str] = SYSTEM
    MODELS: ClassVar[tuple[str, ...]] = MODELS
    RESUME_IGNORE: ClassVar[tuple[str, ...]] = (
        *BaseConfig.RESUME_IGNORE,
        "lstm_epochs",
        "lm_iterations",
        "plots",
    )
    RECORD_KEYS: ClassVar[tuple[str, ...]] = (*BaseConfig.RECORD_KEYS, "true_masses")

    model: str = option(
        "ode",
        help="ode (unknown masses), node (the paper's), node-pair (learned pair forces), "
        "lstm or lstm-aug.",
        choices=MODELS,
    )
    method: str = option(
        "auto",
        help="Gradient method: naive, adjoint, seminorm, aca or forward; auto (default): forward "
        "for --model ode (with Levenberg-Marquardt), aca otherwise.",
        choices=lambda: ("auto", *physid.GRADIENT_METHODS),
    )
    optimizer: str = option(
        "auto",
        help="lm (Levenberg-Marquardt on forward-sensitivity Jacobians; --model ode only) or "
        "adam (the paper's); auto (default): lm for --model ode unless --method names a "
        "reverse-mode method (naive, adjoint, seminorm, aca), adam otherwise.",
        choices=OPTIMIZERS,
    )
    lm_iterations: int = option(
        50, help="Most Levenberg-Marquardt iterations (trial steps; --optimizer lm)."
    )
    compile: bool = option(
        True,
        help="Solve through the compiled fast path (default: on; measured: the main job "
        "47 s with an empty compile cache, 13 s warm, 77 s eager; docs/fast-path.md). Adam "
        "only: LM's forward-sensitivity solves have no compiled form.",
    )
    rtol: float = option(1e-7, help="Relative tolerance of the training solves.")
    atol: float = option(1e-7, help="Absolute tolerance of the training solves.")
    max_steps: int = option(100_000, help="Most steps of one solve.")
    eval_rtol: float | None = option(None, help="Test-solve rtol (default: --rtol).")
    eval_atol: float | None = option(None, help="Test-solve atol (default: --atol).")
    epochs: int = option(100, help="Epochs (ode, node, node-pair).")
    lr: float | None = option(None, help="Adam learning rate (default 0.1; node-pair 0.01).")
    betas: tuple[float, float] = option((0.5, 0.5), help="Adam betas (ode, node, node-pair).")
    lr_decay: float = option(0.95, help="Learning-rate factor per epoch (ode, node, node-pair).")
    loss_weight_base: float = option(0.01, help="The loss weights time t by BASE**t.")
    node_scaling: str = option(
        "none",
        help="NODE conditioning: none (the paper), inputs, inputs+outputs.",
        choices=NODE_SCALINGS,
    )
    lstm_epochs: int = option(5000, help="Epochs (lstm, lstm-aug).")
    lstm_lr: float = option(0.01, help="Learning rate (lstm).")
    lstm_betas: tuple[float, float] = option((0.9, 0.999), help="Adam betas (lstm).")
    lstm_lr_decay: float = option(0.999, help="Learning-rate factor per epoch (lstm).")
    lstm_hidden: int = option(64, help="LSTM width.")
    lstm_window: int = option(20, help="LSTM training window (points).")
    lstm_context: int = option(10, help="Points an LSTM rollout starts from.")
    lstm_dtype: str = option("float32", help="LSTM floating-point type.", choices=tuple(DTYPES))
    system_seed: int | None = option(
        None, help="Fit a random system from this seed (default: the paper's)."
    )
    data: str | None = option(None, help="A data set from 'physid simulate three-body'.")
    trajectory: int = option(0, help="Which system of --data.")
    plots: bool = option(True, help="Write the evaluation plots.")

    def resolve(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.lr is None:
            out["lr"] = DEFAULT_LR.get(self.model, DEFAULT_LR["node"])
        method, optimizer = self.method, self.optimizer
        if method == "auto":
            method = "forward" if self.model == "ode" and optimizer != "adam" else "aca"
        if optimizer == "auto":
            optimizer = "lm" if self.model == "ode" and method == "forward" else "adam"
        return {**out, "method": method, "optimizer": optimizer}

    def check(self) -> None:
        positive = ("lr", "lstm_lr", "loss_weight_base")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("eval_rtol", "eval_atol"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}.")
        for name in ("lr_decay", "lstm_lr_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}.")
        if self.lstm_epochs < 1 or self.max_steps < 1 or self.lstm_hidden < 1:
            raise ConfigError("lstm_epochs, lstm_hidden and max_steps must be at least 1.")
        if self.trajectory < 0:
            raise ConfigError(f"trajectory must be >= 0, got {self.trajectory}.")
        for name in ("betas", "lstm_betas"):
            b = getattr(self, name)
            if not all(0 <= x < 1 for x in b):
                raise ConfigError(f"{name} must be two numbers in [0, 1), got {b}.")
        if self.node_scaling != "none" and self.model != "node":
            raise ConfigError("node_scaling applies to the node model only.")
        if not 2 <= self.lstm_context < self.lstm_window:
            raise ConfigError("lstm_context must be >= 2 and smaller than lstm_window.")
        if self.optimizer == "lm" and self.model != "ode":
            raise ConfigError(
                f"--optimizer lm fits the known-form model (--model ode) only; the {self.model} "
                "model has too many parameters for it: use --optimizer adam."
            )
        if self.optimizer == "lm" and self.method != "forward":
            raise ConfigError(
                f"--optimizer lm takes its Jacobians from forward sensitivities, not from "
                f"--method {self.method}: use --method forward (or leave --method out), or "
                "--optimizer adam."
            )
        if self.lm_iterations < 1:
            raise ConfigError(f"lm_iterations must be at least 1, got {self.lm_iterations}.")

    @property
    def is_ode(self) -> bool:
        """``ode``, ``node`` and ``node-pair`` are solved with ``physid.odeint``; LSTMs not."""
        return self.model in ODE_MODELS

    @property
    def name(self) -> str:
        """``model-method`` for the ODE models fitted by Adam, ``model-lm`` for
        Levenberg-Marquardt, ``model`` for LSTMs (Table 5's rows)."""
        if self.optimizer == "lm":
            return f"{self.model}-lm"
        return f"{self.model}-{self.method}" if self.is_ode else self.model

    @property
    def model_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype if self.is_ode else self.lstm_dtype]


def build_model(config: FitConfig) -> nn.Module:
    """A fresh model for ``config`` (seeded by ``config.seed``), on the CPU, in ``dtype``
    (ODE models) or ``lstm_dtype`` (LSTMs)."""
    dtype = config.model_dtype
    torch.manual_seed(config.seed)
    if config.model == "ode":
        return KnownFormThreeBody(generator=torch.Generator().manual_seed(config.seed), dtype=dtype)
    if config.model == "node":
        return AugmentedNODE(dtype=dtype)
    if config.model == "node-pair":
        return PairwiseNODE(dtype=dtype)
    return LSTMBaseline(aug=config.model == "lstm-aug", hidden=config.lstm_hidden, dtype=dtype)


def _data_for(config: FitConfig) -> ThreeBodyData:
    return _cached_data(config.data, config.trajectory, config.system_seed)


@functools.lru_cache(maxsize=4)
def _cached_data(data: str | None, trajectory: int, system_seed: int | None) -> ThreeBodyData:
    """The ground truth of a fit (deterministic: simulated once per process and kept)."""
    if data is not None:
        return load_data(data, trajectory)
    if system_seed is None:
        return make_data()
    params, y0 = random_system(system_seed)
    return make_data(params, y0)


# ---- fitting ----------------------------------------------------------------------------------


def _solve(
    model: nn.Module,
    y0: torch.Tensor,
    t: torch.Tensor,
    config: FitConfig,
    stats: physid.SolveStats | None = None,
    *,
    evaluation: bool = False,
) -> torch.Tensor:
    rtol = (config.eval_rtol if evaluation else None) or config.rtol
    atol = (config.eval_atol if evaluation else None) or config.atol
    return physid.odeint(
        model,
        y0,
        t,
        method=config.method,
        solver=config.solver,
        rtol=rtol,
        atol=atol,
        max_steps=config.max_steps,
        stats=stats,
        # LM's forward-sensitivity solves have no compiled form: its runs stay eager throughout
        compile=config.compile and config.is_ode and config.optimizer == "adam",
    )


def _train(config: FitConfig, run: RunDir) -> TrainResult:
    """Fit one model to the three-body data into ``run`` (no evaluation).

    The run directory gets ``config.json``, ``metrics.jsonl`` (per epoch: weighted ``loss``,
    unweighted ``train_mse`` after the step, forward/backward NFE and steps of the training
    solve, ``train_seconds`` of forward + backward + step) and ``model.pt`` (best by
    ``train_mse``, and last).
    """
    if config.optimizer == "lm":
        return _train_lm(config, run)
    device = config.torch_device()
    dtype = config.model_dtype
    data = _data_for(config)
    model = build_model(config)
    if isinstance(model, AugmentedNODE):
        model.set_scaling(
            config.node_scaling, torch.as_tensor(data.t_train), torch.as_tensor(data.y_train)
        )
    model = model.to(device)

    if config.is_ode:
        epochs, lr, betas, decay = config.epochs, config.lr, config.betas, config.lr_decay
    else:
        epochs, lr = config.lstm_epochs, config.lstm_lr
        betas, decay = config.lstm_betas, config.lstm_lr_decay
    optimizer = torch.optim.Adam(model.parameters(), lr=float(lr or 0.0), betas=betas)
    make_epoch_fn = _ode_epoch_fn if config.is_ode else _lstm_epoch_fn
    epoch_fn = make_epoch_fn(model, optimizer, data, config, device, dtype)
    # The reference multiplies the learning rate by the decay before every step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: decay ** (e + 1))
    return train(
        model,
        epoch_fn,
        optimizer=optimizer,
        epochs=epochs,
        run_dir=run,
        config={**config.to_dict(), "true_masses": list(data.params.masses)},
        scheduler=scheduler,
        select_metric="train_mse",
        resume=config.resume,
        resume_ignore=config.RESUME_IGNORE,
        resume_added=RESUME_ADDED,
        progress=config.progress,
        description=f"three-body {config.name}",
        time_limit=config.time_limit,
    )


def _train_lm(config: FitConfig, run: RunDir) -> TrainResult:
    """Fit the known-form model's masses by Levenberg-Marquardt into ``run`` (no evaluation).

    The residuals are ``sqrt(base**t / T) (r(t) - r_data(t))`` over the training times and the
    9 position coordinates, so their squared norm is the Adam path's training loss
    (:func:`training_loss`); the Jacobian comes from one forward-sensitivity solve per
    iteration (:class:`physid.ShootingResiduals`, :func:`physid.odeint_jacobian`), the masses
    stay positive through ``log`` (``lower=0``). ``metrics.jsonl`` gets one record per
    iteration (:func:`physid.training.train_least_squares`) with ``train_mse`` (unweighted, at
    the current masses), ``masses`` and the solves' counts; ``model.pt`` the LM state, so that
    ``--resume`` continues the fit.
    """
    device = config.torch_device()
    dtype = config.model_dtype
    data = _data_for(config)
    model = build_model(config)
    if not isinstance(model, KnownFormThreeBody):
        raise ConfigError("--optimizer lm fits the known-form model (--model ode) only.")
    model = model.to(device)
    t = torch.as_tensor(data.t_train, dtype=dtype, device=device)
    y = torch.as_tensor(data.y_train, dtype=dtype, device=device)
    weights = config.loss_weight_base**t / len(t)
    stats = physid.SolveStats()
    residuals = physid.ShootingResiduals(
        model,
        t,
        y[:, :9],
        observe=torch.eye(18, dtype=dtype, device=device)[:9],
        weights=weights,
        y0=y[0],
        solver=config.solver,
        rtol=config.rtol,
        atol=config.atol,
        max_steps=config.max_steps,
        stats=stats,
    )
    root_w = weights.sqrt()[:, None]
    # train_mse: unweighted, at the current point (the first evaluation's, then each accepted
    # trial's); counts: the solves' totals at the previous record
    seen: dict[str, Any] = {"calls": 0, "trial_mse": math.nan, "counts": stats.as_dict()}

    def fun(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, jac = residuals(x)
        seen["trial_mse"] = float((r.reshape(len(t), 9) / root_w).pow(2).sum(-1).mean())
        if seen["calls"] == 0:
            seen["mse"] = seen["trial_mse"]
        seen["calls"] += 1
        return r, jac

    def record(it: Any) -> dict[str, Any]:
        if it is not None and it.accepted:
            seen["mse"] = seen["trial_mse"]
        counts = stats.as_dict()
        delta = {k: v - seen["counts"][k] for k, v in counts.items()}
        seen["counts"] = counts
        masses = it.x if it is not None else model.masses.detach().cpu().tolist()
        return {"train_mse": seen["mse"], "masses": list(masses), **delta}

    def set_params(x: torch.Tensor) -> None:
        with torch.no_grad():
            model.masses.copy_(x.to(model.masses))

    return train_least_squares(
        model,
        fun,
        model.masses.detach().clone(),
        set_params=set_params,
        run_dir=run,
        config={**config.to_dict(), "true_masses": list(data.params.masses)},
        lower=0.0,
        options=physid.LMOptions(max_iterations=config.lm_iterations),
        record_fn=record,
        resume=config.resume,
        resume_ignore=config.RESUME_IGNORE,
        resume_added=RESUME_ADDED,
        progress=config.progress,
        description=f"three-body {config.name}",
        time_limit=config.time_limit,
    )


def _ode_epoch_fn(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ThreeBodyData,
    config: FitConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> Any:
    t = torch.as_tensor(data.t_train, dtype=dtype, device=device)
    target = torch.as_tensor(data.y_train[:, :9], dtype=dtype, device=device)
    y0 = torch.as_tensor(data.y0, dtype=dtype, device=device)

    def epoch_fn(epoch: int) -> dict[str, Any]:
        stats = physid.SolveStats()
        t0 = time.perf_counter()
        pred = _solve(model, y0, t, config, stats)
        loss, sq = training_loss(pred, target, t, config.loss_weight_base)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_seconds = time.perf_counter() - t0
        with torch.no_grad():
            after = _solve(model, y0, t, config)
            train_mse = (after[:, :9] - target).pow(2).sum(-1).mean()
        record: dict[str, Any] = {
            "loss": float(loss.detach()),
            "train_mse": float(train_mse),
            "train_mse_before_step": float(sq.detach().mean()),
            "train_seconds": train_seconds,
            **stats.as_dict(),
        }
        if isinstance(model, KnownFormThreeBody):
            record["masses"] = model.masses.detach().cpu().tolist()
        return record

    return epoch_fn


def _lstm_windows(
    data: ThreeBodyData, config: FitConfig, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    positions = torch.as_tensor(data.y_train[None, :, :9], dtype=dtype, device=device)
    return windows(positions, config.lstm_window)


def _lstm_epoch_fn(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ThreeBodyData,
    config: FitConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> Any:
    if not isinstance(model, LSTMBaseline):
        raise ConfigError("the LSTM epoch needs an LSTMBaseline.")
    w = _lstm_windows(data, config, device, dtype)
    model.fit_normalisation(w)

    def window_mse(pred: torch.Tensor) -> torch.Tensor:
        return (pred[:, :-1] - w[:, 1:]).pow(2).sum(-1).mean()

    def epoch_fn(epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        loss = window_mse(model(w))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_seconds = time.perf_counter() - t0
        with torch.no_grad():
            train_mse = window_mse(model(w))
        return {
            "loss": float(loss.detach()),
            "train_mse": float(train_mse),
            "train_seconds": train_seconds,
        }

    return epoch_fn


# ---- runs -------------------------------------------------------------------------------------


def load_run(run_dir: str | Path | RunDir, which: str = "best") -> tuple[nn.Module, FitConfig]:
    """The fitted model (``best`` or ``last``) and the :class:`FitConfig` of a run.

    Raises:
        DataError: the folder is not a three-body run, or has no checkpoint.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = FitConfig.from_run(run)
    model = build_model(config)
    load_model_state(model, run, "last" if which == "last" else "best")
    model.eval()
    return model, config


def predict(model: nn.Module, config: FitConfig, data: ThreeBodyData) -> np.ndarray:
    """Positions ``(len(t_test), 9)`` predicted on the test grid.

    ODE models are solved from the true initial state with the run's solver (at
    ``eval_rtol``/``eval_atol``). LSTMs are rolled out on the training grid's step from the
    first ``lstm_context`` training points, then linearly interpolated to the test times.
    """
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        if config.is_ode:
            t = torch.as_tensor(data.t_test, dtype=dtype)
            y0 = torch.as_tensor(data.y0, dtype=dtype)
            return _solve(model, y0, t, config, evaluation=True)[:, :9].numpy()
        if not isinstance(model, LSTMBaseline):
            raise ConfigError("an LSTM run must hold an LSTMBaseline.")
        h = float(data.t_train[1] - data.t_train[0])
        k = config.lstm_context
        n_total = int(math.ceil(data.t_test[-1] / h - 1e-9)) + 1
        first = torch.as_tensor(data.y_train[:k, :9], dtype=dtype)
        traj = model.rollout(first, max(n_total - k, 0)).to(torch.float64).numpy()
        grid = data.t_train[0] + h * np.arange(traj.shape[0])
        return np.stack([np.interp(data.t_test, grid, traj[:, i]) for i in range(9)], -1)


def _evaluate(config: FitConfig, run: RunDir, totals: dict[str, Any]) -> RunSummary:
    """Test metrics and plots of a run (its best model).

    ``test_mse`` is on the test grid over [0, 2]; the extras add ``test_mse_interp`` ([0, 1])
    and ``test_mse_extrap`` ((1, 2]), ``train_mse`` (best epoch, unweighted; for LSTMs the
    teacher-forced one-step error on the training windows), ``train_seconds`` (forward +
    backward + optimiser step, summed over epochs), the solve's step counts, and for ``ode``
    the learned ``masses``, ``true_masses`` and ``mass_rel_error`` (``force_rel_error`` for
    ``node-pair``). Plots: ``trajectories.png`` (the 9 coordinates), ``trajectories_3d.png``,
    ``error_vs_time.png``, ``loss.png`` (from training).
    """
    model, _ = load_run(run)
    data = _data_for(config)
    pred = predict(model, config, data)
    sq = _position_sq_error(pred, data.y_test)
    inside = data.t_test <= data.train_end
    records = run.read_metrics()
    extras: dict[str, Any] = {
        "name": config.name,
        "solver": config.solver,
        "rtol": config.rtol,
        "atol": config.atol,
        "test_mse_interp": float(sq[inside].mean()),
        "test_mse_extrap": float(sq[~inside].mean()),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": float(
            sum(float(r.get("train_seconds", r.get("seconds", 0.0))) for r in records)
        ),
    }
    for key in ("steps_accepted", "steps_rejected", "backward_steps_accepted"):
        extras[key] = int(sum(int(r.get(key, 0)) for r in records))
    extras["backward_steps_rejected"] = int(
        sum(int(r.get("backward_steps_rejected", 0)) for r in records)
    )
    train_mse = None
    if records:
        # LM's model is its last point (it never accepts a step that raises the loss)
        lm = config.optimizer == "lm"
        best = records[-1] if lm else min(records, key=lambda r: float(r["train_mse"]))
        extras["best_epoch"] = int(best["epoch"])
        train_mse = float(best["train_mse"])
    extras["optimizer"] = config.optimizer
    if config.optimizer == "lm":
        report = load_checkpoint(run).get("lm_report")
        if report:
            # the final Jacobian's singular values and the masses' standard errors (from JᵀJ)
            for key in ("status", "iterations", "evaluations", "singular_values", "rank"):
                extras["lm_" + key if key != "singular_values" else key] = report[key]
            extras["std_errors"] = report["std_errors"]
            extras["residual_variance"] = report["residual_variance"]
            extras["covariance"] = report["covariance"]
            extras["singular_vectors"] = report["singular_vectors"]
    if isinstance(model, KnownFormThreeBody):
        masses = model.masses.detach().cpu().numpy()
        true = np.asarray(data.params.masses)
        extras["masses"] = masses.tolist()
        extras["true_masses"] = true.tolist()
        extras["mass_rel_error"] = (np.abs(masses - true) / true).tolist()
    law = force_law(model, data) if isinstance(model, PairwiseNODE) else None
    if law is not None:
        extras["force_rel_error"] = law["rel_error_rms"]
        extras["force_rel_error_train"] = law["rel_error_rms_train"]
    if config.plots:
        _plot_run(run.path, config, data, pred, sq)
        if law is not None:
            _plot_force_law(law, run.plots / "force_law.png", config)
    return RunSummary(
        system=SYSTEM,
        model=config.model,
        method=config.method if config.is_ode else None,
        seed=config.seed,
        test_mse=float(sq.mean()),
        train_mse=train_mse,
        **totals,
        extras=extras,
    )


_PAIR_NAMES = ("1←2", "1←3", "2←1", "2←3", "3←1", "3←2")


def force_law(model: PairwiseNODE, data: ThreeBodyData) -> dict[str, Any]:
    """The learned pair force of a ``node-pair`` model against Newton's.

    Newton's law in the model's terms is ``c1 + c2/r + c3/r^2 = m_j / r^2`` for the force on
    ``i`` from ``j`` (per K1). Returns the learned and true values on the true test trajectory
    (where the model is used) and on a distance grid, and ``rel_error_rms``: the RMS relative
    error over the test trajectory's (time, pair) points (``_train``: over t <= train_end).
    """
    dtype = model.pair_codes.dtype
    bodies = torch.as_tensor(data.y_test[:, :9], dtype=dtype).reshape(-1, 3, 3)
    i, j = model.i.cpu(), model.j.cpu()
    masses = torch.as_tensor(data.params.masses, dtype=dtype)[j]

    with torch.no_grad():
        dist = torch.linalg.vector_norm(bodies[:, j] - bodies[:, i], dim=-1)  # (T, 6)
        magnitude = model.force_magnitude(dist.unsqueeze(-1)).squeeze(-1)
        rel = (magnitude * dist**2 / masses - 1.0).numpy()
        grid = torch.as_tensor(
            np.geomspace(float(dist.min()) / 1.5, float(dist.max()) * 1.5, 200), dtype=dtype
        )
        learned = model.force_magnitude(grid[:, None, None].expand(-1, 6, 1)).squeeze(-1)
    inside = data.t_test <= data.train_end
    train_dist = dist.numpy()[inside]
    return {
        "pairs": list(_PAIR_NAMES),
        "masses": masses.tolist(),
        "grid": grid.numpy(),
        "learned": learned.numpy(),  # (200, 6)
        "train_range": (float(train_dist.min()), float(train_dist.max())),
        "rel_error_rms": float(np.sqrt(np.mean(rel**2))),
        "rel_error_rms_train": float(np.sqrt(np.mean(rel[inside] ** 2))),
    }


def _plot_force_law(law: dict[str, Any], path: Path, config: FitConfig) -> None:
    from matplotlib.figure import Figure

    from physid._io import atomic_write

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    grid = law["grid"]
    for k, (name, mass) in enumerate(zip(law["pairs"], law["masses"], strict=True)):
        (line,) = ax.plot(grid, law["learned"][:, k] * grid**2, lw=1.3, label=f"force on {name}")
        ax.axhline(mass, color=line.get_color(), ls=":", lw=1)
    ax.axvspan(*law["train_range"], color="grey", alpha=0.15, label="distances in [0, 1]")
    ax.set_xscale("log")
    ax.set_xlabel("pair distance r")
    ax.set_ylabel("learned pair force × r²  (Newton: source mass, dotted)")
    ax.set_title(
        f"three-body {config.name} (seed {config.seed}): learned force law\n"
        f"RMS relative error {law['rel_error_rms']:.2g} along the true trajectory on [0, 2]",
        fontsize="medium",
    )
    ax.legend(fontsize="small", ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


def _plot_run(
    run: Path, config: FitConfig, data: ThreeBodyData, pred: np.ndarray, sq: np.ndarray
) -> None:
    from physid.evaluate import plot_error_vs_time, plot_loss_curve, plot_trajectories

    plots = run / "plots"
    title = f"three-body {config.name} (seed {config.seed})"
    plot_trajectories(
        data.t_test,
        data.y_test[:, :9],
        plots / "trajectories.png",
        pred=pred,
        labels=list(POSITION_LABELS),
        max_states=9,
        train_end=data.train_end,
        title=title,
    )
    plot_error_vs_time(
        data.t_test,
        {config.name: sq},
        plots / "error_vs_time.png",
        ylabel="squared position error (sum over 9 coordinates)",
        train_end=data.train_end,
        title=title,
    )
    if (run / "metrics.jsonl").exists():
        plot_loss_curve(
            run / "metrics.jsonl",
            plots / "loss.png",
            keys=["loss", "train_mse", *(["nfe_forward", "nfe_backward"] if config.is_ode else [])],
            title=title,
            xlabel="Levenberg-Marquardt iteration" if config.optimizer == "lm" else "epoch",
        )
    _plot_3d(data, pred, plots / "trajectories_3d.png", title)


def _plot_3d(data: ThreeBodyData, pred: np.ndarray, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    from physid._io import atomic_write

    fig = Figure(figsize=(12, 4), layout="constrained")
    for i in range(3):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        true = data.y_test[:, 3 * i : 3 * i + 3]
        model = pred[:, 3 * i : 3 * i + 3]
        ax.plot(*true.T, color="tab:blue", lw=1.2, label="truth")
        ax.plot(*model.T, color="tab:orange", lw=1.2, ls="--", label="model")
        ax.scatter(*true[0], color="black", s=15)
        ax.set_title(f"body {i + 1}")
        if i == 0:
            ax.legend(fontsize="small")
    fig.suptitle(f"{title}: [0, 2], trained on [0, {data.train_end:g}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)


# ---- videos -----------------------------------------------------------------------------------

_COLORS = ("tab:blue", "tab:orange", "tab:green")


def _animate(
    t: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray | None,
    out: str | Path,
    *,
    train_end: float | None,
    title: str,
    frames: int,
    fps: int,
) -> Path:
    """An MP4 of three bodies in 3-D: truth (solid, dots) and prediction (dashed, crosses)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if frames < 2:
        raise ConfigError(f"a video needs at least 2 frames, got {frames}.")
    idx = np.unique(np.linspace(0, len(t) - 1, frames).round().astype(int))
    every = truth if pred is None else np.concatenate([truth, pred])
    pts = every.reshape(-1, 3, 3)
    finite = pts[np.isfinite(pts).all(axis=(1, 2))]
    lo, hi = finite.reshape(-1, 3).min(0), finite.reshape(-1, 3).max(0)
    pad = 0.05 * (hi - lo).max()

    fig = Figure(figsize=(6.4, 6.4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.14, 1.0, 0.76), projection="3d")
    bar = fig.add_axes((0.1, 0.08, 0.8, 0.03))
    for a, (l, h) in zip(("x", "y", "z"), zip(lo - pad, hi + pad, strict=True), strict=True):
        getattr(ax, f"set_{a}lim")(l, h)
    lines_true, lines_pred, dots_true, dots_pred = [], [], [], []
    for color in _COLORS:
        lines_true.append(ax.plot([], [], [], color=color, lw=1.2)[0])
        dots_true.append(ax.plot([], [], [], "o", color=color, ms=7)[0])
        if pred is not None:
            lines_pred.append(ax.plot([], [], [], color=color, lw=1.0, ls="--")[0])
            dots_pred.append(ax.plot([], [], [], "x", color=color, ms=8, mew=2)[0])
    legend = "solid/dots: truth" + ("   dashed/crosses: prediction" if pred is not None else "")
    ax.text2D(0.02, 0.02, legend, transform=ax.transAxes, fontsize=8)
    head = ax.set_title(title)
    bar.set_xlim(t[0], t[-1])
    bar.set_yticks([])
    if train_end is not None:
        bar.axvspan(t[0], train_end, color="tab:green", alpha=0.3, label="training window")
        bar.legend(loc="upper right", fontsize=7, bbox_to_anchor=(1.0, 3.5))
    cursor = bar.axvline(t[0], color="black", lw=2)
    bar.set_xlabel("t")

    def frames() -> Iterator[np.ndarray]:
        for k in idx:
            for i in range(3):
                sl = slice(3 * i, 3 * i + 3)
                seg = truth[: k + 1, sl]
                lines_true[i].set_data_3d(seg[:, 0], seg[:, 1], seg[:, 2])
                dots_true[i].set_data_3d(seg[-1:, 0], seg[-1:, 1], seg[-1:, 2])
                if pred is not None:
                    seg = pred[: k + 1, sl]
                    lines_pred[i].set_data_3d(seg[:, 0], seg[:, 1], seg[:, 2])
                    dots_pred[i].set_data_3d(seg[-1:, 0], seg[-1:, 1], seg[-1:, 2])
            phase = ""
            if train_end is not None:
                phase = "  (training window)" if t[k] <= train_end else "  (extrapolation)"
            head.set_text(f"{title}\nt = {t[k]:.3f}{phase}")
            cursor.set_xdata([t[k], t[k]])
            canvas.draw()
            yield np.asarray(canvas.buffer_rgba())[..., :3].copy()

    return write_video(out, frames(), fps)


def _render_run(
    config: FitConfig, run: RunDir, out: Path, *, frames: int = 200, fps: int = 25
) -> Path:
    """An MP4 of a run: the truth and the model's prediction over [0, 2] in 3-D, with the
    training window marked on a time bar."""
    model, _ = load_run(run)
    data = _data_for(config)
    pred = predict(model, config, data)
    return _animate(
        data.t_test,
        data.y_test[:, :9],
        pred,
        out,
        train_end=data.train_end,
        title=f"three-body {config.name}",
        frames=frames,
        fps=fps,
    )


def _render_data(dataset: Path, out: Path, trajectory: int, *, frames: int = 200) -> Path:
    """An MP4 of one system of a three-body data set (truth only, on its test grid)."""
    data = load_data(dataset, trajectory)
    return _animate(
        data.t_test,
        data.y_test[:, :9],
        None,
        out,
        train_end=data.train_end,
        title=f"three-body, masses {', '.join(f'{m:.3g}' for m in data.params.masses)}",
        frames=frames,
        fps=25,
    )


# ---- the experiment ---------------------------------------------------------------------------


class ThreeBody(AbstractExperiment[FitConfig]):
    """The three-body system of the ACA paper: masses (or a force law) from one trajectory."""

    name = SYSTEM
    Config = FitConfig
    Simulate = SimulateConfig

    def _simulate(self, options: SimulateConfig) -> Path:
        return simulate(
            options.out,
            seed=options.seed,
            n_trajectories=options.n_trajectories,
            n_train=options.n_train,
            n_test=options.n_test,
            train_end=options.train_end,
        )

    def _fit(self, config: FitConfig, run: RunDir) -> TrainResult:
        return _train(config, run)

    def _evaluate(self, config: FitConfig, run: RunDir) -> RunSummary:
        return _evaluate(config, run, self.training_totals(run))

    def _render(self, config: FitConfig, run: RunDir, out: Path, **options: Any) -> Path:
        return _render_run(config, run, out, **options)

    def _render_dataset(self, dataset: Path, out: Path, trajectory: int) -> Path:
        return _render_data(dataset, out, trajectory)
