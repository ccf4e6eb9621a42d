"""``naive``: back-propagation through every operation of the adaptive solver.

The whole loop runs under autograd: accepted steps, rejected trials, the error norm, the
step-size controller and Hairer's initial-step guess are all in the graph, so the gradient is
exact for the discrete forward map *including* the dependence of the step sizes on the state.
This is the naive method of Zhuang et al. 2020 on purpose — the baseline that shows why ACA
exists: memory grows with every trial and the graph is deep. Prefer ``aca``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from physid.gradients._per_sample import forward_solve_per_sample
from physid.gradients.base import AbstractGradientMethod, Problem, forward_solve
from physid.solvers.rk import GraphRKStepper

__all__ = ["NaiveMethod"]


class NaiveMethod(AbstractGradientMethod):
    """Autograd through the whole adaptive loop."""

    name = "naive"
    records_graph = True

    def solve(self, problem: Problem) -> Tensor:
        if problem.compiled is None:
            return forward_solve(problem, graph=True)
        from physid.compiled import CompileUnavailable, warn_fallback

        try:
            return forward_solve(problem, graph=True)
        except CompileUnavailable as exc:  # a kernel variant built mid-solve failed
            warn_fallback(problem.func, exc.cause)
            return forward_solve(dataclasses.replace(problem, compiled=None), graph=True)

    def prepare_compiled(self, problem: Problem, need_grad: bool) -> None:
        cs = problem.compiled
        if cs is None:
            return
        stepper = GraphRKStepper(problem.tableau, problem.y0, problem.time_dtype)
        arith = cs.graph_arithmetic(stepper, problem.t)
        t0 = problem.t.detach()[0]
        h0 = torch.zeros((), dtype=problem.y0.dtype, device=problem.y0.device)
        arith.kernel_pair(t0, h0)

    def solve_independent(self, problem: Problem) -> Tensor:
        return forward_solve_per_sample(problem, graph=True)
