"""Levenberg-Marquardt on problems with known answers: linear regression (the estimate and its
standard errors in closed form), an exponential fit through an ODE's sensitivities, bounds,
rank deficiency, failing trial points, and resuming from a saved state."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import physid
from physid.errors import ConfigError, SolverError, SolverStatus, TrainingError
from physid.lstsq import LMOptions, LMState, levenberg_marquardt, uncertainty

F64 = torch.float64


def _regression() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, dtype=F64, generator=g)
    beta = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    y = X @ beta + 0.1 * torch.randn(60, dtype=F64, generator=g)
    return X, y


def test_linear_least_squares_gives_the_ols_estimate_and_its_standard_errors() -> None:
    """A linear residual is solved by one Gauss-Newton step; the covariance is
    s² (XᵀX)⁻¹ with s² = RSS / (m - p), the textbook regression result."""
    X, y = _regression()
    res = levenberg_marquardt(lambda b: (X @ b - y, X), torch.zeros(4, dtype=F64))
    ols = torch.linalg.lstsq(X, y).solution
    rss = float(((X @ ols - y) ** 2).sum())
    cov = rss / (60 - 4) * torch.linalg.inv(X.T @ X)
    assert res.success and res.state.accepted == 1
    torch.testing.assert_close(res.x, ols, rtol=1e-10, atol=1e-12)
    assert res.residual_variance == pytest.approx(rss / 56, rel=1e-10)
    torch.testing.assert_close(res.covariance, cov, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(res.std_errors, cov.diagonal().sqrt(), rtol=1e-8, atol=0)
    torch.testing.assert_close(res.singular_values, torch.linalg.svdvals(X), rtol=1e-10, atol=0)
    assert res.rank == 4


def test_an_exponential_decay_is_recovered_exactly_through_its_sensitivities() -> None:
    """y' = -k y + c from a far start; the parameters are positive by reparameterisation."""

    class Decay(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.tensor([3.0, 0.1], dtype=F64))  # k, c

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -self.theta[0] * y + self.theta[1]

    k, c, y0 = 0.7, 0.4, torch.tensor([2.0], dtype=F64)
    t = torch.linspace(0.0, 4.0, 41, dtype=F64)
    data = (c / k + (y0 - c / k) * torch.exp(-k * t))[:, None]
    f = Decay()

    def fun(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            f.theta.copy_(x)
        jac = physid.odeint_jacobian(f, y0, t, rtol=1e-12, atol=1e-12)
        return (jac.ys - data).reshape(-1), jac.dparams.reshape(-1, 2)

    res = levenberg_marquardt(fun, torch.tensor([3.0, 0.1], dtype=F64), lower=0.0)
    assert res.success, res.message
    torch.testing.assert_close(res.x, torch.tensor([k, c], dtype=F64), rtol=1e-8, atol=0)
    assert all(h.x[0] > 0 and h.x[1] > 0 for h in res.history)


def test_a_rank_deficient_problem_reports_the_direction_the_data_do_not_fix() -> None:
    """r = x1 + x2 - 1 (and x3 - 2): x1 - x2 is invisible."""
    A = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    b = torch.tensor([1.0, 2.0], dtype=F64)
    res = levenberg_marquardt(lambda x: (A @ x - b, A), torch.tensor([3.0, 0.0, 0.0], dtype=F64))
    assert res.success and res.cost < 1e-20 and res.rank == 2
    assert float(res.singular_values[-1]) < 1e-12
    null = res.singular_vectors[-1]
    assert abs(abs(float(null @ torch.tensor([1.0, -1.0, 0.0], dtype=F64))) - math.sqrt(2)) < 1e-10
    # the Gauss-Newton step is the minimum-norm one: x1 - x2 keeps its initial value 3
    assert float(res.x[0] - res.x[1]) == pytest.approx(3.0, abs=1e-10)
    assert math.isinf(float(res.std_errors[0])) and math.isinf(float(res.std_errors[1]))


def test_trial_points_where_the_solver_fails_are_rejected_not_fatal() -> None:
    """r = atan(x - 2), undefined (like an ODE running into a collision) above x = 2.5: the first
    Gauss-Newton step from x = -1 overshoots to 11.5; the failure must shrink the trust region,
    not end the fit."""
    failures: list[float] = []

    def fun(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(x[0]) > 2.5:
            failures.append(float(x[0]))
            raise SolverError(SolverStatus.NON_FINITE, "blew up", t=0.0, step_size=0.0)
        d = x - 2.0
        return torch.atan(d), (1.0 / (1.0 + d * d))[:, None]

    res = levenberg_marquardt(fun, torch.tensor([-1.0], dtype=F64))
    assert failures and failures[0] == pytest.approx(11.49, abs=0.01)
    assert res.success and abs(float(res.x[0]) - 2.0) < 1e-8
    assert "SolverError" in res.history[0].note and not res.history[0].accepted
    with pytest.raises(SolverError):  # the starting point itself must evaluate
        levenberg_marquardt(fun, torch.tensor([3.0], dtype=F64))


def test_non_finite_residuals_at_the_start_are_a_training_error() -> None:
    with pytest.raises(TrainingError):
        levenberg_marquardt(
            lambda x: (x * math.nan, torch.ones(1, 1, dtype=F64)), torch.ones(1, dtype=F64)
        )


def test_an_interrupted_fit_resumes_to_the_same_answer() -> None:
    """Rosenbrock as least squares: stop after 3 iterations, save the state as JSON, resume."""

    def fun(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])
        J = torch.tensor([[-20 * float(x[0]), 10.0], [-1.0, 0.0]], dtype=F64)
        return r, J

    x0 = torch.tensor([-1.2, 1.0], dtype=F64)
    whole = levenberg_marquardt(fun, x0)
    saved: list[LMState] = []

    def stop_at_3(record, state):  # type: ignore[no-untyped-def]
        saved.append(state)
        return record.iteration == 3

    first = levenberg_marquardt(fun, x0, callback=stop_at_3)
    assert first.status == "stopped" and first.iterations == 3
    state = json.loads(json.dumps(saved[-1].to_dict()))
    rest = levenberg_marquardt(fun, x0, state=state)
    assert rest.success and whole.success
    torch.testing.assert_close(rest.x, whole.x, rtol=0, atol=1e-12)
    assert rest.iterations == whole.iterations
    torch.testing.assert_close(rest.x, torch.ones(2, dtype=F64), rtol=0, atol=1e-8)


def test_options_and_shapes_are_checked() -> None:
    with pytest.raises(ConfigError):
        LMOptions(max_iterations=-1)
    with pytest.raises(ConfigError):
        LMOptions(ftol=math.nan)
    with pytest.raises(ConfigError, match="lower"):
        levenberg_marquardt(lambda x: (x, torch.eye(2)), torch.ones(2), lower=[0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="above their lower bounds"):
        levenberg_marquardt(lambda x: (x, torch.eye(2)), torch.ones(2), lower=2.0)
    with pytest.raises(ConfigError, match="J"):
        levenberg_marquardt(lambda x: (x, torch.eye(3)), torch.ones(2, dtype=F64))


def test_uncertainty_of_an_exact_fit_is_zero_not_nan() -> None:
    J = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=F64)
    s, vh, rank, var, cov, std = uncertainty(torch.zeros(3, dtype=F64), J)
    assert rank == 2 and var == 0.0 and bool((std == 0).all())
