"""Newtonian gravity for three point masses in 3-D (the ACA paper's three-body system).

Units are the nondimensional ones of Zhuang et al. 2020 (*Adaptive Checkpoint Adjoint*, Table 5):
mass unit 1.989e30 kg, length unit 5.326e12 m (about 35.6 AU), velocity unit 30 km/s, time unit
about 40.75 years. In them the equations of motion read

    dr_i/dt = K2 v_i,     dv_i/dt = K1 sum_{j != i} m_j (r_j - r_i) / |r_j - r_i|^3

with K1 = 0.2004844 and K2 = 7.2393239. The state is ordered ``[r1, r2, r3, v1, v2, v3]``
(18 numbers).

One pure function, :func:`dynamics`, holds these equations. The ground-truth simulator
(:func:`simulate`, scipy's DOP853 at tight tolerance), the gymnasium environment
(:class:`ThreeBodyEnv`) and the known-form model of ``models.known_form`` all call it, so the
identification target is exactly the data generator.
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
    "K1",
    "K2",
    "DEFAULT_MASSES",
    "DEFAULT_Y0",
    "STATE_DIM",
    "ThreeBodyParams",
    "dynamics",
    "dynamics_numpy",
    "simulate",
    "energy",
    "momentum",
    "pair_distances",
    "default_initial_state",
    "random_system",
    "train_times",
    "eval_times",
    "ThreeBodyEnv",
]

K1 = 0.2004844
"""Gravitational constant in the paper's units (acceleration per unit mass / distance^2)."""
K2 = 7.2393239
"""Velocity unit over length unit per time unit: dr/dt = K2 v."""

STATE_DIM = 18
DEFAULT_MASSES = (1.1, 1.1, 0.9)
DEFAULT_POSITIONS = ((0.0, 0.2, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 0.5))
DEFAULT_VELOCITIES = ((0.0, 0.1, 0.0), (0.0, 0.0, 0.1), (0.1, 0.0, 0.0))
DEFAULT_Y0 = tuple(x for body in (*DEFAULT_POSITIONS, *DEFAULT_VELOCITIES) for x in body)
"""The initial conditions of the ACA paper's experiment, ordered [r1, r2, r3, v1, v2, v3]."""


