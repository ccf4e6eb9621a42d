"""The step loop on its own, with scripted controllers and steppers; every failure is typed."""

from __future__ import annotations

import math

import pytest
import torch

import physid
from physid.controllers import AbstractController, IController, PIController, RMSNorm
from physid.errors import ConfigError, SolverError, SolverStatus
from physid.gradients._loop import Count, GraphFreeArithmetic, Tolerances, Trace, integrate
from physid.solvers import get_tableau
from physid.solvers.rk import RKStepper

F64 = torch.float64


class Scripted(AbstractController):
    """Replays a fixed list of (accept, factor) decisions, recording the ratios it was shown."""

    def __init__(self, decisions: list[tuple[bool, float]]):
        self.decisions = list(decisions)
        self.seen: list[float] = []

    def reset(self, error_order: int | None) -> None:
        self.seen.clear()

    def decide(self, ratio):  # type: ignore[no-untyped-def]
        self.seen.append(float(ratio))
        return self.decisions.pop(0) if self.decisions else (True, 1.0)


class NaNOnce(RKStepper):
    """A stepper whose first ``n_bad`` error estimates are NaN."""

    def __init__(self, *args, n_bad: int = 1, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.n_bad = n_bad

    def step(self, func, t, h, y, f0):  # type: ignore[no-untyped-def]
        y1, err, f1 = super().step(func, t, h, y, f0)
        if self.n_bad > 0:
            self.n_bad -= 1
            err = torch.full_like(err, math.nan)
        return y1, err, f1


def _run(
    controller, stepper=None, t=(0.0, 1.0), max_steps=100, first_step=0.1, func=lambda t, y: -y
):  # type: ignore[no-untyped-def]
    y0 = torch.tensor([1.0], dtype=F64)
    stepper = stepper or RKStepper(get_tableau("dopri5"), y0, F64)
    count, trace = Count(), Trace()
    outs, _ = integrate(
        func,
        y0,
        GraphFreeArithmetic(stepper, list(t)),
        controller,
        RMSNorm(),
        Tolerances(1e-6, 1e-6, max_steps, first_step, None),
        count,
        trace,
    )
    return outs, count, trace


def test_scripted_decisions_drive_steps_and_counts() -> None:
    ctrl = Scripted([(False, 0.5), (True, 2.0), (False, 0.25), (True, 1.0)])
    _, count, trace = _run(ctrl, t=(0.0, 0.2))
    # 0.1 rejected -> 0.05 accepted -> 0.1 rejected -> 0.025 accepted -> 0.025 ... until 0.2
    assert trace.hs[:2] == pytest.approx([0.05, 0.025])
    assert count.rejected == 2
    assert count.accepted == len(trace.hs)
    assert sum(trace.hs) == pytest.approx(0.2)
    assert trace.clipped[-1]
    # dopri5 is FSAL: 1 initial evaluation, then 6 per attempted step
    assert count.nfe == 1 + 6 * (count.accepted + count.rejected)


def test_nonfinite_error_estimate_rejects_and_shrinks_first() -> None:
    y0 = torch.tensor([1.0], dtype=F64)
    stepper = NaNOnce(get_tableau("dopri5"), y0, F64, n_bad=2)
    ctrl = IController(min_factor=0.2)
    outs, count, trace = _run(ctrl, stepper=stepper)
    assert count.rejected >= 2
    assert trace.hs[0] == pytest.approx(0.1 * 0.2 * 0.2)
    assert abs(float(outs[-1]) - math.exp(-1.0)) < 1e-6


def test_max_steps_is_a_typed_error_with_a_hint() -> None:
    with pytest.raises(SolverError) as info:
        _run(Scripted([(False, 0.999)] * 1000), max_steps=50)
    assert info.value.status is SolverStatus.MAX_STEPS_REACHED
    assert "max_steps" in str(info.value)


def test_step_size_underflow_is_a_typed_error() -> None:
    with pytest.raises(SolverError) as info:
        _run(Scripted([(False, 0.01)] * 1000), max_steps=1000)
    assert info.value.status is SolverStatus.STEP_SIZE_UNDERFLOW
    assert abs(info.value.step_size) < 1e-12


def test_dynamics_that_blow_up_raise_non_finite() -> None:
    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    with pytest.raises(SolverError) as info:
        physid.odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    assert info.value.status is SolverStatus.NON_FINITE
    assert 0.45 < info.value.t <= 0.5
    assert "NaN" in str(info.value)


def test_non_finite_initial_derivative() -> None:
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: y / 0.0,
            torch.ones(1, dtype=F64),
            torch.tensor([0.0, 1.0], dtype=F64),
            method="naive",
        )
    assert info.value.status is SolverStatus.NON_FINITE


