"""The MuJoCo hopper: model, simulator, data set protocol, gymnasium env, rendering."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import physid.envs  # noqa: F401  (registers physid/Hopper-v0)
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from physid.envs import hopper as H

from physid.data import load_dataset, subsample_mask
from physid.errors import ConfigError, DataError


def test_model_matches_the_suite_hopper() -> None:
    model = H.load_model()
    names = tuple(model.joint(i).name for i in range(model.njnt))
    assert names == H.JOINT_NAMES
    assert (model.nq, model.nv, model.nu) == (7, 7, 4)
    assert model.opt.timestep == pytest.approx(0.005)
    assert model.opt.integrator == 0  # mjINT_EULER
    gears = model.actuator_gear[:, 0]
    np.testing.assert_allclose(gears, [30, 40, 30, 10])
    ranges = np.degrees(model.jnt_range[3:])
    np.testing.assert_allclose(ranges, [[-30, 30], [-170, 10], [5, 150], [-45, 45]], atol=1e-9)


def test_batched_simulation_equals_per_sample() -> None:
    rng = np.random.default_rng(0)
    qpos, qvel = H.sample_initial_states(4, rng)
    batch = H.simulate_batch(qpos, qvel, 30)
    single = np.stack([H.simulate_trajectory(qpos[i], qvel[i], 30) for i in range(4)])
    np.testing.assert_array_equal(batch, single)
    # the state is recorded before each step: row 0 is the initial state
    np.testing.assert_array_equal(batch[:, 0, :7], qpos)
    np.testing.assert_array_equal(batch[:, 0, 7:], qvel)


def test_initial_state_ranges() -> None:
    qpos, qvel = H.sample_initial_states(500, np.random.default_rng(1))
    assert qpos[:, :2].min() >= 0.0 and qpos[:, :2].max() <= 0.5
    assert qpos[:, 2:].min() >= -2.0 and qpos[:, 2:].max() <= 2.0
    assert np.abs(qvel).max() <= 5.0


def test_same_seed_same_data_and_protocol_shapes() -> None:
    params = H.HopperParams(n_steps=40, window=20)
    a = H.generate(10, seed=5, params=params)
    b = H.generate(10, seed=5, params=params)
    c = H.generate(10, seed=6, params=params)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)
    assert a.y.shape == (10, 20, 14)
    np.testing.assert_allclose(a.t, 0.005 * np.arange(20))
    assert a.metadata["n_train"] == 8
    starts = np.asarray(a.metadata["starts"])
    assert starts.min() >= 0 and starts.max() <= 40 - 20


def test_window_is_a_slice_of_the_full_trajectory() -> None:
    y = np.arange(2 * 10 * 1, dtype=float).reshape(2, 10, 1)
    w, starts = H.make_windows(y, 4, np.random.default_rng(0))
    for i in range(2):
        np.testing.assert_array_equal(w[i, :, 0], y[i, starts[i] : starts[i] + 4, 0])


@pytest.mark.parametrize("scheme", H.NORMALISATIONS)
def test_normalisation_round_trips(scheme: str) -> None:
    y = np.random.default_rng(2).normal(size=(6, 5, 14)) * 3.0 + 1.0
    y[..., 3] = 0.0  # a constant feature
    stats = H.normalisation_stats(y, scheme)
    z = H.normalise(y, stats)
    np.testing.assert_allclose(H.denormalise(z, stats), y, atol=1e-12)
    zt = H.normalise(torch.as_tensor(y), stats)
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-12)
    np.testing.assert_allclose(H.denormalise(zt, stats).numpy(), y, atol=1e-12)
    if scheme == "minmax":
        assert z.min() == pytest.approx(0.0) and z.max() == pytest.approx(1.0)


def test_minmax_stats_come_from_the_training_split(tmp_path) -> None:
    params = H.HopperParams(n_steps=30, window=10)
    ds = H.generate(10, seed=0, params=params)
    path = ds.save(tmp_path / "hopper.npz")
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.y, ds.y)
    stats = H.normalisation_of(loaded)
    n_train = loaded.metadata["n_train"]
    z = H.normalise(loaded.y[:n_train], stats)
    assert z.min() == pytest.approx(0.0) and z.max() == pytest.approx(1.0)
    assert H.normalisation_of(loaded, "reference")["scheme"] == "reference"
    with pytest.raises(ConfigError):
        H.normalisation_of(loaded, "zscore")


def test_normalisation_of_needs_hopper_metadata() -> None:
    from physid.data import TrajectoryDataset

    ds = TrajectoryDataset(t=np.arange(3.0), y=np.zeros((2, 3, 14)))
    with pytest.raises(DataError):
        H.normalisation_of(ds)


@pytest.mark.parametrize("fraction,k", [(0.1, 10), (0.2, 20), (0.5, 50)])
def test_observation_mask_has_exactly_k_points(fraction: float, k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    m1 = subsample_mask(64, 100, fraction, generator=gen)
    m2 = subsample_mask(64, 100, fraction, generator=gen)
    assert m1.shape == (64, 100) and m1.dtype == torch.bool
    assert (m1.sum(dim=1) == k).all()
    assert not torch.equal(m1, m2)  # re-drawn per batch


def test_env_passes_check_env_and_is_deterministic() -> None:
    env = gym.make("physid/Hopper-v0")
    check_env(env.unwrapped, skip_render_check=True)
    obs1, _ = env.reset(seed=3)
    obs2, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs1, obs2)
    assert obs1.shape == (14,) and np.isfinite(obs1).all()
    assert env.action_space.shape == (4,)
    rollout = []
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(4, dtype=np.float32))
        rollout.append(obs)
    env.close()
    # a zero-action rollout from reset is a data set trajectory
    truth = H.simulate_trajectory(obs1[:7], obs1[7:], 6)
    np.testing.assert_allclose(np.stack(rollout), truth[1:], atol=0, rtol=0)


def test_env_renders_headless() -> None:
    env = gym.make("physid/Hopper-v0", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame.std() > 0


def test_render_states() -> None:
    states = H.generate(2, seed=0, params=H.HopperParams(n_steps=6, window=3)).y[0]
    frames = H.render_states(states, width=32, height=24)
    assert frames.shape == (3, 24, 32, 3)
    with pytest.raises(ConfigError):
        H.render_states(np.zeros((3, 5)))


def test_bad_inputs_raise_config_errors() -> None:
    with pytest.raises(ConfigError):
        H.HopperParams(window=300)
    with pytest.raises(ConfigError):
        H.generate(1)
    with pytest.raises(ConfigError):
        H.simulate_trajectory(np.zeros(6), np.zeros(6), 3)


def test_experiment_simulate_writes_the_protocol_data_set(tmp_path) -> None:
    from physid.models.experiments.hopper import Hopper, SimulateConfig

    opts = SimulateConfig(n_trajectories=4, seed=7, out=str(tmp_path / "h.npz"))
    assert (SimulateConfig().n_trajectories, SimulateConfig().seed) == (1000, 123)
    path = Hopper().simulate(opts)
    assert path == tmp_path / "h.npz"
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.y, H.generate(4, seed=7).y)
    assert ds.metadata["system"] == "hopper" and ds.metadata["seed"] == 7
    with pytest.raises(ConfigError):
        SimulateConfig(n_trajectories=1)


def test_reference_statistics_come_from_the_full_trajectories() -> None:
    """The reference normalises the full 200-step trajectories before cutting windows."""
    params = H.HopperParams(n_steps=40, window=10)
    ds = H.generate(12, seed=4, params=params)
    rng = np.random.default_rng(4)
    qpos, qvel = H.sample_initial_states(12, rng, params)
    full = H.simulate_batch(qpos, qvel, params.n_steps)
    ref = H.normalisation_of(ds, "reference")
    expected = H.normalisation_stats(full, "reference")
    np.testing.assert_allclose(ref["offset"], expected["offset"])
    np.testing.assert_allclose(ref["scale"], expected["scale"])
    # the windows alone have a smaller range on some feature (so the difference is real)
    assert (np.asarray(ref["offset"]) < ds.y.min(axis=(0, 1)) - 1e-9).any()
    assert ds.metadata["format_version"] == H.FORMAT_VERSION


def test_old_reference_statistics_ask_to_resimulate() -> None:
    from physid.data import TrajectoryDataset

    ds = H.generate(6, seed=0, params=H.HopperParams(n_steps=20, window=10))
    meta = dict(ds.metadata)
    norm = dict(meta["normalisation"])
    norm["reference"] = {k: v for k, v in norm["reference"].items() if k != "over"}
    meta["normalisation"] = norm
    old = TrajectoryDataset(t=ds.t, y=ds.y, metadata=meta)
    with pytest.raises(DataError, match="re-simulate"):
        H.normalisation_of(old, "reference")
    assert H.normalisation_of(old, "minmax")["scheme"] == "minmax"  # still usable
