"""The explicit Runge-Kutta step and its dense output.

Two steppers share one tableau:

* :class:`RKStepper` is the lean one, used where no graph is recorded (the forward passes of
  ``adjoint``, ``seminorm`` and ``aca`` and the adjoint's backward solve). It keeps the stages in
  one preallocated ``(s, n)`` buffer and forms each stage input with a single fused
  ``addmv``; with FSAL the last stage is reused as the next step's first.
* :class:`GraphRKStepper` records an autograd graph. Time and step size may be tensors (``naive``
  differentiates through the step-size arithmetic) or Python floats (``aca`` replays an accepted
  step with its step size held constant).

States are flat ``(n,)`` tensors inside the steppers; ``func`` always sees the user's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from physid.errors import ConfigError
from physid.solvers.tableau import ButcherTableau

__all__ = ["Func", "StepperBase", "RKStepper", "GraphRKStepper", "check_derivative"]

Func = Callable[[Tensor, Tensor], Tensor]
Scalar = float | Tensor


def check_derivative(out: object, shape: torch.Size) -> Tensor:
    """``out`` if it is a tensor of exactly ``shape`` (what ``func`` must return).

    A derivative of another shape would otherwise broadcast silently into the stage buffer (a
    ``(1,)`` or 0-d output) or fail deep inside a step with a bare torch error.

    Raises:
        ConfigError: naming what ``func`` returned and the shape it must have.
    """
    if not isinstance(out, Tensor):
        raise ConfigError(
            f"func(t, y) must return a tensor of y's shape {tuple(shape)}, "
            f"got {type(out).__name__}."
        )
    if out.shape != shape:
        raise ConfigError(
            f"func(t, y) must return a tensor of y's shape {tuple(shape)}, "
            f"got shape {tuple(out.shape)}."
        )
    return out


class StepperBase:
    """What both steppers share: the tableau cast to the state's dtype, shapes, stage times."""

    def __init__(self, tableau: ButcherTableau, y0: Tensor, time_dtype: torch.dtype):
        self.tableau = tableau
        self.shape = y0.shape
        self.n = y0.numel()
        self.time_dtype = time_dtype
        self.device = y0.device
        ct = tableau.cast(y0.dtype, y0.device)
        self.a_rows = [ct.a[i, :i] for i in range(tableau.stages)]
        self.b = ct.b
        self.b_err = ct.b_err
        self.dense_matrix = ct.dense  # (s, d)
        self.c = tableau.c
        self.s = tableau.stages
        self.fsal = tableau.fsal

    @property
    def nfe_per_step(self) -> int:
        """Evaluations of ``func`` per step, its first stage not counted."""
        return self.s - 1

    def f(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        """One evaluation of ``func`` on a flat state; returns a flat derivative."""
        return func(self.time(t), y.view(self.shape)).reshape(-1)

    def f_checked(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        """As :meth:`f`, checking what ``func`` returns (:func:`check_derivative`)."""
        return check_derivative(func(self.time(t), y.view(self.shape)), self.shape).reshape(-1)

    def time(self, t: Scalar) -> Tensor:
        if isinstance(t, Tensor):
            return t
        return torch.tensor(t, dtype=self.time_dtype, device=self.device)

    def stage_times(self, t: Scalar, h: Scalar) -> Sequence[Tensor]:
        if isinstance(t, Tensor) or isinstance(h, Tensor):
            return [t + ci * h for ci in self.c]  # type: ignore[misc]
        ts = torch.tensor([t + ci * h for ci in self.c], dtype=self.time_dtype, device=self.device)
        return ts.unbind(0)

    def dense_weights(self, theta: np.ndarray | Tensor) -> Tensor:
        """Stage weights ``(m, s)`` of the dense output at step fractions ``theta`` ``(m,)``."""
        if isinstance(theta, Tensor):
            d = self.dense_matrix.shape[1]
            powers = torch.arange(1, d + 1, dtype=theta.dtype, device=theta.device)
            th = theta.to(self.dense_matrix.dtype).unsqueeze(-1) ** powers.to(self.b.dtype)
            return th @ self.dense_matrix.T
        w = self.tableau.dense_weights(theta)
        return torch.as_tensor(w, dtype=self.b.dtype, device=self.device)


class RKStepper(StepperBase):
    """Lean, graph-free RK step over a preallocated stage buffer."""

    def __init__(self, tableau: ButcherTableau, y0: Tensor, time_dtype: torch.dtype):
        super().__init__(tableau, y0, time_dtype)
        self.K = torch.empty((self.s, self.n), dtype=y0.dtype, device=y0.device)

    def step(
        self, func: Func, t: float, h: float, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One step from ``(t, y)`` with size ``h``; ``f0 = func(t, y)`` (flat).

        Returns:
            ``(y1, err, f1)``: the new state, the unscaled error estimate ``sum_i b_err_i k_i``
            (``None`` for fixed-step methods; multiply by ``h``) and ``func(t + h, y1)`` when the
            method is FSAL (else ``None``). The stages stay in ``self.K`` until the next step.
        """
        K = self.K
        if f0.data_ptr() != K[0].data_ptr():
            K[0].copy_(f0)
        ts = self.stage_times(t, h)
        yi = y
        for i in range(1, self.s):
            yi = torch.addmv(y, K[:i].T, self.a_rows[i], alpha=h)
            K[i].copy_(func(ts[i], yi.view(self.shape)).reshape(-1))
        if self.fsal:
            y1, f1 = yi, K[self.s - 1]
        else:
            y1, f1 = torch.addmv(y, K.T, self.b, alpha=h), None
        err = torch.mv(K.T, self.b_err) if self.b_err is not None else None
        return y1, err, f1

    def dense(self, y: Tensor, h: float, theta: np.ndarray) -> Tensor:
        """States ``(m, n)`` at ``t + theta*h`` inside the step just taken."""
        W = self.dense_weights(theta)
        return torch.addmm(y.expand(W.shape[0], self.n), W, self.K, alpha=h)

    def accept_fsal(self, f1: Tensor | None) -> Tensor | None:
        """The next step's ``f0`` when FSAL: moved into the buffer's first row, no evaluation."""
        if f1 is None:
            return None
        self.K[0].copy_(f1)
        return self.K[0]


class GraphRKStepper(StepperBase):
    """RK step that records an autograd graph; ``t`` and ``h`` may be tensors."""

    def _combine(self, y: Tensor, ks: list[Tensor], coef: Tensor, h: Scalar) -> Tensor:
        Kt = torch.stack(ks, 1)  # (n, i)
        if isinstance(h, Tensor):
            return y + h * torch.mv(Kt, coef[: len(ks)])
        return torch.addmv(y, Kt, coef[: len(ks)], alpha=h)

    def stages(
        self, func: Func, t: Scalar, h: Scalar, y: Tensor, f0: Tensor | None, need_last: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """Evaluate the stages of one step.

        Args:
            need_last: for an FSAL method, whether to evaluate the last stage
                ``func(t + h, y1)``; the step's result does not need it, the error estimate and
                the dense output do.

        Returns:
            ``(y1, ks)`` with ``ks`` the flat stage derivatives evaluated.
        """
        ts = self.stage_times(t, h)
        ks = [f0 if f0 is not None else func(ts[0], y.view(self.shape)).reshape(-1)]
        yi = y
        for i in range(1, self.s):
            yi = self._combine(y, ks, self.a_rows[i], h)
            if i == self.s - 1 and self.fsal and not need_last:
                break
            ks.append(func(ts[i], yi.view(self.shape)).reshape(-1))
        y1 = yi if self.fsal else self._combine(y, ks, self.b, h)
        return y1, ks

    def step(
        self, func: Func, t: Scalar, h: Scalar, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None, list[Tensor]]:
        """As :meth:`RKStepper.step`, in the graph; also returns the stages."""
        y1, ks = self.stages(func, t, h, y, f0)
        err = torch.mv(torch.stack(ks, 1), self.b_err) if self.b_err is not None else None
        f1 = ks[-1] if self.fsal else None
        return y1, err, f1, ks

    def dense(self, y: Tensor, h: Scalar, ks: list[Tensor], theta: np.ndarray | Tensor) -> Tensor:
        """States ``(m, n)`` at ``t + theta*h``; ``theta`` may be a tensor in the graph."""
        W = self.dense_weights(theta)  # needs every stage, the FSAL one included
        Km = torch.stack(ks, 0)
        if isinstance(h, Tensor):
            return y + h * (W @ Km)
        return torch.addmm(y.expand(W.shape[0], self.n), W, Km, alpha=h)
