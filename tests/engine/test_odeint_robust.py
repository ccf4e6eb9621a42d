"""Hostile and careless input to odeint (issue 13): typed errors, never a silent wrong answer.

Gradients reach tensors ``func`` closes over in every method; an empty batch solves and
differentiates; half precision, a wrong derivative shape and ill-typed options are
``ConfigError``s; a non-finite step size and a step below ``t``'s resolution are their own
``SolverError``s.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import physid
from physid.controllers import IController
from physid.errors import ConfigError, SolverError, SolverStatus

F64 = torch.float64
METHODS = list(physid.GRADIENT_METHODS)
TIGHT = {"rtol": 1e-11, "atol": 1e-12}


def _decay_grad_k(k: float, y0: torch.Tensor, t: torch.Tensor) -> float:
    """d/dk of sum_i sum_j y0_j exp(-k t_i), the loss of y' = -k y summed over outputs."""
    return float((y0.sum() * (-t) * torch.exp(-k * t)).sum())


@pytest.mark.parametrize("method", METHODS)
def test_a_captured_leaf_gets_its_gradient(method: str) -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.3], dtype=F64)
    physid.odeint(lambda t, y: -k * y, y0, t, method=method, **TIGHT).sum().backward()
    assert k.grad is not None
    assert float(k.grad) == pytest.approx(_decay_grad_k(0.7, y0, t), rel=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_a_captured_non_leaf_passes_its_gradient_on(method: str) -> None:
    log_k = torch.tensor(math.log(0.7), dtype=F64, requires_grad=True)
    k = torch.exp(log_k)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.3], dtype=F64)
    physid.odeint(lambda t, y: -k * y, y0, t, method=method, **TIGHT).sum().backward()
    assert log_k.grad is not None and y0.grad is not None
    assert float(log_k.grad) == pytest.approx(0.7 * _decay_grad_k(0.7, y0.detach(), t), rel=1e-8)
    expected_y0 = float(torch.exp(-0.7 * t).sum())
    torch.testing.assert_close(y0.grad, torch.full((2,), expected_y0, dtype=F64))


@pytest.mark.parametrize("method", METHODS)
def test_a_module_and_a_tensor_it_closes_over_both_get_gradients(method: str) -> None:
    c = torch.tensor(0.3, dtype=F64, requires_grad=True)

    class Decay(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = nn.Parameter(torch.tensor(0.7, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -self.k * y + c

    f = Decay()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    physid.odeint(f, torch.ones(1, dtype=F64), t, method=method, **TIGHT).sum().backward()
    # y(1) = c/k + (1 - c/k) e^{-k}
    e = math.exp(-0.7)
    assert c.grad is not None and f.k.grad is not None
    assert float(c.grad) == pytest.approx((1 - e) / 0.7, rel=1e-8)
    dk = -0.3 / 0.7**2 + 0.3 / 0.7**2 * e - (1 - 0.3 / 0.7) * e
    assert float(f.k.grad) == pytest.approx(dk, rel=1e-8)


@pytest.mark.parametrize("method", ["adjoint", "aca"])
def test_finding_captured_tensors_costs_no_evaluation(method: str) -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0, t = torch.ones(2, dtype=F64), torch.linspace(0, 2, 5, dtype=F64)
    found, given = physid.SolveStats(), physid.SolveStats()
    a = physid.odeint(lambda t, y: -k * y, y0, t, method=method, stats=found)
    b = physid.odeint(lambda t, y: -k * y, y0, t, method=method, stats=given, params=[k])
    assert torch.equal(a, b)
    assert found.as_dict() == given.as_dict()
    assert found.nfe_forward == 2 + 6 * (found.steps_accepted + found.steps_rejected)


@pytest.mark.parametrize("method", ["adjoint", "seminorm", "aca"])
def test_a_captured_tensor_whose_graph_was_freed_is_a_config_error(method: str) -> None:
    log_k = torch.tensor(0.0, dtype=F64, requires_grad=True)
    k = torch.exp(log_k)
    k.backward()  # frees exp's saved result
    ys = physid.odeint(
        lambda t, y: -k * y,
        torch.ones(1, dtype=F64),
        torch.tensor([0.0, 1.0], dtype=F64),
        method=method,
    )
    with pytest.raises(ConfigError, match="params="):
        ys.sum().backward()


@pytest.mark.parametrize("method", METHODS)
def test_an_empty_batch_solves_and_differentiates(method: str) -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.zeros(0, 2, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    ys = physid.odeint(lambda t, y: -k * y, y0, t, method=method)
    assert ys.shape == (3, 0, 2)
    ys.sum().backward()
    assert y0.grad is not None and y0.grad.shape == (0, 2)
    assert k.grad is not None and float(k.grad) == 0.0
    assert t.grad is not None and bool((t.grad == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_up_front(dtype: torch.dtype) -> None:
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ConfigError, match="float32 and float64"):
        physid.odeint(lambda t, y: -y, torch.ones(2, dtype=dtype), t)
    with pytest.raises(ConfigError, match="t has dtype"):
        physid.odeint(lambda t, y: -y, torch.ones(2), t.to(dtype))


class _NaNFactor(IController):
    def decide(self, ratio):  # type: ignore[no-untyped-def]
        accept, _ = super().decide(ratio)
        return accept, math.nan


@pytest.mark.parametrize("method", ["naive", "aca"])
def test_a_non_finite_step_size_is_its_own_failure(method: str) -> None:
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: -y, torch.ones(1, dtype=F64), t, method=method, controller=_NaNFactor
        )
    assert info.value.status is SolverStatus.NON_FINITE_STEP_SIZE
    assert "max_steps" not in str(info.value)
    # Hairer's guess is 0/0 for a zero state with atol = 0
    with pytest.raises(SolverError) as info:
        physid.odeint(lambda t, y: 1 - y, torch.zeros(2, dtype=F64), t, method=method, atol=0.0)
    assert info.value.status is SolverStatus.NON_FINITE_STEP_SIZE
    assert "atol" in str(info.value) and "max_steps" not in str(info.value)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("out", "match"),
    [
        (lambda y: torch.zeros(1, dtype=F64), r"\(3,\).*\(1,\)"),
        (lambda y: torch.zeros((), dtype=F64), r"\(3,\).*\(\)"),
        (lambda y: torch.zeros(3, 1, dtype=F64), r"\(3,\).*\(3, 1\)"),
        (lambda y: None, "NoneType"),
        (lambda y: 1.0, "float"),
    ],
)
def test_func_must_return_a_tensor_of_y_shape(method: str, out, match: str) -> None:  # type: ignore[no-untyped-def]
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(3, dtype=F64)
    with pytest.raises(ConfigError, match=match):
        physid.odeint(lambda t, y: out(y), y0, t, method=method)
    with torch.no_grad(), pytest.raises(ConfigError, match=match):  # no probing without grad
        physid.odeint(lambda t, y: out(y), y0, t, method=method)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_steps": True}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"rtol": "1e-3"}, "rtol must be a number"),
        ({"atol": None}, "atol must be a number"),
        ({"rtol": True}, "rtol must be a number"),
        ({"first_step": "0.1"}, "first_step must be a number"),
        ({"solver": "rk4", "step_size": "0.1"}, "step_size must be a number"),
        ({"method": 3}, "method must be a name"),
        ({"solver": None}, "solver must be a name"),
        ({"controller": 3}, "controller"),
    ],
)
def test_ill_typed_options_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        physid.odeint(
            lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), **kwargs
        )


