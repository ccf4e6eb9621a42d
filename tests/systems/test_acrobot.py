"""The acrobot simulator, its data set and its experiment (fit with every method, CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import physid.envs  # noqa: F401  (registers physid/Acrobot-v0)
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from physid.envs.acrobot import (
    ENV_ID,
    AcrobotEnv,
    AcrobotParams,
    dynamics,
    energy,
    from_channels,
    mass_matrix,
    potential,
    render_frame,
    simulate,
    simulate_constant_controls,
    tip_height,
    to_channels,
)
from physid.models.experiments import acrobot as experiment
from typer.testing import CliRunner

import physid
from physid.app.cli import app
from physid.data import load_dataset
from physid.errors import ConfigError, DataError

PARAMS = AcrobotParams()


def _random_states(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-math.pi, math.pi, size=(n, 4))


# ---- the physics --------------------------------------------------------------------------------


def test_params_validate() -> None:
    with pytest.raises(ConfigError):
        AcrobotParams(m1=-1.0)
    assert AcrobotParams().to_dict()["gravity"] == 9.8


def test_energy_is_conserved_without_control() -> None:
    x0 = _random_states(6)
    xs = simulate(x0, np.zeros((60, 2)))  # 3 s, chaotic initial states
    e = energy(xs, PARAMS)
    assert np.max(np.abs(e - e[0])) < 1e-8 * max(1.0, np.max(np.abs(e[0])))


def test_dynamics_satisfy_euler_lagrange(float64) -> None:
    """M q̈ + Ṁ q̇ − ∂L/∂q = u with L = ½ q̇ᵀ M q̇ − V, all by autograd: checks C(q, q̇) and G."""
    state = torch.as_tensor(_random_states(8, seed=1))
    u = torch.randn(8, 2)
    q = state[:, :2].clone().requires_grad_(True)
    dq = state[:, 2:]
    lagrangian = 0.5 * torch.einsum("bi,bij,bj->b", dq, mass_matrix(q, PARAMS), dq)
    lagrangian = lagrangian - potential(q, PARAMS)
    (dl_dq,) = torch.autograd.grad(lagrangian.sum(), q)
    ddq = dynamics(0.0, state, PARAMS, u)[:, 2:]
    _, m_dot = torch.func.jvp(lambda qq: mass_matrix(qq, PARAMS), (state[:, :2],), (dq,))
    lhs = torch.einsum("bij,bj->bi", mass_matrix(state[:, :2], PARAMS), ddq)
    lhs = lhs + torch.einsum("bij,bj->bi", m_dot, dq) - dl_dq
    torch.testing.assert_close(lhs, u, rtol=1e-10, atol=1e-10)


def test_hanging_down_is_an_equilibrium_and_upright_is_the_top() -> None:
    rest = torch.zeros(4, dtype=torch.float64)
    assert torch.all(dynamics(0.0, rest, PARAMS) == 0)
    assert float(tip_height(np.array([math.pi, 0.0]))) == pytest.approx(2.0)
    assert float(tip_height(np.zeros(2))) == pytest.approx(-2.0)


def test_batched_equals_per_sample() -> None:
    x = torch.as_tensor(_random_states(12, seed=2)).reshape(3, 4, 4)
    u = torch.randn(3, 4, 2, dtype=torch.float64)
    batched = dynamics(0.0, x, PARAMS, u)
    single = torch.stack(
        [torch.stack([dynamics(0.0, x[i, j], PARAMS, u[i, j]) for j in range(4)]) for i in range(3)]
    )
    torch.testing.assert_close(batched, single, rtol=0, atol=0)
    x0 = _random_states(3, seed=3)
    controls = np.random.default_rng(4).uniform(-2, 2, size=(10, 3, 2))
    together = simulate(x0, controls)
    for i in range(3):
        alone = simulate(x0[i], controls[:, i])
        np.testing.assert_allclose(together[:, i], alone, rtol=1e-7, atol=1e-8)


def test_channels_round_trip() -> None:
    x = _random_states(5)
    u = np.ones((5, 2))
    ch = to_channels(x, u)
    assert ch.shape == (5, 8)
    np.testing.assert_allclose(ch[:, 0], np.cos(x[:, 0]))
    np.testing.assert_allclose(ch[:, 3], np.sin(x[:, 1]))
    back, u_back = from_channels(ch)
    np.testing.assert_allclose(back, x, atol=1e-12)
    np.testing.assert_allclose(u_back, u)


# ---- the gymnasium environment ----------------------------------------------------------------


def test_check_env_and_registration() -> None:
    check_env(AcrobotEnv(render_mode="rgb_array"), skip_render_check=False)
    env = gym.make(ENV_ID, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,) and obs.dtype == np.float32
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert env.spec is not None and env.spec.max_episode_steps == 400
    env.close()


def test_same_seed_same_rollout() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = AcrobotEnv()
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(5):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert np.all(np.isfinite(obs)) and math.isfinite(reward)
            assert not terminated and not truncated
            out.append(obs)
        return np.stack(out)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_env_step_matches_truth_integrator() -> None:
    env = AcrobotEnv()
    state = np.array([0.3, -0.2, 0.5, 1.0])
    env.reset(options={"state": state})
    _, _, _, _, info = env.step(np.array([1.0, -0.5], dtype=np.float32))
    np.testing.assert_allclose(info["state"], simulate(state, [[1.0, -0.5]])[-1], rtol=1e-12)


def test_render_frame_draws_links() -> None:
    img = render_frame(np.array([math.pi / 2, 0.0, 0.0, 0.0]), size=64)
    assert img.shape == (64, 64, 3)
    assert (img != 255).any()


# ---- data ----------------------------------------------------------------------------------------


def test_constant_control_data_follow_the_protocol(tmp_path) -> None:
    t, states, u = simulate_constant_controls(2, seed=0, n_steps=4)
    assert t.shape == (5,) and states.shape == (18, 5, 4) and u.shape == (18, 2)
    assert np.allclose(t[1], 0.05)
    assert np.all(np.abs(states[:, 0]) <= math.pi)
    assert {tuple(c) for c in u} == {tuple(c) for c in experiment.sim.PAPER_CONTROLS}
    path = experiment.simulate(tmp_path / "a.npz", seed=0, n_per_control=2, n_steps=10)
    ds = load_dataset(path)
    assert ds.y.shape == (18, 11, 4) and ds.u.shape == (18, 11, 2)
    assert ds.metadata["simulator"] == ENV_ID and ds.metadata["system"] == "acrobot"
    splits = experiment.load_splits(path, window=8)
    n_windows = 11 - 8 + 1
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == 18 * n_windows and splits.train.shape[1:] == (8, 8)
    assert len(splits.train) == round(18 * 0.7) * n_windows
    assert splits.t_window[0] == 0 and len(splits.t_window) == 8


def test_load_splits_rejects_other_data(tmp_path) -> None:
    from physid.data import TrajectoryDataset

    path = TrajectoryDataset(t=np.arange(5.0), y=np.zeros((3, 5, 18))).save(tmp_path / "x.npz")
    with pytest.raises(DataError, match="acrobot"):
        experiment.load_splits(path)


# ---- fit ----------------------------------------------------------------------------------------

EXP = experiment.Acrobot()
TINY = {"n_per_control": 2, "n_steps": 10, "max_batches": 1, "batch_size": 8, "progress": False}


def _tiny(tmp_path: Path, **options: Any) -> experiment.FitConfig:
    return experiment.FitConfig(
        **{
            "epochs": 2,
            "runs_dir": str(tmp_path / "runs"),
            "data_dir": str(tmp_path / "data"),
            **TINY,
            **options,
        }
    )


@pytest.mark.parametrize("method", ["naive", "adjoint", "seminorm", "aca"])
def test_tiny_fit_records_nfe(tmp_path, method: str) -> None:
    config = _tiny(tmp_path, method=method)
    run = EXP.fit(config)
    assert run.path == tmp_path / "runs" / f"acrobot-symoden-{method}-0"
    lines = run.read_metrics()
    assert [r["epoch"] for r in lines] == [0, 1]
    for r in lines:
        assert r["nfe_forward"] > 0 and math.isfinite(r["loss"]) and math.isfinite(r["val_loss"])
        assert (r["nfe_backward"] > 0) == (method != "naive")
    summary = run.read_summary()
    # the fixed keys: per-epoch totals summed, the best epoch's training loss
    assert summary.nfe_backward == sum(r["nfe_backward"] for r in lines)
    assert summary.nfe_forward == sum(r["nfe_forward"] for r in lines)
    assert summary.epochs_completed == 2 and summary.interrupted is False
    best = min(lines, key=lambda r: r["val_loss"])
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_loss"] == best["val_loss"]
    assert summary.train_mse == best["loss"]
    assert math.isfinite(summary.test_mse) and summary["n_parameters"] == 13_960
    assert summary["batches_total"] == 2 and summary["preset"] == "default"
    assert summary["test_trajectory_mse"] > 0 and summary["horizon_seconds"] == pytest.approx(0.5)
    assert not (run / "evaluation.json").exists()
    if method in ("adjoint", "seminorm"):
        trace = np.load(run / "backward_trace.npz")
        assert len(trace["eval_t"]) == summary.nfe_backward
        assert trace["step_accepted"].sum() == summary["backward_steps_accepted"]
    # the resolved options round-trip through config.json
    assert experiment.FitConfig.from_run(run) == config


def test_evaluate_recomputes_the_summary_and_test_mse_is_the_test_window_loss(tmp_path) -> None:
    run = EXP.fit(_tiny(tmp_path, method="aca"))
    written = run.read_summary()
    again = EXP.evaluate(run)
    assert again.to_dict() == written.to_dict()
    # test_mse: the training's window loss over every test window, with the best model
    model, config = experiment.load_run(run)
    splits = experiment.run_splits(run, config)
    with torch.no_grad():
        pred = physid.odeint(
            model, splits.test[:, 0], splits.t_window, method="aca", rtol=1e-4, atol=1e-4
        )
    assert written.test_mse == pytest.approx(float(experiment.window_loss(pred, splits.test)))


def test_resume_continues_to_the_same_numbers(tmp_path) -> None:
    """A run fitted for 2 epochs and resumed to 3 ends as a run fitted for 3 at once."""
    resumed = EXP.fit(_tiny(tmp_path, method="aca", run_name="resumed"))
    resumed = EXP.fit(_tiny(tmp_path, method="aca", run_name="resumed", epochs=3))
    direct = EXP.fit(_tiny(tmp_path, method="aca", run_name="direct", epochs=3))
    keys = ("loss", "val_loss", "nfe_forward", "nfe_backward")
    a, b = resumed.read_metrics(), direct.read_metrics()
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert resumed.read_summary().test_mse == direct.read_summary().test_mse


def test_presets_resolve_epochs_and_data_size() -> None:
    default, paper = experiment.FitConfig(), experiment.FitConfig(preset="paper")
    assert (default.epochs, default.n_per_control) == (30, 32)
    assert (paper.epochs, paper.n_per_control) == (50, 128)
    explicit = experiment.FitConfig(preset="paper", epochs=3, n_per_control=4)
    assert (explicit.epochs, explicit.n_per_control) == (3, 4)
    # config.json records the resolved values (a run resumes whatever the preset's defaults)
    assert paper.to_dict()["epochs"] == 50 and paper.to_dict()["n_per_control"] == 128
    assert default.method == "adjoint" and default.rtol == default.atol == 1e-4
    assert default.dtype == "float32" and default.threads == 1 and default.device == "cpu"


@pytest.mark.parametrize(
    "options",
    [
        {"method": "euler"},
        {"preset": "huge"},
        {"model": "ode"},
        {"window": 40},
        {"epochs": 0},
        {"n_per_control": 0},
        {"max_batches": 0},
        {"device": "tpu"},
    ],
)
def test_fit_config_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        experiment.FitConfig(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_fit_on_a_missing_gpu_is_a_config_error(tmp_path) -> None:
    config = _tiny(tmp_path, device="cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        EXP.fit(config)
    assert not config.run_dir.path.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_the_gpu_matches_the_cpu(tmp_path) -> None:
    """Model, data and time grid all move to the device: the same numbers up to round-off."""
    common = {"method": "adjoint", "dtype": "float64", "epochs": 1}
    cpu = EXP.fit(_tiny(tmp_path, run_name="cpu", **common))
    gpu = EXP.fit(_tiny(tmp_path, run_name="gpu", device="cuda", **common))
    a, b = cpu.read_metrics()[0], gpu.read_metrics()[0]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-8)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-6)
    assert gpu.read_summary().test_mse == pytest.approx(cpu.read_summary().test_mse, rel=1e-6)


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_simulate_fit_evaluate_control_render(tmp_path) -> None:
    runner = CliRunner()
    data = tmp_path / "acro.npz"
    res = runner.invoke(
        app, ["simulate", "acrobot", "--n-per-control", "2", "--n-steps", "10", "--out", str(data)]
    )
    assert res.exit_code == 0, res.output
    args = ["fit", "acrobot", "--method", "aca", "--epochs", "1", "--data", str(data)]
    args += ["--max-batches", "1", "--batch-size", "8", "--runs-dir", str(tmp_path / "runs")]
    args += ["--run-name", "mine", "--device", "cpu", "--time-limit", "600", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "mine"
    assert res.stdout.strip() == str(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["system"] == "acrobot" and summary["method"] == "aca"
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["test_mse"] == summary["test_mse"]
    assert not (run / "evaluation.json").exists()
    res = runner.invoke(
        app, ["control", "acrobot", "--run", str(run), "--steps", "4", "--no-video"]
    )
    assert res.exit_code == 0, res.output
    record = json.loads((run / "control" / "control.json").read_text())
    assert record["controller"] == "learned" and record["success"] is False
    assert record["run"] == str(run) and json.loads(res.stdout)["out"] == str(run / "control")
    res = runner.invoke(app, ["render", str(run)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(run / "video.mp4")
    res = runner.invoke(app, ["render", str(data), "-o", str(tmp_path / "data.mp4")])
    assert res.exit_code == 0, res.output
    assert (run / "video.mp4").stat().st_size > 0 and (tmp_path / "data.mp4").stat().st_size > 0


def test_cli_errors_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"system": "three-body", "model": "ode"}))
    for args in (
        ["fit", "acrobot", "--method", "bogus", "--runs-dir", str(tmp_path)],
        ["fit", "acrobot", "--preset", "huge", "--runs-dir", str(tmp_path)],
        ["control", "acrobot", "--oracle", "--run", str(tmp_path)],
        ["control", "acrobot", "--damping", "1", "--input-damping", "1", "--oracle"],
        ["control", "acrobot", "--run", str(tmp_path / "missing")],
        ["control", "acrobot", "--run", str(other)],
        ["control", "acrobot", "--fit-epochs", "0", "--runs-dir", str(tmp_path)],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.stderr.startswith("Error: ") and len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # nothing was fitted
