"""The gradient-method interface and the problem every method solves."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from physid.controllers.base import AbstractController
from physid.controllers.norms import RMSNorm
from physid.gradients._loop import Count, Tolerances, Trace, integrate
from physid.solvers.rk import Func, GraphRKStepper, RKStepper
from physid.solvers.tableau import ButcherTableau
from physid.stats import SolveStats

__all__ = ["Problem", "AbstractGradientMethod", "forward_solve"]


@dataclass(frozen=True)
class Problem:
    """One call of :func:`physid.odeint`, validated.

    Attributes:
        func: the dynamics ``func(t, y)`` on the user's shape.
        y0: initial state, any shape ``(*shape)``.
        t: output times ``(T,)``, strictly monotone.
        tableau: the Runge-Kutta method.
        make_controller: a fresh step-size controller per solve.
        tol: tolerances and limits.
        params: the tensors gradients flow to besides ``y0`` and ``t``.
        stats: filled in place.
    """

    func: Func
    y0: Tensor
    t: Tensor
    tableau: ButcherTableau
    make_controller: Callable[[], AbstractController]
    tol: Tolerances
    params: tuple[Tensor, ...]
    stats: SolveStats

    @property
    def time_dtype(self) -> torch.dtype:
        return self.t.dtype


class AbstractGradientMethod(ABC):
    """How an ODE solve is differentiated; each method owns its solve loop.

    Attributes:
        name: the name :func:`physid.odeint` selects it by.
    """

    name: str

    @abstractmethod
    def solve(self, problem: Problem) -> Tensor:
        """The states at ``problem.t``, shape ``(T, *y0.shape)``, differentiable by this method."""


def forward_solve(problem: Problem, *, graph: bool, trace: Trace | None = None) -> Tensor:
    """The forward solve every method starts with; fills the forward counts of ``problem.stats``.

    Args:
        graph: record the autograd graph of the whole loop (``naive``) or run graph-free over
            Python-float times (the others).
        trace: filled with the accepted steps (``aca``).

    Returns:
        ``(T, *y0.shape)``, the states at ``problem.t``.
    """
    y0 = problem.y0
    stepper = (GraphRKStepper if graph else RKStepper)(problem.tableau, y0, problem.time_dtype)
    count = Count()
    outs, _ = integrate(
        problem.func,
        y0.reshape(-1),
        problem.t if graph else problem.t.detach().tolist(),
        stepper,
        problem.make_controller(),
        RMSNorm(),
        problem.tol,
        count,
        trace,
    )
    st = problem.stats
    st.nfe_forward += count.nfe
    st.steps_accepted += count.accepted
    st.steps_rejected += count.rejected
    return torch.stack(outs, 0).view(len(outs), *y0.shape)
