"""Every gymnasium environment physid registers, through one parametrised test (STYLE.md):
gymnasium's ``check_env``, same seed -> identical rollout, finite observations of the declared
shape, and rendering to an RGB array."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import physid.envs  # noqa: F401  (registers the physid/ environments)
import pytest
from gymnasium.utils.env_checker import check_env

ENV_IDS = sorted(k for k in gym.registry if k.startswith("physid/"))
# the three-body env starts from the paper's state unless asked to perturb it
KWARGS = {"physid/ThreeBody-v0": {"ic_noise": 1e-3}}


def test_every_simulator_is_registered() -> None:
    assert ENV_IDS == ["physid/Acrobot-v0", "physid/Hopper-v0", "physid/ThreeBody-v0"]


def _rollout(env_id: str, seed: int, steps: int = 5) -> tuple[list[np.ndarray], list[float]]:
    env = gym.make(env_id, **KWARGS.get(env_id, {}))
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    env.close()
    return observations, rewards


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", **KWARGS.get(env_id, {}))
    with warnings.catch_warnings():
        # an unbounded observation Box is what these simulators have; gymnasium warns about it
        warnings.simplefilter("ignore", UserWarning)
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout_and_finite_observations(env_id: str) -> None:
    first, rewards = _rollout(env_id, seed=3)
    again, rewards_again = _rollout(env_id, seed=3)
    other, _ = _rollout(env_id, seed=4)
    space = gym.make(env_id).observation_space
    assert len(first) > 1
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.shape == space.shape and np.isfinite(a).all()
    assert rewards == rewards_again
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=False))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_renders_an_rgb_frame(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.dtype == np.uint8 and frame.std() > 0
