"""Latent ODEs on Gymnasium's MuJoCo tasks (``HalfCheetah-v5``, ``Walker2d-v5``, ``Swimmer-v5``,
...): the hopper pipeline (:mod:`physid.models.experiments.hopper`) on any of them.

- ``simulate`` writes a task's state-trajectory data set (:mod:`physid.envs.mujoco_tasks`;
  ``physid simulate mujoco --env ID``).
- ``fit`` trains a latent ODE on it with the hopper's protocol, presets and options
  (:class:`FitConfig` adds the task's data options; the input size is the task's ``nq + nv``),
  interpolation or extrapolation (``physid fit mujoco --env ID``).
- ``evaluate`` scores it beside the same baselines as the hopper (:mod:`physid.baselines`).
- ``render`` draws a test window of the truth beside the model's reconstruction with
  :class:`mujoco.Renderer` (an MP4).

What differs from the hopper: the data come from :func:`physid.envs.mujoco_tasks.generate`
(initial states from the task's seeded ``reset``, a seeded ``zero``/``constant``/``random``
policy, the state recorded every ``frame_skip`` MuJoCo steps), the feature names and the
renderer come from the task's model, and the run directories are named
``mujoco-<env>-latent-ode-...``. The dm_control-faithful hopper of the paper stays the
``hopper`` system.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from physid.envs import hopper as H
from physid.envs import mujoco_tasks as M
from physid.models import latent_fit as LF
from physid.models.experiments import hopper as HX
from physid.models.latent_ode import LatentODE

from physid.data import TrajectoryDataset, load_dataset
from physid.errors import ConfigError, DataError
from physid.experiment import AbstractExperiment, SimulateOptions, option
from physid.render import write_video
from physid.runs import RunDir, RunSummary
from physid.training import TrainResult, load_model_state

__all__ = ["SYSTEM", "MODEL", "FitConfig", "SimulateConfig", "MuJoCo", "simulate", "load_data"]

SYSTEM = M.SYSTEM
MODEL = HX.MODEL


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TaskOptions:
    """The data set protocol's options (:class:`physid.envs.mujoco_tasks.TaskParams`), shared by
    ``simulate`` and ``fit`` (whose defaults must agree, so that a fit's generated data set is
    the one ``simulate`` writes)."""

    env: str = option("HalfCheetah-v5", help="A gymnasium MuJoCo task, e.g. Walker2d-v5.")
    policy: str = option(
        "constant",
        help="zero, constant (one random action per trajectory) or random (per step).",
        choices=M.POLICIES,
    )
    action_scale: float = option(1.0, help="Actions drawn from this fraction of their range.")
    reset_noise_scale: float | None = option(
        0.5, help="The task's reset noise (none: the task's default)."
    )
    frame_skip: int | None = option(
        1, help="MuJoCo steps per recorded state (none: the task's default)."
    )
    n_steps: int = option(200, help="Recorded states per trajectory.")
    window: int = option(100, help="Consecutive states kept per trajectory.")

    def task_params(self) -> M.TaskParams:
        """The data set protocol of these options."""
        return M.TaskParams(
            env_id=self.env,
            n_steps=self.n_steps,
            window=self.window,
            policy=self.policy,
            action_scale=self.action_scale,
            reset_noise_scale=self.reset_noise_scale,
            frame_skip=self.frame_skip,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateConfig(SimulateOptions, _TaskOptions):
    """Options of ``physid simulate mujoco`` (default out:
    ``data/mujoco-<env>-<policy>-n<N>-seed<S>.npz``)."""

    n_trajectories: int = option(1_000, help="Trajectories (80% train, 20% test).")
    seed: int = option(123, help="The data seed.")

    def check(self) -> None:
        if self.n_trajectories < 2:
            raise ConfigError(f"n_trajectories must be at least 2, got {self.n_trajectories}.")
        self.task_params()


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(HX.FitConfig, _TaskOptions):
    """A hopper :class:`~physid.models.experiments.hopper.FitConfig` (presets, protocol, tasks)
    plus the MuJoCo task's data options (``env``, ``policy``, ``action_scale``,
    ``reset_noise_scale``, ``frame_skip``, ``n_steps``, ``window``: used to generate the data
    set when ``data`` is not given; a given data set must be of ``env``).

    The default run directory is
    ``runs/mujoco-<env>-latent-ode-[preset-][extrap-]obs<pct>-<method>-<seed>``.
    """

    system: ClassVar[str] = SYSTEM

    data: str | None = option(None, help="A data set from 'physid simulate mujoco'.")

    def check(self) -> None:
        super().check()
        self.task_params()

    @property
    def name(self) -> str:
        """``<env>-latent-ode-[preset-][extrap-]obs<pct>-<method>`` (lower case env)."""
        return f"{_env_slug(self.env)}-{super().name}"


def _env_slug(env_id: str) -> str:
    return env_id.lower().replace("/", "-")


# ---- data -------------------------------------------------------------------------------------


def simulate(
    env: str = "HalfCheetah-v5",
    n_trajectories: int = 1_000,
    seed: int = 123,
    out: str | Path | None = None,
    **params: Any,
) -> Path:
    """Generate a task's data set and write it (``physid simulate mujoco --env ID``).

    Args:
        env: the gymnasium MuJoCo task.
        n_trajectories: trajectories (80% train, 20% test).
        seed: the data seed.
        out: the ``.npz`` to write; default ``data/mujoco-<env>-<policy>-n<N>-seed<S>.npz``.
        **params: other :class:`SimulateConfig` data options (policy, action_scale,
            reset_noise_scale, frame_skip, n_steps, window).

    Returns:
        the path written.
    """
    opts = SimulateConfig(
        env=env,
        n_trajectories=n_trajectories,
        seed=seed,
        out=None if out is None else str(out),
        **params,
    )
    return _simulate(opts)


def _simulate(opts: SimulateConfig) -> Path:
    task = opts.task_params()
    n = opts.n_trajectories
    path = Path(opts.out) if opts.out is not None else _cache_path("data", task, n, opts.seed)
    M.generate(n, seed=opts.seed, params=task).save(path)
    return path


def _cache_path(data_dir: str | Path, task: M.TaskParams, n: int, seed: int) -> Path:
    return Path(data_dir) / f"mujoco-{_env_slug(task.env_id)}-{task.policy}-n{n}-seed{seed}.npz"


def load_data(cfg: FitConfig) -> TrajectoryDataset:
    """The data set of a config: ``cfg.data``, else the cached or freshly generated set for the
    config's task options.

    Raises:
        DataError: the file is not a MuJoCo task data set, or of another task.
    """
    if cfg.data is not None:
        ds = load_dataset(cfg.data)
        M.check_dataset(ds)
    else:
        task = cfg.task_params()
        n = int(cfg.n_trajectories or 0)
        path = _cache_path(cfg.data_dir, task, n, cfg.data_seed)
        fresh = True
        if path.exists():
            try:
                cached = load_dataset(path)
                fresh = (
                    M.check_dataset(cached) != task
                    or cached.metadata.get("seed") != cfg.data_seed
                    or cached.n_trajectories != n
                )
            except DataError:
                fresh = True
        if fresh:
            M.generate(n, seed=cfg.data_seed, params=task).save(path)
        ds = load_dataset(path)
    if ds.metadata.get("env_id") != cfg.env:
        raise DataError(f"the data set is of {ds.metadata.get('env_id')}, not {cfg.env}.")
    return ds


def _tensors(ds: TrajectoryDataset, cfg: FitConfig, device: torch.device) -> LF.WindowData:
    stats = H.normalisation_of(ds, cfg.normalisation)
    n_train = int(ds.metadata["n_train"])
    y = torch.as_tensor(H.normalise(ds.y, stats), dtype=cfg.torch_dtype, device=device)
    t = torch.as_tensor(ds.t, dtype=cfg.torch_dtype, device=device)
    labels = tuple(ds.metadata.get("state_names") or (f"x{i}" for i in range(ds.state_dim)))
    return LF.WindowData(t=t, train=y[:n_train], test=y[n_train:], stats=stats, labels=labels)


# ---- model and training -----------------------------------------------------------------------


def build_model(cfg: FitConfig, input_dim: int) -> LatentODE:
    """The latent ODE of the config's preset for ``input_dim`` features, in its ``dtype``."""
    return LatentODE(dataclasses.replace(cfg.sizes, input_dim=input_dim)).to(cfg.torch_dtype)


