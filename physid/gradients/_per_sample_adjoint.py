"""``adjoint`` and ``seminorm`` with ``batch="independent"``: every sample its own backward solve.

The forward solve is the graph-free per-sample loop. The backward solve integrates, for every
sample ``b`` on its own step sizes, the augmented state ``[y_b, a_b, a_theta_b]`` from ``t_N``
back to ``t_0`` (Chen et al. 2018, Algorithm 1), restarting ``y_b`` from the stored forward
value at every output time, as the shared adjoint does. Each sample carries its own parameter
adjoint ``a_theta_b`` (as torchode's ``BacksolveAdjoint`` does): its step-size control needs
that sample's own error in ``a_theta`` (``adjoint``'s block norm counts it), and a sample that
rejects a step must not add that step's contribution to a shared sum. The parameter gradient is
``sum_b a_theta_b(t_0)``.

The per-sample parameter contributions ``-a_b^T df_b/dtheta`` come from one batched
vector-Jacobian product per evaluation (``torch.autograd.grad(..., is_grads_batched=True)``:
``B`` cotangents, each ``-a`` restricted to one sample, through ``torch.vmap``), so ``func``'s
backward must support ``vmap`` (torch's own operations do). The cost grows with ``B``: each
backward evaluation does ``B`` VJPs' arithmetic (vectorised), and ``a_theta`` holds ``B x P``
numbers. Where ``func`` has no parameters to differentiate, one plain VJP serves every sample.

With ``adjoint``'s block norm, the ``a_theta`` block of a sample covers every parameter; a
parameter that belongs to another sample (a per-sample tensor of masses, say) is a zero channel
of it, which lowers that block's RMS. With shared parameters, or with ``seminorm``, every
sample's backward solve is the one it would have alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from physid.gradients._per_sample import (
    BatchRKStepper,
    FreeBatchArithmetic,
    SampleCount,
    forward_solve_per_sample,
    integrate_per_sample,
    record_backward,
    sample_tolerances,
)
from physid.gradients.base import Problem, vjp

if TYPE_CHECKING:
    from physid.gradients.adjoint import AdjointMethod

__all__ = ["solve_adjoint_per_sample"]


def _flat(v: Tensor | None, batch: int, like: Tensor) -> Tensor:
    if v is None:
        return torch.zeros(batch, like.numel(), dtype=like.dtype, device=like.device)
    return v.reshape(batch, -1)


class _PerSampleAdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        problem: Problem,
        method: AdjointMethod,
        y0: Tensor,
        t: Tensor,
        *params: Tensor,
    ) -> Tensor:
        ys = forward_solve_per_sample(problem, graph=False)
        ctx.problem = problem
        ctx.method = method
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        problem: Problem = ctx.problem
        method: AdjointMethod = ctx.method
        t, ys, *params = ctx.saved_tensors
        need_t = ctx.needs_input_grad[3]
        need_p = [bool(x) for x in ctx.needs_input_grad[4:]]
        func = problem.func
        shape = problem.y0.shape
        B = shape[0]
        n = problem.y0[0].numel()
        gp = [p for p, need in zip(params, need_p, strict=True) if need]
        sizes = [p.numel() for p in gp]
        P = sum(sizes)
        dtype, dev = ys.dtype, ys.device
        # one-hot selectors: cotangent j of the batched VJP is -a on sample j only
        eye = torch.eye(B, dtype=dtype, device=dev)

        def aug_f(tt: Tensor, z: Tensor) -> Tensor:
            with torch.enable_grad():
                y = z[:, :n].reshape(shape).detach().requires_grad_(True)
                a = z[:, n : 2 * n]
                f = func(tt, y)
                if gp:
                    cot = -(eye[:, :, None] * a[None, :, :]).reshape(B, *shape)
                    vj = vjp(f, (y, *gp), cot, batched=True)
                    rows = torch.arange(B, device=dev)
                    vy = vj[0]
                    vjp_y = (
                        torch.zeros(B, n, dtype=dtype, device=dev)
                        if vy is None
                        else vy.reshape(B, B, n)[rows, rows]
                    )
                    vjp_p = [_flat(v, B, p).to(dtype) for v, p in zip(vj[1:], gp, strict=True)]
                else:
                    (vy,) = vjp(f, (y,), -a.reshape(shape))
                    vjp_y = _flat(vy, B, y[0])
                    vjp_p = []
            return torch.cat([f.reshape(B, n), vjp_y, *vjp_p], 1)

        tf = t.detach().cpu().tolist()
        g = grad_ys.reshape(grad_ys.shape[0], B, n)
        flat_ys = ys.reshape(ys.shape[0], B, n)
        z = torch.cat([flat_ys[-1], g[-1], torch.zeros(B, P, dtype=dtype, device=dev)], 1)
        z = z.detach()
        grad_t = torch.zeros_like(t) if need_t else None
        norm = method.backward_norm(n, P)
        make_controller = method.backward_make_controller(problem)
        count = SampleCount.zeros(B)
        stepper = BatchRKStepper(problem.tableau, z, problem.time_dtype)
        tol = sample_tolerances(problem.tol, B, 2 * n + P)
        first_step: np.ndarray | None = None
        with torch.no_grad():
            for i in range(len(tf) - 1, 0, -1):
                if grad_t is not None:
                    t_i = torch.full((B,), tf[i], dtype=t.dtype, device=dev)
                    f_i = func(t_i, ys[i])
                    count.calls += 1
                    count.nfe += 1
                    grad_t[i] = (g[i] * f_i.reshape(B, n)).sum()
                outs, h_next = integrate_per_sample(
                    aug_f,
                    z,
                    FreeBatchArithmetic(stepper, [tf[i], tf[i - 1]]),
                    [make_controller() for _ in range(B)],
                    norm,
                    tol,
                    count,
                    first_step=first_step,
                )
                first_step = np.abs(h_next) if problem.tol.step_size is None else None
                z = outs[-1]
                # restart y from the forward solution; add the loss gradient at t_{i-1}
                z = torch.cat([flat_ys[i - 1], z[:, n : 2 * n] + g[i - 1], z[:, 2 * n :]], 1)
            a0 = z[:, n : 2 * n]
            if grad_t is not None:
                t_0 = torch.full((B,), tf[0], dtype=t.dtype, device=dev)
                f_0 = func(t_0, ys[0])
                count.calls += 1
                count.nfe += 1
                # y(t_0) = y0 itself does not move with t_0: leave its own loss gradient out
                grad_t[0] = -((a0 - g[0]) * f_0.reshape(B, n)).sum()
        record_backward(problem.stats, count)

        grads_p: list[Tensor | None] = []
        offset = 2 * n
        flat_p = iter(zip(gp, sizes, strict=True))
        for need in need_p:
            if not need:
                grads_p.append(None)
                continue
            p, size = next(flat_p)
            grads_p.append(z[:, offset : offset + size].sum(0).view_as(p).to(p.dtype))
            offset += size
        return (None, None, a0.reshape(shape), grad_t, *grads_p)


def solve_adjoint_per_sample(problem: Problem, method: AdjointMethod) -> Tensor:
    """``method`` (an :class:`~physid.gradients.adjoint.AdjointMethod`) on a
    ``batch="independent"`` problem: ``(T, B, *shape)``."""
    return _PerSampleAdjointFunction.apply(  # type: ignore[no-any-return]
        problem, method, problem.y0, problem.t, *problem.params
    )
