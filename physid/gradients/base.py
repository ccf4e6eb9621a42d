"""The gradient-method interface, the problem every method solves, and the tensors it
differentiates."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from physid.controllers.base import AbstractController
from physid.controllers.norms import RMSNorm
from physid.errors import ConfigError
from physid.gradients._loop import (
    Count,
    GraphFreeArithmetic,
    InGraphArithmetic,
    Tolerances,
    Trace,
    integrate,
)
from physid.solvers.rk import Func, GraphRKStepper, RKStepper, check_derivative
from physid.solvers.tableau import ButcherTableau
from physid.stats import SolveStats

if TYPE_CHECKING:
    from physid.compiled import CompiledSolve

__all__ = [
    "Problem",
    "AbstractGradientMethod",
    "forward_solve",
    "captured_leaves",
    "probe",
    "freed_graph_error",
    "vjp",
    "add_grads",
    "param_grads",
]


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
        f0: ``func(t[0], y0)`` flat and detached when :func:`probe` evaluated it already (the
            forward solve then reuses it as its first evaluation), else ``None``.
        compiled: the compiled pieces when the solve runs on the fast path
            (``odeint(compile=True)`` and everything compiled), else ``None``.
    """

    func: Func
    y0: Tensor
    t: Tensor
    tableau: ButcherTableau
    make_controller: Callable[[], AbstractController]
    tol: Tolerances
    params: tuple[Tensor, ...]
    stats: SolveStats
    f0: Tensor | None = None
    compiled: CompiledSolve | None = None

    @property
    def time_dtype(self) -> torch.dtype:
        return self.t.dtype


class AbstractGradientMethod(ABC):
    """How an ODE solve is differentiated; each method owns its solve loop.

    Attributes:
        name: the name :func:`physid.odeint` selects it by.
        records_graph: whether autograd records the forward solve itself (``naive``), so that
            tensors ``func`` closes over receive gradients without being listed as parameters.
            A method that differentiates by its own backward pass (``False``) only reaches the
            tensors in ``problem.params``; :func:`physid.odeint` finds those ``func`` captured.
    """

    name: str
    records_graph: bool = False

    @abstractmethod
    def solve(self, problem: Problem) -> Tensor:
        """The states at ``problem.t``, shape ``(T, *y0.shape)``, differentiable by this method."""

    def prepare_compiled(self, problem: Problem, need_grad: bool) -> None:
        """Build the compiled pieces this method needs for ``problem`` (``problem.compiled`` is
        set), before anything runs, so that a failure falls back to the eager path cleanly.

        Args:
            need_grad: whether a backward pass may follow.

        Raises:
            CompileUnavailable: the method has no compiled form or a piece failed to build.
        """
        from physid.compiled import CompileUnavailable

        raise CompileUnavailable(f"the gradient method {self.name!r} has no compiled form")

    def solve_independent(self, problem: Problem) -> Tensor:
        """As :meth:`solve` for ``batch="independent"``: each sample of ``y0``'s leading
        dimension its own step sizes (:mod:`physid.gradients._per_sample`).

        Raises:
            ConfigError: this method has no per-sample solve (every built-in one but ``forward``
                has).
        """
        raise ConfigError(
            f"the gradient method {getattr(self, 'name', type(self).__name__)!r} cannot solve "
            "with batch='independent'; naive, adjoint, seminorm and aca (and any "
            "physid.AdjointMethod) can."
        )


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
    count = Count()
    args = (problem.make_controller(), RMSNorm(), problem.tol, count, trace)
    if graph:
        stepper = GraphRKStepper(problem.tableau, y0, problem.time_dtype)
        arith = InGraphArithmetic(stepper, problem.t)
        if problem.compiled is not None:
            arith = problem.compiled.graph_arithmetic(stepper, problem.t)
        outs, _ = integrate(problem.func, y0.reshape(-1), arith, *args)
    elif problem.compiled is not None:
        times = problem.t.detach().tolist()
        fast = problem.compiled.arithmetic(times, problem.tol, args[1])
        outs, _ = integrate(problem.func, y0.reshape(-1), fast, *args, f0=problem.f0)
    else:
        lean = RKStepper(problem.tableau, y0, problem.time_dtype)
        free = GraphFreeArithmetic(lean, problem.t.detach().tolist())
        outs, _ = integrate(problem.func, y0.reshape(-1), free, *args, f0=problem.f0)
    st = problem.stats
    st.nfe_forward += count.nfe
    st.steps_accepted += count.accepted
    st.steps_rejected += count.rejected
    return torch.stack(outs, 0).view(len(outs), *y0.shape)