def _config_record(cfg: FitConfig, ds: TrajectoryDataset) -> dict[str, Any]:
    rec = cfg.to_dict()
    n_train = int(ds.metadata["n_train"])
    rec.update(
        sizes=dataclasses.asdict(dataclasses.replace(cfg.sizes, input_dim=ds.state_dim)),
        n_train=n_train,
        n_test=ds.n_trajectories - n_train,
        data_seed_in_file=ds.metadata.get("seed"),
    )
    return rec


def _fit(cfg: FitConfig, run: RunDir) -> TrainResult:
    """Train a latent ODE on a task's windows into ``run`` (the hopper's files and records:
    :func:`physid.models.experiments.hopper.fit_latent`)."""
    ds = load_data(cfg)
    data = _tensors(ds, cfg, cfg.torch_device())
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, ds.state_dim)
    return HX.fit_latent(cfg, run, model, data, _config_record(cfg, ds), label=cfg.env)


def _load_run(
    run: RunDir, device: str = "cpu"
) -> tuple[FitConfig, LatentODE, LF.WindowData, torch.Tensor, torch.Tensor, int]:
    """``(config, model at its last epoch, data, test observed mask, test target mask, epoch)``."""
    from physid.device import resolve_device

    cfg = FitConfig.from_run(run)
    dev = resolve_device(device)
    ds = load_data(cfg)
    model = build_model(cfg, ds.state_dim)
    epoch = load_model_state(model, run, "last")
    model.to(dev).eval()
    data = _tensors(ds, cfg, dev)
    obs, target = HX.test_masks(run, data, cfg)
    return cfg, model, data, obs.to(dev), target.to(dev), epoch