def test_fixed_step_non_finite_state_is_reported() -> None:
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: y**2,
            torch.full((1,), 10.0, dtype=F64),
            torch.tensor([0.0, 0.5, 2.0], dtype=F64),
            solver="euler",
            step_size=0.1,
        )
    assert info.value.status is SolverStatus.NON_FINITE


def test_real_stiff_problem_hits_max_steps() -> None:
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: -1e5 * (y - torch.cos(t)),
            torch.zeros(1, dtype=F64),
            torch.tensor([0.0, 10.0], dtype=F64),
            max_steps=100,
        )
    assert info.value.status is SolverStatus.MAX_STEPS_REACHED


def test_first_step_is_respected_and_initial_guess_is_sane() -> None:
    _, _, trace = _run(IController(), first_step=0.0123)
    assert trace.hs[0] == 0.0123
    stats = physid.SolveStats()
    physid.odeint(
        lambda t, y: -y,
        torch.ones(1, dtype=F64),
        torch.tensor([0.0, 1.0], dtype=F64),
        rtol=1e-6,
        atol=1e-6,
        stats=stats,
    )
    # Hairer's guess costs exactly one evaluation: 1 (f0) + 1 (trial) + 6 per step
    assert stats.nfe_forward == 2 + 6 * (stats.steps_accepted + stats.steps_rejected)


def test_pi_controller_gains_and_limits() -> None:
    c = PIController(safety=0.9, min_factor=0.2, max_factor=10.0)
    c.reset(error_order=4)  # k = 5
    accept, factor = c.decide(0.5)
    assert accept and factor == pytest.approx(0.9 * 0.5 ** (-0.7 / 5))
    accept, factor = c.decide(0.8)
    assert factor == pytest.approx(0.9 * 0.8 ** (-0.7 / 5) * 0.5 ** (0.4 / 5))
    accept, factor = c.decide(4.0)
    assert not accept and factor <= 1.0
    assert c.decide(1e-30)[1] == 10.0
    assert c.decide(0.0) == (True, 10.0)
    assert c.decide(1e30)[1] == 0.2
    i = IController()
    i.reset(error_order=2)
    assert i.decide(0.1)[1] == pytest.approx(0.9 * 0.1 ** (-1 / 3))
    with pytest.raises(ConfigError):
        PIController(safety=1.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t": torch.tensor([0.0, 1.0, 0.5], dtype=F64)}, "strictly"),
        ({"rtol": -1.0}, "rtol"),
        ({"rtol": 0.0, "atol": 0.0}, "both be zero"),
        ({"solver": "rk4"}, "step_size"),
        ({"method": "backprop"}, "gradient method"),
        ({"max_steps": 0}, "max_steps"),
        ({"t": torch.zeros(2, 2, dtype=F64)}, "1-D"),
        ({"controller": "pid"}, "controller"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, match: str) -> None:
    args = {"t": torch.tensor([0.0, 1.0], dtype=F64)}
    args.update(kwargs)
    t = args.pop("t")
    with pytest.raises(ConfigError, match=match):
        physid.odeint(lambda t, y: -y, torch.ones(1, dtype=F64), t, **args)


def test_single_output_time_returns_y0() -> None:
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    for method in physid.GRADIENT_METHODS:
        ys = physid.odeint(lambda t, y: -y, y0, torch.tensor([0.3], dtype=F64), method=method)
        assert ys.shape == (1, 2)
        torch.testing.assert_close(ys[0], y0)
