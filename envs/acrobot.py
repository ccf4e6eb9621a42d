"""The fully-actuated acrobot (a double pendulum with a torque on each joint).

This is the system of Zhong et al. 2020 (*Symplectic ODE-Net*), on which Kidger et al. 2021
(*"Hey, that's not an ODE"*, Table 3) compare the adjoint's default error norm with the seminorm.
The constants are SymODEN's: m1 = m2 = 1, l1 = l2 = 1, lc1 = lc2 = 0.5, I1 = I2 = 1 (moments of
inertia about the centres of mass), g = 9.8. ``q1`` is the angle of link 1 from hanging straight
down, ``q2`` the angle of link 2 relative to link 1; the upright position is ``q = (pi, 0)``.

The state is ``[q1, q2, dq1, dq2]`` and the equations of motion are the standard manipulator
equations

    M(q) ddq + C(q, dq) dq + G(q) = u,       u = (u1, u2), one torque per joint,

(the reference environment of SymODEN routes its two inputs unconventionally; physid uses the
textbook form, and a learned input matrix g(q) absorbs any input map). Controls are held constant
over each control period of 0.05 s (zero-order hold).

One pure function, :func:`dynamics`, holds the equations; the ground-truth integrator
(:func:`simulate`, scipy's DOP853 at rtol 1e-10), the gymnasium environment (:class:`AcrobotEnv`)
and the oracle controller of ``physid.control`` all use it, so the identification target is
exactly the data generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from scipy.integrate import solve_ivp

from physid.errors import ConfigError, PhysicsError

__all__ = [
    "ENV_ID",
    "STATE_DIM",
    "CONTROL_DIM",
    "CONTROL_PERIOD",
    "MAX_TORQUE",
    "PAPER_CONTROLS",
    "PHYSICAL_PARAMETERS",
    "BASE_PARAMETERS",
    "AcrobotParams",
    "base_parameters",
    "mass_matrix",
    "potential",
    "input_matrix",
    "dynamics",
    "dynamics_numpy",
    "energy",
    "tip_height",
    "simulate",
    "simulate_constant_controls",
    "to_channels",
    "from_channels",
    "render_frame",
    "AcrobotEnv",
]

ENV_ID = "physid/Acrobot-v0"
STATE_DIM = 4
CONTROL_DIM = 2
CONTROL_PERIOD = 0.05
"""Seconds between control updates (zero-order hold), SymODEN's value."""
MAX_TORQUE = 50.0
"""Default bound of each joint torque in the environment's action space."""
PAPER_CONTROLS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.0, 1.0),
    (0.0, -1.0),
    (0.0, 2.0),
    (0.0, -2.0),
    (1.0, 0.0),
    (-1.0, 0.0),
    (2.0, 0.0),
    (-2.0, 0.0),
)
"""The nine constant controls of the seminorm paper's training data."""

PHYSICAL_PARAMETERS = ("m1", "m2", "l1", "lc1", "lc2", "i1", "i2")
"""The constants that enter the dynamics (``l2`` does not; ``gravity`` is taken as known)."""
BASE_PARAMETERS = ("a1", "a2", "a3", "a4", "a5")
"""The combinations the dynamics depend on (:func:`base_parameters`)."""

TRUTH_RTOL = 1e-10
TRUTH_ATOL = 1e-10


@dataclasses.dataclass(frozen=True)
class AcrobotParams:
    """Physical constants of the acrobot (SymODEN's values by default).

    Attributes:
        m1, m2: link masses.
        l1, l2: link lengths (l2 only matters for drawing and the tip height).
        lc1, lc2: distance from each joint to its link's centre of mass.
        i1, i2: moments of inertia of the links about their centres of mass.
        gravity: gravitational acceleration.

    Raises:
        ConfigError: on a non-finite or non-positive constant.
    """

    m1: float = 1.0
    m2: float = 1.0
    l1: float = 1.0
    l2: float = 1.0
    lc1: float = 0.5
    lc2: float = 0.5
    i1: float = 1.0
    i2: float = 1.0
    gravity: float = 9.8

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = float(getattr(self, field.name))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"AcrobotParams.{field.name} must be finite and > 0, got {value}."
                )
            object.__setattr__(self, field.name, value)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return dataclasses.asdict(self)


def _check_state(state: torch.Tensor) -> None:
    if state.shape[-1] != STATE_DIM:
        raise ConfigError(
            f"The acrobot state is [q1, q2, dq1, dq2] ({STATE_DIM} entries), got shape "
            f"{tuple(state.shape)}."
        )


