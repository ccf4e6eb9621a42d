"""``naive``: back-propagation through every operation of the adaptive solver.

The whole loop runs under autograd: accepted steps, rejected trials, the error norm, the
step-size controller and Hairer's initial-step guess are all in the graph, so the gradient is
exact for the discrete forward map *including* the dependence of the step sizes on the state.
This is the naive method of Zhuang et al. 2020 on purpose — the baseline that shows why ACA
exists: memory grows with every trial and the graph is deep. Prefer ``aca``.
"""

from __future__ import annotations

from torch import Tensor

from physid.controllers.norms import RMSNorm
from physid.gradients._loop import Count, integrate
from physid.gradients.base import AbstractGradientMethod, Problem
from physid.solvers.rk import GraphRKStepper

__all__ = ["NaiveMethod"]


class NaiveMethod(AbstractGradientMethod):
    """Autograd through the whole adaptive loop."""

    name = "naive"

    def solve(self, problem: Problem) -> Tensor:
        y0 = problem.y0
        stepper = GraphRKStepper(problem.tableau, y0, problem.time_dtype)
        count = Count()
        outs, _ = integrate(
            problem.func,
            y0.reshape(-1),
            problem.t,
            stepper,
            problem.make_controller(),
            RMSNorm(),
            problem.tol,
            count,
        )
        st = problem.stats
        st.nfe_forward += count.nfe
        st.steps_accepted += count.accepted
        st.steps_rejected += count.rejected
        return torch_stack_view(outs, y0)


def torch_stack_view(outs: list[Tensor], y0: Tensor) -> Tensor:
    """Stack flat outputs into ``(T, *y0.shape)``."""
    import torch

    return torch.stack(outs, 0).view(len(outs), *y0.shape)
