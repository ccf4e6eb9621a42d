"""``aca``: the adaptive checkpoint adjoint (Zhuang et al. 2020, Algorithm 2).

Forward: the adaptive solve runs without a graph and keeps only the accepted steps
``(t_i, h_i, y_i)`` — memory ``O(N_t)`` states plus the outputs. Backward: for each accepted step,
last to first, the step is evaluated once more *with* a graph from ``y_i`` with ``h_i`` held
constant, and one vector-Jacobian product carries the adjoint from ``y_{i+1}`` (plus the loss
gradients of the output times inside the step, differentiated through the step's dense output)
back to ``y_i`` while accumulating the parameter gradient. Peak graph memory is one step
(``O(N_f)``). The result is the exact gradient of the discrete forward map with the step sizes
held fixed: no gradient flows through step-size selection (nor the initial step guess), and no
reverse-time integration error enters — unlike the continuous adjoint (ANODE, Gholami et al. 2019).

Each accepted step costs its stages once forward (no graph) and once backward (with a graph).
With an FSAL method the last stage, which the dense output needs, is the next step's first
stage: the backward pass borrows it from the replay of that step instead of evaluating it again.
Gradients to ``t`` are exact too: step ``i`` starts at ``t_0 + (t_i - t_0)``, the final step ends
at ``t_N``, and interior output times enter through the interpolant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from physid.controllers.norms import RMSNorm
from physid.gradients._loop import Count, Trace
from physid.gradients._per_sample_aca import solve_aca_per_sample
from physid.gradients.base import (
    AbstractGradientMethod,
    Problem,
    add_grads,
    forward_solve,
    param_grads,
    vjp,
)
from physid.solvers.rk import GraphRKStepper

if TYPE_CHECKING:
    from physid.compiled import CompiledSolve

__all__ = ["ACAMethod"]


class _ACAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        trace = Trace()
        ys = forward_solve(problem, graph=False, trace=trace)
        ctx.problem = problem
        ctx.trace = trace
        ctx.y_end = ys[-1].detach().reshape(-1)
        ctx.save_for_backward(t, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        problem: Problem = ctx.problem
        trace: Trace = ctx.trace
        t, *params = ctx.saved_tensors
        need_y0, need_t = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need_p = [bool(x) for x in ctx.needs_input_grad[3:]]
        cs = problem.compiled
        if cs is not None and cs.backward is not None:
            return _compiled_backward(ctx, cs, problem, trace, grad_ys, params, need_y0, need_p)
        func = problem.func
        y0 = problem.y0
        stepper = GraphRKStepper(problem.tableau, y0, problem.time_dtype)
        g = grad_ys.reshape(grad_ys.shape[0], -1)
        gp = [p for p, need in zip(params, need_p, strict=True) if need]
        acc_p = [torch.zeros_like(p) for p in gp]
        t_leaf = t.detach().requires_grad_(True) if need_t else None
        acc_t = torch.zeros_like(t) if need_t else None
        t0f = trace.ts[0] if trace.ts else 0.0

        def split(i: int) -> tuple[list[int], list[tuple[int, float]]]:
            # An output at a step's end is that end state. When t needs a gradient, every output
            # but the final time (whose step was shortened to end there) goes through the
            # interpolant, so that it depends on its own time.
            outs_i = trace.outputs[i]
            at_end = [k for k, th in outs_i if th == 1.0 and (t_leaf is None or trace.clipped[i])]
            return at_end, [(k, th) for k, th in outs_i if k not in at_end]

        # With an FSAL method the dense output of step i uses k_s = f(t_{i+1}, y_{i+1}), which is
        # the first stage of step i+1. Step i+1 is replayed first (we go backwards), so its k_1
        # serves step i as a constant, and the cotangent it receives from step i's outputs,
        # h_i * W_s^T g, is known in advance and fed into step i+1's VJP. One function
        # evaluation per step saved, the gradient unchanged.
        reuse_fsal = stepper.fsal
        next_k1: Tensor | None = None
        a = torch.zeros_like(g[0])
        count = Count()
        splits = [split(i) for i in range(len(trace.ts))]
        for i in range(len(trace.ts) - 1, -1, -1):
            at_end, inner = splits[i]
            for k in at_end:
                a = a + g[k]
            borrow = reuse_fsal and bool(inner) and next_k1 is not None
            y_i = trace.ys[i].detach().requires_grad_(True)
            with torch.enable_grad():
                if t_leaf is not None:
                    t_i: float | Tensor = t_leaf[0] + (trace.ts[i] - t0f)
                    h_i: float | Tensor = t_leaf[-1] - t_i if trace.clipped[i] else trace.hs[i]
                else:
                    t_i, h_i = trace.ts[i], trace.hs[i]
                need_last = bool(inner) and not borrow
                y1, ks = stepper.stages(func, t_i, h_i, y_i, None, need_last=need_last)
                count.nfe += len(ks)
                outputs, grads_out = [y1], [a]
                if inner:
                    idx = [k for k, _ in inner]
                    if t_leaf is not None:
                        theta: np.ndarray | Tensor = (t_leaf[idx] - t_i) / h_i
                    else:
                        theta = np.array([th for _, th in inner])
                    ks_dense = [*ks, next_k1] if borrow else ks
                    outputs.append(stepper.dense(y_i, h_i, ks_dense, theta))  # type: ignore[arg-type]
                    del ks_dense
                    grads_out.append(g[idx])
                if reuse_fsal and i > 0:
                    _, inner_prev = splits[i - 1]
                    if inner_prev:
                        w_last = stepper.dense_weights(np.array([th for _, th in inner_prev]))[
                            :, -1
                        ]
                        idx_prev = [k for k, _ in inner_prev]
                        outputs.append(ks[0])
                        grads_out.append(trace.hs[i - 1] * (w_last @ g[idx_prev]))
                inputs: list[Tensor] = [y_i, *gp]
                if t_leaf is not None:
                    inputs.append(t_leaf)
                grads = vjp(outputs, inputs, grads_out)
            next_k1 = ks[0].detach()
            del outputs, y1, ks  # this step's graph goes now, not when the next one is built
            a = grads[0] if grads[0] is not None else torch.zeros_like(a)
            add_grads(acc_p, acc_t, grads)
            count.accepted += 1
        a = a + g[0]
        st = problem.stats
        st.nfe_backward += count.nfe
        st.backward_steps_accepted += count.accepted

        grad_y0 = a.view(y0.shape) if need_y0 else None
        return (None, grad_y0, acc_t, *param_grads(acc_p, need_p))


def _compiled_backward(
    ctx: Any,
    cs: CompiledSolve,
    problem: Problem,
    trace: Trace,
    grad_ys: Tensor,
    params: list[Tensor],
    need_y0: bool,
    need_p: list[bool],
) -> tuple[Tensor | None, ...]:
    """The backward pass on the fast path (:class:`physid.compiled.aca.AcaBackward`)."""
    backward = cs.backward
    g = grad_ys.reshape(grad_ys.shape[0], -1)
    a0, acc, nfe = backward(trace, ctx.y_end, g)
    grads = cs.param_grads(backward.grad_idx, acc, params)
    st = problem.stats
    st.nfe_backward += nfe
    st.backward_steps_accepted += len(trace.ts)
    grad_params = [gr if need else None for gr, need in zip(grads, need_p, strict=True)]
    grad_y0 = a0.view(problem.y0.shape) if need_y0 else None
    return (None, grad_y0, None, *grad_params)


class ACAMethod(AbstractGradientMethod):
    """Adaptive checkpoint adjoint: exact discrete gradients at ``O(N_f + N_t)`` memory."""

    name = "aca"

    def prepare_compiled(self, problem: Problem, need_grad: bool) -> None:
        from physid.compiled.aca import AcaBackward

        cs = problem.compiled
        if cs is None:
            return
        cs.arithmetic([0.0], problem.tol, RMSNorm())
        if need_grad:
            cs.backward = AcaBackward(cs, cs.needs_grad())

    def solve(self, problem: Problem) -> Tensor:
        return _ACAFunction.apply(problem, problem.y0, problem.t, *problem.params)  # type: ignore[no-any-return]

    def solve_independent(self, problem: Problem) -> Tensor:
        return solve_aca_per_sample(problem)
