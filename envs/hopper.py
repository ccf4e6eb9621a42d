"""The planar MuJoCo hopper and the latent-ODE data set protocol built on it.

The model is the DeepMind control suite's hopper (Tassa et al. 2018): a torso on three unactuated
root joints (``rootx`` slide, ``rootz`` slide, ``rooty`` hinge) and a leg with four actuated hinges
(``waist``, ``hip``, ``knee``, ``ankle``), time step 0.005 s, MuJoCo's semi-implicit Euler
integrator. The MJCF below is written for physid with the suite's numbers (bodies, capsule sizes,
joint ranges, damping, armature, gears); only cosmetic assets differ. The state is
``qpos ⊕ qvel`` (14 numbers, in the joint order above).

The data set follows Rubanova et al. 2019 (latent ODEs for irregularly-sampled time series), which
the ACA paper's Table 4 reuses:

- zero-control trajectories of 200 steps; the state is recorded *before* each step;
- initial state ``qpos[:2] ~ U(0, 0.5)``, ``qpos[2:] ~ U(-2, 2)`` (may exceed the joint ranges),
  ``qvel ~ U(-5, 5)``;
- per trajectory a random window of 100 consecutive steps, on shared time stamps
  ``t_k = 0.005 k`` (k = 0..99);
- the first 80% of the trajectories train, the last 20% test;
- irregular sampling: ``int(100 s)`` random observed points per trajectory, re-drawn per batch
  (:func:`physid.data.subsample_mask`).

Normalisation. The reference divides ``x - min`` by ``max`` (a quirk: it is not a range, and a
negative ``max`` flips the sign). physid's default is the sound min-max scaling
``(x - min) / (max - min)`` per feature, with ``min``/``max`` taken over the *training* windows
only (no test leakage); features with zero range get scale 1. The ``"reference"`` scheme takes its
``min``/``max`` over the full ``n_steps`` trajectories of the whole set, before windowing, as the
reference's ``HopperPhysics`` does (this matters: the ankle's velocity reaches -105 over the full
trajectories but only -27 inside the windows). Both sets of statistics are stored in the data
set's metadata; the ``"reference"`` scheme is kept to compare with the papers.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede ``import mujoco``

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium import spaces

from physid.data import TrajectoryDataset, make_metadata, split_indices
from physid.errors import ConfigError, DataError, PhysicsError

__all__ = [
    "ENV_ID",
    "HOPPER_XML",
    "JOINT_NAMES",
    "ACTUATOR_NAMES",
    "STATE_NAMES",
    "NORMALISATIONS",
    "FORMAT_VERSION",
    "HopperParams",
    "HopperEnv",
    "load_model",
    "sample_initial_states",
    "simulate_trajectory",
    "simulate_batch",
    "make_windows",
    "normalisation_stats",
    "normalise",
    "denormalise",
    "generate",
    "normalisation_of",
    "render_states",
]

ENV_ID = "physid/Hopper-v0"

JOINT_NAMES = ("rootx", "rootz", "rooty", "waist", "hip", "knee", "ankle")
ACTUATOR_NAMES = ("waist", "hip", "knee", "ankle")
STATE_NAMES = tuple(f"qpos_{j}" for j in JOINT_NAMES) + tuple(f"qvel_{j}" for j in JOINT_NAMES)
NORMALISATIONS = ("minmax", "reference")
#: Version of the data set layout :func:`generate` writes (metadata ``format_version``). 2: the
#: ``"reference"`` statistics are taken over the full trajectories (before windowing).
FORMAT_VERSION = 2
REFERENCE_STATS_OVER = "full_trajectories"

# The suite's planar hopper (suite/hopper.xml), re-written for physid: same kinematic tree, sizes,
# joint ranges, damping, armature, gears and time step. Integrator: Euler (MuJoCo's default,
# stated explicitly).
HOPPER_XML = """\
<mujoco model="physid planar hopper">
  <compiler angle="degree"/>
  <option timestep="0.005" integrator="Euler"/>
  <statistic extent="2" center="0 0 .5"/>
  <visual>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <quality shadowsize="2048"/>
    <global offwidth="1280" offheight="960"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0"
             width="256" height="256"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".1 .2 .3" rgb2=".2 .3 .4"
             width="300" height="300" mark="edge" markrgb=".2 .3 .4"/>
    <material name="grid" texture="grid" texrepeat="1 1" texuniform="true" reflectance=".2"/>
    <material name="self" rgba=".7 .5 .3 1"/>
  </asset>
  <default>
    <default class="hopper">
      <joint type="hinge" axis="0 1 0" limited="true" damping=".05" armature=".2"/>
      <geom type="capsule" material="self"/>
      <site type="sphere" size="0.05" group="3"/>
    </default>
    <default class="free">
      <joint limited="false" damping="0" armature="0" stiffness="0"/>
    </default>
    <motor ctrlrange="-1 1" ctrllimited="true"/>
  </default>
  <worldbody>
    <camera name="cam0" pos="0 -2.8 0.8" euler="90 0 0" mode="trackcom"/>
    <camera name="back" pos="-2 -.2 1.2" xyaxes="0.2 -1 0 .5 0 2" mode="trackcom"/>
    <!-- the suite draws x in [-2, 98]; the hopper data drift both ways, so draw x in [-50, 50].
         A plane collides over its whole infinite extent either way: same physics. -->
    <geom name="floor" type="plane" conaffinity="1" pos="0 0 0" size="50 1.25 .2"
          material="grid"/>
    <body name="torso" pos="0 0 1" childclass="hopper">
      <light name="top" pos="0 0 2" mode="trackcom"/>
      <joint name="rootx" type="slide" axis="1 0 0" class="free"/>
      <joint name="rootz" type="slide" axis="0 0 1" class="free"/>
      <joint name="rooty" type="hinge" axis="0 1 0" class="free"/>
      <geom name="torso" fromto="0 0 -.05 0 0 .2" size="0.0653"/>
      <geom name="nose" fromto=".08 0 .13 .15 0 .14" size="0.03"/>
      <body name="pelvis" pos="0 0 -.05">
        <joint name="waist" range="-30 30"/>
        <geom name="pelvis" fromto="0 0 0 0 0 -.15" size="0.065"/>
        <body name="thigh" pos="0 0 -.2">
          <joint name="hip" range="-170 10"/>
          <geom name="thigh" fromto="0 0 0 0 0 -.33" size="0.04"/>
          <body name="calf" pos="0 0 -.33">
            <joint name="knee" range="5 150"/>
            <geom name="calf" fromto="0 0 0 0 0 -.32" size="0.03"/>
            <body name="foot" pos="0 0 -.32">
              <joint name="ankle" range="-45 45"/>
              <geom name="foot" fromto="-.08 0 0 .17 0 0" size="0.04"/>
              <site name="touch_toe" pos=".17 0 0"/>
              <site name="touch_heel" pos="-.08 0 0"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <sensor>
    <touch name="touch_toe" site="touch_toe"/>
    <touch name="touch_heel" site="touch_heel"/>
  </sensor>
  <actuator>
    <motor name="waist" joint="waist" gear="30"/>
    <motor name="hip" joint="hip" gear="40"/>
    <motor name="knee" joint="knee" gear="30"/>
    <motor name="ankle" joint="ankle" gear="10"/>
  </actuator>
