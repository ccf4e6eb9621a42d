"""``naive``: back-propagation through every operation of the adaptive solver.

The whole loop runs under autograd: accepted steps, rejected trials, the error norm, the
step-size controller and Hairer's initial-step guess are all in the graph, so the gradient is
exact for the discrete forward map *including* the dependence of the step sizes on the state.
This is the naive method of Zhuang et al. 2020 on purpose — the baseline that shows why ACA
exists: memory grows with every trial and the graph is deep. Prefer ``aca``.
"""

from __future__ import annotations

from torch import Tensor

from physid.gradients._per_sample import forward_solve_per_sample
from physid.gradients.base import AbstractGradientMethod, Problem, forward_solve

__all__ = ["NaiveMethod"]


class NaiveMethod(AbstractGradientMethod):
    """Autograd through the whole adaptive loop."""

    name = "naive"
    records_graph = True

    def solve(self, problem: Problem) -> Tensor:
        return forward_solve(problem, graph=True)

    def solve_independent(self, problem: Problem) -> Tensor:
        return forward_solve_per_sample(problem, graph=True)
