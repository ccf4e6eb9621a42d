"""The compiled arithmetics of the shared step loop (:mod:`physid.gradients._loop`).

The loop is the same for the eager and the compiled path — the same clipping to the final
time, the same controller, the same output bookkeeping and failure statuses — so both take the
same steps. What the compiled arithmetic changes is how an attempt is computed:

* :class:`CompiledArithmetic` (graph-free, for the forward solves of ``aca``, ``adjoint``,
  ``seminorm`` and the adjoint's backward solve): one kernel call per attempt computes every
  stage with the user's field inlined, the new state and the error ratio; the host reads the
  ratio (the one synchronisation per attempt) and the controller decides in Python floats, as
  eagerly.
* :class:`CompiledGraphArithmetic` (``naive``): each attempt is one autograd node whose forward
  is the attempt kernel and whose backward is the kernel of the attempt's vector-Jacobian
  product, so that the step-size arithmetic between attempts stays in the autograd graph as the
  naive method requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physid.compiled._build import Kernel
from physid.compiled._kernels import KernelSet
from physid.controllers.norms import AbstractNorm
from physid.gradients._loop import GraphFreeArithmetic, InGraphArithmetic, Tolerances
from physid.solvers.rk import Func, GraphRKStepper, Scalar, StepperBase

__all__ = ["CompiledStepper", "CompiledArithmetic", "CompiledGraphArithmetic"]

_DENSE_BATCH = 128
"""Steps whose dense outputs are formed together (their stages are kept until then)."""


class CompiledStepper(StepperBase):
    """What the loop asks of a stepper besides the step: single evaluations of the field (the
    first stage, Hairer's trial, a non-FSAL method's next first stage), through the ``field``
    kernel. ``func`` arguments are ignored: the kernels hold the captured field.

    Args:
        kernels: the kernel set of the field being integrated.
        y0: the flat initial state ``(n,)``.
        extras: the capture's tensors (detached), passed to every kernel.
    """

    def __init__(self, kernels: KernelSet, y0: Tensor, extras: Sequence[Tensor]):
        super().__init__(kernels.tab, y0, kernels.time_dtype)
        self.kernels = kernels
        self.extras = tuple(extras)
        t_ex = torch.zeros((), dtype=torch.float64, device=y0.device)
        self._field = kernels.field_kernel([t_ex, y0, *self.extras])

    def f(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64, device=self.device)
        return self._field(tt.detach(), y.detach(), *self.extras)[0]

    def f_checked(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        return self.f(func, t, y)


class CompiledArithmetic(GraphFreeArithmetic):
    """Graph-free arithmetic whose attempts are one kernel call each.

    Args:
        stepper: the compiled stepper (its kernels and the capture's tensors).
        times: the output times (Python floats).
        tol: the solve's tolerances (tensors of them are passed to the kernel, so changing them
            does not recompile).
        norm: the error norm (compiled into the attempt kernel).
    """

    stepper: CompiledStepper  # type: ignore[assignment]

    def __init__(
        self, stepper: CompiledStepper, times: list[float], tol: Tolerances, norm: AbstractNorm
    ):
        self.stepper = stepper
        self.times_f = list(times)
        ks = stepper.kernels
        y_ex = torch.zeros(ks.n, dtype=ks.dtype, device=ks.device)
        self._extras = stepper.extras
        self._cpu = ks.device.type == "cpu"
        self._buf = np.zeros(2)
        self._th = torch.from_numpy(self._buf) if self._cpu else ks.th(0.0, 0.0)
        example = [self._th, y_ex, y_ex]
        if ks.e is None:
            self._kernel = ks.fixed([*example, *self._extras])
            self._tols: tuple[Tensor, ...] = ()
        else:
            self._tols = (_tensor(tol.rtol, ks), _tensor(tol.atol, ks))
            self._kernel = ks.attempt(norm, *self._tols, [*example, *self._extras])
        self._K: Tensor | None = None
        self._out: Tensor | None = None
        self._dense: list[tuple[int, int, float, float, Tensor, Tensor]] = []

    def retarget(self, times: list[float]) -> None:
        """Serve a new solve over ``times`` with the same kernels (the adjoint's intervals)."""
        self.times_f = list(times)
        self._K = None
        self._out = None
        self._dense.clear()

    def _th_of(self, t: float, h: float) -> Tensor:
        if self._cpu:
            self._buf[0] = t
            self._buf[1] = h
            return self._th
        return self.stepper.kernels.th(t, h)

    def attempt(
        self,
        func: Func,
        t: float,
        h: float,
        y: Tensor,
        abs_y: Tensor,
        f0: Tensor,
        tol: Tolerances,
        norm: AbstractNorm,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """As :meth:`Arithmetic.attempt`; ``|y|`` is formed inside the kernel, so ``abs_y`` is
        not read and ``y1`` stands in for ``abs_y1``."""
        out = self._kernel(self._th_of(t, h), y, f0, *self._tols, *self._extras)
        y1, K = out[0], out[1]
        self._K = K
        ratio = out[2] if len(out) > 2 else None
        f1 = K[-1] if self.stepper.fsal else None
        return y1, y1, ratio, f1

    def step(
        self, func: Func, t: float, h: float, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        raise NotImplementedError("the compiled arithmetic steps through attempt()")

    def dense(self, y: Tensor, t: float, h: float, lo: int, hi: int) -> Tensor:
        """Rows ``lo:hi`` of an output buffer that :meth:`finish` fills: the dense outputs of
        all steps are formed in one batched operation at the end instead of one per step."""
        if self._K is None:
            raise RuntimeError("dense() before a step")
        if self._out is None:
            ks = self.stepper.kernels
            self._out = torch.empty(len(self.times_f), ks.n, dtype=ks.dtype, device=ks.device)
        self._dense.append((lo, hi, t, h, y, self._K))
        if len(self._dense) >= _DENSE_BATCH:
            self.finish()  # bounds the stages kept waiting to _DENSE_BATCH steps
        return self._out[lo:hi]

    def finish(self) -> None:
        if not self._dense or self._out is None:
            return
        rows: list[int] = []
        steps: list[int] = []
        theta: list[float] = []
        times = self.times_f
        for j, (lo, hi, t, h, _, _) in enumerate(self._dense):
            for k in range(lo, hi):
                rows.append(k)
                steps.append(j)
                theta.append((times[k] - t) / h)
        ks = self.stepper.kernels
        dev = ks.device
        sid = torch.tensor(steps, dtype=torch.long, device=dev)
        Y = torch.stack([d[4] for d in self._dense])[sid]
        K = torch.stack([d[5] for d in self._dense])[sid]
        hs = torch.tensor([d[3] for d in self._dense], dtype=ks.dtype, device=dev)[sid]
        W = self.stepper.dense_weights(np.asarray(theta))  # (M, s)
        vals = torch.addcmul(Y, hs[:, None], torch.bmm(W.unsqueeze(1), K).squeeze(1))
        self._out[torch.tensor(rows, dtype=torch.long, device=dev)] = vals
        self._dense.clear()

    def fsal(self, f1: Tensor | None) -> Tensor:
        if f1 is None:
            raise TypeError("fsal() needs the last stage of an FSAL step.")
        return f1


def _tensor(x: float | Tensor, ks: KernelSet) -> Tensor:
    """A tolerance as a tensor: a number in the state's dtype (as eager arithmetic treats a
    Python scalar), a tensor as it is (its dtype takes part in type promotion, as eagerly)."""
    if isinstance(x, Tensor):
        return x.detach().to(ks.device).contiguous()
    return torch.tensor(x, dtype=ks.dtype, device=ks.device)


class CompiledGraphArithmetic(InGraphArithmetic):
    """In-graph arithmetic (``naive``) whose attempts are compiled autograd nodes.

    Each attempt is one :class:`_GraphAttempt` node: its forward is the ``graph_step`` kernel,
    its backward the ``graph_step_vjp`` kernel (the attempt recomputed and pulled back, w.r.t.
    time, step size, state, first stage and the tensors ``func`` reads). The error norm, the
    controller, Hairer's initial step and the dense output stay eager operations in the graph,
    exactly as in the eager naive method; single evaluations of ``func`` stay eager too.

    Args:
        stepper: the eager in-graph stepper (single evaluations, dense output).
        times: the output times ``(T,)``, possibly requiring grad.
        kernels: the kernel set of ``func``.
        originals: the tensors ``func`` reads, as it holds them (gradients flow to them).
    """

    def __init__(
        self,
        stepper: GraphRKStepper,
        times: Tensor,
        kernels: KernelSet,
        originals: Sequence[Tensor],
    ):
        super().__init__(stepper, times)
        self.kernels = kernels
        self.originals = tuple(originals)
        self.extras = tuple(x.detach() for x in originals)
        self.grad_idx = tuple(i for i, x in enumerate(originals) if x.requires_grad)

    def kernel_pair(self, t: Tensor, h: Tensor) -> tuple[Kernel, Kernel]:
        """The forward and backward kernels for time and step size of these dtypes."""
        ks = self.kernels
        y = torch.zeros(ks.n, dtype=ks.dtype, device=ks.device)
        fwd = ks.graph_step([t, h, y, y, *self.extras])
        cots = [y, torch.zeros(ks.s, ks.n, dtype=ks.dtype, device=ks.device)]
        if ks.e is not None:
            cots.append(y)
        bwd = ks.graph_step_vjp(self.grad_idx, [t, h, y, y, *cots, *self.extras])
        return fwd, bwd

    def step(
        self, func: Func, t: Scalar, h: Scalar, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        dev = self.kernels.device
        tt = t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64, device=dev)
        hh = h if isinstance(h, Tensor) else torch.tensor(h, dtype=torch.float64, device=dev)
        fwd, bwd = self.kernel_pair(tt.detach(), hh.detach())
        outs = _GraphAttempt.apply(fwd, bwd, self, tt, hh, y, f0, *self.originals)
        y1, K = outs[0], outs[1]
        self._ks = list(K.unbind(0))
        err = outs[2] if len(outs) > 2 else None
        f1 = K[-1] if self.stepper.fsal else None
        return y1, err, f1


class _GraphAttempt(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        fwd: Kernel,
        bwd: Kernel,
        arith: CompiledGraphArithmetic,
        t: Tensor,
        h: Tensor,
        y: Tensor,
        f0: Tensor,
        *originals: Tensor,
    ) -> tuple[Tensor, ...]:
        ctx.bwd = bwd
        ctx.arith = arith
        ctx.save_for_backward(t, h, y, f0)
        return tuple(fwd(t.detach(), h.detach(), y.detach(), f0.detach(), *arith.extras))

    @staticmethod
    def backward(ctx: Any, *cots: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        t, h, y, f0 = ctx.saved_tensors
        arith: CompiledGraphArithmetic = ctx.arith
        ks = arith.kernels
        zeros = (
            torch.zeros(ks.n, dtype=ks.dtype, device=ks.device),
            torch.zeros(ks.s, ks.n, dtype=ks.dtype, device=ks.device),
            torch.zeros(ks.n, dtype=ks.dtype, device=ks.device),
        )
        full = [c if c is not None else z for c, z in zip(cots, zeros, strict=False)]
        g = ctx.bwd(t.detach(), h.detach(), y.detach(), f0.detach(), *full, *arith.extras)
        g_t, g_h, g_y, g_f0 = g[0], g[1], g[2], g[3]
        g_orig: list[Tensor | None] = [None] * len(arith.originals)
        for j, gj in zip(arith.grad_idx, g[4:], strict=True):
            g_orig[j] = gj
        needs = ctx.needs_input_grad
        return (
            None,
            None,
            None,
            g_t if needs[3] else None,
            g_h if needs[4] else None,
            g_y if needs[5] else None,
            g_f0 if needs[6] else None,
            *g_orig,
        )
