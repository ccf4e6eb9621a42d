"""``aca`` with ``batch="independent"``: the adaptive checkpoint adjoint, per-sample steps.

Forward: the graph-free per-sample loop records, for every iteration in which some sample
accepted a step, every sample's ``(t_b, h_b)``, the states ``y`` ``(B, n)`` the iteration started
from and the accept mask (:class:`~physid.gradients._per_sample.SampleTrace`). Backward: the
recorded iterations are replayed last to first, each once with a graph and one vector-Jacobian
product, as in the shared ``aca`` (Zhuang et al. 2020, Algorithm 2): the samples that accepted are
stepped with their own ``h_b`` (held constant), the others with ``h = 0`` and passed through by
the accept mask, so that the adjoint of a sample that did not move goes back unchanged and its
stages add nothing to the parameter gradient. The gradient of every sample is the exact gradient
of its own discrete forward map, as if solved alone; a parameter shared by the samples gets the
sum of theirs.

The FSAL saving of the shared ``aca`` carries over per sample: the last stage of sample ``b``'s
step, which its dense output needs, is the first stage of ``b``'s next accepted step, replayed
earlier in the backward pass, possibly in another iteration. The last stage is evaluated only in
an iteration where some sample's final step has output times inside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from physid.gradients._per_sample import (
    BatchGraphStepper,
    SampleCount,
    SampleTrace,
    forward_solve_per_sample,
    record_backward,
)
from physid.gradients.base import Problem, freed_graph_error

__all__ = ["solve_aca_per_sample"]


def _split(
    trace: SampleTrace, j: int, grad_t: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The outputs of iteration ``j``: ``(ks, bs)`` taken as step ends, ``(ks, bs, thetas)``
    through the interpolant (all but the final time's when ``t`` needs a gradient, as in the
    shared ``aca``)."""
    ks, bs, th = trace.outputs[j]
    end = th == 1.0
    if grad_t:
        end &= trace.clipped[j][bs]
    inner = ~end
    return (ks[end], bs[end]), (ks[inner], bs[inner], th[inner])


