"""The three-body simulator: conservation laws, the paper's close encounters, the gymnasium env."""

from __future__ import annotations

import numpy as np
import physid.envs  # noqa: F401  (registers physid/ThreeBody-v0)
import pytest
import torch
from physid.envs.three_body import (
    ThreeBodyEnv,
    ThreeBodyParams,
    default_initial_state,
    dynamics,
    dynamics_numpy,
    energy,
    eval_times,
    momentum,
    pair_distances,
    random_system,
    simulate,
    train_times,
)
from physid.models.experiments.three_body import position_mse

from physid.errors import ConfigError, PhysicsError

PARAMS = ThreeBodyParams()


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """The paper's system on the test grid [0, 2] (2000 points)."""
    return simulate(PARAMS, default_initial_state(), eval_times())


def test_grids_follow_the_protocol() -> None:
    t_train, t_test = train_times(), eval_times()
    assert t_train.shape == (1000,) and t_train[0] == 0.0 and t_train[-1] == 1.0
    assert (
        t_test.shape == (2000,) and t_test[0] == 0.0 and t_test[-1] == pytest.approx(2.0, abs=2e-3)
    )
    h = 1.0 / 999
    np.testing.assert_allclose(np.diff(t_test[1:]), h, rtol=1e-9)
    # Every test point but t = 0 lies midway between two training points (on [0, 1]).
    inside = t_test[1:][t_test[1:] < 1.0]
    gap = np.min(np.abs(inside[:, None] - t_train[None, :]), axis=1)
    np.testing.assert_allclose(gap, h / 2, rtol=1e-9)


def test_truth_conserves_energy_and_momentum(truth: np.ndarray) -> None:
    e = energy(truth, PARAMS)
    p = momentum(truth, PARAMS)
    assert np.max(np.abs(e - e[0])) / abs(e[0]) < 1e-9
    assert np.max(np.abs(p - p[0])) / np.linalg.norm(p[0]) < 1e-9
    # The centre of mass drifts (the paper does not remove it), so momentum is non-zero.
    assert np.linalg.norm(p[0]) > 0.1


def test_close_encounters_of_the_paper_system(truth: np.ndarray) -> None:
    t = eval_times()
    dmin = pair_distances(truth).min(axis=-1)
    first = np.argmin(np.where(t < 0.95, dmin, np.inf))
    second = np.argmin(np.where((t > 0.95) & (t < 1.2), dmin, np.inf))
    assert dmin[first] == pytest.approx(0.053, abs=1e-3) and t[first] == pytest.approx(
        0.87, abs=0.01
    )
    assert dmin[second] == pytest.approx(0.061, abs=1e-3)
    assert t[second] == pytest.approx(1.035, abs=0.01)


def test_torch_dynamics_equals_numpy_dynamics() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = np.concatenate([rng.uniform(0, 0.5, 9), rng.uniform(-0.1, 0.1, 9)])
        expected = dynamics(0.0, torch.tensor(y), PARAMS).numpy()
        np.testing.assert_array_equal(dynamics_numpy(0.0, y, PARAMS), expected)


def test_dynamics_matches_newton_written_out() -> None:
    y = default_initial_state()
    r, v = y[:9].reshape(3, 3), y[9:].reshape(3, 3)
    m = np.array(PARAMS.masses)
    accel = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            if i != j:
                d = r[j] - r[i]
                accel[i] += PARAMS.k1 * m[j] * d / np.linalg.norm(d) ** 3
    expected = np.concatenate([PARAMS.k2 * v.ravel(), accel.ravel()])
    np.testing.assert_allclose(dynamics_numpy(0.0, y, PARAMS), expected, rtol=1e-14, atol=1e-15)


def test_batched_dynamics_equals_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(4, 5, 18, generator=gen, dtype=torch.float64)
    masses = 1.0 + torch.rand(4, 5, 3, generator=gen, dtype=torch.float64)
    batched = dynamics(0.0, y, masses)
    for i in range(4):
        for j in range(5):
            torch.testing.assert_close(batched[i, j], dynamics(0.0, y[i, j], masses[i, j]))
    # A tensor of the true masses gives the same as the params dataclass.
    m = torch.tensor(PARAMS.masses, dtype=torch.float64)
    torch.testing.assert_close(dynamics(0.0, y, m), dynamics(0.0, y, PARAMS))


def test_mass_gradient_is_finite() -> None:
    m = torch.tensor(PARAMS.masses, dtype=torch.float64, requires_grad=True)
    dynamics(0.0, torch.tensor(default_initial_state()), m).sum().backward()
    assert m.grad is not None and torch.isfinite(m.grad).all() and (m.grad != 0).all()


def test_scale_checks_of_the_metric(truth: np.ndarray) -> None:
    """PROTOCOLS.md: a 1% error in one mass gives ~0.0027; constant positions give ~1.2."""
    masses = list(PARAMS.masses)
    masses[0] *= 1.01
    perturbed = simulate(ThreeBodyParams(tuple(masses)), default_initial_state(), eval_times())
    assert position_mse(perturbed, truth) == pytest.approx(0.0027, rel=0.15)
    constant = np.broadcast_to(truth[:1], truth.shape)
    assert position_mse(constant, truth) == pytest.approx(1.2, rel=0.05)


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError):
        ThreeBodyParams(masses=(1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ThreeBodyParams(masses=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError):
        simulate(PARAMS, np.zeros(17), [0.0, 1.0])


def test_collision_raises_physics_error() -> None:
    y0 = np.zeros(18)
    y0[3:6] = [0.01, 0.0, 0.0]  # bodies 1 and 2 at rest, 0.01 apart: they fall into each other
    y0[6:9] = [1.0, 1.0, 1.0]
    with pytest.raises(PhysicsError):
        simulate(PARAMS, y0, np.linspace(0.0, 0.1, 11))


def test_random_systems_are_reproducible_and_unequal() -> None:
    p1, y1 = random_system(3)
    p2, y2 = random_system(3)
    p3, _ = random_system(4)
    assert p1 == p2 and np.array_equal(y1, y2) and p1 != p3
    assert len(set(p1.masses)) == 3


def test_env_steps_follow_the_truth() -> None:
    env = ThreeBodyEnv(dt=0.01)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, default_initial_state())
    for _ in range(10):
        obs, *_ = env.step(np.zeros(0))
    expected = simulate(PARAMS, default_initial_state(), np.linspace(0.0, 0.1, 11))[-1]
    np.testing.assert_allclose(obs, expected, rtol=1e-9, atol=1e-10)


def test_env_truncates_and_renders() -> None:
    env = ThreeBodyEnv(dt=0.01, max_steps=3, render_mode="rgb_array")
    env.reset(seed=0)
    truncated = False
    for _ in range(3):
        _, _, _, truncated, _ = env.step(np.zeros(0))
    assert truncated
    frame = env.render()
    assert frame is not None and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