</mujoco>
"""


@dataclass(frozen=True)
class HopperParams:
    """The data set protocol (Rubanova et al. 2019), as frozen data.

    Attributes:
        n_steps: simulated steps per trajectory (the state is recorded before each step).
        window: consecutive steps kept per trajectory (a random window inside ``n_steps``).
        root_range: ``qpos[:2]`` (rootx, rootz) ~ U(root_range).
        joint_range: ``qpos[2:]`` (rooty and the four leg hinges) ~ U(joint_range), radians.
        qvel_range: every ``qvel`` ~ U(qvel_range).
        train_fraction: the first ``train_fraction`` of the trajectories train, the rest test.
        timestep: MuJoCo's step in seconds (the model's own; checked against the XML).
    """

    n_steps: int = 200
    window: int = 100
    root_range: tuple[float, float] = (0.0, 0.5)
    joint_range: tuple[float, float] = (-2.0, 2.0)
    qvel_range: tuple[float, float] = (-5.0, 5.0)
    train_fraction: float = 0.8
    timestep: float = 0.005

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"n_steps must be at least 1, got {self.n_steps}.")
        if not 1 <= self.window <= self.n_steps:
            raise ConfigError(f"window must be in [1, n_steps={self.n_steps}], got {self.window}.")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}.")
        for name in ("root_range", "joint_range", "qvel_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}.")


@lru_cache(maxsize=1)
def _cached_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(HOPPER_XML)


def load_model() -> mujoco.MjModel:
    """A fresh :class:`mujoco.MjModel` of the hopper, compiled from :data:`HOPPER_XML`."""
    return mujoco.MjModel.from_xml_string(HOPPER_XML)


def sample_initial_states(
    n: int, rng: np.random.Generator, params: HopperParams = HopperParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` initial states by the protocol.

    Returns:
        ``(qpos, qvel)``, each ``(n, 7)`` float64.
    """
    qpos = np.empty((n, 7))
    qpos[:, :2] = rng.uniform(*params.root_range, size=(n, 2))
    qpos[:, 2:] = rng.uniform(*params.joint_range, size=(n, 5))
    qvel = rng.uniform(*params.qvel_range, size=(n, 7))
    return qpos, qvel


