"""State-trajectory data sets from Gymnasium's maintained MuJoCo tasks, for latent ODEs.

Gymnasium ships the MuJoCo locomotion tasks (``HalfCheetah-v5``, ``Walker2d-v5``, ``Swimmer-v5``,
``Hopper-v5``, ``Ant-v5``, ...; MJCF included, run by the installed ``mujoco``). This module turns
any of them into a data set with the hopper's latent-ODE protocol (:mod:`physid.envs.hopper`,
Rubanova et al. 2019):

- the state is the full ``qpos ⊕ qvel`` (``env.unwrapped.state_vector()``; the gymnasium
  *observation* of most tasks drops the root's x position, the physics state does not);
- initial states come from the task's own ``reset`` (seeded), i.e. its ``init_qpos``/``init_qvel``
  plus its reset noise, optionally widened by ``reset_noise_scale``;
- a seeded policy drives the actuators: ``"zero"`` (no input), ``"constant"`` (one uniform random
  action per trajectory, held: the dynamics stay autonomous given the state and the action, so a
  latent ODE can infer the action from the observations) or ``"random"`` (a fresh uniform action
  every env step: not autonomous, for completeness);
- the state is recorded before each *env step* (``frame_skip`` MuJoCo steps, the task's ``dt``),
  ``n_steps`` per trajectory; each trajectory keeps a random window of ``window`` steps on shared
  time stamps ``t_k = dt k``; the first ``train_fraction`` of the trajectories train;
- the same two normalisations as the hopper: ``minmax`` over the training windows (default) and
  ``reference`` ((x - min)/max over the full trajectories).

Simulation uses :func:`mujoco.rollout.rollout` on the task's model (batched, many times faster than
``env.step``); :func:`simulate_with_env` steps the gymnasium env itself and the tests check that
both give the same states. :func:`render_states` draws states with :class:`mujoco.Renderer`
(headless through EGL, ``MUJOCO_GL=egl``).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede ``import mujoco``

import dataclasses
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from physid.envs.hopper import REFERENCE_STATS_OVER, make_windows, normalisation_stats

from physid.data import TrajectoryDataset, make_metadata, split_indices
from physid.errors import ConfigError, DataError, MissingDependencyError, PhysicsError

__all__ = [
    "SYSTEM",
    "FORMAT_VERSION",
    "POLICIES",
    "EXAMPLE_TASKS",
    "TaskParams",
    "make_env",
    "state_names",
    "initial_states",
    "policy_actions",
    "simulate_batch",
    "simulate_with_env",
    "generate",
    "check_dataset",
    "render_states",
]

SYSTEM = "mujoco"
FORMAT_VERSION = 1
POLICIES = ("zero", "constant", "random")
#: Tasks known to work (any gymnasium MuJoCo task with a ``MujocoEnv`` should).
EXAMPLE_TASKS = ("HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5", "Hopper-v5", "Ant-v5")


@dataclasses.dataclass(frozen=True)
class TaskParams:
    """The data set protocol for one gymnasium MuJoCo task.

    Attributes:
        env_id: a gymnasium MuJoCo task id, e.g. ``"HalfCheetah-v5"``.
        n_steps: recorded states per trajectory (one per env step, before the step).
        window: consecutive steps kept per trajectory (a random window inside ``n_steps``).
        policy: ``"zero"``, ``"constant"`` or ``"random"`` (module docstring).
        action_scale: actions are drawn uniformly from this fraction of the actuator range.
        reset_noise_scale: the task's ``reset_noise_scale`` (None: the task's default).
        frame_skip: MuJoCo steps per env step (None: the task's default, which sets ``dt``).
        train_fraction: the first ``train_fraction`` of the trajectories train, the rest test.
    """

    env_id: str = "HalfCheetah-v5"
    n_steps: int = 200
    window: int = 100
    policy: str = "constant"
    action_scale: float = 1.0
    reset_noise_scale: float | None = None
    frame_skip: int | None = None
    train_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"n_steps must be at least 1, got {self.n_steps}.")
        if not 1 <= self.window <= self.n_steps:
            raise ConfigError(f"window must be in [1, n_steps={self.n_steps}], got {self.window}.")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; choose one of {POLICIES}.")
        if not 0.0 <= self.action_scale <= 1.0:
            raise ConfigError(f"action_scale must be in [0, 1], got {self.action_scale}.")
        if self.reset_noise_scale is not None and self.reset_noise_scale < 0:
            raise ConfigError(f"reset_noise_scale must be >= 0, got {self.reset_noise_scale}.")
        if self.frame_skip is not None and self.frame_skip < 1:
            raise ConfigError(f"frame_skip must be at least 1, got {self.frame_skip}.")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}.")


def make_env(params: TaskParams, render_mode: str | None = None) -> Any:
    """The task's gymnasium env (unwrapped ``MujocoEnv``), built with the protocol's options.

    Raises:
        ConfigError: the id is unknown or not a MuJoCo task.
        MissingDependencyError: gymnasium's MuJoCo extra is missing.
    """
    kwargs: dict[str, Any] = {}
    if params.reset_noise_scale is not None:
        kwargs["reset_noise_scale"] = params.reset_noise_scale
    if params.frame_skip is not None:
        kwargs["frame_skip"] = params.frame_skip
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(params.env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # pragma: no cover - mujoco is installed
        raise MissingDependencyError(f"{params.env_id} needs gymnasium's MuJoCo extra: {e}") from e
    except (gym.error.Error, TypeError) as e:
        raise ConfigError(f"cannot make {params.env_id!r} with {kwargs}: {e}") from e
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if not isinstance(env.unwrapped, MujocoEnv):
        env.close()
        raise ConfigError(f"{params.env_id!r} is not a gymnasium MuJoCo task.")
    return env.unwrapped


def state_names(model: mujoco.MjModel) -> list[str]:
    """``qpos_<joint>[...]`` then ``qvel_<joint>[...]``, one name per state coordinate (joints
    with several coordinates, e.g. free joints, get an index suffix)."""

    def names(adr: np.ndarray, size: int, prefix: str) -> list[str]:
        out: list[str] = []
        for j in range(model.njnt):
            start = int(adr[j])
            stop = int(adr[j + 1]) if j + 1 < model.njnt else size
            name = model.joint(j).name or f"joint{j}"
            n = stop - start
            out += [f"{prefix}_{name}" if n == 1 else f"{prefix}_{name}[{k}]" for k in range(n)]
        return out

    return names(model.jnt_qposadr, model.nq, "qpos") + names(model.jnt_dofadr, model.nv, "qvel")


def initial_states(env: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` initial states from the task's own seeded ``reset`` (the first call seeds it; the
    following ones continue its random stream).

    Returns:
        ``(qpos, qvel)``: ``(n, nq)`` and ``(n, nv)`` float64.
    """
    qpos = np.empty((n, env.model.nq))
    qvel = np.empty((n, env.model.nv))
    for i in range(n):
        env.reset(seed=seed if i == 0 else None)
        qpos[i], qvel[i] = env.data.qpos, env.data.qvel
    return qpos, qvel


def policy_actions(
    model: mujoco.MjModel,
    n: int,
    n_steps: int,
    policy: str,
    rng: np.random.Generator,
    action_scale: float = 1.0,
) -> np.ndarray:
    """The actions of ``n`` trajectories, one per env step.

    Returns:
        ``(n, n_steps, nu)`` float64 inside the actuators' control ranges.
    """
    nu = model.nu
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; choose one of {POLICIES}.")
    if policy == "zero" or nu == 0:
        return np.zeros((n, n_steps, nu))
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    limited = model.actuator_ctrllimited.astype(bool)
    lo = np.where(limited, lo, -1.0)
    hi = np.where(limited, hi, 1.0)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * action_scale
    shape = (n, 1, nu) if policy == "constant" else (n, n_steps, nu)
    u = mid + half * rng.uniform(-1.0, 1.0, size=shape)
    return np.broadcast_to(u, (n, n_steps, nu)).copy()


def simulate_batch(
    model: mujoco.MjModel,
    qpos0: np.ndarray,
    qvel0: np.ndarray,
    actions: np.ndarray,
    frame_skip: int,
) -> np.ndarray:
    """Simulate many trajectories with :func:`mujoco.rollout.rollout`; each action is held for
    ``frame_skip`` MuJoCo steps (one env step) and the state is recorded before each env step.

    Args:
        model: the task's model (its ``opt.timestep`` is the MuJoCo step).
        qpos0, qvel0: ``(batch, nq)``, ``(batch, nv)`` initial states.
        actions: ``(batch, n_steps, nu)``.
        frame_skip: MuJoCo steps per env step.

    Returns:
        ``(batch, n_steps, nq + nv)`` float64.

    Raises:
        PhysicsError: MuJoCo reset a rollout (unstable acceleration) or a state is non-finite.
    """
    from mujoco import rollout

    batch, n_steps, _ = actions.shape
    nq, nv = model.nq, model.nv
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    init = np.empty((batch, mujoco.mj_stateSize(model, spec)))
    for i in range(batch):
        mujoco.mj_resetData(model, data)
        data.qpos[:] = qpos0[i]
        data.qvel[:] = qvel0[i]
        mujoco.mj_forward(model, data)
        mujoco.mj_getState(model, data, init[i], spec)
    out = np.empty((batch, n_steps, nq + nv))
    out[:, 0, :nq], out[:, 0, nq:] = qpos0, qvel0
    if n_steps > 1:
        control = np.repeat(actions[:, : n_steps - 1], frame_skip, axis=1)
        nstep = (n_steps - 1) * frame_skip
        state, _ = rollout.rollout(model, data, init, control, nstep=nstep)
        # FULLPHYSICS layout: time, qpos, qvel, act, ...
        time = state[:, :, 0]
        expected = model.opt.timestep * np.arange(1, nstep + 1)
        if not np.allclose(time, expected[None, :], rtol=1e-9, atol=1e-9):
            bad = int(np.argwhere(~np.isclose(time, expected[None, :], atol=1e-9))[0, 0])
            raise PhysicsError(
                f"trajectory {bad} was reset by MuJoCo (unstable acceleration); "
                "lower action_scale or reset_noise_scale."
            )
        kept = state[:, frame_skip - 1 :: frame_skip]  # after each env step
        out[:, 1:, :nq] = kept[:, :, 1 : 1 + nq]
        out[:, 1:, nq:] = kept[:, :, 1 + nq : 1 + nq + nv]
    if not np.isfinite(out).all():
        raise PhysicsError("the simulation produced a non-finite state.")
    return out


def simulate_with_env(env: Any, qpos0: np.ndarray, qvel0: np.ndarray, actions: np.ndarray):
    """One trajectory through the gymnasium env's own ``set_state`` and ``do_simulation`` (the
    slow path :func:`simulate_batch` is checked against).

    Args:
        qpos0, qvel0: ``(nq,)``, ``(nv,)``; actions: ``(n_steps, nu)``.

    Returns:
        ``(n_steps, nq + nv)``.
    """
    env.set_state(np.asarray(qpos0, dtype=np.float64), np.asarray(qvel0, dtype=np.float64))
    out = np.empty((actions.shape[0], env.model.nq + env.model.nv))
    for k in range(actions.shape[0]):
        out[k] = env.state_vector()
        env.do_simulation(actions[k], env.frame_skip)
    return out


def generate(
    n_trajectories: int, seed: int = 123, params: TaskParams = TaskParams(), *, chunk: int = 500
) -> TrajectoryDataset:
    """Generate a task's data set by the protocol (module docstring).

    Args:
        n_trajectories: number of trajectories (>= 2).
        seed: seeds the resets, the actions and the windows; same seed, same data.
        params: the protocol's options.
        chunk: trajectories per rollout call (memory only).

    Returns:
        a :class:`physid.data.TrajectoryDataset`: ``t`` ``(window,)`` (seconds), ``y`` raw states
        ``(n, window, nq + nv)``, ``u`` the actions ``(n, window, nu)``; metadata with
        ``system="mujoco"``, ``env_id``, ``n_train``, window ``starts``, ``dt``, ``frame_skip``,
        ``state_names`` and ``normalisation`` (``minmax`` and ``reference``, as the hopper's).

    Raises:
        ConfigError: fewer than 2 trajectories, or a bad task; PhysicsError: a rollout diverged.
    """
    if n_trajectories < 2:
        raise ConfigError(
            f"need at least 2 trajectories for a train/test split, got {n_trajectories}."
        )
    env = make_env(params)
    try:
        model, frame_skip, dt = env.model, int(env.frame_skip), float(env.dt)
        qpos0, qvel0 = initial_states(env, n_trajectories, seed)
    finally:
        env.close()
    rng = np.random.default_rng(seed)
    actions = policy_actions(
        model, n_trajectories, params.n_steps, params.policy, rng, params.action_scale
    )
    full = np.empty((n_trajectories, params.n_steps, model.nq + model.nv))
    for a in range(0, n_trajectories, chunk):
        b = min(a + chunk, n_trajectories)
        full[a:b] = simulate_batch(model, qpos0[a:b], qvel0[a:b], actions[a:b], frame_skip)
    y, starts = make_windows(full, params.window, rng)
    idx = starts[:, None] + np.arange(params.window)[None, :]
    u = np.take_along_axis(actions, idx[:, :, None], axis=1)
    train, _ = split_indices(
        n_trajectories, (params.train_fraction, 1.0 - params.train_fraction), shuffle=False
    )
    n_train = min(max(len(train), 1), n_trajectories - 1)
    metadata = make_metadata(
        simulator=f"gymnasium/{params.env_id}",
        params=params,
        seed=seed,
        system=SYSTEM,
        env_id=params.env_id,
        integrator=f"mujoco (timestep {model.opt.timestep}, frame_skip {frame_skip})",
        mujoco_version=mujoco.__version__,
        gymnasium_version=gym.__version__,
        format_version=FORMAT_VERSION,
        dt=dt,
        frame_skip=frame_skip,
        nq=model.nq,
        nv=model.nv,
        state_names=state_names(model),
        n_train=n_train,
        starts=starts,
        normalisation={
            "default": "minmax",
            "note": (
                "minmax: (x - min)/(max - min) per feature over the training windows; "
                "reference: (x - min)/max over the full trajectories of the whole set."
            ),
            "minmax": normalisation_stats(y[:n_train], "minmax"),
            "reference": {
                **normalisation_stats(full, "reference"),
                "over": REFERENCE_STATS_OVER,
            },
        },
    )
    return TrajectoryDataset(t=dt * np.arange(params.window), y=y, u=u, metadata=metadata)


def check_dataset(ds: TrajectoryDataset) -> TaskParams:
    """The task parameters of a data set written by :func:`generate`.

    Raises:
        DataError: it is not a MuJoCo task data set of this format.
    """
    meta = ds.metadata
    if meta.get("system") != SYSTEM or meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            "not a MuJoCo task data set of this physid version (re-simulate it with "
            "envs.mujoco_tasks.generate / physid simulate mujoco)."
        )
    if "n_train" not in meta or "normalisation" not in meta or ds.t.ndim != 1:
        raise DataError("the MuJoCo task data set lacks n_train, normalisation or shared times.")
    raw = dict(meta.get("params") or {})
    fields = {f.name for f in dataclasses.fields(TaskParams)}
    params = TaskParams(**{k: v for k, v in raw.items() if k in fields})
    nq, nv = int(meta.get("nq", 0)), int(meta.get("nv", 0))
    if nq + nv != ds.state_dim:
        raise DataError(
            f"the data set's state has {ds.state_dim} numbers, not nq + nv = {nq + nv}."
        )
    return params


