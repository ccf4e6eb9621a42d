"""Three-body models: the known form, the augmented neural ODE and the LSTM baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physid.envs.three_body import K2, ThreeBodyParams, default_initial_state, dynamics
from physid.models.known_form import KnownFormThreeBody
from physid.models.lstm import LSTMBaseline
from physid.models.node import AUG_DIM, AugmentedNODE, PairwiseNODE, augmented_features

from physid.errors import ConfigError


def _states(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = 0.5 * torch.rand(n, 9, generator=gen, dtype=torch.float64)
    v = 0.2 * torch.rand(n, 9, generator=gen, dtype=torch.float64) - 0.1
    return torch.cat([r, v], -1)


def test_known_form_initialisation_and_dynamics() -> None:
    model = KnownFormThreeBody(generator=torch.Generator().manual_seed(0))
    masses = model.masses.detach()
    assert masses.shape == (3,) and bool(((masses > 0.9) & (masses < 1.1)).all())
    assert [n for n, _ in model.named_parameters()] == ["masses"]
    y = _states(4)
    torch.testing.assert_close(model(torch.tensor(0.0), y), dynamics(0.0, y, masses))
    # With the true masses the model is exactly the simulator's dynamics.
    truth = KnownFormThreeBody(ThreeBodyParams().masses)
    torch.testing.assert_close(truth(0.0, y), dynamics(0.0, y, ThreeBodyParams()), rtol=0, atol=0)


def test_known_form_same_generator_same_masses_and_gradients_flow() -> None:
    a = KnownFormThreeBody(generator=torch.Generator().manual_seed(3))
    b = KnownFormThreeBody(generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.masses, b.masses)
    a(0.0, torch.tensor(default_initial_state())).pow(2).sum().backward()
    assert a.masses.grad is not None and torch.isfinite(a.masses.grad).all()
    with pytest.raises(ConfigError):
        KnownFormThreeBody([1.0, 1.0])


def test_augmented_node_has_the_papers_5509_parameters() -> None:
    model = AugmentedNODE()
    assert sum(p.numel() for p in model.parameters()) == 5509


def test_augmented_features_layout() -> None:
    r = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0], dtype=torch.float64)
    f = augmented_features(r)
    assert f.shape == (AUG_DIM,)
    torch.testing.assert_close(f[:9], r)
    d = torch.tensor([[-1.0, 0, 0], [0, -2.0, 0], [1.0, -2.0, 0]], dtype=torch.float64)
    norm = d.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(f[9:18], d.flatten())
    torch.testing.assert_close(f[18:27], (d / norm).flatten())
    torch.testing.assert_close(f[27:36], (d / norm**2).flatten())
    torch.testing.assert_close(f[36:45], (d / norm**3).flatten())


def test_augmented_node_kinematics_known_and_batched() -> None:
    torch.manual_seed(0)
    model = AugmentedNODE()
    y = _states(6).reshape(2, 3, 18)
    dy = model(torch.tensor(0.0), y)
    assert dy.shape == (2, 3, 18)
    torch.testing.assert_close(dy[..., :9], K2 * y[..., 9:])
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(dy[i, j], model(torch.tensor(0.0), y[i, j]))


def _trajectory() -> tuple[torch.Tensor, torch.Tensor]:
    from physid.envs.three_body import simulate

    t = np.linspace(0.0, 1.0, 1000)
    y = simulate(ThreeBodyParams(), default_initial_state(), t)
    return torch.as_tensor(t), torch.as_tensor(y)


def test_node_scaling_normalises_each_input_block_and_the_output() -> None:
    t, y = _trajectory()
    torch.manual_seed(0)
    model = AugmentedNODE()
    n_params = sum(p.numel() for p in model.parameters())
    model.set_scaling("inputs+outputs", t, y)
    assert sum(p.numel() for p in model.parameters()) == n_params == 5509  # buffers only
    scaled = augmented_features(y[:, :9]) * model.input_scale
    block_rms = scaled.reshape(-1, 5, 9).pow(2).mean(dim=(0, 2)).sqrt()
    torch.testing.assert_close(block_rms, torch.ones(5, dtype=block_rms.dtype))
    # The output scale is the RMS of dv/dt / K1 of the truth (central differences).
    from physid.envs.three_body import K1

    accel = dynamics(0.0, y, ThreeBodyParams())[:, 9:] / K1
    assert float(model.output_scale) == pytest.approx(float(accel.pow(2).mean().sqrt()), rel=0.02)
    with pytest.raises(ConfigError, match="scaling must be one of"):
        model.set_scaling("batchnorm", t, y)


def test_node_scaling_none_is_the_papers_network_and_old_checkpoints_load() -> None:
    t, y = _trajectory()
    torch.manual_seed(0)
    plain = AugmentedNODE()
    torch.manual_seed(0)
    reset = AugmentedNODE()
    reset.set_scaling("inputs", t, y)
    reset.set_scaling("none", t, y)
    torch.testing.assert_close(reset(t[0], y[:5]), plain(t[0], y[:5]), rtol=0, atol=0)
    # A state dict from before the scale buffers existed loads as the unscaled network.
    old = {k: v for k, v in plain.state_dict().items() if not k.endswith("_scale")}
    loaded = AugmentedNODE()
    loaded.set_scaling("inputs+outputs", t, y)
    loaded.load_state_dict(old)
    torch.testing.assert_close(loaded(t[0], y[:5]), plain(t[0], y[:5]), rtol=0, atol=0)


def test_pairwise_node_starts_in_free_flight_and_has_1203_parameters() -> None:
    model = PairwiseNODE()
    assert sum(p.numel() for p in model.parameters()) == 1203
    y = _states(5)
    dy = model(torch.tensor(0.0), y)
    torch.testing.assert_close(dy[:, :9], K2 * y[:, 9:])
    assert float(dy[:, 9:].abs().max()) == 0.0


def test_pairwise_node_with_newtons_coefficients_is_the_simulator(newton_coefficients) -> None:
    params = ThreeBodyParams()
    model = PairwiseNODE()
    model.net = newton_coefficients(params.masses)
    y = torch.cat([_states(7), torch.as_tensor(default_initial_state())[None]])
    torch.testing.assert_close(model(0.0, y), dynamics(0.0, y, params), rtol=1e-12, atol=1e-12)


def test_pairwise_node_is_translation_and_rotation_equivariant() -> None:
    torch.manual_seed(0)
    model = PairwiseNODE()
    torch.nn.init.normal_(model.net[2].weight)  # a random, non-trivial force law
    y = _states(4, seed=1)
    accel = model(0.0, y)[:, 9:].reshape(-1, 3, 3)
    assert float(accel.abs().max()) > 1e-3
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    r = y[:, :9].reshape(-1, 3, 3)
    moved = torch.cat([(r @ q.T + torch.tensor([0.3, -1.0, 2.0])).flatten(1), y[:, 9:]], -1)
    torch.testing.assert_close(model(0.0, moved)[:, 9:].reshape(-1, 3, 3), accel @ q.T)
    with pytest.raises(ConfigError):
        model(0.0, y[:, :9])


@pytest.mark.parametrize("aug", [False, True])
def test_lstm_shapes_and_rollout(aug: bool) -> None:
    torch.manual_seed(0)
    model = LSTMBaseline(aug=aug, hidden=16)
    positions = _states(60)[:, :9].float().reshape(3, 20, 9)
    model.fit_normalisation(positions)
    assert model(positions).shape == (3, 20, 9)
    first = positions[0, :10]
    traj = model.rollout(first, 25)
    assert traj.shape == (35, 9) and torch.isfinite(traj).all()
    torch.testing.assert_close(traj[:10], first)
    torch.testing.assert_close(model.rollout(first, 25), traj)  # deterministic
    # The first rolled-out point is the teacher-forced prediction after the 10 given points.
    torch.testing.assert_close(traj[10], model(first[None])[0, -1])
    assert model.rollout(positions[:, :10], 5).shape == (3, 15, 9)


def test_lstm_learns_a_straight_line() -> None:
    """Sanity: a constant-velocity motion is learned and extrapolated."""
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 60)
    line = (torch.tensor(np.linspace(0.1, 0.9, 9), dtype=torch.float32) * t[:, None]).float()
    windows = line.unfold(0, 20, 1).permute(0, 2, 1)  # (41, 20, 9)
    model = LSTMBaseline(hidden=16)
    model.fit_normalisation(windows)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        loss = (model(windows)[:, :-1] - windows[:, 1:]).pow(2).mean()
        loss.backward()
        opt.step()
    traj = model.rollout(line[:10], 50)
    assert float((traj - line).pow(2).sum(-1).mean()) < 1e-3
