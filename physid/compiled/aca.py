"""``aca``'s backward pass with compiled step replays (the eager one is
:mod:`physid.gradients.aca`; the arithmetic is the same, Zhuang et al. 2020, Algorithm 2).

The eager backward pass records a graph for each accepted step and calls autograd on it. Here
each step is one call of the ``replay_vjp`` kernel, which re-evaluates the step from its stored
start state with the step size held constant and pulls the adjoint back through it, adding the
parameter gradients to running sums it returns. Everything the output times contribute is
known before the loop starts, so it is gathered for all steps at once:

* an output at a step's end adds its loss gradient to the adjoint before that step's replay;
* an output inside step ``i`` (dense output ``y_i + h_i sum_j w_j(theta) k_j``) adds its loss
  gradient to the adjoint of ``y_i`` directly and ``h_i w_j(theta) g`` to the cotangent of
  stage ``k_j``;
* with an FSAL method the last stage of step ``i`` is the first stage of step ``i + 1``, so its
  cotangent moves to step ``i + 1``'s first stage (the replay skips the last stage, as the eager
  pass borrows it); only the final step's last stage is a separate vector-Jacobian product of
  the field (the ``field_vjp`` kernel).

Gradients reach the tensors ``func`` reads (the capture's inputs); a captured non-leaf passes its
gradient on to its leaves with one autograd call at the end.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from physid.compiled import CompiledSolve
from physid.compiled._build import Kernel
from physid.gradients._loop import Trace
from physid.solvers.tableau import ButcherTableau

__all__ = ["AcaBackward"]


class AcaBackward:
    """The compiled backward pass of ``aca`` for one solve.

    Built (its kernels compiled or fetched) before the forward solve, so that a failure falls
    back to the eager path before anything ran.

    Args:
        cs: the compiled pieces of the solve.
        grad_idx: positions among the capture's tensors of those that need gradients.
    """

    def __init__(self, cs: CompiledSolve, grad_idx: tuple[int, ...]):
        self.cs = cs
        self.grad_idx = grad_idx
        ks = cs.kernels
        n, dev, dt = ks.n, ks.device, ks.dtype
        extras = cs.cap.extras
        acc = [extras[j] for j in grad_idx]
        y_ex = torch.zeros(n, dtype=dt, device=dev)
        th = ks.th(0.0, 0.0)
        cot = torch.zeros(ks.n_replay + 1, n, dtype=dt, device=dev)
        self.replay: Kernel = ks.replay_vjp(grad_idx, [th, y_ex, y_ex, cot, *acc, *extras])
        self.last: Kernel | None = None
        if ks.fsal:
            t_ex = torch.zeros((), dtype=torch.float64, device=dev)
            self.last = ks.field_vjp(grad_idx, [t_ex, y_ex, y_ex, *acc, *extras])

    def __call__(
        self, trace: Trace, y_end: Tensor, grad_ys: Tensor
    ) -> tuple[Tensor, list[Tensor], int]:
        """The adjoint of ``y0`` and the gradients of the capture's tensors ``grad_idx``.

        Args:
            trace: the accepted steps of the forward solve.
            y_end: the state at the final time (flat).
            grad_ys: the loss gradient of every output ``(T, n)``.

        Returns:
            ``(a0, grads, nfe)``: ``dL/dy0`` flat, one gradient per ``grad_idx`` entry, and the
            evaluations of ``func`` the backward pass made.
        """
        cs, ks = self.cs, self.cs.kernels
        extras = cs.cap.extras
        g = grad_ys
        n, s, m = ks.n, ks.s, ks.n_replay
        dev, dt = ks.device, ks.dtype
        N = len(trace.ts)
        acc = [torch.zeros_like(extras[j]) for j in self.grad_idx]
        a = torch.zeros(n, dtype=dt, device=dev)
        if N == 0:
            return a + g[0], acc, 0

        # what the output times contribute, for every step at once
        outs = trace.outputs
        step_of = np.fromiter((i for i, o in enumerate(outs) for _ in o), dtype=np.int64)
        k_of = np.fromiter((k for o in outs for k, _ in o), dtype=np.int64)
        theta = np.fromiter((th for o in outs for _, th in o), dtype=np.float64)
        at_end = theta == 1.0
        end_step, end_k = step_of[at_end].tolist(), k_of[at_end].tolist()
        inner = ~at_end
        in_step, in_k, in_theta = step_of[inner].tolist(), k_of[inner].tolist(), theta[inner]
        E = torch.zeros(N, n, dtype=dt, device=dev)
        if end_k:
            E.index_add_(0, _idx(end_step, dev), g[_idx(end_k, dev)])
        cot = torch.zeros(N, m + 1, n, dtype=dt, device=dev)
        last_cot: Tensor | None = None
        if in_k:
            steps = _idx(in_step, dev)
            gk = g[_idx(in_k, dev)]
            cot[:, 0].index_add_(0, steps, gk)
            W = ks_dense_weights(ks.tab, in_theta, dt, dev)  # (M, s)
            hs = torch.tensor(trace.hs, dtype=dt, device=dev)[steps]
            GK = torch.zeros(N, s, n, dtype=dt, device=dev)
            GK.index_add_(0, steps, (hs[:, None] * W)[:, :, None] * gk[:, None, :])
            cot[:, 1:] += GK[:, :m]
            if ks.fsal:
                cot[1:, 1] += GK[:-1, s - 1]
                if bool(in_step[-1] == N - 1):
                    last_cot = GK[N - 1, s - 1]
        nfe = 0
        if last_cot is not None and self.last is not None:
            t_end = torch.tensor(trace.ts[-1] + trace.hs[-1], dtype=torch.float64, device=dev)
            out = self.last(t_end, y_end, last_cot, *acc, *extras)
            a = a + out[0]
            acc = list(out[1:])
            nfe += 1
        buf = np.zeros(2)
        th_cpu = torch.from_numpy(buf) if dev.type == "cpu" else None
        replay = self.replay
        for i in range(N - 1, -1, -1):
            a = a + E[i]
            if th_cpu is None:
                th_i = ks.th(trace.ts[i], trace.hs[i])
            else:
                buf[0] = trace.ts[i]
                buf[1] = trace.hs[i]
                th_i = th_cpu
            out = replay(th_i, trace.ys[i], a, cot[i], *acc, *extras)
            a = out[0]
            acc = list(out[1:])
        nfe += m * N
        return a + g[0], acc, nfe


def ks_dense_weights(
    tab: ButcherTableau, theta: np.ndarray, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The dense-output stage weights ``(M, s)`` at the step fractions ``theta``."""
    return torch.as_tensor(tab.dense_weights(np.asarray(theta)), dtype=dtype, device=device)


def _idx(xs: list[int], device: torch.device) -> Tensor:
    return torch.tensor(xs, dtype=torch.long, device=device)
