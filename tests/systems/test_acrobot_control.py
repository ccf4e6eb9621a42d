"""The acrobot swing-up with the true model (the oracle) and the acrobot's control options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from physid.control import InputDamping
from physid.errors import ConfigError


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
