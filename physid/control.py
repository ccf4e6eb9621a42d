"""Energy-shaping control from a (learned) Hamiltonian model.

For a mechanical system ``M(q) q̈ + C(q, q̇) q̇ + ∂V/∂q = g(q) u`` the control

    u = g(q)⁺ (∂V/∂q − ∂V_d/∂q) + u_damp

replaces the potential ``V`` by a desired one ``V_d`` (energy shaping) and ``u_damp`` injects
damping: the closed loop is ``M q̈ + C q̇ + ∂V_d/∂q = g u_damp`` with ``q̇ᵀ g u_damp ≤ 0``, so its
energy ``½ q̇ᵀ M q̇ + V_d`` can only decrease and the state settles at a minimum of ``V_d``
(Zhong et al. 2020, *Symplectic ODE-Net*, Section 4; the classical energy-shaping /
damping-injection design). With a learned model ``V``, ``g`` (and ``M⁻¹``) come from the
networks; the control is applied with zero-order hold to the *true* simulator.

Damping is a part handed in (:class:`AbstractDamping`):

- :class:`InputDamping`: ``u_damp = −K_d q̇`` (for collocated inputs, ``g ≈ I`` up to scale);
- :class:`MassDamping` (default): ``u_damp = −g⁺ k M(q) q̇``, a damping *rate* ``k`` [1/s] that
  damps every mode alike and needs no collocation.

Zhong et al. write ``u = g⁻¹(2 ∂V/∂q − K_d q̇)``. That damping is not invariant under the
symmetry of the learned model: ``M⁻¹ → c M⁻¹, V → V/c, g → g/c`` leaves its dynamics unchanged,
so the data cannot fix ``c``, and ``g⁻¹ K_d q̇`` scales with ``c``. A model that learned ``c ≈ 5``
then damps five times too hard and, under the 0.05 s zero-order hold, chatters at the torque
limit. Both parts above are invariant (``g⁺ ∂V/∂q`` and ``g⁺ M`` are).

Nothing here knows a particular system: the model is given as callables of the generalised
coordinates ``q (..., n)`` and the simulator as a one-period step function. States are
``[q, q̇]`` (``2n`` numbers). The default desired potential is ``V_d = −V`` (Zhong et al.),
whose minimum is the maximum of ``V`` (the upright position of a pendulum).
:func:`run_closed_loop` runs the loop, :func:`hold_success` judges it and
:func:`write_control_report` writes ``control.json``, a state plot and an MP4.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physid._io import save_json
from physid.errors import ConfigError, PhysicsError
from physid.render import write_video

__all__ = [
    "AbstractDamping",
    "InputDamping",
    "MassDamping",
    "EnergyShapingController",
    "ClosedLoopResult",
    "SuccessCriterion",
    "run_closed_loop",
    "hold_success",
    "actuator_energy",
    "write_control_report",
]

Field = Callable[[torch.Tensor], torch.Tensor]


class AbstractDamping(ABC):
    """Damping injection: the part of the control that removes energy."""

    @abstractmethod
    def __call__(
        self, q: torch.Tensor, dq: torch.Tensor, g_pinv: torch.Tensor, inverse_mass: Field | None
    ) -> torch.Tensor:
        """The damping control ``(..., m)`` at ``q, dq (..., n)``, given ``g⁺ (..., m, n)``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """What this damping is, JSON-ready (for reports)."""


def _gain(value: float | Sequence[Sequence[float]] | torch.Tensor, name: str) -> torch.Tensor:
    gain = torch.as_tensor(value, dtype=torch.float64)
    if gain.ndim not in (0, 2) or not torch.all(torch.isfinite(gain)):
        raise ConfigError(f"{name} must be a finite scalar or (n, n) matrix, got {value!r}.")
    return gain


def _times(gain: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    gain = gain.to(v)
    return gain * v if gain.ndim == 0 else torch.einsum("ij,...j->...i", gain, v)


class InputDamping(AbstractDamping):
    """``u_damp = −K_d q̇`` in the input space (inputs collocated with ``q̇``, ``m = n``).

    Args:
        gain: ``K_d``, a scalar (times the identity) or an ``(n, n)`` matrix.
    """

    def __init__(self, gain: float | Sequence[Sequence[float]] | torch.Tensor = 6.0):
        self.gain = _gain(gain, "the damping gain")

    def __call__(self, q, dq, g_pinv, inverse_mass):  # type: ignore[override]
        return -_times(self.gain, dq)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "input", "gain": self.gain.tolist()}


