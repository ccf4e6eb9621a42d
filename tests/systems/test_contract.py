"""Every registered system honours the experiment contract, through one parametrised test:
tiny simulate -> fit -> evaluate -> render -> reload its config -> resume does nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from physid.app import registry
from physid.app.cli import app
from physid.experiment import AbstractExperiment
from physid.runs import SUMMARY_KEYS, RunDir

# The smallest data set and fit of each system (a new system must add its entry here).
SMALL: dict[str, dict[str, dict[str, Any]]] = {
    "three-body": {
        "simulate": {"n_train": 50, "n_test": 100},
        "fit": {"epochs": 2, "rtol": 1e-4, "atol": 1e-4, "compile": False},
        "render": {"frames": 4},
    },
    "acrobot": {
        "simulate": {"n_per_control": 2, "n_steps": 8},
        "fit": {"epochs": 2, "max_batches": 1, "batch_size": 8},
        "render": {},
    },
    "hopper": {
        "simulate": {"n_trajectories": 6},
        "fit": {"preset": "tiny", "epochs": 2},
        "render": {"width": 64, "height": 48},
    },
    "mujoco": {
        "simulate": {"env": "Swimmer-v5", "n_trajectories": 6, "n_steps": 12, "window": 8},
        "fit": {"env": "Swimmer-v5", "preset": "tiny", "epochs": 2},
        "render": {"width": 64, "height": 48},
    },
}


def test_every_system_has_a_small_setting() -> None:
    assert sorted(SMALL) == sorted(registry.names())


@pytest.fixture(params=registry.names())
def system(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_contract(system: str, tmp_path: Path) -> None:
    exp = registry.get(system)
    assert isinstance(exp, AbstractExperiment) and exp.name == system
    small = SMALL[system]

    data = exp.simulate(out=str(tmp_path / "data.npz"), **small["simulate"])
    assert data == tmp_path / "data.npz" and data.stat().st_size > 0
    assert registry.for_dataset(data) is exp

    config = exp.Config(
        data=str(data), runs_dir=str(tmp_path / "runs"), progress=False, **small["fit"]
    )
    run = exp.fit(config)
    assert isinstance(run, RunDir) and run.path.parent == tmp_path / "runs"
    assert registry.for_run(run.path) == (exp, run)

    summary = json.loads(run.summary_path.read_text())
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert summary["system"] == system and summary["model"] == config.model
    assert summary["interrupted"] is False
    assert summary["epochs_completed"] == len(run.read_metrics()) > 0
    assert summary["test_mse"] is not None and summary["test_mse"] >= 0
    assert summary["nfe_forward"] > 0 and summary["seconds"] > 0

    # the stored config is the config, resolved
    assert exp.load_config(run) == config
    assert json.loads(run.config_path.read_text())["system"] == system

    # evaluating again gives the same numbers
    assert exp.evaluate(run).test_mse == pytest.approx(summary["test_mse"], rel=1e-6)
    res = CliRunner().invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output

    # a finished run resumes to itself: no new epoch
    epochs = len(run.read_metrics())
    exp.fit(config)
    assert len(run.read_metrics()) == epochs

    video = exp.render(run, **small["render"])
    assert video == run.video_path and video.stat().st_size > 1000
    beside = exp.render_dataset(data)
    assert beside == data.with_suffix(".mp4") and beside.stat().st_size > 1000
