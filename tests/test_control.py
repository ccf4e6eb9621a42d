"""Energy-shaping control: the generic controller, and the acrobot swing-up with the true model."""

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


def test_oracle_swings_the_true_acrobot_up(tmp_path) -> None:
    from physid.envs.acrobot import AcrobotParams, energy
    from physid.models.experiments.acrobot import oracle_control

    record = oracle_control(tmp_path, video=True)
    assert record["success"] is True
    assert record["final_measure"] > 1.99
    for name in ("control.json", "control_states.png", "control.mp4", "control_rollout.npz"):
        assert (tmp_path / name).exists()
    rollout = np.load(tmp_path / "control_rollout.npz")
    e = energy(rollout["states"], AcrobotParams())
    # the actuators' work is the whole change of the (otherwise conserved) energy
    assert record["energy"]["work_net"] == pytest.approx(e[-1] - e[0], abs=1e-6)


def test_zhong_damping_is_too_weak_for_the_criterion(tmp_path) -> None:
    """K_d = I (Zhong et al.; = InputDamping(1) for the true g = I) still swings after 20 s."""
    from physid.models.experiments.acrobot import oracle_control

    record = oracle_control(tmp_path, damping=InputDamping(1.0), video=False)
    assert record["success"] is False and record["damping"] == {"kind": "input", "gain": 1.0}


def test_acrobot_control_options_are_validated() -> None:
    from physid.models.experiments.acrobot import ControlConfig

    for bad in (
        {"oracle": True, "run": "runs/x"},
        {"damping": 1.0, "input_damping": 1.0},
        {"damping": -1.0},
        {"steps": 0},
        {"max_control": 0.0},
        {"fit_epochs": 0},
        {"fit_n_per_control": 0},
    ):
        with pytest.raises(ConfigError):
            ControlConfig(**bad)
    assert ControlConfig().damping_law() is None  # the default MassDamping(4)
    assert ControlConfig(damping=2.0).damping_law().to_dict() == {"kind": "mass", "rate": 2.0}
    assert ControlConfig(input_damping=1.0).damping_law().to_dict() == {
        "kind": "input",
        "gain": 1.0,
    }
    # the automatic fit is the default fit under --runs-dir, shrunk by the fit_* options
    fit = ControlConfig(runs_dir="elsewhere", fit_epochs=2, fit_max_batches=1).fit_config()
    assert (fit.runs_dir, fit.epochs, fit.max_batches) == ("elsewhere", 2, 1)
    assert (fit.method, fit.preset, fit.n_per_control) == ("adjoint", "default", 32)


def test_acrobot_experiment_oracle_control(tmp_path) -> None:
    """The experiment's control with --oracle: the true model, written under runs_dir."""
    from physid.models.experiments.acrobot import Acrobot, ControlConfig

    record = Acrobot().control(
        ControlConfig(oracle=True, runs_dir=str(tmp_path), steps=4, video=False, damping=2.0)
    )
    out = tmp_path / "acrobot-oracle-control"
    assert record["controller"] == "oracle" and record["out"] == str(out)
    assert record["damping"] == {"kind": "mass", "rate": 2.0} and record["n_steps"] == 4
    assert json.loads((out / "control.json").read_text())["controller"] == "oracle"
