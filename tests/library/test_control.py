"""Energy-shaping control: the generic controller on a simple pendulum, its options and its
bookkeeping (the acrobot swing-up is tested with the acrobot, tests/systems)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from physid.control import (
    ClosedLoopResult,
    EnergyShapingController,
    InputDamping,
    MassDamping,
    SuccessCriterion,
    actuator_energy,
    hold_success,
    run_closed_loop,
    write_control_report,
)
from physid.errors import ConfigError


def _pendulum_step(x: np.ndarray, u: np.ndarray, period: float = 0.05) -> np.ndarray:
    """A simple pendulum q̈ = −sin q + u (m = l = g = 1), RK4 with 20 substeps."""

    def f(s: np.ndarray) -> np.ndarray:
        return np.array([s[1], -math.sin(s[0]) + u[0]])

    h = period / 20
    for _ in range(20):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        k4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_generic_controller_swings_up_a_simple_pendulum(tmp_path) -> None:
    """The controller knows no system: a 1-D pendulum given as callables swings up."""
    controller = EnergyShapingController(
        lambda q: -torch.cos(q[..., 0]),
        lambda q: torch.ones(*q.shape[:-1], 1, 1, dtype=q.dtype),
        inverse_mass=lambda q: torch.ones(*q.shape[:-1], 1, 1, dtype=q.dtype),
        damping=MassDamping(1.0),
    )
    result = run_closed_loop(controller, _pendulum_step, [0.05, 0.0], n_steps=400, period=0.05)
    criterion = SuccessCriterion(lambda s: -np.cos(s[:, 0]), threshold=0.95)
    assert hold_success(result, criterion)
    # the shaped energy ½ q̇² + cos q decreases along the closed loop (up to the hold's error)
    shaped = controller.shaped_energy(result.states).numpy()
    assert np.all(np.diff(shaped) < 1e-4) and shaped[-1] == pytest.approx(-1.0, abs=1e-3)
    record = write_control_report(
        tmp_path, result, criterion, render_frame=lambda s: np.zeros((16, 16, 3), np.uint8)
    )
    assert record["success"] is True
    assert (tmp_path / "control_states.png").exists() and (tmp_path / "control.mp4").exists()
    assert json.loads((tmp_path / "control.json").read_text())["success"] is True


def test_hold_success_and_energy_bookkeeping() -> None:
    t = np.arange(5) * 1.0
    states = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 0.05], [3.0, 0.0]])
    result = ClosedLoopResult(t=t, states=states, controls=np.array([[1.0], [2.0], [-1.0], [0.0]]))
    ok = SuccessCriterion(lambda s: s[:, 0], threshold=2.5, speed_tolerance=0.1, hold_time=1.0)
    assert hold_success(result, ok)
    assert not hold_success(result, SuccessCriterion(lambda s: s[:, 0], 2.5, hold_time=2.0))
    energy = actuator_energy(result)
    assert energy["work_net"] == pytest.approx(1 + 2 - 1)
    assert energy["work_abs"] == pytest.approx(4.0) and energy["effort"] == pytest.approx(6.0)


def test_controller_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        InputDamping([1.0, 2.0])
    with pytest.raises(ConfigError, match="inverse_mass"):
        EnergyShapingController(lambda q: q.sum(-1), lambda q: q)  # MassDamping needs M⁻¹
    with pytest.raises(ConfigError):
        EnergyShapingController(
            lambda q: q.sum(-1), lambda q: q, damping=InputDamping(1.0), max_control=0.0
        )


def test_damping_is_invariant_under_the_model_symmetry() -> None:
    """M⁻¹ → c M⁻¹, V → V/c, g → g/c leaves a Hamiltonian model's dynamics unchanged (the data
    cannot fix c); the control must not change either."""
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(2, 2, generator=rng, dtype=torch.float64)
    minv = a @ a.T + torch.eye(2, dtype=torch.float64)
    g = torch.randn(2, 2, generator=rng, dtype=torch.float64)

    def controller(c: float, damping) -> EnergyShapingController:
        return EnergyShapingController(
            lambda q: (torch.cos(q[..., 0]) + q[..., 1] ** 2) / c,
            lambda q: g.expand(*q.shape[:-1], 2, 2) / c,
            inverse_mass=lambda q: c * minv.expand(*q.shape[:-1], 2, 2),
            damping=damping,
        )

    state = torch.tensor([0.3, -0.4, 1.0, 2.0], dtype=torch.float64)
    for damping in (MassDamping(2.0), InputDamping(3.0)):
        torch.testing.assert_close(controller(5.0, damping)(state), controller(1.0, damping)(state))