def test_numpy_and_integer_options_still_work() -> None:
    np = pytest.importorskip("numpy")
    ys = physid.odeint(
        lambda t, y: -y,
        torch.ones(1, dtype=F64),
        torch.tensor([0.0, 1.0], dtype=F64),
        rtol=np.float32(1e-6),
        atol=0,
        max_steps=np.int64(500),
    )
    assert float(ys[-1]) == pytest.approx(math.exp(-1), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_a_singularity_at_the_final_time_underflows_in_float32(method: str, solver: str) -> None:
    """y' = y^2, y(0) = 0.5 blows up at t = 2; float32 times cannot resolve the last steps.

    Before, ``aca`` returned 1.5e6 here and ``naive`` ran 10,000 steps into MAX_STEPS_REACHED
    ("increase max_steps"): the step had fallen below the spacing of float32 times near 2,
    which only the float64 loop time hid.
    """
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: y**2,
            torch.tensor([0.5]),
            torch.tensor([0.0, 2.0]),
            method=method,
            solver=solver,
        )
    assert info.value.status is SolverStatus.STEP_SIZE_UNDERFLOW
    assert 1.999 < info.value.t < 2.0
    assert "singularity" in str(info.value)


@pytest.mark.parametrize("rtol", [1e-3, 1e-9])
def test_a_singularity_before_the_final_time_underflows_in_float64(rtol: float) -> None:
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: y**2,
            torch.tensor([0.5], dtype=F64),
            torch.tensor([0.0, 2.0], dtype=F64),
            rtol=rtol,
            atol=rtol * 1e-2,
        )
    assert info.value.status is SolverStatus.STEP_SIZE_UNDERFLOW
    assert abs(info.value.step_size) <= 1e-14


def test_float32_times_far_from_trouble_are_unaffected() -> None:
    y0, t = torch.ones(2), torch.linspace(0, 30, 7)
    for method in METHODS:
        ys = physid.odeint(lambda t, y: torch.stack([y[1], -y[0]]), y0, t, method=method)
        torch.testing.assert_close(ys[:, 0], torch.cos(t) + torch.sin(t), rtol=1e-4, atol=1e-4)