def captured_leaves(out: Tensor) -> list[Tensor]:
    """The autograd leaves that require grad and that ``out`` was computed from.

    Walks ``out``'s graph to its ``AccumulateGrad`` nodes: the parameters of a module, a tensor a
    closure captured, or the leaf behind a captured non-leaf (``k = exp(log_k)`` gives
    ``log_k``). A leaf that is ``out`` itself counts.

    Args:
        out: a tensor, typically ``func(t0, y0.detach())`` evaluated with grad enabled.

    Returns:
        the leaves, each once, in the order the walk meets them.
    """
    if not out.requires_grad:
        return []
    if out.grad_fn is None:
        return [out]
    leaves: dict[int, Tensor] = {}
    seen: set[object] = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # set on AccumulateGrad nodes only
        if isinstance(leaf, Tensor):
            leaves.setdefault(id(leaf), leaf)
            continue
        stack.extend(nxt for nxt, _ in reversed(node.next_functions) if nxt is not None)
    return list(leaves.values())


def probe(func: Func, y0: Tensor, t: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Evaluate ``func(t[0], y0)`` once with grad enabled, off ``y0``'s and ``t``'s graphs.

    Args:
        func: the dynamics.
        y0: the initial state ``(*shape)``.
        t: the output times ``(T,)``.

    Returns:
        ``(f0, leaves)``: the flat, detached derivative ``(n,)`` (the solve's first evaluation)
        and :func:`captured_leaves` of it.

    Raises:
        ConfigError: ``func`` did not return a tensor of ``y0``'s shape.
    """
    t0 = torch.tensor(float(t.detach()[0]), dtype=t.dtype, device=y0.device)
    with torch.enable_grad():
        out = check_derivative(func(t0, y0.detach()), y0.shape)
        leaves = captured_leaves(out)
    return out.detach().reshape(-1), leaves


def freed_graph_error(exc: RuntimeError) -> ConfigError | None:
    """The error to raise when a backward pass meets a captured tensor whose graph is gone."""
    if "backward through the graph a second time" not in str(exc):
        return None
    return ConfigError(
        "func closes over a tensor computed with autograd whose graph an earlier backward() "
        "already freed, so no gradient can reach what it was computed from; compute it inside "
        "func or anew before odeint, or pass the tensors to differentiate as params="
    )


def vjp(
    outputs: Tensor | Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Tensor | Sequence[Tensor],
    *,
    batched: bool = False,
) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad`` as every backward pass calls it (unused inputs give ``None``).

    The graph is retained: a tensor ``func`` closes over may have been computed from a parameter
    before the solve (``k = exp(log_k)``), and every step's VJP goes through that one graph.

    Raises:
        ConfigError: that captured tensor's graph was freed by an earlier ``backward()``.
    """
    try:
        return torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs,
            allow_unused=True,
            retain_graph=True,
            is_grads_batched=batched,
        )
    except RuntimeError as exc:
        freed = freed_graph_error(exc)
        if freed is None:
            raise
        raise freed from exc


def add_grads(
    acc_p: Sequence[Tensor], acc_t: Tensor | None, grads: Sequence[Tensor | None]
) -> None:
    """Add one step's VJP ``(a, *param grads[, t grad])`` into the running sums, in place."""
    for acc, gr in zip(acc_p, grads[1 : 1 + len(acc_p)], strict=True):
        if gr is not None:
            acc.add_(gr)
    if acc_t is not None and grads[-1] is not None:
        acc_t.add_(grads[-1])


def param_grads(acc_p: Sequence[Tensor], need_p: Sequence[bool]) -> list[Tensor | None]:
    """The parameter gradients for ``autograd.Function.backward``: ``None`` where none is wanted."""
    it = iter(acc_p)
    return [next(it) if need else None for need in need_p]
