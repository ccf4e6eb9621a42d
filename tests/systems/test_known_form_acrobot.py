"""The acrobot through its five base parameters: the same physics (Euler-Lagrange), invariance
along the two invisible combinations, and the Jacobian's null space equal to the one derived."""

from __future__ import annotations

import pytest
import torch
from physid.envs import acrobot as sim
from physid.models.known_form import KnownFormAcrobot

import physid
from physid.errors import ConfigError

F64 = torch.float64


def _states(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 4, generator=g, dtype=F64) - 0.5) * 6
    u = (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 4
    return x, u


def test_the_dynamics_satisfy_euler_lagrange_with_the_physical_constants() -> None:
    """d/dt(∂L/∂q̇) - ∂L/∂q = u for L = ½ q̇ᵀM(q)q̇ - V(q), with M and V written out in the
    physical constants (independently of the base-parameter code)."""
    p = sim.AcrobotParams(m1=1.3, m2=0.8, l1=1.1, lc1=0.4, lc2=0.6, i1=0.9, i2=0.7)

    def M(q: torch.Tensor) -> torch.Tensor:
        c2 = torch.cos(q[1])
        m11 = p.i1 + p.i2 + p.m1 * p.lc1**2 + p.m2 * (p.l1**2 + p.lc2**2 + 2 * p.l1 * p.lc2 * c2)
        m12 = p.i2 + p.m2 * (p.lc2**2 + p.l1 * p.lc2 * c2)
        m22 = p.i2 + p.m2 * p.lc2**2 + 0 * c2
        return torch.stack([torch.stack([m11, m12]), torch.stack([m12, m22])])

    def V(q: torch.Tensor) -> torch.Tensor:
        return -p.gravity * (
            p.m1 * p.lc1 * torch.cos(q[0])
            + p.m2 * (p.l1 * torch.cos(q[0]) + p.lc2 * torch.cos(q[0] + q[1]))
        )

    x, u = _states()
    xdot = sim.dynamics(0.0, x, p, u)
    for xi, ui, di in zip(x, u, xdot, strict=True):
        q, dq, ddq = xi[:2], xi[2:], di[2:]
        dM = torch.autograd.functional.jacobian(M, q)  # (2, 2, 2): dM_ij / dq_k
        dV = torch.autograd.functional.jacobian(V, q)
        lhs = (
            M(q) @ ddq
            + torch.einsum("ijk,k,j->i", dM, dq, dq)
            - 0.5 * torch.einsum("jlk,j,l->k", dM, dq, dq)
            + dV
        )
        torch.testing.assert_close(lhs, ui, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(di[:2], dq)
    # the env's M and V are those, through the base parameters
    q = x[:, :2]
    torch.testing.assert_close(sim.mass_matrix(q, p), torch.stack([M(qi) for qi in q]))
    torch.testing.assert_close(sim.potential(q, p), torch.stack([V(qi) for qi in q]))


def test_physical_constants_with_the_same_base_parameters_move_identically() -> None:
    """m1 lc1 and i1 + m1 lc1² fix a4 and a1: halving lc1, doubling m1 and adding to i1 is
    invisible; so is trading l1 against m2 and lc2 the same way."""
    p = sim.AcrobotParams()
    q = sim.AcrobotParams(m1=2.0, lc1=0.25, i1=1.0 + 0.25 - 2.0 * 0.25**2)
    torch.testing.assert_close(sim.base_parameters(p), sim.base_parameters(q))
    x0 = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=F64)
    controls = [[0.5, -1.0]] * 20
    a = sim.simulate(x0.numpy(), controls, p)
    b = sim.simulate(x0.numpy(), controls, q)
    assert abs(a - b).max() < 1e-12


def test_the_trajectory_jacobian_has_exactly_the_derived_null_space() -> None:
    """∂(trajectory)/∂(7 physical constants) = ∂y/∂a · ∂a/∂θ: rank 5, and its two null
    directions are the null space of ∂a/∂θ (principal angles ~ 0)."""
    t, states, u = sim.simulate_constant_controls(1, seed=1, n_steps=10)
    y0 = torch.as_tensor(states[:, 0])
    model = KnownFormAcrobot(control=torch.as_tensor(u))
    jac = physid.odeint_jacobian(
        model, y0, torch.as_tensor(t), rtol=1e-10, atol=1e-10, tangents="reverse"
    )
    J = jac.dparams.reshape(-1, 7)
    s = torch.linalg.svdvals(J)
    assert float(s[4] / s[0]) > 1e-4 and float(s[5] / s[0]) < 1e-12
    theta = model.constants.detach()
    da = torch.autograd.functional.jacobian(lambda th: sim.base_parameters(th, 9.8), theta)
    null_derived = torch.linalg.svd(da).Vh[5:]  # (2, 7)
    null_numeric = torch.linalg.svd(J).Vh[5:]
    cosines = torch.linalg.svdvals(null_derived @ null_numeric.T)
    torch.testing.assert_close(cosines, torch.ones(2, dtype=F64), rtol=0, atol=1e-8)


@pytest.mark.parametrize("parameterization", ["physical", "base"])
def test_known_form_model_is_the_simulator(parameterization: str) -> None:
    x, u = _states()
    p = sim.AcrobotParams(m1=1.2, i2=0.8)
    model = KnownFormAcrobot(p, parameterization=parameterization, control=u)
    torch.testing.assert_close(model(torch.tensor(0.0), x), sim.dynamics(0.0, x, p, u))
    q = x[:, :2]
    torch.testing.assert_close(model.potential(q), sim.potential(q, p))
    torch.testing.assert_close(
        model.inverse_mass(q) @ model.mass_matrix(q), torch.eye(2).expand(6, 2, 2).to(F64)
    )
    torch.testing.assert_close(model.base(), sim.base_parameters(p))


def test_known_form_model_checks_its_arguments() -> None:
    with pytest.raises(ConfigError, match="parameterization"):
        KnownFormAcrobot(parameterization="other")
    with pytest.raises(ConfigError, match="7 constants"):
        KnownFormAcrobot([1.0, 2.0])
    with pytest.raises(ConfigError, match="control"):
        KnownFormAcrobot(control=torch.zeros(3))
    with pytest.raises(ConfigError, match="base parameters"):
        sim.dynamics(0.0, torch.zeros(4, dtype=F64), torch.ones(3, dtype=F64))
