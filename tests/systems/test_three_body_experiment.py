"""The three-body experiment end to end on tiny budgets: data, fit, evaluate, render, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from physid.models.experiments import three_body as tb
from physid.models.known_form import KnownFormThreeBody
from typer.testing import CliRunner

import physid
from physid.app.cli import app
from physid.errors import ConfigError, DataError
from physid.runs import RunDir

# Coarse tolerances keep each epoch well under a second for aca and naive.
EXP = tb.ThreeBody()
TINY = {"rtol": 1e-5, "atol": 1e-5, "progress": False, "threads": 1, "compile": False}


@pytest.fixture(scope="module")
def data() -> tb.ThreeBodyData:
    return tb.make_data()


@pytest.fixture(scope="module")
def ode_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    runs = tmp_path_factory.mktemp("runs")
    return EXP.fit(tb.FitConfig(model="ode", method="aca", epochs=3, runs_dir=str(runs), **TINY))


def _initial_train_mse(data: tb.ThreeBodyData, seed: int = 0) -> tuple[float, np.ndarray]:
    model = KnownFormThreeBody(generator=torch.Generator().manual_seed(seed))
    t = torch.as_tensor(data.t_train)
    with torch.no_grad():
        pred = physid.odeint(model, torch.as_tensor(data.y0), t, rtol=1e-5, atol=1e-5)
    _, sq = tb.training_loss(pred, torch.as_tensor(data.y_train), t)
    return float(sq.mean()), model.masses.detach().numpy()


def test_data_set_round_trip(tmp_path: Path, data: tb.ThreeBodyData) -> None:
    path = tb.simulate(tmp_path / "paper.npz")
    loaded = tb.load_data(path)
    assert loaded.params == data.params
    np.testing.assert_array_equal(loaded.t_train, data.t_train)
    np.testing.assert_array_equal(loaded.t_test, data.t_test)
    np.testing.assert_array_equal(loaded.y_train, data.y_train)
    np.testing.assert_array_equal(loaded.y_test, data.y_test)
    assert data.y_train.shape == (1000, 18) and data.y_test.shape == (2000, 18)


def test_random_systems_data_set(tmp_path: Path) -> None:
    path = tb.simulate(tmp_path / "random.npz", seed=5, n_trajectories=2, n_train=50, n_test=100)
    first, second = tb.load_data(path, 0), tb.load_data(path, 1)
    assert first.params != second.params and first.y_test.shape == (100, 18)
    with pytest.raises(ConfigError):
        tb.load_data(path, 2)
    with pytest.raises(ConfigError):
        tb.simulate(tmp_path / "x.npz", n_trajectories=2)  # several systems need a seed


def test_load_data_rejects_other_data_sets(tmp_path: Path) -> None:
    from physid.data import TrajectoryDataset

    path = TrajectoryDataset(t=np.arange(3.0), y=np.zeros((1, 3, 18))).save(tmp_path / "o.npz")
    with pytest.raises(DataError):
        tb.load_data(path)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        tb.FitConfig(model="gru")
    with pytest.raises(ConfigError):
        tb.FitConfig(method="magic")
    with pytest.raises(ConfigError):
        tb.FitConfig(lr_decay=1.5)
    assert tb.FitConfig().run_dir.name == "three-body-ode-lm-0"
    assert tb.FitConfig(method="aca").run_dir.name == "three-body-ode-aca-0"
    assert tb.FitConfig(model="lstm-aug", seed=2).run_dir.name == "three-body-lstm-aug-2"


@pytest.mark.parametrize("method", physid.GRADIENT_METHODS)
def test_fit_ode_with_each_method_improves_the_masses(
    method: str, tmp_path: Path, data: tb.ThreeBodyData
) -> None:
    init_mse, init_masses = _initial_train_mse(data)
    run = EXP.fit(
        tb.FitConfig(
            model="ode",
            method=method,
            optimizer="adam",
            epochs=1,
            lr=0.02,
            runs_dir=str(tmp_path),
            plots=False,
            **TINY,
        )
    )
    summary = json.loads((run / "summary.json").read_text())
    true = np.asarray(summary["true_masses"])
    assert summary["epochs_completed"] == 1 and summary["nfe_forward"] > 0
    # naive replays the recorded graph, forward contracts stored sensitivities: no backward NFE
    assert (summary["nfe_backward"] > 0) == (method not in ("naive", "forward"))
    assert summary["train_mse"] < init_mse
    err_before = np.abs(init_masses - true).sum()
    assert np.abs(np.asarray(summary["masses"]) - true).sum() < err_before


def test_evaluate_writes_summary_and_plots(ode_run: Path, data: tb.ThreeBodyData) -> None:
    summary = EXP.evaluate(ode_run).to_dict()
    for key in (
        "test_mse",
        "train_mse",
        "seconds",
        "nfe_forward",
        "nfe_backward",
        "masses",
        "true_masses",
        "test_mse_interp",
        "test_mse_extrap",
    ):
        assert key in summary
    assert summary == json.loads((ode_run / "summary.json").read_text())
    assert summary["true_masses"] == [1.1, 1.1, 0.9]
    assert 0 < summary["test_mse"] < 2.0
    for name in ("trajectories.png", "trajectories_3d.png", "error_vs_time.png", "loss.png"):
        assert (ode_run / "plots" / name).stat().st_size > 1000
    metrics = [json.loads(line) for line in (ode_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and all("masses" in m and "nfe_backward" in m for m in metrics)


def test_prediction_of_the_true_model_scores_the_solver_error(data: tb.ThreeBodyData) -> None:
    config = tb.FitConfig(rtol=1e-9, atol=1e-9)
    pred = tb.predict(KnownFormThreeBody(data.params.masses), config, data)
    assert tb.position_mse(pred, data.y_test) < 1e-10


def test_render_writes_a_video(ode_run: Path, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    out = EXP.render(ode_run, tmp_path / "ode.mp4", frames=6, fps=5)
    assert out.stat().st_size > 1000
    with imageio.get_reader(out) as reader:
        assert reader.count_frames() == 6
        assert reader.get_data(0).shape == (640, 640, 3)


def test_resume_continues_a_run(tmp_path: Path) -> None:
    adam = {"method": "aca", "plots": False, **TINY}
    run = EXP.fit(tb.FitConfig(epochs=1, runs_dir=str(tmp_path), **adam))
    EXP.fit(tb.FitConfig(epochs=2, runs_dir=str(tmp_path), **adam))
    fresh = EXP.fit(tb.FitConfig(epochs=2, runs_dir=str(tmp_path / "fresh"), **adam))
    resumed = json.loads((run / "summary.json").read_text())
    straight = json.loads((fresh / "summary.json").read_text())
    assert resumed["epochs_completed"] == 2
    np.testing.assert_allclose(resumed["masses"], straight["masses"], rtol=1e-12)


@pytest.mark.parametrize("model", ["lstm", "lstm-aug"])
def test_fit_lstm_tiny(model: str, tmp_path: Path) -> None:
    run = EXP.fit(
        tb.FitConfig(model=model, lstm_epochs=3, lstm_hidden=8, runs_dir=str(tmp_path), **TINY)
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nfe_forward"] == 0 and summary["epochs_completed"] == 3
    assert np.isfinite(summary["test_mse"]) and "masses" not in summary
    assert (run / "plots" / "trajectories.png").exists()


def test_fit_node_one_epoch(tmp_path: Path) -> None:
    run = EXP.fit(tb.FitConfig(model="node", epochs=1, runs_dir=str(tmp_path), plots=False, **TINY))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_parameters"] == 5509 and np.isfinite(summary["test_mse"])


def test_node_pair_fits_and_reports_its_force_law(tmp_path: Path, data: tb.ThreeBodyData) -> None:
    config = tb.FitConfig(model="node-pair", epochs=2, runs_dir=str(tmp_path), **TINY)
    assert config.lr == 0.01 and tb.FitConfig(model="node").lr == 0.1
    assert config.run_dir.name == "three-body-node-pair-aca-0"
    run = EXP.fit(config)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_parameters"] == 1203 and np.isfinite(summary["test_mse"])
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
    # Free flight (the initial model) is a relative error of 1; two steps move towards Newton.
    assert 0.0 < summary["force_rel_error"] < 0.9
    assert (run / "plots" / "force_law.png").exists()
    with pytest.raises(ConfigError, match="node model only"):
        tb.FitConfig(model="node-pair", node_scaling="inputs")


def test_force_law_of_newtons_coefficients_is_exact(
    data: tb.ThreeBodyData, newton_coefficients
) -> None:
    model = tb.PairwiseNODE()
    model.net = newton_coefficients(data.params.masses)
    law = tb.force_law(model, data)
    assert law["rel_error_rms"] < 1e-12 and law["rel_error_rms_train"] < 1e-12
    assert law["train_range"][0] == pytest.approx(0.053, abs=0.002)  # the close encounter
    np.testing.assert_allclose(law["learned"][:, 0] * law["grid"] ** 2, data.params.masses[1])
    model.net = newton_coefficients((0.0, 0.0, 0.0))  # no force at all
    assert tb.force_law(model, data)["rel_error_rms"] == pytest.approx(1.0)


# the full 1000-point grid through the CLI; tests/systems/test_contract.py runs the same path small
@pytest.mark.slow
def test_cli_simulate_fit_evaluate_render(tmp_path: Path) -> None:
    runner = CliRunner()
    data_path = tmp_path / "tb.npz"
    res = runner.invoke(app, ["simulate", "three-body", "--out", str(data_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "fit",
            "three-body",
            "--model",
            "ode",
            "--method",
            "naive",
            "--epochs",
            "1",
            "--rtol",
            "1e-4",
            "--atol",
            "1e-4",
            "--data",
            str(data_path),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    run = Path(res.output.strip().splitlines()[-1])
    assert run.name == "three-body-ode-naive-0" and (run / "summary.json").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["system"] == "three-body" and config["betas"] == [0.5, 0.5]
    assert config["data"] == str(data_path)
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["render", str(data_path), "-o", str(tmp_path / "data.mp4")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data.mp4").stat().st_size > 1000


def test_cli_rejects_bad_options_in_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["fit", "three-body", "--model", "gru", "--runs-dir", str(tmp_path)]
    )
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model must be one of" in lines[0]