@dataclasses.dataclass(frozen=True)
class ThreeBodyParams:
    """Physical constants of a three-body system.

    Attributes:
        masses: the three masses (paper units, positive).
        k1: gravitational constant in the paper's units.
        k2: dr/dt = k2 v.

    Raises:
        ConfigError: on a wrong number of masses or a non-positive / non-finite value.
    """

    masses: tuple[float, float, float] = DEFAULT_MASSES
    k1: float = K1
    k2: float = K2

    def __post_init__(self) -> None:
        masses = tuple(float(m) for m in self.masses)
        if len(masses) != 3:
            raise ConfigError(f"ThreeBodyParams needs exactly 3 masses, got {len(masses)}.")
        if not all(math.isfinite(m) and m > 0 for m in masses):
            raise ConfigError(f"Masses must be finite and positive, got {masses}.")
        for name in ("k1", "k2"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and positive, got {value}.")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "masses", masses)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary."""
        return {"masses": list(self.masses), "k1": self.k1, "k2": self.k2}


def dynamics(
    t: torch.Tensor | float,
    state: torch.Tensor,
    params: ThreeBodyParams | torch.Tensor,
    control: torch.Tensor | None = None,
) -> torch.Tensor:
    """Time derivative of the three-body state.

    Args:
        t: time (unused: the system is autonomous; kept for the ``f(t, y)`` convention).
        state: ``(..., 18)`` ordered ``[r1, r2, r3, v1, v2, v3]``; any leading batch dims.
        params: a :class:`ThreeBodyParams`, or a tensor of masses ``(3,)`` or ``(..., 3)``
            (broadcast against the batch dims; this is how the known-form model passes its
            learnable masses). With a tensor, K1 and K2 are the module constants.
        control: optional external acceleration ``(..., 9)`` added to dv/dt (the system itself is
            unactuated; ``None`` means zero).

    Returns:
        ``(..., 18)`` derivative, same dtype and device as ``state``.
    """
    if state.shape[-1] != STATE_DIM:
        raise ConfigError(f"The three-body state has {STATE_DIM} entries, got shape {state.shape}.")
    if isinstance(params, ThreeBodyParams):
        masses = torch.as_tensor(params.masses, dtype=state.dtype, device=state.device)
        k1, k2 = params.k1, params.k2
    else:
        masses = params.to(dtype=state.dtype, device=state.device)
        k1, k2 = K1, K2
    batch = state.shape[:-1]
    r = state[..., :9].reshape(*batch, 3, 3)  # (..., body, xyz)
    v = state[..., 9:]
    diff = r.unsqueeze(-3) - r.unsqueeze(-2)  # (..., i, j, xyz) = r_j - r_i
    # Adding the identity keeps the (zero) self-interaction finite and its gradient zero.
    eye = torch.eye(3, dtype=state.dtype, device=state.device)
    dist2 = (diff * diff).sum(-1) + eye
    weight = masses.unsqueeze(-2) * dist2.pow(-1.5)  # (..., i, j) = m_j / |r_j - r_i|^3
    accel = k1 * (weight.unsqueeze(-1) * diff).sum(-2)  # (..., i, xyz)
    accel = accel.reshape(*batch, 9)
    if control is not None:
        accel = accel + control
    return torch.cat([k2 * v, accel], dim=-1)


def dynamics_numpy(
    t: float, state: np.ndarray, params: ThreeBodyParams, control: np.ndarray | None = None
) -> np.ndarray:
    """:func:`dynamics` evaluated in float64 on numpy arrays (for scipy's integrators)."""
    state_t = torch.from_numpy(np.asarray(state, dtype=np.float64))
    control_t = None if control is None else torch.from_numpy(np.asarray(control, np.float64))
    with torch.no_grad():
        return dynamics(t, state_t, params, control_t).numpy()


def pair_distances(y: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Distances ``|r1 - r2|, |r1 - r3|, |r2 - r3|`` of states ``(..., 18)`` -> ``(..., 3)``."""
    r = y[..., :9].reshape(*y.shape[:-1], 3, 3)
    i, j = [0, 0, 1], [1, 2, 2]
    d = r[..., i, :] - r[..., j, :]
    return (d * d).sum(-1) ** 0.5


def energy(y: np.ndarray, params: ThreeBodyParams) -> np.ndarray:
    """Conserved energy (in units of K2 x the physical energy) of states ``(..., 18)``.

    E = K2/2 sum_i m_i |v_i|^2 - K1 sum_{i<j} m_i m_j / |r_i - r_j|.
    """
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(params.masses)
    v = y[..., 9:].reshape(*y.shape[:-1], 3, 3)
    kinetic = 0.5 * params.k2 * np.sum(m * np.sum(v * v, axis=-1), axis=-1)
    d = np.asarray(pair_distances(y))
    mm = np.array([m[0] * m[1], m[0] * m[2], m[1] * m[2]])
    potential = -params.k1 * np.sum(mm / d, axis=-1)
    return kinetic + potential


def momentum(y: np.ndarray, params: ThreeBodyParams) -> np.ndarray:
    """Total linear momentum sum_i m_i v_i of states ``(..., 18)`` -> ``(..., 3)``."""
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(params.masses)
    v = y[..., 9:].reshape(*y.shape[:-1], 3, 3)
    return np.sum(m[:, None] * v, axis=-2)


def default_initial_state() -> np.ndarray:
    """The paper's initial state, ``(18,)`` float64."""
    return np.array(DEFAULT_Y0, dtype=np.float64)


def train_times(n: int = 1000, t_end: float = 1.0) -> np.ndarray:
    """The training grid: ``n`` equally spaced points on ``[0, t_end]`` (linspace)."""
    return np.linspace(0.0, t_end, n)


def eval_times(n: int = 2000, train_n: int = 1000, train_end: float = 1.0) -> np.ndarray:
    """The test grid: ``n`` points half a training step off the training grid, ``t[0] = 0``.

    ``t_k = (k + 1/2) h`` with the training step ``h = train_end / (train_n - 1)``, for
    ``k = 0 .. n-1``; then ``t_0`` is replaced by 0 so that the initial state is the first output.
    With the defaults this covers [0, 2] (the last point is 2.0015): every test point lies
    midway between two training points on [0, 1], so the test checks interpolation there and
    extrapolation beyond.
    """
    h = train_end / (train_n - 1)
    t = (np.arange(n, dtype=np.float64) + 0.5) * h
    t[0] = 0.0
    return t


def simulate(
    params: ThreeBodyParams,
    y0: np.ndarray | Sequence[float],
    t: np.ndarray | Sequence[float],
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    max_energy_drift: float | None = 1e-6,
    min_distance: float | None = None,
) -> np.ndarray:
    """Ground-truth trajectories from scipy's DOP853 at tight tolerance.

    Args:
        params: the physical constants.
        y0: initial state ``(18,)`` or a batch ``(n, 18)``.
        t: strictly increasing output times ``(T,)``; the solve starts at ``t[0]``.
        rtol, atol: DOP853 tolerances. The default 1e-12 keeps the relative energy drift over
            [0, 2] near 7e-11 through the paper's close encounters (1e-11 gives 7.5e-10) and the
            trajectory within ~1.5e-9 of a 1e-13 solve, at the same cost (~0.6 s).
        max_energy_drift: raise if the relative energy drift exceeds this (``None``: no check).
        min_distance: raise as soon as two bodies come closer than this (a terminal event, so
            a near-collision costs no time); ``None``: no limit.

    Returns:
        ``(T, 18)`` for one initial state, ``(n, T, 18)`` for a batch (float64).

    Raises:
        PhysicsError: the integrator failed (typically a collision), the state became
            non-finite, two bodies came closer than ``min_distance``, or energy was not
            conserved to ``max_energy_drift``.
        ConfigError: on bad shapes or times.
    """
    y0 = np.asarray(y0, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if y0.ndim == 2:
        return np.stack(
            [
                simulate(
                    params,
                    y,
                    t,
                    rtol=rtol,
                    atol=atol,
                    max_energy_drift=max_energy_drift,
                    min_distance=min_distance,
                )
                for y in y0
            ]
        )
    if y0.shape != (STATE_DIM,):
        raise ConfigError(f"y0 must have shape (18,) or (n, 18), got {y0.shape}.")
    if t.ndim != 1 or t.size < 1 or np.any(np.diff(t) <= 0):
        raise ConfigError("t must be a non-empty, strictly increasing 1-D array.")
    if t.size == 1:
        return y0[None].copy()
    events = None
    if min_distance is not None:

        def too_close(t: float, y: np.ndarray, params: ThreeBodyParams) -> float:
            return float(np.min(pair_distances(y))) - min_distance

        too_close.terminal = True  # type: ignore[attr-defined]
        events = [too_close]
    sol = solve_ivp(
        dynamics_numpy,
        (t[0], t[-1]),
        y0,
        method="DOP853",
        t_eval=t,
        rtol=rtol,
        atol=atol,
        args=(params,),
        events=events,
    )
    if sol.status == 1:
        raise PhysicsError(
            f"Two bodies came closer than {min_distance} at t={sol.t_events[0][0]:.6g}."
        )
    if not sol.success:
        raise PhysicsError(
            f"The three-body simulation failed at t={sol.t[-1] if sol.t.size else t[0]:.6g}: "
            f"{sol.message} (a collision? try other initial conditions or masses)."
        )
    y = sol.y.T
    if not np.all(np.isfinite(y)):
        raise PhysicsError("The three-body simulation produced a non-finite state (a collision).")
    if max_energy_drift is not None:
        e = energy(y, params)
        drift = float(np.max(np.abs(e - e[0])) / abs(e[0]))
        if drift > max_energy_drift:
            raise PhysicsError(
                f"Energy drifted by {drift:.2e} (relative) > {max_energy_drift:.0e}: the bodies "
                "came too close for the tolerances; tighten rtol/atol or change the system."
            )
    return y


def random_system(
    seed: int,
    *,
    mass_range: tuple[float, float] = (0.8, 1.2),
    position_noise: float = 0.05,
    velocity_noise: float = 0.02,
    min_distance: float = 0.01,
    t_end: float = 2.0,
    max_tries: int = 100,
) -> tuple[ThreeBodyParams, np.ndarray]:
    """A random unequal-mass system that stays collision-free on ``[0, t_end]``.

    Masses ~ U(mass_range); the initial state is the paper's plus U(-position_noise,
    position_noise) on each position and U(-velocity_noise, velocity_noise) on each velocity.
    (Fully random positions in the paper's box collide within [0, 2] about 9 times in 10; these
    perturbations keep the paper's character, close encounters included, and collide about half
    the time.) Draws are repeated until no pair comes closer than ``min_distance`` on
    ``[0, t_end]`` (screened with DOP853 at 1e-8 and a terminal event, so a rejection is cheap).

    Returns:
        ``(params, y0)``; the same seed always gives the same system.

    Raises:
        PhysicsError: no acceptable system within ``max_tries`` draws.
    """
    rng = np.random.default_rng(seed)
    base = default_initial_state()
    for _ in range(max_tries):
        masses = tuple(float(m) for m in rng.uniform(*mass_range, size=3))
        noise = np.concatenate(
            [
                rng.uniform(-position_noise, position_noise, 9),
                rng.uniform(-velocity_noise, velocity_noise, 9),
            ]
        )
        params, y0 = ThreeBodyParams(masses=masses), base + noise  # type: ignore[arg-type]
        try:
            simulate(
                params,
                y0,
                [0.0, t_end],
                rtol=1e-8,
                atol=1e-8,
                max_energy_drift=1e-5,
                min_distance=min_distance,
            )
        except PhysicsError:
            continue
        return params, y0
    raise PhysicsError(
        f"No collision-free random three-body system in {max_tries} draws (seed {seed}); "
        "try another seed, a smaller min_distance or smaller noise."
    )


class ThreeBodyEnv(gym.Env):
    """Gymnasium environment of the unactuated three-body system.

    Observation: the 18-dim state ``[r1, r2, r3, v1, v2, v3]`` (float64). Action: an empty
    ``Box`` of shape ``(0,)`` (the system has no actuation). Each ``step`` advances the true
    dynamics by ``dt`` with DOP853 at tight tolerance; reward is 0. An episode is truncated after
    ``max_steps`` and terminated if two bodies come closer than ``collision_distance``.

    Args:
        params: physical constants (default: the paper's masses).
        y0: nominal initial state (default: the paper's).
        dt: time per step (paper units).
        max_steps: steps per episode.
        ic_noise: standard deviation of Gaussian noise added to ``y0`` at ``reset`` (drawn from
            the environment's seeded generator; 0 gives the paper's system exactly).
        collision_distance: minimum pair distance before termination.
        render_mode: ``None`` or ``"rgb_array"``.
        rtol, atol: DOP853 tolerances per step.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        params: ThreeBodyParams | None = None,
        y0: Sequence[float] | np.ndarray | None = None,
        *,
        dt: float = 0.01,
        max_steps: int = 200,
        ic_noise: float = 0.0,
        collision_distance: float = 1e-3,
        render_mode: str | None = None,
        rtol: float = 1e-12,
        atol: float = 1e-12,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        if dt <= 0 or max_steps < 1 or ic_noise < 0:
            raise ConfigError("dt must be > 0, max_steps >= 1 and ic_noise >= 0.")
        self.params = params if params is not None else ThreeBodyParams()
        self.y0 = default_initial_state() if y0 is None else np.asarray(y0, dtype=np.float64)
        if self.y0.shape != (STATE_DIM,):
            raise ConfigError(f"y0 must have shape (18,), got {self.y0.shape}.")
        self.dt = float(dt)
        self.max_steps = int(max_steps)
        self.ic_noise = float(ic_noise)
        self.collision_distance = float(collision_distance)
        self.render_mode = render_mode
        self.rtol, self.atol = rtol, atol
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float64)
        self._state = self.y0.copy()
        self._t = 0.0
        self._steps = 0
        self._trail: list[np.ndarray] = [self._state.copy()]

    def _info(self) -> dict[str, Any]:
        return {"t": self._t, "energy": float(energy(self._state, self.params))}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        state = self.y0.copy()
        if self.ic_noise > 0:
            state = state + self.ic_noise * self.np_random.standard_normal(STATE_DIM)
        self._state, self._t, self._steps = state, 0.0, 0
        self._trail = [state.copy()]
        return state.copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        try:
            y = simulate(
                self.params,
                self._state,
                [self._t, self._t + self.dt],
                rtol=self.rtol,
                atol=self.atol,
                max_energy_drift=None,
            )
            state = y[-1]
            terminated = bool(np.min(pair_distances(state)) < self.collision_distance)
        except PhysicsError:
            state, terminated = self._state, True
        self._state = state
        self._t += self.dt
        self._steps += 1
        self._trail.append(state.copy())
        truncated = self._steps >= self.max_steps and not terminated
        return state.copy(), 0.0, terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        trail = np.asarray(self._trail)
        fig = plt.figure(figsize=(4, 4), dpi=80)
        ax = fig.add_subplot(projection="3d")
        for i, color in enumerate(("tab:blue", "tab:orange", "tab:green")):
            pos = trail[:, 3 * i : 3 * i + 3]
            ax.plot(pos[:, 0], pos[:, 1], pos[:, 2], color=color, lw=1)
            ax.scatter(*pos[-1], color=color, s=30 * self.params.masses[i])
        ax.set_title(f"t = {self._t:.3f}")
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
        plt.close(fig)
        return image