def _evaluate(run: RunDir, totals: dict[str, Any]) -> RunSummary:
    """Test MSE of a run's last model beside the baselines, and its plots (the hopper's
    summary keys, :func:`physid.models.experiments.hopper.summarise`, plus ``env``)."""
    loaded = _load_run(run, device="auto")
    cfg, data = loaded[0], loaded[2]
    return HX.summarise(
        run,
        totals,
        loaded,
        system=SYSTEM,
        labels=data.labels,
        title=f"{cfg.env} test window 0",
        extras={"env": cfg.env},
    )


def _render_run(
    run: RunDir,
    out: Path,
    *,
    index: int = 0,
    fps: int = 20,
    width: int = 320,
    height: int = 240,
) -> Path:
    """The task replaying test window ``index`` (left, the task's colours) beside the model's
    reconstruction from its observed points (right, blue): the state decoded from the posterior
    mean of z0 and un-normalised.

    Returns:
        the MP4 path.
    """
    cfg, model, data, obs, _, _ = _load_run(run)
    truth, pred = HX.reconstruct(cfg, model, data, obs, index)
    left = M.render_states(cfg.env, truth, width=width, height=height)
    right = M.render_states(cfg.env, pred, width=width, height=height, rgba=(0.3, 0.5, 0.8, 1.0))
    return write_video(out, np.concatenate([left, right], axis=2), fps, macro_block_size=8)


def _render_data(path: Path, out: Path, index: int, fps: int = 20) -> Path:
    """Render trajectory ``index`` of a task's data set (``physid render DATASET``)."""
    ds = load_dataset(path)
    M.check_dataset(ds)
    if not 0 <= index < ds.n_trajectories:
        raise ConfigError(f"trajectory {index} does not exist (0..{ds.n_trajectories - 1}).")
    frames = M.render_states(str(ds.metadata["env_id"]), ds.y[index])
    return write_video(out, frames, fps, macro_block_size=8)


# ---- the experiment ---------------------------------------------------------------------------


class MuJoCo(AbstractExperiment[FitConfig]):
    """A latent ODE on any gymnasium MuJoCo task (``--env``), with the hopper's protocol."""

    name = SYSTEM
    Config = FitConfig
    Simulate = SimulateConfig

    def _simulate(self, options: SimulateConfig) -> Path:
        return _simulate(options)

    def _fit(self, config: FitConfig, run: RunDir) -> TrainResult:
        return _fit(config, run)

    def _evaluate(self, config: FitConfig, run: RunDir) -> RunSummary:
        return _evaluate(run, self.training_totals(run))

    def _render(self, config: FitConfig, run: RunDir, out: Path, **options: Any) -> Path:
        """Options: ``index`` (test window), ``fps``, ``width``, ``height``."""
        return _render_run(run, out, **options)

    def _render_dataset(self, dataset: Path, out: Path, trajectory: int) -> Path:
        return _render_data(dataset, out, trajectory)
