"""Symplectic ODE-Net: sizes, structure (the true M⁻¹, V, g give the true dynamics), gradients."""

from __future__ import annotations

import pytest
import torch
from physid.envs.acrobot import AcrobotParams, dynamics, input_matrix, mass_matrix, to_channels
from physid.models.symoden import PRESETS, SymODEN, SymODENConfig, build_symoden
from torch import nn

import physid
from physid.errors import ConfigError

PARAMS = AcrobotParams()


def _angles(embedded: torch.Tensor) -> torch.Tensor:
    return torch.atan2(embedded[..., 2:], embedded[..., :2])


class TrueInverseMass(nn.Module):
    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(mass_matrix(_angles(embedded), PARAMS))


class TruePotential(nn.Module):
    """V written as a polynomial in (cos, sin): its derivatives off the circle differ from the
    atan2 form, but on the circle the model must give the same ∂H/∂q."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        c1, c2, s1, s2 = e.unbind(-1)
        p = PARAMS
        c12 = c1 * c2 - s1 * s2
        return -p.gravity * (p.m1 * p.lc1 * c1 + p.m2 * (p.l1 * c1 + p.lc2 * c12))


class TrueInput(nn.Module):
    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return input_matrix(e[..., :2], PARAMS)


def test_paper_preset_has_the_paper_parameter_count() -> None:
    model = build_symoden("paper")
    assert sum(p.numel() for p in model.parameters()) == 509_108
    assert sum(p.numel() for p in build_symoden().parameters()) < 50_000


def test_config_validates() -> None:
    with pytest.raises(ConfigError):
        SymODENConfig(activation="relu")
    with pytest.raises(ConfigError):
        build_symoden("huge")
    assert set(PRESETS) >= {"paper", "default"}


def test_true_networks_give_the_true_dynamics(float64) -> None:
    model = SymODEN(TrueInverseMass(), TruePotential(), TrueInput(), n_angles=2)
    state = (torch.rand(3, 5, 4) * 2 - 1) * torch.tensor([3.1, 3.1, 4.0, 4.0])
    u = torch.randn(3, 5, 2)
    got = model(torch.tensor(0.0), to_channels(state, u))
    true = dynamics(0.0, state, PARAMS, u)
    dq, ddq = true[..., :2], true[..., 2:]
    q = state[..., :2]
    expected = torch.cat([-torch.sin(q) * dq, torch.cos(q) * dq, ddq, torch.zeros_like(u)], -1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_inverse_mass_is_positive_definite() -> None:
    model = build_symoden()
    e = torch.randn(100, 4)
    eig = torch.linalg.eigvalsh(model.inverse_mass(e))
    assert eig.min() >= 0.1 - 1e-5


def test_forward_works_without_grad_and_keeps_a_graph_to_the_parameters() -> None:
    model = build_symoden()
    x = torch.randn(7, 8)
    with torch.no_grad():
        f = model(torch.tensor(0.0), x)
    assert f.shape == (7, 8) and torch.all(f[:, 6:] == 0) and not f.requires_grad
    f = model(torch.tensor(0.0), x)
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(f.square().sum(), list(named.values()), allow_unused=True)
    unused = {name for name, g in zip(named, grads, strict=True) if g is None}
    # Only V's output bias is invisible to the dynamics (a constant in H).
    assert unused == {"potential.net.4.bias"}


def test_gradient_methods_agree(float64) -> None:
    """ACA and naive differentiate the same discrete solve; the adjoints approach it."""
    torch.manual_seed(0)
    model = build_symoden(
        SymODENConfig(mass_hidden=(8,), potential_hidden=(8,), input_hidden=(8,))
    ).double()
    state = torch.rand(4, 4, dtype=torch.float64) * 2 - 1
    x0 = to_channels(state, torch.randn(4, 2, dtype=torch.float64))
    t = torch.linspace(0, 0.2, 5, dtype=torch.float64)
    target = torch.randn(5, 4, 8, dtype=torch.float64)

    def grad(method: str, tol: float) -> torch.Tensor:
        stats = physid.SolveStats()
        out = physid.odeint(model, x0, t, method=method, rtol=tol, atol=tol, stats=stats)
        loss = (out - target).square().mean()
        gs = torch.autograd.grad(
            loss, list(model.parameters()), allow_unused=True, materialize_grads=True
        )
        return torch.cat([g.reshape(-1) for g in gs])

    naive, aca = grad("naive", 1e-6), grad("aca", 1e-6)
    torch.testing.assert_close(aca, naive, rtol=1e-8, atol=1e-10)
    for method in ("adjoint", "seminorm"):
        torch.testing.assert_close(grad(method, 1e-10), aca, rtol=1e-4, atol=1e-7)