def _robot_distance(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """A camera distance that frames the robot: 2.5 × the radius of the sphere around its
    geoms (bodies other than the world) in the initial pose, at least 1."""
    mujoco.mj_resetData(model, data)
    mujoco.mj_forward(model, data)
    robot = model.geom_bodyid > 0
    if not robot.any():
        return 3.0
    centre = data.xpos[1]
    reach = np.linalg.norm(data.geom_xpos[robot] - centre, axis=1) + model.geom_rbound[robot]
    return max(1.0, 2.5 * float(reach.max()))


def render_states(
    env_id: str,
    states: np.ndarray,
    *,
    width: int = 320,
    height: int = 240,
    rgba: tuple[float, float, float, float] | None = None,
    distance: float | None = None,
) -> np.ndarray:
    """Render a sequence of states of a task with :class:`mujoco.Renderer`, the camera tracking
    the root body from the side.

    Args:
        env_id: the task (its model is taken from gymnasium).
        states: ``(T, nq + nv)`` or ``(T, nq)``.
        width, height: frame size.
        rgba: a colour for every geom of the robot (not the floor), e.g. to tell a model from the
            truth; None keeps the task's colours.
        distance: camera distance (default: 2.5 × the robot's radius in its initial pose).

    Returns:
        ``(T, height, width, 3)`` uint8 frames.
    """
    env = make_env(TaskParams(env_id=env_id))
    try:
        model = env.model
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] not in (model.nq, model.nq + model.nv):
            raise ConfigError(
                f"states must be (T, {model.nq + model.nv}) or (T, {model.nq}), got {states.shape}."
            )
        if rgba is not None:
            robot = model.geom_bodyid > 0
            model.geom_rgba[robot] = rgba
            model.geom_matid[robot] = -1
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        data = mujoco.MjData(model)
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        cam.trackbodyid = 1
        cam.distance = distance if distance is not None else _robot_distance(model, data)
        cam.elevation = -15.0
        cam.azimuth = 90.0
        renderer = mujoco.Renderer(model, height, width)
        frames = np.empty((states.shape[0], height, width, 3), dtype=np.uint8)
        try:
            for k, s in enumerate(states):
                data.qpos[:] = s[: model.nq]
                if states.shape[1] > model.nq:
                    data.qvel[:] = s[model.nq :]
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera=cam)
                frames[k] = renderer.render()
        finally:
            renderer.close()
    finally:
        env.close()
    return frames
