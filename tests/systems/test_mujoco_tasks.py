"""envs.mujoco_tasks (gymnasium MuJoCo tasks as data sets) and models.experiments.mujoco."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from physid.envs import hopper as H
from physid.envs import mujoco_tasks as M

from physid.data import TrajectoryDataset, load_dataset
from physid.errors import ConfigError, DataError

SMALL = M.TaskParams(env_id="Swimmer-v5", n_steps=12, window=6)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Swimmer-v5", "Walker2d-v5"])
def test_rollout_equals_stepping_the_gymnasium_env(env_id: str) -> None:
    env = M.make_env(M.TaskParams(env_id=env_id))
    try:
        qpos, qvel = M.initial_states(env, 3, seed=0)
        u = M.policy_actions(env.model, 3, 15, "random", np.random.default_rng(0))
        batch = M.simulate_batch(env.model, qpos, qvel, u, env.frame_skip)
        single = np.stack([M.simulate_with_env(env, qpos[i], qvel[i], u[i]) for i in range(3)])
        assert batch.shape == (3, 15, env.model.nq + env.model.nv)
        np.testing.assert_allclose(batch, single, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(batch[:, 0], np.concatenate([qpos, qvel], axis=1))
    finally:
        env.close()


def test_initial_states_are_the_tasks_seeded_resets() -> None:
    env = M.make_env(SMALL)
    try:
        q1, v1 = M.initial_states(env, 4, seed=7)
        q2, v2 = M.initial_states(env, 4, seed=7)
        np.testing.assert_array_equal(q1, q2)
        np.testing.assert_array_equal(v1, v2)
        assert not np.array_equal(q1[0], q1[1])  # the stream continues between resets
        env.reset(seed=7)
        np.testing.assert_array_equal(env.data.qpos, q1[0])
    finally:
        env.close()


def test_policies() -> None:
    env = M.make_env(M.TaskParams(env_id="HalfCheetah-v5"))
    model = env.model
    env.close()
    rng = np.random.default_rng(0)
    zero = M.policy_actions(model, 2, 5, "zero", rng)
    assert zero.shape == (2, 5, 6) and not zero.any()
    const = M.policy_actions(model, 2, 5, "constant", rng)
    np.testing.assert_array_equal(const, np.broadcast_to(const[:, :1], const.shape))
    assert not np.array_equal(const[0, 0], const[1, 0])
    rand = M.policy_actions(model, 2, 5, "random", rng, action_scale=0.5)
    assert not np.array_equal(rand[0, 0], rand[0, 1])
    assert np.abs(rand).max() <= 0.5  # HalfCheetah's range is [-1, 1]
    with pytest.raises(ConfigError):
        M.policy_actions(model, 2, 5, "greedy", rng)


def test_generate_is_seeded_and_keeps_the_protocol(tmp_path) -> None:
    a = M.generate(10, seed=3, params=SMALL)
    b = M.generate(10, seed=3, params=SMALL)
    c = M.generate(10, seed=4, params=SMALL)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)
    assert a.y.shape == (10, 6, 10) and a.u is not None and a.u.shape == (10, 6, 2)
    meta = a.metadata
    assert meta["system"] == "mujoco" and meta["env_id"] == "Swimmer-v5"
    assert meta["n_train"] == 8 and len(meta["state_names"]) == 10
    assert meta["state_names"][0].startswith("qpos_") and meta["state_names"][-1].startswith(
        "qvel_"
    )
    np.testing.assert_allclose(a.t, meta["dt"] * np.arange(6))
    assert meta["dt"] == pytest.approx(0.04)  # Swimmer: timestep 0.01, frame_skip 4
    # the windows are slices of trajectories started from the recorded initial states
    starts = np.asarray(meta["starts"])
    assert starts.min() >= 0 and starts.max() <= 12 - 6
    # minmax over the training windows maps them onto [0, 1]; reference from full trajectories
    z = H.normalise(a.y[:8], H.normalisation_of(a, "minmax"))
    assert z.min() == pytest.approx(0.0) and z.max() == pytest.approx(1.0)
    ref = H.normalisation_of(a, "reference")
    assert (np.asarray(ref["offset"]) <= a.y.min(axis=(0, 1)) + 1e-12).all()
    path = a.save(tmp_path / "swimmer.npz")
    loaded = load_dataset(path)
    assert M.check_dataset(loaded) == SMALL


def test_window_matches_a_fresh_simulation() -> None:
    params = M.TaskParams(env_id="Swimmer-v5", n_steps=10, window=4, policy="constant")
    ds = M.generate(3, seed=5, params=params)
    env = M.make_env(params)
    try:
        qpos, qvel = M.initial_states(env, 3, seed=5)
    finally:
        env.close()
    rng = np.random.default_rng(5)
    u = M.policy_actions(env.model, 3, 10, "constant", rng)
    full = M.simulate_batch(env.model, qpos, qvel, u, env.frame_skip)
    for i, s in enumerate(ds.metadata["starts"]):
        np.testing.assert_array_equal(ds.y[i], full[i, s : s + 4])
        np.testing.assert_array_equal(ds.u[i], u[i, s : s + 4])


def test_bad_options_and_data() -> None:
    with pytest.raises(ConfigError):
        M.TaskParams(policy="greedy")
    with pytest.raises(ConfigError):
        M.TaskParams(window=300)
    with pytest.raises(ConfigError):
        M.make_env(M.TaskParams(env_id="CartPole-v1"))
    with pytest.raises(ConfigError):
        M.generate(1, params=SMALL)
    hopper = H.generate(4, seed=0, params=H.HopperParams(n_steps=10, window=5))
    with pytest.raises(DataError):
        M.check_dataset(hopper)
    with pytest.raises(DataError):
        M.check_dataset(TrajectoryDataset(t=np.arange(3.0), y=np.zeros((2, 3, 10))))


def test_render_states_draws_the_task() -> None:
    ds = M.generate(2, seed=0, params=M.TaskParams(env_id="HalfCheetah-v5", n_steps=4, window=2))
    frames = M.render_states("HalfCheetah-v5", ds.y[0], width=64, height=48)
    assert frames.shape == (2, 48, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0
    blue = M.render_states("HalfCheetah-v5", ds.y[0], width=64, height=48, rgba=(0, 0, 1, 1))
    assert not np.array_equal(frames, blue)
    with pytest.raises(ConfigError):
        M.render_states("HalfCheetah-v5", np.zeros((2, 5)))


# ---- the experiment ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swimmer_data(tmp_path_factory):
    from physid.models.experiments import mujoco

    path = tmp_path_factory.mktemp("data") / "swimmer.npz"
    mujoco.simulate("Swimmer-v5", 10, seed=1, out=path, n_steps=30, window=20)
    return path


def test_simulate_options_and_data_are_deterministic_per_seed(tmp_path) -> None:
    from physid.models.experiments import mujoco

    exp = mujoco.MuJoCo()
    small = {"env": "Swimmer-v5", "n_trajectories": 4, "n_steps": 10, "window": 5}
    a = load_dataset(exp.simulate(out=str(tmp_path / "a.npz"), seed=3, **small))
    b = load_dataset(exp.simulate(out=str(tmp_path / "b.npz"), seed=3, **small))
    c = load_dataset(exp.simulate(out=str(tmp_path / "c.npz"), seed=4, **small))
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)
    # simulate's defaults are the fit's: a fit's generated set is the one simulate writes
    assert mujoco.SimulateConfig().task_params() == mujoco.FitConfig().task_params()
    assert M.check_dataset(a) == mujoco.SimulateConfig(**small).task_params()
    with pytest.raises(ConfigError):
        mujoco.SimulateConfig(policy="greedy")
    with pytest.raises(ConfigError):
        mujoco.SimulateConfig(window=500)
    with pytest.raises(ConfigError):
        mujoco.FitConfig(env="CartPole-v1", n_steps=0)


@pytest.mark.parametrize("task", ["interpolation", "extrapolation"])
def test_tiny_fit_evaluate(tmp_path, swimmer_data, task: str) -> None:
    from physid.models.experiments import mujoco

    cfg = mujoco.FitConfig(
        env="Swimmer-v5",
        preset="tiny",
        epochs=1,
        data=str(swimmer_data),
        runs_dir=str(tmp_path),
        progress=False,
        eval_samples=1,
        n_samples=1,
        batch_size=4,
        threads=1,
        task=task,
        observed=0.5,
    )
    run = mujoco.MuJoCo().fit(cfg)
    extrap = "extrap-" if task == "extrapolation" else ""
    assert run.name == f"mujoco-swimmer-v5-latent-ode-tiny-{extrap}obs50-aca-0"
    summary = json.loads(run.summary_path.read_text())
    assert summary["system"] == "mujoco" and summary["env"] == "Swimmer-v5"
    assert summary["task"] == task and math.isfinite(summary["test_mse"])
    names = {"interpolation": "linear_interpolation", "extrapolation": "last_value"}
    assert names[task] in summary["baselines"]
    for name, value in summary["baselines"].items():
        assert summary["ratio_to"][name] == pytest.approx(summary["test_mse"] / value)
    assert summary["steps_accepted_per_iter"] >= 1 and summary["iterations"] == 2
    line = run.read_metrics()[0]
    assert {"steps_accepted", "steps_rejected", "nfe_forward", "nfe_forward_per_iter"} <= set(line)
    assert summary["nfe_forward"] == line["nfe_forward"]  # the total of the one epoch
    target = np.load(run / "test_target.npy")
    assert target.shape == (2, 20) and target.all() == (task == "interpolation")
    assert (run.plots / "reconstruction.png").stat().st_size > 0
    assert json.loads(run.config_path.read_text())["sizes"]["input_dim"] == 10


def test_fit_rejects_data_of_another_task(tmp_path, swimmer_data) -> None:
    from physid.models.experiments import mujoco

    cfg = mujoco.FitConfig(
        env="HalfCheetah-v5",
        preset="tiny",
        epochs=1,
        data=str(swimmer_data),
        runs_dir=str(tmp_path),
        progress=False,
    )
    with pytest.raises(DataError):
        mujoco.MuJoCo().fit(cfg)