class MassDamping(AbstractDamping):
    """``u_damp = −g⁺ k M(q) q̇``: the generalised force ``−k M q̇`` removes kinetic energy at
    rate ``2k``, damping every mode alike (stable under a zero-order hold of ``dt`` for
    ``k dt < 2``). Needs ``M⁻¹``.

    Args:
        rate: ``k`` in 1/s, a scalar or an ``(n, n)`` matrix.
    """

    def __init__(self, rate: float | Sequence[Sequence[float]] | torch.Tensor = 4.0):
        self.rate = _gain(rate, "the damping rate")

    def __call__(self, q, dq, g_pinv, inverse_mass):  # type: ignore[override]
        if inverse_mass is None:
            raise ConfigError("MassDamping needs the inverse_mass callable of the model.")
        mass = torch.linalg.inv(inverse_mass(q).to(dq))
        force = torch.einsum("...ij,...j->...i", mass, _times(self.rate, dq))
        return -torch.einsum("...ij,...j->...i", g_pinv, force)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mass", "rate": self.rate.tolist()}


class EnergyShapingController:
    """``u = g(q)⁺ (∂V/∂q − ∂V_d/∂q) + u_damp``, by autograd of the given potentials.

    Args:
        potential: ``V``: ``q (..., n)`` → ``(...)``.
        input_matrix: ``g``: ``q (..., n)`` → ``(..., n, m)``; its pseudo-inverse is used (the
            inverse when square and invertible).
        inverse_mass: ``M⁻¹``: ``q (..., n)`` → ``(..., n, n)``; needed by :class:`MassDamping`
            and :meth:`shaped_energy`.
        desired_potential: ``V_d``: ``q (..., n)`` → ``(...)``; ``None`` means ``−V``.
        damping: the damping part (default ``MassDamping(4.0)``).
        max_control: clip each entry of ``u`` to ``[−max_control, max_control]``; ``None``: no clip.
    """

    def __init__(
        self,
        potential: Field,
        input_matrix: Field,
        *,
        inverse_mass: Field | None = None,
        desired_potential: Field | None = None,
        damping: AbstractDamping | None = None,
        max_control: float | None = None,
    ):
        self.potential = potential
        self.input_matrix = input_matrix
        self.inverse_mass = inverse_mass
        self.desired_potential = desired_potential
        self.damping = damping if damping is not None else MassDamping()
        if not isinstance(self.damping, AbstractDamping):
            raise ConfigError(f"damping must be an AbstractDamping, got {damping!r}.")
        if isinstance(self.damping, MassDamping) and inverse_mass is None:
            raise ConfigError("MassDamping needs the inverse_mass callable of the model.")
        if max_control is not None and not max_control > 0:
            raise ConfigError(f"max_control must be > 0, got {max_control}.")
        self.max_control = max_control

    def _desired(self, q: torch.Tensor) -> torch.Tensor:
        if self.desired_potential is None:
            return -self.potential(q)
        return self.desired_potential(q)

    def potential_force(self, q: torch.Tensor) -> torch.Tensor:
        """``∂V/∂q − ∂V_d/∂q`` at ``q (..., n)``."""
        with torch.enable_grad():
            qq = q.detach().requires_grad_(True)
            shaped = self.potential(qq) - self._desired(qq)
            (grad,) = torch.autograd.grad(shaped.sum(), qq)
        return grad

    def __call__(self, state: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The control at ``state (..., 2n) = [q, q̇]`` → ``u (..., m)`` (float64 tensor)."""
        x = torch.as_tensor(np.asarray(state) if not isinstance(state, torch.Tensor) else state)
        x = x.to(torch.float64)
        if x.shape[-1] % 2:
            raise ConfigError(f"states are [q, q̇] (an even length), got shape {tuple(x.shape)}.")
        n = x.shape[-1] // 2
        q, dq = x[..., :n], x[..., n:]
        force = self.potential_force(q)
        with torch.no_grad():
            g_pinv = torch.linalg.pinv(self.input_matrix(q).to(x))
            u = torch.einsum("...ij,...j->...i", g_pinv, force)
            u = u + self.damping(q, dq, g_pinv, self.inverse_mass)
        if self.max_control is not None:
            u = u.clamp(-self.max_control, self.max_control)
        return u.detach()

    def shaped_energy(self, state: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The closed-loop energy ``½ q̇ᵀ M q̇ + V_d`` the controller drives down (needs ``M⁻¹``)."""
        if self.inverse_mass is None:
            raise ConfigError("shaped_energy needs the inverse_mass callable.")
        x = torch.as_tensor(np.asarray(state), dtype=torch.float64)
        n = x.shape[-1] // 2
        q, dq = x[..., :n], x[..., n:]
        with torch.no_grad():
            mass = torch.linalg.inv(self.inverse_mass(q).to(x))
            kinetic = 0.5 * torch.einsum("...i,...ij,...j->...", dq, mass, dq)
            return kinetic + self._desired(q).to(x)


@dataclasses.dataclass(frozen=True)
class ClosedLoopResult:
    """A closed-loop rollout.

    Attributes:
        t: ``(steps + 1,)`` times.
        states: ``(steps + 1, 2n)`` states ``[q, q̇]`` at those times.
        controls: ``(steps, m)`` the control held over ``[t_k, t_{k+1})``.
    """

    t: np.ndarray
    states: np.ndarray
    controls: np.ndarray


def run_closed_loop(
    controller: Callable[[np.ndarray], Any],
    step: Callable[[np.ndarray, np.ndarray], np.ndarray],
    state0: np.ndarray | Sequence[float],
    *,
    n_steps: int,
    period: float,
) -> ClosedLoopResult:
    """Run ``controller`` on a simulator with zero-order hold.

    Args:
        controller: ``state (2n,)`` → control ``(m,)``.
        step: the simulator: ``(state, u)`` → the state one ``period`` later, ``u`` held constant.
        state0: the initial state.
        n_steps: number of control periods.
        period: seconds per control period.

    Raises:
        PhysicsError: the simulator or the controller produced a non-finite value.
    """
    if n_steps < 1 or not period > 0:
        raise ConfigError(f"n_steps must be >= 1 and period > 0, got {n_steps}, {period}.")
    x = np.asarray(state0, dtype=np.float64).copy()
    states, controls = [x], []
    for k in range(n_steps):
        u = np.asarray(torch.as_tensor(controller(x)).detach().cpu(), dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(u)):
            raise PhysicsError(
                f"the controller returned a non-finite control at t = {k * period:g}."
            )
        x = np.asarray(step(x, u), dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise PhysicsError(f"the closed loop diverged at t = {(k + 1) * period:g}.")
        states.append(x)
        controls.append(u)
    return ClosedLoopResult(
        t=np.arange(n_steps + 1) * period, states=np.stack(states), controls=np.stack(controls)
    )


@dataclasses.dataclass(frozen=True)
class SuccessCriterion:
    """Success = ``measure(state) ≥ threshold`` and ``max |q̇| < speed_tolerance`` at every sample of
    the last ``hold_time`` seconds.

    Attributes:
        measure: ``states (T, 2n)`` → ``(T,)``, e.g. the height of a pendulum's tip.
        threshold: the least value of the measure.
        speed_tolerance: the bound on every ``|q̇_i|``.
        hold_time: seconds at the end of the rollout over which both must hold.
    """

    measure: Callable[[np.ndarray], np.ndarray]
    threshold: float
    speed_tolerance: float = 0.1
    hold_time: float = 2.0


def hold_success(result: ClosedLoopResult, criterion: SuccessCriterion) -> bool:
    """Whether ``result`` meets ``criterion`` (see :class:`SuccessCriterion`)."""
    t_end = result.t[-1]
    last = result.t >= t_end - criterion.hold_time - 1e-9
    n = result.states.shape[-1] // 2
    measure = np.asarray(criterion.measure(result.states))[last]
    speed = np.abs(result.states[last, n:])
    return bool(
        np.all(measure >= criterion.threshold) and np.all(speed < criterion.speed_tolerance)
    )


def actuator_energy(result: ClosedLoopResult) -> dict[str, float]:
    """What the actuators spent.

    With the control constant over each period, the work it does there is exactly
    ``u_k · (q_{k+1} − q_k)``.

    Returns:
        ``work_abs``: Σ_k |u_k · Δq_k| (energy delivered or absorbed by the actuators);
        ``work_net``: Σ_k u_k · Δq_k; ``effort``: ∫ |u|² dt.
    """
    n = result.states.shape[-1] // 2
    dq = np.diff(result.states[:, :n], axis=0)
    work = np.sum(result.controls * dq, axis=-1)
    dt = np.diff(result.t)
    return {
        "work_abs": float(np.sum(np.abs(work))),
        "work_net": float(np.sum(work)),
        "effort": float(np.sum(np.sum(result.controls**2, axis=-1) * dt)),
    }


def write_control_report(
    out_dir: str | Path,
    result: ClosedLoopResult,
    criterion: SuccessCriterion,
    *,
    render_frame: Callable[[np.ndarray], np.ndarray] | None = None,
    coordinate_names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
    video_name: str = "control.mp4",
) -> dict[str, Any]:
    """Write ``control.json``, ``control_states.png`` and (with ``render_frame``) an MP4.

    Args:
        out_dir: the folder (created if missing).
        result: the rollout.
        criterion: the success criterion.
        render_frame: ``state`` → RGB frame ``(H, W, 3)`` uint8; ``None`` writes no video.
        coordinate_names: names of the ``n`` coordinates for the plot legend.
        extra: more fields for ``control.json`` (e.g. which model controlled).
        video_name: the MP4's file name.

    Returns:
        the record written to ``control.json``: ``success``, ``final_measure`` (the final tip
        height for a pendulum), ``energy`` (see :func:`actuator_energy`), the criterion and the
        files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    measure = np.asarray(criterion.measure(result.states))
    n = result.states.shape[-1] // 2
    names = list(coordinate_names or [f"q{i + 1}" for i in range(n)])
    record: dict[str, Any] = {
        "success": hold_success(result, criterion),
        "final_measure": float(measure[-1]),
        "min_measure_last_hold": float(
            measure[result.t >= result.t[-1] - criterion.hold_time - 1e-9].min()
        ),
        "max_speed_last_hold": float(
            np.abs(result.states[result.t >= result.t[-1] - criterion.hold_time - 1e-9, n:]).max()
        ),
        "energy": actuator_energy(result),
        "max_abs_control": float(np.abs(result.controls).max()),
        "criterion": {
            "threshold": criterion.threshold,
            "speed_tolerance": criterion.speed_tolerance,
            "hold_time": criterion.hold_time,
        },
        "duration": float(result.t[-1]),
        "n_steps": int(result.controls.shape[0]),
        "final_state": result.states[-1].tolist(),
        "files": {"plot": "control_states.png", "data": "control_rollout.npz"},
    }
    record.update(extra or {})
    np.savez_compressed(
        out / "control_rollout.npz", t=result.t, states=result.states, controls=result.controls
    )
    _plot_states(out / "control_states.png", result, measure, criterion, names)
    if render_frame is not None:
        _write_video(out / video_name, result, render_frame)
        record["files"]["video"] = video_name
    save_json(out / "control.json", record)
    return record


def _plot_states(
    path: Path,
    result: ClosedLoopResult,
    measure: np.ndarray,
    criterion: SuccessCriterion,
    names: Sequence[str],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = result.states.shape[-1] // 2
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for i in range(n):
        axes[0].plot(result.t, result.states[:, i], label=names[i])
        axes[1].plot(result.t, result.states[:, n + i], label=f"d{names[i]}/dt")
    axes[0].axhline(math.pi, color="grey", lw=0.5, ls="--")
    axes[0].set_ylabel("angle [rad]")
    axes[1].set_ylabel("speed [rad/s]")
    for j in range(result.controls.shape[1]):
        axes[2].step(result.t[:-1], result.controls[:, j], where="post", label=f"u{j + 1}")
    axes[2].set_ylabel("control")
    axes[3].plot(result.t, measure, color="k")
    axes[3].axhline(criterion.threshold, color="g", ls="--", label="success threshold")
    axes[3].axvspan(result.t[-1] - criterion.hold_time, result.t[-1], color="g", alpha=0.1)
    axes[3].set_ylabel("goal measure")
    axes[3].set_xlabel("t [s]")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_video(path: Path, result: ClosedLoopResult, render_frame: Callable) -> None:
    fps = max(1, round(1.0 / float(result.t[1] - result.t[0])))
    write_video(path, (render_frame(state) for state in result.states), fps)