def _check_states(qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qpos = np.asarray(qpos, dtype=np.float64)
    qvel = np.asarray(qvel, dtype=np.float64)
    if qpos.shape[-1:] != (7,) or qvel.shape != qpos.shape:
        raise ConfigError(
            f"qpos and qvel must both have shape (..., 7); got {qpos.shape} and {qvel.shape}."
        )
    return qpos, qvel


def _check_controls(control: np.ndarray | None, n_steps: int, batch: int | None) -> np.ndarray:
    shape = (n_steps, 4) if batch is None else (batch, n_steps, 4)
    if control is None:
        return np.zeros(shape)
    control = np.asarray(control, dtype=np.float64)
    if control.shape != shape:
        raise ConfigError(f"control must have shape {shape}, got {control.shape}.")
    return control


def simulate_trajectory(
    qpos0: np.ndarray,
    qvel0: np.ndarray,
    n_steps: int,
    control: np.ndarray | None = None,
    model: mujoco.MjModel | None = None,
) -> np.ndarray:
    """Simulate one trajectory with ``mj_step``; the state is recorded before each step.

    Args:
        qpos0, qvel0: ``(7,)`` initial joint positions and velocities.
        n_steps: number of steps (and of recorded states).
        control: ``(n_steps, 4)`` actuator inputs in [-1, 1]; zero if omitted.
        model: the MuJoCo model (default :func:`load_model`).

    Returns:
        ``(n_steps, 14)`` float64 states ``qpos ⊕ qvel``.

    Raises:
        PhysicsError: MuJoCo reported an unstable acceleration (it would silently reset) or the
            state became non-finite.
    """
    qpos0, qvel0 = _check_states(qpos0, qvel0)
    control = _check_controls(control, n_steps, None)
    model = model if model is not None else _cached_model()
    data = mujoco.MjData(model)
    data.qpos[:] = qpos0
    data.qvel[:] = qvel0
    mujoco.mj_forward(model, data)
    out = np.empty((n_steps, 14))
    for k in range(n_steps):
        out[k, :7] = data.qpos
        out[k, 7:] = data.qvel
        data.ctrl[:] = control[k]
        mujoco.mj_step(model, data)
        if data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0:
            raise PhysicsError(
                f"MuJoCo reported an unstable acceleration at step {k} (t={data.time:.3f}); "
                "the initial state or the controls are too violent."
            )
    if not np.isfinite(out).all():
        raise PhysicsError("the hopper simulation produced a non-finite state.")
    return out


def simulate_batch(
    qpos0: np.ndarray,
    qvel0: np.ndarray,
    n_steps: int,
    control: np.ndarray | None = None,
    model: mujoco.MjModel | None = None,
) -> np.ndarray:
    """Simulate many trajectories at once with :func:`mujoco.rollout.rollout`.

    Same result as :func:`simulate_trajectory` per row (the tests check equality), much faster.

    Args:
        qpos0, qvel0: ``(batch, 7)`` initial states.
        n_steps: steps per trajectory (states recorded before each step).
        control: ``(batch, n_steps, 4)`` inputs; zero if omitted.
        model: the MuJoCo model (default :func:`load_model`).

    Returns:
        ``(batch, n_steps, 14)`` float64.

    Raises:
        PhysicsError: a rollout reset itself (unstable acceleration) or became non-finite.
    """
    from mujoco import rollout

    qpos0, qvel0 = _check_states(qpos0, qvel0)
    if qpos0.ndim != 2:
        raise ConfigError(f"qpos0 must be (batch, 7), got {qpos0.shape}.")
    batch = qpos0.shape[0]
    control = _check_controls(control, n_steps, batch)
    model = model if model is not None else _cached_model()
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nstate = mujoco.mj_stateSize(model, spec)
    init = np.empty((batch, nstate))
    for i in range(batch):
        mujoco.mj_resetData(model, data)
        data.qpos[:] = qpos0[i]
        data.qvel[:] = qvel0[i]
        mujoco.mj_getState(model, data, init[i], spec)
    out = np.empty((batch, n_steps, 14))
    out[:, 0, :7] = qpos0
    out[:, 0, 7:] = qvel0
    if n_steps > 1:
        state, _ = rollout.rollout(model, data, init, control[:, : n_steps - 1], nstep=n_steps - 1)
        # FULLPHYSICS layout: time, qpos, qvel, act, ... (act is empty for the hopper).
        time = state[:, :, 0]
        expected = model.opt.timestep * np.arange(1, n_steps)
        if not np.allclose(time, expected[None, :], rtol=0.0, atol=1e-9):
            bad = int(np.argwhere(~np.isclose(time, expected[None, :], atol=1e-9))[0, 0])
            raise PhysicsError(
                f"trajectory {bad} was reset by MuJoCo (unstable acceleration); "
                "the initial state or the controls are too violent."
            )
        out[:, 1:, :7] = state[:, :, 1:8]
        out[:, 1:, 7:] = state[:, :, 8:15]
    if not np.isfinite(out).all():
        raise PhysicsError("the hopper simulation produced a non-finite state.")
    return out


def make_windows(
    y: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a random window of ``window`` consecutive steps out of each trajectory.

    Args:
        y: ``(n, n_steps, d)`` trajectories.

    Returns:
        ``(windows, starts)``: ``(n, window, d)`` and the ``(n,)`` start indices.
    """
    n, n_steps, _ = y.shape
    if not 1 <= window <= n_steps:
        raise ConfigError(f"window must be in [1, {n_steps}], got {window}.")
    starts = rng.integers(0, n_steps - window + 1, size=n)
    idx = starts[:, None] + np.arange(window)[None, :]
    return np.take_along_axis(y, idx[:, :, None], axis=1), starts


def normalisation_stats(y: np.ndarray, scheme: str = "minmax") -> dict[str, list[float]]:
    """Per-feature statistics for :func:`normalise`.

    Args:
        y: ``(..., d)`` the data the statistics are taken over (for ``"minmax"``: the training
            windows; for ``"reference"``: the full trajectories of the whole set, as Rubanova et
            al. did).
        scheme: ``"minmax"``: offset = min, scale = max - min (1 where the range is 0), which
            maps the data onto [0, 1]. ``"reference"``: offset = min, scale = max (1 where
            max = 0) — the latent_ode repository's quirk, kept only to compare with the papers.

    Returns:
        ``{"scheme", "offset", "scale"}`` with ``(d,)`` lists (JSON-ready).
    """
    if scheme not in NORMALISATIONS:
        raise ConfigError(f"unknown normalisation {scheme!r}; choose one of {NORMALISATIONS}.")
    flat = np.asarray(y, dtype=np.float64).reshape(-1, np.shape(y)[-1])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    if scheme == "minmax":
        scale = hi - lo
        scale = np.where(scale > 0, scale, 1.0)
    else:
        scale = np.where(hi != 0, hi, 1.0)
    return {"scheme": scheme, "offset": lo.tolist(), "scale": scale.tolist()}


def _stats_arrays(stats: dict[str, Any], like: Any) -> tuple[Any, Any]:
    offset, scale = stats["offset"], stats["scale"]
    if isinstance(like, torch.Tensor):
        return (
            torch.as_tensor(offset, dtype=like.dtype, device=like.device),
            torch.as_tensor(scale, dtype=like.dtype, device=like.device),
        )
    return np.asarray(offset), np.asarray(scale)


def normalise(y: Any, stats: dict[str, Any]) -> Any:
    """``(y - offset) / scale`` per feature (numpy array or torch tensor, last axis = feature)."""
    offset, scale = _stats_arrays(stats, y)
    return (y - offset) / scale


def denormalise(y: Any, stats: dict[str, Any]) -> Any:
    """The inverse of :func:`normalise`."""
    offset, scale = _stats_arrays(stats, y)
    return y * scale + offset


def generate(
    n_trajectories: int,
    seed: int = 123,
    params: HopperParams = HopperParams(),
    *,
    chunk: int = 500,
) -> TrajectoryDataset:
    """Generate the hopper data set by the protocol (module docstring).

    Args:
        n_trajectories: number of trajectories (the paper: 10,000).
        seed: seeds every random draw (initial states, then windows); same seed, same data.
        params: the protocol's numbers.
        chunk: trajectories per :func:`simulate_batch` call (memory only; no effect on values).

    Returns:
        a :class:`physid.data.TrajectoryDataset`: ``t`` ``(window,)``, ``y`` raw states
        ``(n, window, 14)``. Its metadata holds ``n_train`` (the first ``n_train`` trajectories
        train, the rest test), the window ``starts``, and ``normalisation``: the statistics of
        both schemes (``{"minmax": {...}, "reference": {...}, "default": "minmax"}``), to be
        used with :func:`normalise` / :func:`denormalise`.

    Raises:
        ConfigError: fewer than 2 trajectories (no test split).
        PhysicsError: a trajectory diverged.
    """
    if n_trajectories < 2:
        raise ConfigError(
            f"need at least 2 trajectories for a train/test split, got {n_trajectories}."
        )
    model = _cached_model()
    if abs(model.opt.timestep - params.timestep) > 1e-12:
        raise ConfigError(
            f"params.timestep={params.timestep} differs from the model's {model.opt.timestep}."
        )
    rng = np.random.default_rng(seed)
    qpos0, qvel0 = sample_initial_states(n_trajectories, rng, params)
    full = np.empty((n_trajectories, params.n_steps, 14))
    for a in range(0, n_trajectories, chunk):
        b = min(a + chunk, n_trajectories)
        full[a:b] = simulate_batch(qpos0[a:b], qvel0[a:b], params.n_steps, model=model)
    y, starts = make_windows(full, params.window, rng)
    train, _ = split_indices(
        n_trajectories, (params.train_fraction, 1.0 - params.train_fraction), shuffle=False
    )
    n_train = min(max(len(train), 1), n_trajectories - 1)
    stats = {
        "minmax": normalisation_stats(y[:n_train], "minmax"),
        # the reference normalises the full trajectories before cutting windows
        "reference": {**normalisation_stats(full, "reference"), "over": REFERENCE_STATS_OVER},
    }
    t = params.timestep * np.arange(params.window)
    metadata = make_metadata(
        simulator=ENV_ID,
        params=params,
        seed=seed,
        system="hopper",
        integrator="mujoco Euler (dt 0.005)",
        mujoco_version=mujoco.__version__,
        state_names=list(STATE_NAMES),
        n_train=n_train,
        starts=starts,
        format_version=FORMAT_VERSION,
        normalisation={
            "default": "minmax",
            "note": (
                "minmax: (x - min)/(max - min) per feature over the training windows; "
                "reference: (x - min)/max over the full trajectories of the whole set, before "
                "windowing (Rubanova et al.'s quirk)."
            ),
            **stats,
        },
    )
    return TrajectoryDataset(t=t, y=y, metadata=metadata)


def normalisation_of(dataset: TrajectoryDataset, scheme: str | None = None) -> dict[str, Any]:
    """The normalisation statistics stored in a hopper data set's metadata.

    Raises:
        DataError: the data set carries no hopper normalisation statistics.
        ConfigError: unknown scheme.
    """
    norm = dataset.metadata.get("normalisation")
    if not isinstance(norm, dict):
        raise DataError("this data set has no hopper normalisation statistics in its metadata.")
    scheme = scheme or norm.get("default", "minmax")
    if scheme not in NORMALISATIONS:
        raise ConfigError(f"unknown normalisation {scheme!r}; choose one of {NORMALISATIONS}.")
    if scheme not in norm:
        raise DataError(f"this data set has no {scheme!r} normalisation statistics.")
    if scheme == "reference" and norm[scheme].get("over") != REFERENCE_STATS_OVER:
        raise DataError(
            "this data set's 'reference' normalisation was taken over the windows (physid before "
            "format 2), not over the full trajectories as the reference does; re-simulate it "
            "(physid simulate hopper)."
        )
    return norm[scheme]


class HopperEnv(gym.Env):
    """The planar hopper as a gymnasium environment (``physid/Hopper-v0``).

    Observation: the 14-dim state ``qpos ⊕ qvel`` (float64, unbounded). Action: the four motor
    inputs in [-1, 1] (waist, hip, knee, ankle; gears 30, 40, 30, 10). One ``step`` is one
    MuJoCo step of 0.005 s. ``reset`` draws the initial state by the data set protocol, so a
    zero-action rollout from ``reset(seed=s)`` is a data set trajectory. There is no task: the
    reward is 0 and episodes never terminate (the registration truncates at 200 steps).

    Args:
        render_mode: ``None`` or ``"rgb_array"`` (MuJoCo's offscreen renderer; headless through
            EGL, ``MUJOCO_GL=egl``).
        width, height: frame size for rendering.
        camera: the camera to render from (``"cam0"`` tracks the centre of mass from the side).
        params: initial-state ranges.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 200}

    def __init__(
        self,
        render_mode: str | None = None,
        *,
        width: int = 320,
        height: int = 240,
        camera: str = "cam0",
        params: HopperParams = HopperParams(),
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.render_mode = render_mode
        self.params = params
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.width, self.height, self.camera = width, height, camera
        self._renderer: mujoco.Renderer | None = None
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(14,), dtype=np.float64)
        lo, hi = self.model.actuator_ctrlrange[:, 0], self.model.actuator_ctrlrange[:, 1]
        self.action_space = spaces.Box(
            lo.astype(np.float32), hi.astype(np.float32), dtype=np.float32
        )

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Put the simulator in a given state (``(7,)`` each)."""
        qpos, qvel = _check_states(qpos, qvel)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        qpos, qvel = sample_initial_states(1, self.np_random, self.params)
        self.set_state(qpos[0], qvel[0])
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(4)
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data)
        if self.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0:
            raise PhysicsError(
                f"MuJoCo reported an unstable acceleration at t={self.data.time:.3f}."
            )
        return self._obs(), 0.0, False, False, {"time": float(self.data.time)}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def render_states(
    states: np.ndarray,
    *,
    width: int = 320,
    height: int = 240,
    camera: str = "cam0",
    rgba: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Render a sequence of hopper states.

    Args:
        states: ``(T, 14)`` or ``(T, 7)`` (qpos only; velocities are not needed to draw).
        width, height: frame size.
        camera: the camera (``"cam0"`` follows the centre of mass from the side).
        rgba: the hopper's colour (default the suite's brown), e.g. to tell a model from the truth.

    Returns:
        ``(T, height, width, 3)`` uint8 frames.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] not in (7, 14):
        raise ConfigError(f"states must be (T, 14) or (T, 7), got {states.shape}.")
    model = load_model()
    if rgba is not None:
        model.mat_rgba[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, "self")] = rgba
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    frames = np.empty((states.shape[0], height, width, 3), dtype=np.uint8)
    try:
        for k, s in enumerate(states):
            data.qpos[:] = s[:7]
            if states.shape[1] == 14:
                data.qvel[:] = s[7:]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames[k] = renderer.render()
    finally:
        renderer.close()
    return frames