def base_parameters(
    params: AcrobotParams | torch.Tensor, gravity: float | torch.Tensor = 9.8
) -> torch.Tensor:
    """The five combinations of the constants that the equations of motion depend on.

    Expanding the manipulator equations,

        M(q) = [[a1 + a2 + 2 a3 cos q2,  a2 + a3 cos q2],
                [a2 + a3 cos q2,          a2          ]],
        C(q, dq) dq = a3 sin q2 [-(2 dq1 dq2 + dq2²), dq1²],
        V(q) = -a4 cos q1 - a5 cos(q1 + q2),

    with ``a1 = i1 + m1 lc1² + m2 l1²``, ``a2 = i2 + m2 lc2²``, ``a3 = m2 l1 lc2``,
    ``a4 = g (m1 lc1 + m2 l1)`` and ``a5 = g m2 lc2``. Seven constants
    (:data:`PHYSICAL_PARAMETERS`; ``l2`` does not enter the dynamics) map onto five numbers, so
    trajectories determine at most these five (with known torques; without input, only their
    ratios): two combinations of the physical constants are invisible to motion.

    Args:
        params: an :class:`AcrobotParams`, or a tensor ``(..., 7)`` of
            :data:`PHYSICAL_PARAMETERS` (then ``gravity`` is used).
        gravity: the gravitational acceleration for a tensor ``params``.

    Returns:
        ``(..., 5)`` ``[a1, a2, a3, a4, a5]`` (float64 for :class:`AcrobotParams`).
    """
    if isinstance(params, AcrobotParams):
        p = params
        values = (p.m1, p.m2, p.l1, p.lc1, p.lc2, p.i1, p.i2)
        m1, m2, l1, lc1, lc2, i1, i2 = (torch.tensor(v, dtype=torch.float64) for v in values)
        g: float | torch.Tensor = p.gravity
    else:
        if params.shape[-1] != len(PHYSICAL_PARAMETERS):
            raise ConfigError(
                f"physical acrobot parameters are {PHYSICAL_PARAMETERS}, got shape "
                f"{tuple(params.shape)}."
            )
        m1, m2, l1, lc1, lc2, i1, i2 = params.unbind(-1)
        g = gravity
    return torch.stack(
        [
            i1 + m1 * lc1**2 + m2 * l1**2,
            i2 + m2 * lc2**2,
            m2 * l1 * lc2,
            g * (m1 * lc1 + m2 * l1),
            g * m2 * lc2,
        ],
        -1,
    )


