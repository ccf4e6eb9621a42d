"""The acrobot simulator, its data set and its experiment (fit with every method, CLI)."""

from __future__ import annotations

import json
import math

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


@pytest.mark.parametrize("method", ["naive", "adjoint", "seminorm", "aca"])
def test_tiny_fit_records_nfe(tmp_path, method: str) -> None:
    config = experiment.FitConfig(
        method=method,
        epochs=2,
        n_per_control=2,
        n_steps=10,
        max_batches=1,
        batch_size=8,
        runs_dir=str(tmp_path / "runs"),
        data_dir=str(tmp_path / "data"),
        progress=False,
    )
    run = experiment.fit(config)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    for r in lines:
        assert r["nfe_forward"] > 0 and math.isfinite(r["loss"]) and math.isfinite(r["val_loss"])
        assert (r["nfe_backward"] > 0) == (method != "naive")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nfe_backward_total"] == sum(r["nfe_backward"] for r in lines)
    assert math.isfinite(summary["test_loss"]) and summary["n_parameters"] > 0
    if method in ("adjoint", "seminorm"):
        trace = np.load(run / "backward_trace.npz")
        assert len(trace["eval_t"]) == summary["nfe_backward_total"]
        assert trace["step_accepted"].sum() == summary["backward_steps_accepted_total"]


def test_fit_config_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        experiment.FitConfig(method="euler")
    with pytest.raises(ConfigError):
        experiment.FitConfig(preset="huge")
    assert experiment.FitConfig.paper().preset == "paper"


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_simulate_fit_evaluate_control_render(tmp_path) -> None:
    runner = CliRunner()
    data = tmp_path / "acro.npz"
    res = runner.invoke(
        app, ["simulate", "acrobot", "--n-per-control", "2", "--n-steps", "10", "--out", str(data)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "fit",
            "acrobot",
            "--method",
            "aca",
            "--epochs",
            "1",
            "--data",
            str(data),
            "--max-batches",
            "1",
            "--batch-size",
            "8",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "acrobot-symoden-aca-0"
    assert (run / "summary.json").exists()
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "evaluation.json").exists()
    res = runner.invoke(
        app, ["control", "acrobot", "--run", str(run), "--steps", "4", "--no-video"]
    )
    assert res.exit_code == 0, res.output
    record = json.loads((run / "control" / "control.json").read_text())
    assert record["controller"] == "learned" and record["success"] is False
    res = runner.invoke(app, ["render", str(run), "-o", str(tmp_path / "run.mp4")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["render", str(data), "-o", str(tmp_path / "data.mp4")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run.mp4").stat().st_size > 0 and (tmp_path / "data.mp4").stat().st_size > 0


def test_cli_errors_are_one_line(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "acrobot", "--method", "bogus", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 1
    res = runner.invoke(app, ["control", "acrobot"])
    assert res.exit_code == 1
    res = runner.invoke(app, ["control", "acrobot", "--run", str(tmp_path / "missing")])
    assert res.exit_code == 1
