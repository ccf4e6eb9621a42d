"""The engine's components are public and compose (issue 11), and every name list has one source.

``odeint(method=...)`` takes a name or a method object; :class:`physid.AdjointMethod` takes its
backward norm and controller (as diffrax's ``BacksolveAdjoint`` takes an ``adjoint_controller``);
``"adjoint"`` and ``"seminorm"`` are two prebuilt instances of it.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

import physid
from physid.errors import ConfigError
from physid.gradients import METHODS
from physid.solvers import SOLVERS

F64 = torch.float64


class MLP(nn.Module):
    def __init__(self, width: int = 16, seed: int = 3):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2)).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y) - 0.1 * y


def _solve(method: object, **kwargs: object) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
    f = MLP()
    y0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0, 5, 6, dtype=F64)
    stats = physid.SolveStats()
    ys = physid.odeint(f, y0, t, method=method, rtol=1e-7, atol=1e-7, stats=stats, **kwargs)  # type: ignore[arg-type]
    grads = torch.autograd.grad(ys.pow(2).sum(), list(f.parameters()))
    return ys.detach(), list(grads), stats.as_dict()


def test_the_components_are_exported() -> None:
    for name in (
        "AbstractGradientMethod",
        "NaiveMethod",
        "AdjointMethod",
        "ACAMethod",
        "AbstractController",
        "ConstantController",
        "IController",
        "PIController",
        "AbstractNorm",
        "RMSNorm",
        "BlockNorm",
        "SemiNorm",
        "ButcherTableau",
    ):
        assert name in physid.__all__ and hasattr(physid, name), name
    assert isinstance(physid.ADJOINT, physid.AdjointMethod)
    assert isinstance(physid.SEMINORM, physid.AdjointMethod)
    assert issubclass(physid.PIController, physid.AbstractController)
    assert issubclass(physid.SemiNorm, physid.AbstractNorm)


def test_name_lists_come_from_the_registries() -> None:
    assert physid.GRADIENT_METHODS == tuple(METHODS)
    assert all(METHODS[name].name == name for name in METHODS)
    assert physid.SOLVER_NAMES == tuple(SOLVERS)
    assert "midpoint" in physid.SOLVER_NAMES and "rk2" in physid.SOLVER_NAMES


@pytest.mark.parametrize("solver", physid.SOLVER_NAMES)
def test_every_listed_solver_is_accepted_and_converges(solver: str) -> None:
    tableau = SOLVERS[solver]
    kwargs = {} if tableau.adaptive else {"step_size": 1e-3}
    ys = physid.odeint(
        lambda t, y: -y,
        torch.ones(1, dtype=F64),
        torch.tensor([0.0, 1.0], dtype=F64),
        solver=solver,
        **kwargs,  # type: ignore[arg-type]
    )
    assert float(ys[-1]) == pytest.approx(math.exp(-1), abs=5e-4)


def test_a_tableau_object_is_a_solver() -> None:
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    a = physid.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), t, solver="bosh3")
    b = physid.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), t, solver=SOLVERS["bosh3"])
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("naive", physid.NaiveMethod()),
        ("aca", physid.ACAMethod()),
        ("adjoint", physid.AdjointMethod(physid.BlockNorm)),
        ("seminorm", physid.AdjointMethod(physid.SemiNorm)),
        ("seminorm", physid.SEMINORM),
    ],
)
def test_a_method_object_is_the_same_method_as_its_name(name: str, instance: object) -> None:
    ys_a, g_a, st_a = _solve(name)
    ys_b, g_b, st_b = _solve(instance)
    assert torch.equal(ys_a, ys_b)
    assert all(torch.equal(a, b) for a, b in zip(g_a, g_b, strict=True))
    assert st_a == st_b


def test_an_adjoint_composed_with_a_pi_controller_and_the_seminorm() -> None:
    ys_i, g_i, st_i = _solve("seminorm")
    pi_semi = physid.AdjointMethod(physid.SemiNorm, backward_controller=physid.PIController)
    ys_pi, g_pi, st_pi = _solve(pi_semi)
    assert torch.equal(ys_i, ys_pi)  # the forward solve is untouched
    assert st_pi["nfe_forward"] == st_i["nfe_forward"]
    assert st_pi["backward_steps_accepted"] != st_i["backward_steps_accepted"]
    for a, b in zip(g_i, g_pi, strict=True):
        assert float((a - b).norm()) <= 1e-3 * float(a.norm()) + 1e-8
    # and against the exact discrete gradient
    _, g_aca, _ = _solve("aca")
    for a, b in zip(g_aca, g_pi, strict=True):
        assert float((a - b).norm()) <= 1e-3 * float(a.norm()) + 1e-8


def test_a_norm_factory_and_the_forward_controller_by_default() -> None:
    custom = physid.AdjointMethod(lambda n_state, n_params: physid.RMSNorm())
    ys_c, g_c, st_c = _solve(custom)
    ys_a, g_a, _ = _solve("adjoint")
    assert torch.equal(ys_c, ys_a)
    for a, b in zip(g_a, g_c, strict=True):
        assert float((a - b).norm()) <= 1e-3 * float(a.norm()) + 1e-8
    # the forward's PI controller serves the backward solve when none is given
    _, _, st_fwd_pi = _solve(physid.SEMINORM, controller="pi")
    _, _, st_both_pi = _solve(
        physid.AdjointMethod(physid.SemiNorm, backward_controller=physid.PIController),
        controller="pi",
    )
    assert st_fwd_pi == st_both_pi


def test_bad_method_objects_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="backward_norm"):
        physid.AdjointMethod(int)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backward_norm"):
        physid.AdjointMethod(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backward_controller"):
        physid.AdjointMethod(physid.SemiNorm, backward_controller=physid.PIController())  # type: ignore[arg-type]
    assert "SemiNorm" in repr(physid.SEMINORM)


def test_the_design_contract_signature_holds() -> None:
    sig = inspect.signature(physid.odeint)
    assert list(sig.parameters)[:3] == ["func", "y0", "t"]
    expected = {
        "method": "aca",
        "solver": "dopri5",
        "rtol": 1e-6,
        "atol": 1e-8,
        "max_steps": 10_000,
        "first_step": None,
        "params": None,
        "stats": None,
    }
    for name, default in expected.items():
        p = sig.parameters[name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default == default, name