def _base(params: AcrobotParams | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    base = base_parameters(params) if isinstance(params, AcrobotParams) else params
    if base.shape[-1] != len(BASE_PARAMETERS):
        raise ConfigError(
            f"a tensor of acrobot parameters holds the base parameters {BASE_PARAMETERS}, got "
            f"shape {tuple(base.shape)}."
        )
    return base.to(dtype=like.dtype, device=like.device)


def mass_matrix(q: torch.Tensor, params: AcrobotParams | torch.Tensor) -> torch.Tensor:
    """The inertia matrix M(q), ``q (..., 2)`` -> ``(..., 2, 2)`` (depends on q2 only).

    ``params``: an :class:`AcrobotParams` or the base parameters ``(..., 5)``
    (:func:`base_parameters`).
    """
    a1, a2, a3, _, _ = _base(params, q).unbind(-1)
    c2 = torch.cos(q[..., 1])
    m11 = a1 + a2 + 2 * a3 * c2
    m12 = a2 + a3 * c2
    m22 = a2 + torch.zeros_like(c2)
    return torch.stack([torch.stack([m11, m12], -1), torch.stack([m12, m22], -1)], -2)


def potential(q: torch.Tensor, params: AcrobotParams | torch.Tensor) -> torch.Tensor:
    """Gravitational potential energy V(q), ``q (..., 2)`` -> ``(...)``; minimal hanging down.

    ``params``: an :class:`AcrobotParams` or the base parameters ``(..., 5)``.
    """
    base = _base(params, q)
    q1, q2 = q[..., 0], q[..., 1]
    return -base[..., 3] * torch.cos(q1) - base[..., 4] * torch.cos(q1 + q2)


def input_matrix(q: torch.Tensor, params: AcrobotParams | torch.Tensor) -> torch.Tensor:
    """The true input matrix g(q): the identity (a torque per joint), ``(..., 2, 2)``."""
    eye = torch.eye(CONTROL_DIM, dtype=q.dtype, device=q.device)
    return eye.expand(*q.shape[:-1], CONTROL_DIM, CONTROL_DIM)


def dynamics(
    t: torch.Tensor | float,
    state: torch.Tensor,
    params: AcrobotParams | torch.Tensor,
    control: torch.Tensor | None = None,
) -> torch.Tensor:
    """Time derivative of the acrobot state.

    Args:
        t: time (unused: the system is autonomous; kept for the ``f(t, y)`` convention).
        state: ``(..., 4)`` ordered ``[q1, q2, dq1, dq2]``; any leading batch dims.
        params: the physical constants, or the base parameters ``(..., 5)`` of
            :func:`base_parameters` (broadcast against the batch; this is how the known-form
            model passes its learnable constants).
        control: joint torques ``(..., 2)`` (broadcast against the batch); ``None`` means zero.

    Returns:
        ``(..., 4)`` derivative ``[dq1, dq2, ddq1, ddq2]``, same dtype and device as ``state``.
    """
    _check_state(state)
    a1, a2, a3, a4, a5 = _base(params, state).unbind(-1)
    q, dq = state[..., :2], state[..., 2:]
    q1, q2 = q[..., 0], q[..., 1]
    dq1, dq2 = dq[..., 0], dq[..., 1]
    h = a3 * torch.sin(q2)
    # Coriolis and centrifugal torques C(q, dq) dq.
    coriolis = torch.stack([-h * (2 * dq1 * dq2 + dq2 * dq2), h * dq1 * dq1], -1)
    # Gravity torques G(q) = dV/dq.
    s12 = a5 * torch.sin(q1 + q2)
    grav = torch.stack([a4 * torch.sin(q1) + s12, s12], -1)
    rhs = -coriolis - grav
    if control is not None:
        rhs = rhs + control.to(dtype=state.dtype, device=state.device)
    # Solve M ddq = rhs in closed form (cheap, batched, differentiable).
    c2 = torch.cos(q2)
    m11 = a1 + a2 + 2 * a3 * c2
    m12 = a2 + a3 * c2
    det = m11 * a2 - m12 * m12
    ddq1 = (a2 * rhs[..., 0] - m12 * rhs[..., 1]) / det
    ddq2 = (m11 * rhs[..., 1] - m12 * rhs[..., 0]) / det
    return torch.cat([dq, torch.stack([ddq1, ddq2], -1)], -1)


def dynamics_numpy(
    t: float, state: np.ndarray, params: AcrobotParams, control: np.ndarray | None = None
) -> np.ndarray:
    """:func:`dynamics` evaluated in float64 on numpy arrays (for scipy's integrators)."""
    state_t = torch.from_numpy(np.asarray(state, dtype=np.float64))
    control_t = None if control is None else torch.from_numpy(np.asarray(control, np.float64))
    with torch.no_grad():
        return dynamics(t, state_t, params, control_t).numpy()


def energy(state: np.ndarray | torch.Tensor, params: AcrobotParams) -> np.ndarray | torch.Tensor:
    """Total mechanical energy ½ dqᵀ M(q) dq + V(q) of states ``(..., 4)`` -> ``(...)``.

    Returns a numpy array for numpy input and a tensor for tensor input.
    """
    is_numpy = not isinstance(state, torch.Tensor)
    s = torch.as_tensor(np.asarray(state, dtype=np.float64)) if is_numpy else state
    q, dq = s[..., :2], s[..., 2:]
    kinetic = 0.5 * torch.einsum("...i,...ij,...j->...", dq, mass_matrix(q, params), dq)
    e = kinetic + potential(q, params)
    return e.numpy() if is_numpy else e


def tip_height(state: np.ndarray | torch.Tensor, params: AcrobotParams | None = None):
    """Height of the tip of link 2 above the pivot, ``(..., >=2)`` -> ``(...)``.

    ``-l1 cos q1 - l2 cos(q1 + q2)``: ``-(l1 + l2)`` hanging down, ``l1 + l2`` upright.
    """
    p = params or AcrobotParams()
    lib = torch if isinstance(state, torch.Tensor) else np
    q1, q2 = state[..., 0], state[..., 1]
    return -p.l1 * lib.cos(q1) - p.l2 * lib.cos(q1 + q2)


def _as_batch(x: np.ndarray | Sequence[float], width: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[-1:] != (width,):
        raise ConfigError(f"{name} must have a last dimension of {width}, got shape {arr.shape}.")
    return arr


def simulate(
    state0: np.ndarray | Sequence[float],
    controls: np.ndarray | Sequence[Sequence[float]],
    params: AcrobotParams | None = None,
    *,
    period: float = CONTROL_PERIOD,
    rtol: float = TRUTH_RTOL,
    atol: float = TRUTH_ATOL,
) -> np.ndarray:
    """Ground truth: integrate under a zero-order-hold control sequence with scipy's DOP853.

    The whole batch is integrated as one system (one adaptive step sequence), one control period
    at a time, the control held constant within each period.

    Args:
        state0: initial states ``(..., 4)``.
        controls: torques ``(steps, ..., 2)``; ``controls[k]`` acts on ``[k·period, (k+1)·period)``.
            A ``(steps, 2)`` array is broadcast over the batch.
        params: physical constants (SymODEN's by default).
        period: control period in seconds.
        rtol, atol: DOP853 tolerances (1e-10 by default).

    Returns:
        ``(steps + 1, ..., 4)`` states at ``t = 0, period, ..., steps·period``.

    Raises:
        PhysicsError: if the integration fails or the state becomes non-finite.
    """
    params = params or AcrobotParams()
    x0 = _as_batch(state0, STATE_DIM, "state0")
    u = _as_batch(controls, CONTROL_DIM, "controls")
    if u.ndim < 2:
        raise ConfigError(f"controls must be (steps, ..., 2), got shape {u.shape}.")
    batch = x0.shape[:-1]
    if u.ndim == 2:  # one sequence for the whole batch
        u = u.reshape(u.shape[0], *([1] * len(batch)), CONTROL_DIM)
    try:
        u = np.broadcast_to(u, (u.shape[0], *batch, CONTROL_DIM))
    except ValueError:
        raise ConfigError(
            f"controls of shape {u.shape} do not fit states of shape {x0.shape}: give "
            "(steps, 2) or (steps, *batch, 2)."
        ) from None
    out = np.empty((u.shape[0] + 1, *batch, STATE_DIM))
    out[0] = x0
    x = x0.reshape(-1)
    for k in range(u.shape[0]):
        uk = np.array(u[k])  # a writable copy for torch.from_numpy

        def rhs(t: float, flat: np.ndarray, uk: np.ndarray = uk) -> np.ndarray:
            return dynamics_numpy(t, flat.reshape(*batch, STATE_DIM), params, uk).reshape(-1)

        sol = solve_ivp(rhs, (0.0, period), x, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success or not np.all(np.isfinite(sol.y[:, -1])):
            raise PhysicsError(
                f"The acrobot integration failed in control period {k} (t = {k * period:.3f} s): "
                f"{sol.message}. Check the torques for huge values."
            )
        x = sol.y[:, -1]
        out[k + 1] = x.reshape(*batch, STATE_DIM)
    return out


def simulate_constant_controls(
    n_per_control: int,
    *,
    seed: int,
    n_steps: int = 32,
    controls: Sequence[Sequence[float]] = PAPER_CONTROLS,
    params: AcrobotParams | None = None,
    period: float = CONTROL_PERIOD,
    rtol: float = TRUTH_RTOL,
    atol: float = TRUTH_ATOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seminorm paper's data: constant controls, initial states ~ U(-pi, pi)^4.

    Args:
        n_per_control: trajectories per control (128 in the paper).
        seed: seed of the initial-state generator.
        n_steps: control periods per trajectory (32 in the paper): ``n_steps + 1`` samples.
        controls: the constant controls (the paper's nine by default).

    Returns:
        ``(t, states, u)``: times ``(n_steps + 1,)``, states ``(n, n_steps + 1, 4)`` and the
        constant control of each trajectory ``(n, 2)``, ``n = len(controls) * n_per_control``,
        ordered control by control.
    """
    if n_per_control < 1 or n_steps < 1:
        raise ConfigError(
            f"n_per_control and n_steps must be >= 1, got {n_per_control}, {n_steps}."
        )
    rng = np.random.default_rng(seed)
    ctrl = np.asarray(controls, dtype=np.float64)
    x0 = rng.uniform(-math.pi, math.pi, size=(len(ctrl), n_per_control, STATE_DIM))
    u = np.repeat(ctrl[:, None, :], n_per_control, axis=1)  # (controls, n, 2)
    seq = np.broadcast_to(u, (n_steps, *u.shape))
    states = simulate(x0, seq, params, period=period, rtol=rtol, atol=atol)  # (T, c, n, 4)
    states = np.moveaxis(states, 0, 2).reshape(-1, n_steps + 1, STATE_DIM)
    t = np.arange(n_steps + 1) * period
    return t, states, u.reshape(-1, CONTROL_DIM)


def to_channels(state: np.ndarray | torch.Tensor, u: np.ndarray | torch.Tensor):
    """State ``(..., 4)`` and control ``(..., 2)`` -> SymODEN's channels ``(..., 8)``.

    The channels are ``[cos q1, cos q2, sin q1, sin q2, dq1, dq2, u1, u2]``.
    """
    lib = torch if isinstance(state, torch.Tensor) else np
    q, dq = state[..., :2], state[..., 2:]
    cat = torch.cat if lib is torch else np.concatenate
    return cat([lib.cos(q), lib.sin(q), dq, u], -1)


def from_channels(x: np.ndarray | torch.Tensor):
    """SymODEN's channels ``(..., 8)`` -> (state ``(..., 4)``, control ``(..., 2)``)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    cat = torch.cat if lib is torch else np.concatenate
    q = lib.arctan2(x[..., 2:4], x[..., 0:2])
    return cat([q, x[..., 4:6]], -1), x[..., 6:8]


def render_frame(
    state: np.ndarray | Sequence[float], params: AcrobotParams | None = None, size: int = 256
) -> np.ndarray:
    """Draw the two links as an RGB image ``(size, size, 3)`` uint8 (pure numpy, fast)."""
    p = params or AcrobotParams()
    q1, q2 = float(state[0]), float(state[1])
    reach = p.l1 + p.l2
    scale = 0.45 * size / reach
    c = size / 2.0
    pivot = np.array([c, c])
    # Image coordinates: x right, y down; physical y up.
    elbow = pivot + scale * np.array([p.l1 * math.sin(q1), p.l1 * math.cos(q1)])
    tip = elbow + scale * np.array([p.l2 * math.sin(q1 + q2), p.l2 * math.cos(q1 + q2)])
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xx, yy], -1)
    # Target: the upright tip position, a light ring.
    target = pivot + scale * np.array([0.0, -reach])
    ring = np.abs(np.linalg.norm(pts - target, axis=-1) - 0.04 * size) < 1.0
    img[ring] = (120, 200, 120)
    width = max(2.0, 0.025 * size)
    for a, b, colour in ((pivot, elbow, (40, 90, 200)), (elbow, tip, (220, 110, 40))):
        ab = b - a
        tt = np.clip(((pts - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        dist = np.linalg.norm(pts - (a + tt[..., None] * ab), axis=-1)
        img[dist < width] = colour
    for joint in (pivot, elbow):
        img[np.linalg.norm(pts - joint, axis=-1) < 1.3 * width] = (30, 30, 30)
    return img


class AcrobotEnv(gym.Env):
    """Gymnasium environment of the fully-actuated acrobot.

    Actions are joint torques ``Box(-max_torque, max_torque, (2,))``, held for one control period
    (0.05 s) and integrated with DOP853 at rtol 1e-10. Observations are
    ``[cos q1, sin q1, cos q2, sin q2, dq1, dq2]``. The reward is the tip height minus a small
    torque cost; episodes never terminate (the registration truncates them at 400 steps = 20 s).

    Args:
        params: physical constants (SymODEN's by default).
        max_torque: bound of each torque.
        max_speed: bound of the joint speeds in the observation space (not enforced on the state).
        render_mode: ``None`` or ``"rgb_array"``.

    ``reset(options={"state": [q1, q2, dq1, dq2]})`` starts from a given state; by default the
    state is drawn from U(-0.1, 0.1)^4 around hanging down.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / CONTROL_PERIOD))}

    def __init__(
        self,
        params: AcrobotParams | None = None,
        *,
        max_torque: float = MAX_TORQUE,
        max_speed: float = 100.0,
        render_mode: str | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.params = params or AcrobotParams()
        self.render_mode = render_mode
        self.max_torque = float(max_torque)
        self.action_space = gym.spaces.Box(
            -self.max_torque, self.max_torque, shape=(CONTROL_DIM,), dtype=np.float32
        )
        high = np.array([1.0, 1.0, 1.0, 1.0, max_speed, max_speed], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.state = np.zeros(STATE_DIM)

    def _obs(self) -> np.ndarray:
        q1, q2, dq1, dq2 = self.state
        obs = [math.cos(q1), math.sin(q1), math.cos(q2), math.sin(q2), dq1, dq2]
        return np.clip(
            np.array(obs, dtype=np.float32), self.observation_space.low, self.observation_space.high
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "state" in options:
            self.state = _as_batch(options["state"], STATE_DIM, "options['state']").copy()
        else:
            self.state = self.np_random.uniform(-0.1, 0.1, size=STATE_DIM)
        return self._obs(), {"state": self.state.copy()}

    def step(self, action):
        u = np.clip(np.asarray(action, dtype=np.float64), -self.max_torque, self.max_torque)
        self.state = simulate(self.state, u[None], self.params)[-1]
        height = float(tip_height(self.state, self.params))
        reward = height - 1e-3 * float(u @ u)
        return self._obs(), reward, False, False, {"state": self.state.copy(), "tip_height": height}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return render_frame(self.state, self.params)
