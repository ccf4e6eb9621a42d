"""The public entry point: :func:`odeint`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from physid.controllers import AbstractController, ConstantController, IController, PIController
from physid.errors import ConfigError, SolverError, SolverStatus
from physid.gradients import get_method
from physid.gradients._loop import Tolerances
from physid.gradients.base import Problem
from physid.solvers import get_tableau
from physid.stats import SolveStats

__all__ = [
    "odeint",
    "SolveStats",
    "SolverError",
    "SolverStatus",
    "GRADIENT_METHODS",
    "SOLVER_NAMES",
]

GRADIENT_METHODS = ("naive", "adjoint", "seminorm", "aca")
SOLVER_NAMES = ("euler", "rk2", "rk4", "heun_euler", "bosh3", "dopri5")

_CONTROLLERS: dict[str, Callable[[], AbstractController]] = {"i": IController, "pi": PIController}


def odeint(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    method: str = "aca",
    solver: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_steps: int = 10_000,
    first_step: float | None = None,
    step_size: float | None = None,
    params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    controller: str | Callable[[], AbstractController] = "i",
) -> Tensor:
    """Solve ``dy/dt = func(t, y)`` and return ``y`` at the times ``t``, differentiably.

    Args:
        func: the dynamics ``func(t, y) -> dy/dt``; ``t`` is a 0-d tensor (of ``t``'s dtype),
            ``y`` has ``y0``'s shape. An ``nn.Module``'s parameters receive gradients.
        y0: the initial state, any shape ``(*shape)`` (batch dimensions included).
        t: strictly increasing or decreasing output times ``(T,)``; ``t[0]`` is the initial time.
        method: the gradient method — ``"naive"`` (autograd through the whole adaptive loop; a
            baseline, memory-hungry), ``"adjoint"`` (continuous adjoint), ``"seminorm"`` (adjoint
            whose backward error norm ignores the parameter channels) or ``"aca"`` (adaptive
            checkpoint adjoint: exact discrete gradient, the recommended default).
        solver: ``"euler"``, ``"rk2"``, ``"rk4"`` (fixed step; give ``step_size``) or
            ``"heun_euler"``, ``"bosh3"``, ``"dopri5"`` (adaptive).
        rtol, atol: relative and absolute tolerances of the local error.
        max_steps: the most steps (accepted and rejected) one solve may attempt.
        first_step: the first step size; by default Hairer's initial-step selection.
        step_size: the constant step of a fixed-step solve (an adaptive solver given a
            ``step_size`` also steps with it, ignoring its error estimate).
        params: tensors that receive gradients when ``func`` is not an ``nn.Module`` (or to
            override its parameters).
        stats: a :class:`SolveStats`, filled in place (counts accumulate).
        controller: ``"i"`` (integral, default) or ``"pi"`` (Gustafsson's PI), or a callable
            returning a fresh :class:`~physid.controllers.AbstractController`.

    Returns:
        ``(T, *y0.shape)``: ``out[i]`` approximates ``y(t[i])``; ``out[0]`` equals ``y0``.

    Raises:
        ConfigError: invalid arguments (unknown names, non-monotone times, bad tolerances).
        SolverError: the solve failed (max steps, step-size underflow, non-finite state).
    """
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise ConfigError("y0 must be a floating-point tensor.")
    if not isinstance(t, Tensor) or t.ndim != 1 or not t.is_floating_point() or len(t) < 1:
        raise ConfigError("t must be a non-empty 1-D floating-point tensor of output times.")
    tableau = get_tableau(solver)
    grad_method = get_method(method)
    if len(t) > 1:
        dt = torch.diff(t.detach())
        if not (bool((dt > 0).all()) or bool((dt < 0).all())):
            raise ConfigError("t must be strictly increasing or strictly decreasing.")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ConfigError("t must be finite.")
    for name, tolv in (("rtol", rtol), ("atol", atol)):
        tv = torch.as_tensor(tolv)
        if bool((tv < 0).any()) or not bool(torch.isfinite(tv).all()):
            raise ConfigError(f"{name} must be finite and non-negative, got {tolv}.")
    if float(torch.as_tensor(rtol).max()) == 0 and float(torch.as_tensor(atol).max()) == 0:
        raise ConfigError("rtol and atol cannot both be zero.")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps}.")
    if first_step is not None and not (math.isfinite(first_step) and first_step != 0):
        raise ConfigError(f"first_step must be finite and non-zero, got {first_step}.")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise ConfigError(f"step_size must be positive, got {step_size}.")

    if step_size is not None:
        make_controller: Callable[[], AbstractController] = ConstantController
    elif not tableau.adaptive:
        raise ConfigError(f"the fixed-step solver {solver!r} needs step_size.")
    elif isinstance(controller, str):
        if controller not in _CONTROLLERS:
            raise ConfigError(f"unknown controller {controller!r}; choose 'i' or 'pi'.")
        make_controller = _CONTROLLERS[controller]
    else:
        make_controller = controller

    if params is None:
        params = list(func.parameters()) if isinstance(func, nn.Module) else []
    ps = tuple(p for p in params if isinstance(p, Tensor))
    problem = Problem(
        func=func,
        y0=y0,
        t=t,
        tableau=tableau,
        make_controller=make_controller,
        tol=Tolerances(rtol, atol, max_steps, first_step, step_size),
        params=ps,
        stats=stats if stats is not None else SolveStats(),
    )
    return grad_method.solve(problem)
