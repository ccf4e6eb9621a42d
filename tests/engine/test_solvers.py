"""Tableaus, convergence orders, dense output and adaptive accuracy against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physid
from physid.errors import ConfigError
from physid.solvers import SOLVERS, get_tableau
from physid.solvers.tableau import ButcherTableau

A = torch.tensor([[-0.3, 2.0, 0.1], [-2.0, -0.2, 0.4], [0.3, -0.5, -0.4]], dtype=torch.float64)
Y0 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
T_END = 2.0


def _linear(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return A @ y


def _exact(t: float) -> torch.Tensor:
    return torch.linalg.matrix_exp(A * t) @ Y0


def _fit_slope(dts: list[float], errs: list[float]) -> float:
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


FIXED_ORDERS = {"euler": 1, "rk2": 2, "rk4": 4, "heun_euler": 2, "bosh3": 3, "dopri5": 5}


@pytest.mark.parametrize("solver", list(FIXED_ORDERS))
def test_convergence_order_at_grid_points(solver: str) -> None:
    """The fitted slope of log error vs log dt matches the tableau's order."""
    order = FIXED_ORDERS[solver]
    assert get_tableau(solver).order == order
    ks = {1: range(6, 11), 2: range(4, 9), 3: range(3, 8), 4: range(2, 7), 5: range(2, 6)}[order]
    dts, errs = [], []
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    for k in ks:
        dt = 2.0**-k
        ys = physid.odeint(_linear, Y0, t, method="aca", solver=solver, step_size=dt)
        dts.append(dt)
        errs.append(float((ys[-1] - _exact(T_END)).abs().max()))
    assert max(errs) > 1e-13, "errors reached round-off; the fit would be meaningless"
    slope = _fit_slope(dts, errs)
    assert abs(slope - order) < 0.25, f"{solver}: slope {slope:.3f}, expected {order}"


@pytest.mark.parametrize("solver", list(FIXED_ORDERS))
def test_dense_output_order(solver: str) -> None:
    """Output times inside steps come from the interpolant, with its own order of accuracy."""
    tab = get_tableau(solver)
    # interpolation error is O(dt^(dense_order + 1)) locally; global error min(order, dense+1)
    expected = min(tab.order, tab.dense_order + 1)
    dts, errs = [], []
    for k in range(3, 7):
        dt = 2.0**-k
        # output times at a third of each step
        t = torch.arange(0, T_END / dt, dtype=torch.float64)[1:-1] * dt + dt / 3
        t = torch.cat([torch.zeros(1, dtype=torch.float64), t])
        ys = physid.odeint(_linear, Y0, t, method="aca", solver=solver, step_size=dt)
        ref = torch.stack([_exact(float(ti)) for ti in t])
        dts.append(dt)
        errs.append(float((ys - ref).abs().max()))
    slope = _fit_slope(dts, errs)
    assert slope > expected - 0.3, f"{solver}: dense output slope {slope:.2f} < {expected}"


def _van_der_pol(mu: float):
    def f(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def fn(t, y):
        return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]

    return f, fn, [2.0, 0.0], 6.0


def _lotka_volterra():
    def f(t, y):
        return torch.stack([1.5 * y[0] - y[0] * y[1], -3 * y[1] + y[0] * y[1]])

    def fn(t, y):
        return [1.5 * y[0] - y[0] * y[1], -3 * y[1] + y[0] * y[1]]

    return f, fn, [1.0, 1.0], 10.0


def _kepler():
    def f(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])

    def fn(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return [y[2], y[3], -y[0] / r3, -y[1] / r3]

    e = 0.6
    return f, fn, [1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))], 2 * np.pi


PROBLEMS = {
    "van_der_pol": _van_der_pol(1.0),
    "lotka_volterra": _lotka_volterra(),
    "kepler": _kepler(),
}


@pytest.mark.parametrize("solver", ["heun_euler", "bosh3", "dopri5"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_adaptive_reaches_tolerance(solver: str, problem: str) -> None:
    """Against scipy DOP853 at 1e-13: the global error shrinks with the tolerance and stays
    within a modest multiple of it."""
    f, fn, y0, t_end = PROBLEMS[problem]
    t_np = np.linspace(0, t_end, 17)
    ref = solve_ivp(fn, (0, t_end), y0, method="DOP853", t_eval=t_np, rtol=1e-13, atol=1e-13).y.T
    t = torch.tensor(t_np, dtype=torch.float64)
    errs = []
    tols = [1e-4, 1e-6, 1e-8] if solver != "heun_euler" else [1e-3, 1e-4, 1e-5]
    for tol in tols:
        ys = physid.odeint(
            f,
            torch.tensor(y0, dtype=torch.float64),
            t,
            solver=solver,
            rtol=tol,
            atol=tol,
            max_steps=200_000,
        )
        errs.append(float(np.abs(ys.numpy() - ref).max()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[-1] < 1e3 * tols[-1], f"error {errs[-1]:.2e} at tolerance {tols[-1]}"


def test_tableaus_validate_themselves() -> None:
    good = get_tableau("rk4")
    with pytest.raises(ConfigError, match="row sums"):
        ButcherTableau(
            "bad", 4, good.c, ((), (0.4,), (0.0, 0.5), (0.0, 0.0, 1.0)), good.b, good.dense, 3
        )
    with pytest.raises(ConfigError, match="sum to 1"):
        ButcherTableau("bad", 4, good.c, good.a, (0.2, 1 / 3, 1 / 3, 1 / 6), good.dense, 3)
    with pytest.raises(ConfigError, match="error weights"):
        ButcherTableau(
            "bad",
            2,
            (0.0, 1.0),
            ((), (1.0,)),
            (0.5, 0.5),
            ((1.0, -0.5), (0.0, 0.5)),
            2,
            b_err=(0.5, 0.4),
            error_order=1,
        )


def test_fsal_is_derived_from_data() -> None:
    assert get_tableau("dopri5").fsal and get_tableau("bosh3").fsal
    assert not any(get_tableau(n).fsal for n in ("euler", "rk2", "rk4", "heun_euler"))
    for tab in SOLVERS.values():
        np.testing.assert_allclose(tab.dense_weights(np.array([1.0]))[0], tab.b, atol=1e-14)
        np.testing.assert_allclose(tab.dense_weights(np.array([0.0]))[0], 0.0, atol=0)


def test_unknown_solver_names_choices() -> None:
    with pytest.raises(ConfigError, match="dopri5"):
        physid.odeint(_linear, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), solver="rk45")
