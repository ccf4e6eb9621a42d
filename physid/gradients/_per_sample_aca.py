"""``aca`` with ``batch="independent"``: the adaptive checkpoint adjoint, per-sample steps.

Forward: the graph-free per-sample loop records, for every iteration in which some sample
accepted a step, every sample's ``(t_b, h_b)``, the states ``y`` ``(B, n)`` the iteration started
from and the accept mask (:class:`~physid.gradients._per_sample.SampleTrace`).

Backward (Zhuang et al. 2020, Algorithm 2, per sample): each sample's accepted steps are replayed
last to first, each once with a graph and its step size held constant, and one vector-Jacobian
product carries that sample's adjoint back through it. The samples are replayed together in
rounds: round ``r`` replays, for every sample, its ``r``-th step counted from its last, whichever
forward iteration it was taken in. So the backward takes as many batched replays as the sample
with the most accepted steps, not one per forward iteration; a sample with fewer steps is done
early and is then stepped with ``h = 0`` and passed through by a mask (its stages add nothing).
The gradient of every sample is the exact gradient of its own discrete forward map, as if solved
alone; a parameter shared by the samples gets the sum of theirs.

The FSAL saving of the shared ``aca`` carries over: the last stage of a sample's step, which its
dense output needs, is the first stage of that sample's next step, replayed in the round before;
the cotangent that stage receives from the step's outputs is fed into that round's VJP. Only in
round 0 (every sample's final step) is the last stage evaluated, when output times lie inside.
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
from physid.gradients.base import Problem, add_grads, param_grads, vjp

__all__ = ["solve_aca_per_sample"]


class _Rounds:
    """The accepted steps of a :class:`SampleTrace` regrouped into backward rounds.

    Round ``r`` holds, for every sample ``b`` with more than ``r`` accepted steps, its step
    ``n_b - 1 - r``: ``it[r, b]`` is the forward iteration it was taken in (-1: sample done).
    ``outputs[r]`` lists ``(ks, bs, thetas)`` of the output times inside those steps.
    """

    def __init__(self, trace: SampleTrace, batch: int):
        acc = np.stack(trace.accepted) if trace.accepted else np.zeros((0, batch), dtype=bool)
        self.n_steps = acc.sum(0)  # (B,)
        self.count = int(self.n_steps.max()) if len(self.n_steps) else 0
        self.it = np.full((self.count, batch), -1, dtype=np.int64)
        for b in range(batch):
            its = np.flatnonzero(acc[:, b])
            self.it[: len(its), b] = its[::-1]
        self.active = self.it >= 0
        self._cols = np.arange(batch)
        self._ts = np.stack(trace.ts) if trace.ts else np.zeros((0, batch))
        self._hs = np.stack(trace.hs) if trace.hs else np.zeros((0, batch))
        self._clipped = np.stack(trace.clipped) if trace.clipped else np.zeros((0, batch), bool)
        # the round of every output: sample b's step in iteration i is its cumsum-th
        rank = np.cumsum(acc, 0)  # (N, B)
        parts = [(i, *o) for i, o in enumerate(trace.outputs) if len(o[0])]
        if parts:
            its = np.concatenate([np.full(len(o[0]), i) for i, *o in parts])
            ks = np.concatenate([p[1] for p in parts])
            bs = np.concatenate([p[2] for p in parts])
            ths = np.concatenate([p[3] for p in parts])
            rounds = self.n_steps[bs] - rank[its, bs]
        else:
            its = ks = bs = rounds = np.zeros(0, dtype=np.int64)
            ths = np.zeros(0)
        order = np.argsort(rounds, kind="stable")
        bounds = np.searchsorted(rounds[order], np.arange(self.count + 1))
        self.outputs = [
            (ks[sel], bs[sel], ths[sel], its[sel])
            for sel in (order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        ]

    def rows(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(t, h, clipped)`` ``(B,)`` of every sample's step in round ``r`` (a done sample:
        its start time, ``h = 0``, not clipped)."""
        its, act = self.it[r], self.active[r]
        sel = (np.maximum(its, 0), self._cols)
        t = np.where(act, self._ts[sel], self._ts[0])
        return t, np.where(act, self._hs[sel], 0.0), act & self._clipped[sel]


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
        rounds = _Rounds(trace, B)
        y0_rows = y0.detach().reshape(B, n)

        def split(r: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
            # An output at a step's end is that end state. When t needs a gradient, every output
            # but the final time (whose step was shortened to end there) goes through the
            # interpolant, so that it depends on its own time.
            ks, bs, th, its = rounds.outputs[r]
            end = th == 1.0
            if t_leaf is not None:
                end &= np.array([trace.clipped[i][b] for i, b in zip(its, bs, strict=True)], bool)
            inner = ~end
            return (ks[end], bs[end]), (ks[inner], bs[inner], th[inner])

        splits = [split(r) for r in range(rounds.count)]

        def carry(r: int) -> Tensor | None:
            # the cotangent of each sample's last stage in round r from that round's inner
            # outputs, h W_s^T g: the first stage of the sample's next step receives it
            _, (ks_in, bs_in, th_in) = splits[r]
            if not len(ks_in):
                return None
            _, hs_r, _ = rounds.rows(r)
            w_last = stepper.dense_weights(th_in)[:, -1]
            hb = torch.from_numpy(hs_r[bs_in]).to(dtype=g.dtype, device=dev)
            rows = (hb * w_last)[:, None] * g[ks_in, bs_in]
            out = torch.zeros(B, n, dtype=g.dtype, device=dev)
            return out.index_add_(0, torch.from_numpy(bs_in).to(dev), rows)

        a = torch.zeros(B, n, dtype=g.dtype, device=dev)
        next_k1: Tensor | None = None
        count = SampleCount.zeros(B)
        for r in range(rounds.count):
            active = rounds.active[r]
            act_rows = torch.from_numpy(active).to(dev).unsqueeze(1)
            (ks_end, bs_end), (ks_in, bs_in, th_in) = splits[r]
            if len(ks_end):
                a = a.index_put((torch.from_numpy(bs_end).to(dev),), g[ks_end, bs_end], True)
            # round 0 holds every sample's final step: no next step lends its last stage
            need_last = not fsal or (r == 0 and len(ks_in) > 0)
            # a sample done with its steps is held (h = 0) at its initial state, where its
            # derivative is known to be finite
            y_rows = [
                trace.ys[i][b] if i >= 0 else y0_rows[b]
                for b, i in enumerate(rounds.it[r].tolist())
            ]
            y_r = torch.stack(y_rows).detach().requires_grad_(True)
            ts_r, hs_r, clipped = rounds.rows(r)
            with torch.enable_grad():
                t_r: np.ndarray | Tensor
                h_r: np.ndarray | Tensor
                if t_leaf is not None:
                    off = torch.from_numpy(ts_r - t0f).to(dtype=t.dtype, device=dev)
                    t_r = t_leaf[0] + off
                    to_end = torch.from_numpy(clipped).to(dev)
                    h_c = torch.from_numpy(hs_r).to(dtype=t.dtype, device=dev)
                    h_r = torch.where(to_end, t_leaf[-1] - t_r, h_c)
                else:
                    t_r, h_r = ts_r, hs_r
                y1, ks = stepper.stages(func, t_r, h_r, y_r, None, need_last=need_last)
                count.calls += len(ks)
                own_last = np.zeros(B, dtype=np.int64)
                if fsal and need_last:
                    own_last[np.unique(bs_in)] = 1
                count.nfe += np.where(active, s - 1 if fsal else s, 0) + own_last
                y1 = torch.where(act_rows, y1, y_r)
                outputs, grads_out = [y1], [a]
                if len(ks_in):
                    if t_leaf is not None:
                        k_idx = torch.from_numpy(ks_in).to(dev)
                        b_idx = torch.from_numpy(bs_in).to(dev)
                        theta: np.ndarray | Tensor = (
                            t_leaf.index_select(0, k_idx) - t_r.index_select(0, b_idx)  # type: ignore[union-attr]
                        ) / h_r.index_select(0, b_idx)  # type: ignore[union-attr]
                    else:
                        theta = th_in
                    ks_dense = ks if need_last or next_k1 is None else [*ks, next_k1]
                    outputs.append(stepper.dense(y_r, h_r, ks_dense, theta, bs_in))
                    grads_out.append(g[ks_in, bs_in])
                if fsal and r + 1 < rounds.count:
                    cot = carry(r + 1)
                    if cot is not None:
                        outputs.append(ks[0])
                        grads_out.append(cot)
                inputs: list[Tensor] = [y_r, *gp]
                if t_leaf is not None:
                    inputs.append(t_leaf)
                grads = vjp(outputs, inputs, grads_out)
            next_k1 = ks[0].detach()
            del outputs, y1, ks  # this round's graph goes now, not when the next one is built
            a = grads[0] if grads[0] is not None else torch.zeros_like(a)
            add_grads(acc_p, acc_t, grads)
            count.accepted += active
        a = a + g[0]
        record_backward(problem.stats, count)

        grad_y0 = a.view(y0.shape) if need_y0 else None
        return (None, grad_y0, acc_t, *param_grads(acc_p, need_p))


def solve_aca_per_sample(problem: Problem) -> Tensor:
    """``aca`` on a ``batch="independent"`` problem: ``(T, B, *shape)``."""
    return _PerSampleACAFunction.apply(problem, problem.y0, problem.t, *problem.params)  # type: ignore[no-any-return]