class _PerSampleACAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        trace = SampleTrace()
        ys = forward_solve_per_sample(problem, graph=False, trace=trace)
        ctx.problem = problem
        ctx.trace = trace
        ctx.save_for_backward(t, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        problem: Problem = ctx.problem
        trace: SampleTrace = ctx.trace
        t, *params = ctx.saved_tensors
        need_y0, need_t = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need_p = [bool(x) for x in ctx.needs_input_grad[3:]]
        func = problem.func
        y0 = problem.y0
        B = y0.shape[0]
        stepper = BatchGraphStepper(problem.tableau, y0, problem.time_dtype)
        n, s, fsal = stepper.n, stepper.s, stepper.fsal
        dev = y0.device
        g = grad_ys.reshape(grad_ys.shape[0], B, n)
        gp = [p for p, need in zip(params, need_p, strict=True) if need]
        acc_p = [torch.zeros_like(p) for p in gp]
        t_leaf = t.detach().requires_grad_(True) if need_t else None
        acc_t = torch.zeros_like(t) if need_t else None
        t0f = float(trace.ts[0][0]) if trace.ts else 0.0
        N = len(trace.ts)
        splits = [_split(trace, j, t_leaf is not None) for j in range(N)]

        # FSAL: sample b's step in iteration p borrows its last stage from b's next accepted
        # step, in iteration j > p, whose first stage then receives the cotangent
        # h_{b,p} W_s^T g from p's inner outputs; carry[p] holds those cotangents, prev[j][b] the
        # iteration p of b's previous accepted step (-1: none).
        carry: dict[int, Tensor] = {}
        prev: list[np.ndarray] = []
        last = np.full(B, -1, dtype=np.int64)
        for j in range(N):
            prev.append(np.where(trace.accepted[j], last, -1))
            last = np.where(trace.accepted[j], j, last)
            if fsal:
                ks_in, bs_in, th_in = splits[j][1]
                if len(ks_in):
                    w_last = stepper.dense_weights(th_in)[:, -1]  # (m,)
                    hb = torch.from_numpy(trace.hs[j][bs_in]).to(dtype=g.dtype, device=dev)
                    rows = (hb * w_last)[:, None] * g[ks_in, bs_in]
                    c = torch.zeros(B, n, dtype=g.dtype, device=dev)
                    carry[j] = c.index_add_(0, torch.from_numpy(bs_in).to(dev), rows)

        next_k1 = torch.zeros(B, n, dtype=g.dtype, device=dev)
        has_next = np.zeros(B, dtype=bool)
        a = torch.zeros(B, n, dtype=g.dtype, device=dev)
        count = SampleCount.zeros(B)
        for j in range(N - 1, -1, -1):
            acc = trace.accepted[j]
            acc_rows = torch.from_numpy(acc).to(dev)[:, None]
            (ks_end, bs_end), (ks_in, bs_in, th_in) = splits[j]
            if len(ks_end):
                a = a.index_put((torch.from_numpy(bs_end).to(dev),), g[ks_end, bs_end], True)
            inner_rows = np.zeros(B, dtype=bool)
            inner_rows[bs_in] = True
            borrow = fsal & has_next
            own_last = inner_rows & acc & ~borrow if fsal else np.zeros(B, dtype=bool)
            need_last = bool(own_last.any()) or not fsal
            y_j = trace.ys[j].detach().requires_grad_(True)
            hs = np.where(acc, trace.hs[j], 0.0)
            with torch.enable_grad():
                t_j: np.ndarray | Tensor
                h_j: np.ndarray | Tensor
                if t_leaf is not None:
                    off = torch.from_numpy(trace.ts[j] - t0f).to(dtype=t.dtype, device=dev)
                    t_j = t_leaf[0] + off
                    h_c = torch.from_numpy(hs).to(dtype=t.dtype, device=dev)
                    to_end = torch.from_numpy(acc & trace.clipped[j]).to(dev)
                    h_j = torch.where(to_end, t_leaf[-1] - t_j, h_c)
                else:
                    t_j, h_j = trace.ts[j], hs
                y1, ks = stepper.stages(func, t_j, h_j, y_j, None, need_last=need_last)
                count.calls += len(ks)
                count.nfe += np.where(acc, s - 1 if fsal else s, 0) + own_last
                y1 = torch.where(acc_rows, y1, y_j)
                outputs, grads_out = [y1], [a]
                if len(ks_in):
                    if t_leaf is not None:
                        k_idx = torch.from_numpy(ks_in).to(dev)
                        b_idx = torch.from_numpy(bs_in).to(dev)
                        theta: np.ndarray | Tensor = (
                            t_leaf.index_select(0, k_idx) - t_j.index_select(0, b_idx)  # type: ignore[union-attr]
                        ) / h_j.index_select(0, b_idx)  # type: ignore[union-attr]
                    else:
                        theta = th_in
                    if fsal:
                        lent = torch.from_numpy(borrow).to(dev)[:, None]
                        k_last = torch.where(lent, next_k1, ks[-1]) if need_last else next_k1
                        ks_dense = [*ks[: s - 1], k_last]
                    else:
                        ks_dense = ks
                    outputs.append(stepper.dense(y_j, h_j, ks_dense, theta, bs_in))
                    grads_out.append(g[ks_in, bs_in])
                if fsal:
                    from_prev = prev[j]
                    fed = [p for p in np.unique(from_prev[from_prev >= 0]) if int(p) in carry]
                    if fed:
                        cot = torch.zeros(B, n, dtype=g.dtype, device=dev)
                        for p in fed:
                            rows = torch.from_numpy(from_prev == p).to(dev)[:, None]
                            cot = torch.where(rows, carry[int(p)], cot)
                        outputs.append(ks[0])
                        grads_out.append(cot)
                inputs: list[Tensor] = [y_j, *gp]
                if t_leaf is not None:
                    inputs.append(t_leaf)
                try:
                    grads = torch.autograd.grad(
                        outputs, inputs, grads_out, allow_unused=True, retain_graph=True
                    )
                except RuntimeError as exc:
                    freed = freed_graph_error(exc)
                    if freed is None:
                        raise
                    raise freed from exc
            next_k1 = torch.where(acc_rows, ks[0].detach(), next_k1)
            has_next |= acc
            del outputs, y1, ks
            a = grads[0] if grads[0] is not None else torch.zeros_like(a)
            for acc_g, gr in zip(acc_p, grads[1 : 1 + len(gp)], strict=True):
                if gr is not None:
                    acc_g.add_(gr)
            if acc_t is not None and grads[-1] is not None:
                acc_t.add_(grads[-1])
            count.accepted += acc
        a = a + g[0]
        record_backward(problem.stats, count)

        it = iter(acc_p)
        grad_params = [next(it) if need else None for need in need_p]
        grad_y0 = a.view(y0.shape) if need_y0 else None
        return (None, grad_y0, acc_t, *grad_params)


def solve_aca_per_sample(problem: Problem) -> Tensor:
    """``aca`` on a ``batch="independent"`` problem: ``(T, B, *shape)``."""
    return _PerSampleACAFunction.apply(problem, problem.y0, problem.t, *problem.params)  # type: ignore[no-any-return]
