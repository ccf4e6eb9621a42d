"""Independent samples: a batch of ODE solves, each sample with its own step sizes.

``physid.odeint(..., batch="independent")`` treats the leading dimension of ``y0`` as a batch of
``B`` independent systems. Every sample gets its own initial step (Hairer's guess on its own
RMS norm), its own error ratio, its own controller (a fresh instance of the solve's controller
per sample) and so its own accept/reject decisions and step sizes, its own step count and its own
failure. All samples advance together in one loop: each iteration evaluates ``func`` once per
stage on the whole batch, every running sample attempts one step of its own size, and the
samples that accepted move on while the others stay where they are (``torch.where`` on the
accept mask). A sample that reaches the final output time stops: from then on it is stepped with
``h = 0`` (its stages are evaluated at its final state, their results discarded) until the last
sample finishes. The design follows torchode (Lienen & Günnemann 2022, *torchode: A Parallel ODE
Solver for PyTorch*), which made per-sample step control the default of a batched solver.

Each sample takes exactly the decisions it would take solved alone with the shared loop
(:mod:`physid.gradients._loop`): the decisions are made on the host, in Python floats, by the
same controller code, one sample at a time, from the per-sample error ratios that one transfer per
iteration brings over. States agree with the shared loop's to round-off (the batched stage sums
and norms round differently), the steps exactly as long as no ratio lies within round-off of 1.

Output times are shared (``t`` is 1-D); every sample fills them from its own steps, through its
own dense output. ``func`` receives ``y`` of shape ``(B, *shape)`` and ``t`` of shape ``(B,)``,
each sample's own time: a time-dependent ``func`` broadcasts it (``t[:, None]``).

Two arithmetics, as in the shared loop: :class:`FreeBatchArithmetic` (times and step sizes in
numpy float64 arrays, stages in a preallocated ``(s, B, n)`` buffer, no graph; the forward pass of
``aca``, ``adjoint`` and ``seminorm`` and the adjoint's backward solve) and
:class:`GraphBatchArithmetic` (times and step sizes ``(B,)`` tensors in the autograd graph;
``naive``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from physid.controllers.base import AbstractController, Scalar
from physid.controllers.initial_step import initial_step
from physid.controllers.norms import AbstractNorm, BlockNorm, RMSNorm
from physid.controllers.pi import IController, PIController
from physid.errors import ConfigError, SolverError, SolverStatus
from physid.gradients._loop import _EPS, Tolerances, _fail
from physid.gradients.base import Problem, captured_leaves
from physid.solvers.rk import Func, StepperBase, check_derivative
from physid.solvers.tableau import ButcherTableau
from physid.stats import SolveStats

__all__ = [
    "SampleCount",
    "SampleTrace",
    "row_norm",
    "BatchRKStepper",
    "BatchGraphStepper",
    "BatchArithmetic",
    "FreeBatchArithmetic",
    "GraphBatchArithmetic",
    "integrate_per_sample",
    "sample_tolerances",
    "forward_solve_per_sample",
    "probe_per_sample",
    "record_backward",
    "SUPPORTED",
]

SUPPORTED = ("naive", "adjoint", "seminorm", "aca")
"""The gradient methods that solve with ``batch="independent"`` (and any ``AdjointMethod``)."""


@dataclass
class SampleCount:
    """Evaluations and steps of a per-sample solve.

    Attributes:
        calls: batched evaluations of ``func`` (each one evaluates every sample).
        nfe: ``(B,)`` evaluations each sample's own steps needed.
        accepted, rejected: ``(B,)`` steps of each sample.
    """

    calls: int
    nfe: np.ndarray
    accepted: np.ndarray
    rejected: np.ndarray

    @classmethod
    def zeros(cls, batch: int) -> SampleCount:
        z = np.zeros(batch, dtype=np.int64)
        return cls(0, z.copy(), z.copy(), z.copy())


@dataclass
class SampleTrace:
    """The iterations of a graph-free per-sample solve in which some sample accepted a step.

    For recorded iteration ``j``: ``ts[j]`` and ``hs[j]`` ``(B,)`` are every sample's time and
    tried step size (0 for a finished sample), ``ys[j]`` ``(B, n)`` the states the step started
    from, ``accepted[j]`` ``(B,)`` which samples accepted, ``clipped[j]`` which tried a step
    shortened to end at the final time. ``outputs[j] = (ks, bs, thetas)`` lists the output times
    ``ks`` that sample ``bs`` passed in this step, at step fractions ``thetas`` (``1.0``: the step's
    end state).
    """

    ts: list[np.ndarray] = field(default_factory=list)
    hs: list[np.ndarray] = field(default_factory=list)
    ys: list[Tensor] = field(default_factory=list)
    accepted: list[np.ndarray] = field(default_factory=list)
    clipped: list[np.ndarray] = field(default_factory=list)
    outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def row_norm(norm: AbstractNorm, x: Tensor) -> Tensor:
    """``norm`` applied to every row of ``x`` ``(B, m)`` -> ``(B,)``.

    :class:`RMSNorm` and :class:`BlockNorm` (so also ``SemiNorm``) are evaluated row-wise in one
    reduction; any other norm through ``torch.vmap``.
    """
    cls = type(norm)
    if isinstance(norm, RMSNorm) and cls.__call__ is RMSNorm.__call__:
        return torch.linalg.vector_norm(x, dim=1) / math.sqrt(max(x.shape[1], 1))
    if isinstance(norm, BlockNorm) and cls.__call__ is BlockNorm.__call__:
        parts = [
            torch.linalg.vector_norm(x[:, a:b], dim=1) / math.sqrt(b - a) for a, b in norm.bounds
        ]
        if not parts:
            return x.new_zeros(x.shape[0])
        return parts[0] if len(parts) == 1 else torch.stack(parts, 1).amax(1)
    return torch.vmap(norm)(x)


class _BatchStepperBase(StepperBase):
    """What both batched steppers share: ``B`` samples of ``n`` channels each."""

    def __init__(self, tableau: ButcherTableau, y0: Tensor, time_dtype: torch.dtype):
        super().__init__(tableau, y0, time_dtype)
        self.batch = y0.shape[0]
        self.n = y0[0].numel() if self.batch else 0
        self.c_np = np.asarray(tableau.c, dtype=np.float64)

    def f(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        """One batched evaluation on flat rows ``(B, n)``; ``t`` is ``(B,)``."""
        return func(self.time(t), y.view(self.shape)).reshape(self.batch, self.n)

    def f_checked(self, func: Func, t: Scalar, y: Tensor) -> Tensor:
        out = check_derivative(func(self.time(t), y.view(self.shape)), self.shape)
        return out.reshape(self.batch, self.n)


class BatchRKStepper(_BatchStepperBase):
    """Graph-free batched RK step: stages in an ``(s, B, n)`` buffer, step sizes per sample."""

    def __init__(self, tableau: ButcherTableau, y0: Tensor, time_dtype: torch.dtype):
        super().__init__(tableau, y0, time_dtype)
        self.K = torch.empty((self.s, self.batch, self.n), dtype=y0.dtype, device=y0.device)
        K2 = self.K.view(self.s, self.batch * self.n)
        # views of the buffer, made once: the rows written by each stage and the stages before it
        self._rows = list(self.K.unbind(0))
        self._before = [K2[:i].T for i in range(self.s + 1)]

    def stage_times(self, t: np.ndarray, h: np.ndarray) -> Tensor:  # type: ignore[override]
        """``(s, B)`` stage times ``t + c_i h`` (float64 arithmetic, then t's dtype)."""
        ts = t[None, :] + self.c_np[:, None] * h[None, :]
        return torch.from_numpy(ts).to(dtype=self.time_dtype, device=self.device)

    def step(
        self, func: Func, t: np.ndarray, h: np.ndarray, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One step of every sample, sample ``b`` from ``(t[b], y[b])`` with size ``h[b]``.

        Returns:
            ``(y1, err, f1)`` as :meth:`physid.solvers.rk.RKStepper.step`, rows per sample.
        """
        rows, before = self._rows, self._before
        B, n, shape = self.batch, self.n, self.shape
        if f0.data_ptr() != rows[0].data_ptr():
            rows[0].copy_(f0)
        ts = self.stage_times(t, h).unbind(0)
        hcol = torch.from_numpy(h).to(dtype=y.dtype, device=y.device).unsqueeze(1)
        yi = y
        for i in range(1, self.s):
            yi = torch.addcmul(y, hcol, torch.mv(before[i], self.a_rows[i]).view(B, n))
            rows[i].copy_(func(ts[i], yi.view(shape)).reshape(B, n))
        if self.fsal:
            y1, f1 = yi, rows[self.s - 1]
        else:
            y1 = torch.addcmul(y, hcol, torch.mv(before[self.s], self.b).view(B, n))
            f1 = None
        err = torch.mv(before[self.s], self.b_err).view(B, n) if self.b_err is not None else None
        return y1, err, f1

    def dense(self, y: Tensor, h: np.ndarray, theta: np.ndarray, bs: np.ndarray) -> Tensor:
        """States ``(m, n)`` of samples ``bs`` at ``t + theta h`` inside the step just taken."""
        W = self.dense_weights(theta)  # (m, s)
        idx = torch.from_numpy(bs).to(self.device)
        Kb = self.K.index_select(1, idx).transpose(0, 1)  # (m, s, n)
        hb = torch.from_numpy(h[bs]).to(dtype=y.dtype, device=y.device).unsqueeze(1)
        return torch.addcmul(y.index_select(0, idx), hb, torch.bmm(W.unsqueeze(1), Kb).squeeze(1))


class BatchGraphStepper(_BatchStepperBase):
    """Batched RK step in the autograd graph; times and step sizes ``(B,)`` tensors or arrays."""

    def _combine(self, ks: list[Tensor], coef: Tensor) -> Tensor:
        return torch.stack(ks, -1) @ coef[: len(ks)]

    def stage_times_t(self, t: Tensor | np.ndarray, h: Tensor | np.ndarray) -> list[Tensor]:
        """The ``s`` stage times ``(B,)``; in the graph when ``t`` or ``h`` is a tensor."""
        if isinstance(t, Tensor) or isinstance(h, Tensor):
            return [t + ci * h for ci in self.c]  # type: ignore[misc]
        ts = t[None, :] + self.c_np[:, None] * h[None, :]
        return list(torch.from_numpy(ts).to(dtype=self.time_dtype, device=self.device).unbind(0))

    def _h_rows(self, h: Tensor | np.ndarray, y: Tensor) -> Tensor:
        if isinstance(h, Tensor):
            return h.to(y.dtype)[:, None]
        return torch.from_numpy(h).to(dtype=y.dtype, device=y.device)[:, None]

    def stages(
        self,
        func: Func,
        t: Tensor | np.ndarray,
        h: Tensor | np.ndarray,
        y: Tensor,
        f0: Tensor | None,
        need_last: bool = True,
    ) -> tuple[Tensor, list[Tensor]]:
        """The stages of one step of every sample (as :meth:`GraphRKStepper.stages`).

        Returns:
            ``(y1, ks)``: ``(B, n)`` and the ``(B, n)`` stage derivatives evaluated.
        """
        ts = self.stage_times_t(t, h)
        hr = self._h_rows(h, y)
        ks = [f0 if f0 is not None else self.f(func, ts[0], y)]
        yi = y
        for i in range(1, self.s):
            yi = y + hr * self._combine(ks, self.a_rows[i])
            if i == self.s - 1 and self.fsal and not need_last:
                break
            ks.append(self.f(func, ts[i], yi))
        y1 = yi if self.fsal else y + hr * self._combine(ks, self.b)
        return y1, ks

    def step(
        self, func: Func, t: Tensor, h: Tensor, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None, list[Tensor]]:
        """As :meth:`BatchRKStepper.step`, in the graph; also returns the stages."""
        y1, ks = self.stages(func, t, h, y, f0)
        err = self._combine(ks, self.b_err) if self.b_err is not None else None
        f1 = ks[-1] if self.fsal else None
        return y1, err, f1, ks

    def dense(
        self,
        y: Tensor,
        h: Tensor | np.ndarray,
        ks: list[Tensor],
        theta: Tensor | np.ndarray,
        bs: np.ndarray,
    ) -> Tensor:
        """States ``(m, n)`` of samples ``bs`` at step fractions ``theta`` ``(m,)``."""
        W = self.dense_weights(theta)  # (m, s)
        idx = torch.from_numpy(bs).to(self.device)
        Kb = torch.stack(ks, 1).index_select(0, idx)  # (m, s, n)
        hb = self._h_rows(h, y).index_select(0, idx)
        return y.index_select(0, idx) + hb * torch.bmm(W.unsqueeze(1).to(Kb.dtype), Kb).squeeze(1)


S = TypeVar("S", np.ndarray, Tensor)
"""Per-sample times and step sizes: numpy float64 arrays, or ``(B,)`` tensors in the graph."""


class BatchArithmetic(ABC, Generic[S]):
    """How the per-sample loop computes with times and step sizes, and takes a step.

    As in the shared loop, the loop decides on float64 host mirrors (numpy arrays) of every
    sample's time and step size and hands the arithmetic's own values back to it.

    Attributes:
        stepper: the batched stepper.
        times_f: the output times, float64 ``(T,)``.
    """

    stepper: _BatchStepperBase
    times_f: np.ndarray
    in_graph: bool = False
    """Whether times, step sizes and steps are recorded in the autograd graph."""

    @abstractmethod
    def start(self) -> S:
        """Every sample at ``times[0]``."""

    @abstractmethod
    def time_arg(self, t: S) -> Tensor:
        """The ``(B,)`` time tensor ``func`` receives."""

    @abstractmethod
    def constant(self, h: np.ndarray) -> S:
        """Step sizes given as numbers."""

    @abstractmethod
    def initial(self, h0: Tensor, direction: float) -> S:
        """Step sizes from Hairer's guesses ``h0`` ``(B,)`` in ``direction``."""

    @abstractmethod
    def value(self, x: S) -> np.ndarray:
        """The float64 host mirror."""

    @abstractmethod
    def clip(self, t: S, h: S, clipped: np.ndarray, running: np.ndarray) -> S:
        """The step each sample tries: to the final time where ``clipped``, 0 where not running."""

    @abstractmethod
    def step(
        self, func: Func, t: S, h: S, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(y1, err, f1)`` of one step of every sample."""

    @abstractmethod
    def ratio(self, rms: Tensor, h: S) -> tuple[Tensor | None, np.ndarray]:
        """Error ratios ``rms * |h|``: as this arithmetic needs them, and on the host."""

    def bind(self, controllers: Sequence[AbstractController]) -> None:
        """Take the (reset) controllers of the samples, one per sample."""
        self.controllers = list(controllers)

    @abstractmethod
    def decide(
        self, ratio: Tensor | None, r: np.ndarray, running: np.ndarray, nonfinite: np.ndarray
    ) -> tuple[np.ndarray, S]:
        """Every running sample's controller's decision: ``(accept (B,), factor)``."""

    @abstractmethod
    def advance(self, t: S, h: S, clipped: np.ndarray, accept: np.ndarray) -> S:
        """Times after the step: moved where ``accept`` ``(B,)``, to the final time where
        clipped."""

    @abstractmethod
    def dense(self, y: Tensor, t: S, h: S, ks: np.ndarray, bs: np.ndarray) -> Tensor:
        """States ``(m, n)`` of samples ``bs`` at output times ``ks``, inside the step taken."""

    @abstractmethod
    def fsal(self, f1: Tensor | None, f0: Tensor, rows: np.ndarray) -> Tensor:
        """The next first stages: an FSAL step's last where ``rows``, ``f0`` elsewhere."""

    @abstractmethod
    def scale(self, h_try: S, factor: S, h: S, running: np.ndarray) -> S:
        """``h_try * factor`` for the running samples, ``h`` for the others."""


def _pi_key(c: AbstractController) -> tuple[float, ...]:
    return tuple(
        float(getattr(c, name)) for name in ("safety", "min_factor", "max_factor", "beta1", "beta2")
    )


def _mask(rows: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(rows).to(like.device)


class FreeBatchArithmetic(BatchArithmetic[np.ndarray]):
    """Float64 numpy times and step sizes over the graph-free :class:`BatchRKStepper`.

    The decisions of the built-in controllers (:class:`~physid.controllers.IController`,
    :class:`~physid.controllers.PIController`, exactly those classes) are evaluated for every
    sample at once in numpy, with the formula of :meth:`PIController.decide`; any other
    controller decides sample by sample.

    Args:
        stepper: the stepper.
        times: the output times.
    """

    stepper: BatchRKStepper

    def __init__(self, stepper: BatchRKStepper, times: Sequence[float] | np.ndarray):
        self.stepper = stepper
        self.times_f = np.asarray(times, dtype=np.float64)
        self._pi: PIController | None = None
        self._prev = np.ones(stepper.batch)

    def start(self) -> np.ndarray:
        return np.full(self.stepper.batch, self.times_f[0])

    def time_arg(self, t: np.ndarray) -> Tensor:
        st = self.stepper
        return torch.from_numpy(t).to(dtype=st.time_dtype, device=st.device)

    def constant(self, h: np.ndarray) -> np.ndarray:
        return np.asarray(h, dtype=np.float64)

    def initial(self, h0: Tensor, direction: float) -> np.ndarray:
        return direction * h0.detach().cpu().numpy().astype(np.float64)

    def value(self, x: np.ndarray) -> np.ndarray:
        return x

    def clip(self, t: np.ndarray, h: np.ndarray, clipped: np.ndarray, running: np.ndarray):  # type: ignore[no-untyped-def]
        return np.where(running, np.where(clipped, self.times_f[-1] - t, h), 0.0)

    def step(
        self, func: Func, t: np.ndarray, h: np.ndarray, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.stepper.step(func, t, h, y, f0)

    def ratio(self, rms: Tensor, h: np.ndarray) -> tuple[Tensor | None, np.ndarray]:
        return None, rms.cpu().numpy().astype(np.float64) * np.abs(h)

    def bind(self, controllers: Sequence[AbstractController]) -> None:
        super().bind(controllers)
        first = controllers[0] if controllers else None
        vectorise = (
            isinstance(first, PIController)
            and type(first) in (PIController, IController)
            and all(type(c) is type(first) and _pi_key(c) == _pi_key(first) for c in controllers)
        )
        self._pi = first if vectorise else None  # type: ignore[assignment]
        self._prev = np.ones(len(controllers))

    def decide(
        self, ratio: Tensor | None, r: np.ndarray, running: np.ndarray, nonfinite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pi = self._pi
        if pi is not None:
            return self._decide_pi(pi, r, running, nonfinite)
        accept = np.zeros(len(r), dtype=bool)
        factor = np.ones(len(r))
        for b in np.flatnonzero(running).tolist():
            ctrl = self.controllers[b]
            if nonfinite[b]:  # reject and shrink before it can become a failure
                factor[b] = ctrl.min_factor
                continue
            ok, fac = ctrl.decide(float(r[b]))
            accept[b] = ok
            factor[b] = float(fac)
        return accept, factor

    def _decide_pi(
        self, pi: PIController, r: np.ndarray, running: np.ndarray, nonfinite: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # PIController.decide for every sample at once (the samples' controllers are equal);
        # the powers with Python's own ** (numpy's differs in the last bit now and then), so
        # that every factor is bitwise the one the controller would give
        ok = running & ~nonfinite
        b1, b2 = -pi.beta1, pi.beta2
        factor = pi.safety * np.array([x**b1 if x > 0.0 else math.inf for x in r.tolist()])
        if b2:
            factor = factor * np.array([x**b2 for x in self._prev.tolist()])
        factor = np.minimum(np.maximum(factor, pi.min_factor), pi.max_factor)
        factor = np.where(r == 0.0, pi.max_factor, factor)
        accept = ok & (r <= 1.0)
        factor = np.where(accept, factor, np.minimum(factor, 1.0))
        self._prev = np.where(accept, np.maximum(r, 1e-4), self._prev)
        factor = np.where(nonfinite, pi.min_factor, factor)
        return accept, np.where(running, factor, 1.0)

    def advance(
        self, t: np.ndarray, h: np.ndarray, clipped: np.ndarray, accept: np.ndarray
    ) -> np.ndarray:
        return np.where(accept, np.where(clipped, self.times_f[-1], t + h), t)

    def dense(self, y: Tensor, t: np.ndarray, h: np.ndarray, ks: np.ndarray, bs: np.ndarray):  # type: ignore[no-untyped-def]
        theta = (self.times_f[ks] - t[bs]) / h[bs]
        return self.stepper.dense(y, h, theta, bs)

    def fsal(self, f1: Tensor | None, f0: Tensor, rows: np.ndarray) -> Tensor:
        if f1 is None:
            raise TypeError("fsal() needs the last stage of an FSAL step.")
        K0 = self.stepper.K[0]
        if rows.all():
            K0.copy_(f1)
        else:
            idx = torch.from_numpy(np.flatnonzero(rows)).to(K0.device)
            K0.index_copy_(0, idx, f1.index_select(0, idx))
        return K0

    def scale(
        self, h_try: np.ndarray, factor: np.ndarray, h: np.ndarray, running: np.ndarray
    ) -> np.ndarray:
        return np.where(running, h_try * factor, h)


class GraphBatchArithmetic(BatchArithmetic[Tensor]):
    """Times and step sizes as ``(B,)`` tensors in the autograd graph (``naive``).

    The step-size arithmetic of every sample (Hairer's guess, the controller's factors, the
    clipping to the final time) stays in the graph, as in the shared ``naive``; every sample's
    controller decides on its own 0-d ratio tensor.

    Args:
        stepper: the stepper.
        times: the output times ``(T,)``, possibly requiring grad.
    """

    stepper: BatchGraphStepper
    in_graph = True

    def __init__(self, stepper: BatchGraphStepper, times: Tensor):
        self.stepper = stepper
        self.times = times
        self.times_f = times.detach().cpu().numpy().astype(np.float64)
        # step sizes in the wider of the state's and the times' dtypes
        self.h_dtype = torch.promote_types(stepper.b.dtype, times.dtype)
        self._ks: list[Tensor] = []

    def start(self) -> Tensor:
        return self.times[0].expand(self.stepper.batch)

    def time_arg(self, t: Tensor) -> Tensor:
        return t

    def constant(self, h: np.ndarray) -> Tensor:
        return torch.as_tensor(h, dtype=self.h_dtype, device=self.stepper.device)

    def initial(self, h0: Tensor, direction: float) -> Tensor:
        return (direction * h0).to(self.h_dtype)

    def value(self, x: Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().astype(np.float64)

    def clip(self, t: Tensor, h: Tensor, clipped: np.ndarray, running: np.ndarray) -> Tensor:
        to_end = self.times[-1] - t
        h_try = torch.where(_mask(clipped, h), to_end.to(h.dtype), h)
        return torch.where(_mask(running, h), h_try, torch.zeros_like(h_try))

    def step(
        self, func: Func, t: Tensor, h: Tensor, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        y1, err, f1, self._ks = self.stepper.step(func, t, h, y, f0)
        return y1, err, f1

    def ratio(self, rms: Tensor, h: Tensor) -> tuple[Tensor | None, np.ndarray]:
        ratio = rms * torch.abs(h)
        return ratio, ratio.detach().cpu().numpy().astype(np.float64)

    def decide(
        self, ratio: Tensor | None, r: np.ndarray, running: np.ndarray, nonfinite: np.ndarray
    ) -> tuple[np.ndarray, Tensor]:
        if ratio is None:
            raise TypeError("the in-graph arithmetic decides on the ratio tensor.")
        accept = np.zeros(len(r), dtype=bool)
        factors: list[Tensor] = []
        one = ratio.new_ones(())
        for b in range(len(r)):
            if not running[b]:
                factors.append(one)
                continue
            ctrl = self.controllers[b]
            if nonfinite[b]:
                factors.append(one * ctrl.min_factor)
                continue
            ok, fac = ctrl.decide(ratio[b])
            accept[b] = ok
            factors.append(fac if isinstance(fac, Tensor) else one * fac)
        return accept, torch.stack(factors)

    def advance(self, t: Tensor, h: Tensor, clipped: np.ndarray, accept: np.ndarray) -> Tensor:
        moved = torch.where(_mask(clipped, t), self.times[-1].expand_as(t), t + h)
        return torch.where(_mask(accept, t), moved, t)

    def dense(self, y: Tensor, t: Tensor, h: Tensor, ks: np.ndarray, bs: np.ndarray) -> Tensor:
        idx = torch.from_numpy(bs).to(t.device)
        k_idx = torch.from_numpy(ks).to(t.device)
        theta = (self.times.index_select(0, k_idx) - t.index_select(0, idx)) / h.index_select(
            0, idx
        )
        return self.stepper.dense(y, h, self._ks, theta, bs)

    def fsal(self, f1: Tensor | None, f0: Tensor, rows: np.ndarray) -> Tensor:
        if f1 is None:
            raise TypeError("fsal() needs the last stage of an FSAL step.")
        return torch.where(_mask(rows, f1).unsqueeze(1), f1, f0)

    def scale(self, h_try: Tensor, factor: Tensor, h: Tensor, running: np.ndarray) -> Tensor:
        return torch.where(_mask(running, h), h_try * factor.to(h_try.dtype), h)


def _sample_fail(
    b: int, status: SolverStatus, t: float, h: float, tol: Tolerances, detail: str
) -> SolverError:
    err = _fail(status, t, h, tol, detail)
    return SolverError(status, f"sample {b} of the batch: {err}", t=t, step_size=h, sample=b)


def _first(rows: np.ndarray) -> int:
    return int(np.flatnonzero(rows)[0])


def integrate_per_sample(
    func: Func,
    y0: Tensor,
    arith: BatchArithmetic[S],
    controllers: Sequence[AbstractController],
    norm: AbstractNorm,
    tol: Tolerances,
    count: SampleCount,
    trace: SampleTrace | None = None,
    f0: Tensor | None = None,
    first_step: np.ndarray | None = None,
) -> tuple[Tensor, np.ndarray]:
    """Integrate every sample of ``y' = func(t, y)`` through every output time, each on its own.

    The per-sample counterpart of :func:`physid.gradients._loop.integrate`: sample ``b`` makes
    the decisions that loop makes for it alone (same clipping, max-steps, non-finite and underflow
    rules), with ``controllers[b]``.

    Args:
        func: the dynamics on the user's shape ``(B, *shape)``, called with ``t`` ``(B,)``.
        y0: flat initial states ``(B, n)``.
        arith: the arithmetic; holds the stepper and the output times.
        controllers: one fresh controller per sample.
        norm: the error norm of one sample's channels (applied row by row).
        count: filled in place.
        trace: filled with the iterations in which some sample accepted a step.
        f0: ``func(times[0], y0)`` (flat rows) when the caller has it; counted all the same.
        first_step: per-sample first step sizes (overrides ``tol.first_step``).

    Returns:
        ``(outputs, h_next)``: the states ``(T, B, n)`` at the output times (``outputs[0]`` is
        ``y0``) and every sample's proposed next step size ``(B,)``.

    Raises:
        ConfigError: ``func`` returned something other than a tensor of ``y``'s shape.
        SolverError: a sample failed (its index in ``.sample`` and the message).
    """
    stepper = arith.stepper
    times = arith.times_f
    n_out = len(times)
    B = y0.shape[0]
    if n_out == 1:
        return y0.unsqueeze(0), np.full(B, float(tol.first_step or 0.0))
    t_end_f = float(times[-1])
    direction = 1.0 if t_end_f > times[0] else -1.0
    tn = direction * times  # increasing
    eps_t = max(float(torch.finfo(stepper.time_dtype).eps), _EPS)
    dev = y0.device

    t = arith.start()
    tf = np.full(B, float(times[0]))
    y = y0
    if f0 is None:
        f0 = stepper.f_checked(func, arith.time_arg(t), y)
    count.calls += 1
    count.nfe += 1
    adaptive = controllers[0].adaptive if controllers else True
    bad = ~torch.isfinite(f0).all(1).cpu().numpy()
    if bad.any():
        raise _sample_fail(
            _first(bad),
            SolverStatus.NON_FINITE,
            float(times[0]),
            0.0,
            tol,
            "the initial derivative is not finite",
        )
    for ctrl in controllers:
        ctrl.reset(stepper.tableau.error_order)
    arith.bind(controllers)

    h: S
    if not adaptive and tol.step_size is not None:
        h = arith.constant(np.full(B, direction * abs(float(tol.step_size))))
    elif first_step is not None:
        h = arith.constant(direction * np.abs(np.asarray(first_step, dtype=np.float64)))
    elif tol.first_step is not None:
        h = arith.constant(np.full(B, direction * abs(tol.first_step)))
    else:

        def flat_f(tt: Tensor, yy: Tensor) -> Tensor:
            return stepper.f(func, tt, yy)

        t0: Tensor | float = t if isinstance(t, Tensor) else float(times[0])
        # Hairer's first step per sample: each row its own norms
        h0 = initial_step(
            flat_f,
            t0,
            y,
            f0,
            direction,
            stepper.tableau.order,
            tol.rtol,
            tol.atol,
            lambda x: row_norm(norm, x),
        )
        count.calls += 1
        count.nfe += 1
        h = arith.initial(h0, direction)
    hf = arith.value(h)
    if not np.isfinite(hf).all():
        b = _first(~np.isfinite(hf))
        raise _sample_fail(
            b,
            SolverStatus.NON_FINITE_STEP_SIZE,
            float(times[0]),
            float(hf[b]),
            tol,
            "the initial step size is not finite (with atol=0 a zero component of y0 makes its "
            "scaled norm 0/0)",
        )

    abs_y = torch.abs(y) if adaptive else y
    attempts = np.zeros(B, dtype=np.int64)
    k = np.ones(B, dtype=np.int64)  # each sample's next output index
    running = np.ones(B, dtype=bool)
    h_next = np.zeros(B)
    chunks: list[tuple[np.ndarray, np.ndarray, Tensor]] = [
        (np.zeros(B, dtype=np.int64), np.arange(B), y0)
    ]
    per_step = stepper.nfe_per_step
    no_nonfinite = np.zeros(B, dtype=bool)
    while True:
        all_running = bool(running.all())
        clipped = (direction * (tf + hf - t_end_f) >= -4 * _EPS * abs(t_end_f)) & running
        h_try = arith.clip(t, h, clipped, running)
        h_try_f = arith.value(h_try)
        over = running & (attempts >= tol.max_steps)
        if over.any():
            b = _first(over)
            raise _sample_fail(
                b,
                SolverStatus.MAX_STEPS_REACHED,
                float(tf[b]),
                float(hf[b]),
                tol,
                f"{tol.max_steps} steps taken",
            )
        attempts += running
        y1, err, f1 = arith.step(func, t, h_try, y, f0)
        count.calls += per_step
        count.nfe += per_step * running

        nonfinite = no_nonfinite
        factor: S
        if err is None:
            accept = running.copy()
            factor = arith.constant(np.ones(B))
            abs_y1 = y1
        else:
            abs_y1 = torch.abs(y1)
            scale = tol.atol + tol.rtol * torch.maximum(abs_y, abs_y1)
            ratio, r = arith.ratio(row_norm(norm, err / scale), h_try)
            finite = np.isfinite(r)
            if not finite.all():
                nonfinite = running & ~finite
                if arith.in_graph:
                    # A NaN in one row of the batched step would reach every gradient (its zero
                    # cotangent times NaN partials): redo the step with those samples held
                    # (h = 0), off the graph the outputs use. The other rows come out the same.
                    h_held = arith.clip(t, h, clipped, running & finite)
                    y1, err_held, f1 = arith.step(func, t, h_held, y, f0)
                    count.calls += per_step
                    if err_held is None:
                        raise TypeError("an adaptive step lost its error estimate.")
                    abs_y1 = torch.abs(y1)
                    scale = tol.atol + tol.rtol * torch.maximum(abs_y, abs_y1)
                    ratio, _ = arith.ratio(row_norm(norm, err_held / scale), h_held)
            accept, factor = arith.decide(ratio, r, running, nonfinite)

        if accept.any():
            every = all_running and bool(accept.all())
            acc_mask = None if every else _mask(accept, y).unsqueeze(1)
            acc = np.flatnonzero(accept)
            t_new_f = np.where(clipped, t_end_f, tf + h_try_f)
            t_new = arith.advance(t, h_try, clipped, accept)
            k_new = k.copy()
            k_new[acc] = np.maximum(k[acc], np.searchsorted(tn, direction * t_new_f[acc], "right"))
            n_pass = k_new[acc] - k[acc]
            if n_pass.any():
                bs = np.repeat(acc, n_pass)
                ks = np.repeat(k[acc] - np.cumsum(n_pass) + n_pass, n_pass) + np.arange(len(bs))
                at_end = times[ks] == t_new_f[bs]
                if not at_end.all():
                    inner = ~at_end
                    chunks.append(
                        (ks[inner], bs[inner], arith.dense(y, t, h_try, ks[inner], bs[inner]))
                    )
                if at_end.any():
                    idx = torch.from_numpy(bs[at_end]).to(dev)
                    chunks.append((ks[at_end], bs[at_end], y1.index_select(0, idx)))
            if trace is not None:
                if n_pass.any():
                    with np.errstate(divide="ignore", invalid="ignore"):
                        thetas = np.where(at_end, 1.0, (times[ks] - tf[bs]) / h_try_f[bs])
                    trace.outputs.append((ks, bs, thetas))
                else:
                    empty = np.zeros(0, dtype=np.int64)
                    trace.outputs.append((empty, empty, np.zeros(0)))
                trace.ts.append(tf.copy())
                trace.hs.append(np.array(h_try_f, dtype=np.float64))
                trace.ys.append(y)
                trace.accepted.append(accept.copy())
                trace.clipped.append(clipped.copy())
            count.accepted += accept
            if acc_mask is None:
                y, abs_y = y1, abs_y1
            else:
                y = torch.where(acc_mask, y1, y)
                abs_y = torch.where(acc_mask, abs_y1, abs_y) if adaptive else y
            t = t_new
            tf = np.where(accept, t_new_f, tf)
            k = k_new
            finished = accept & (k >= n_out)
            if finished.any():
                fac_f = arith.value(factor)
                h_next = np.where(finished, np.where(clipped, hf, hf * fac_f), h_next)
                running = running & ~finished
                if not running.any():
                    break
            cont = accept & running
            if cont.any():
                if stepper.fsal:
                    f0 = arith.fsal(f1, f0, cont)
                else:
                    f_new = stepper.f(func, arith.time_arg(t), y)
                    count.calls += 1
                    count.nfe += cont
                    f0 = torch.where(_mask(cont, f_new).unsqueeze(1), f_new, f0)
        count.rejected += running & ~accept
        h = arith.scale(h_try, factor, h, running)
        hf = arith.value(h)
        if not np.isfinite(hf).all():
            b = _first(running & ~np.isfinite(hf))
            fac_b = float(arith.value(factor)[b])
            raise _sample_fail(
                b,
                SolverStatus.NON_FINITE_STEP_SIZE,
                float(tf[b]),
                float(hf[b]),
                tol,
                f"the controller proposed a non-finite step size (factor {fac_b:.3g})",
            )
        tiny = (np.abs(hf) <= 4 * eps_t * np.maximum(np.abs(tf), 1e-300)) | (hf == 0.0)
        if (tiny & running).any():
            b = _first(tiny & running)
            status = SolverStatus.NON_FINITE if nonfinite[b] else SolverStatus.STEP_SIZE_UNDERFLOW
            detail = (
                "the error estimate stayed non-finite while the step shrank to nothing"
                if nonfinite[b]
                else f"the step size fell below the resolution of t ({stepper.time_dtype})"
            )
            raise _sample_fail(b, status, float(tf[b]), float(hf[b]), tol, detail)

    out = _assemble(chunks, n_out, B)
    if not adaptive:
        finite_out = torch.isfinite(out).all(2).cpu().numpy()  # (T, B)
        if not finite_out.all():
            k_bad, b_bad = np.argwhere(~finite_out)[0]  # the earliest output time, then sample
            raise _sample_fail(
                int(b_bad),
                SolverStatus.NON_FINITE,
                float(times[k_bad]),
                float(hf[b_bad]),
                tol,
                "the state became non-finite",
            )
    return out, h_next


def _assemble(chunks: list[tuple[np.ndarray, np.ndarray, Tensor]], n_out: int, B: int) -> Tensor:
    """The ``(T, B, n)`` outputs from the pieces ``(ks, bs, rows)`` the loop produced."""
    ks = np.concatenate([c[0] for c in chunks])
    bs = np.concatenate([c[1] for c in chunks])
    rows = torch.cat([c[2] for c in chunks], 0)
    pos = np.empty(n_out * B, dtype=np.int64)
    pos[ks * B + bs] = np.arange(len(ks))
    perm = torch.from_numpy(pos).to(rows.device)
    return rows.index_select(0, perm).view(n_out, B, -1)


def sample_tolerances(tol: Tolerances, batch: int, n: int) -> Tolerances:
    """``tol`` with tensor ``rtol``/``atol`` laid over the ``(B, n)`` rows of the batch.

    A tolerance may be a number, a one-element tensor, one value per channel of a sample
    (``n`` elements, e.g. of shape ``y0.shape[1:]``) or one per channel of the batch
    (``B * n`` elements, ``y0``'s shape).

    Raises:
        ConfigError: a tensor tolerance of another size.
    """

    def lay(name: str, x: float | Tensor) -> float | Tensor:
        if not isinstance(x, Tensor):
            return x
        if x.numel() == 1:
            return x.reshape(())
        if x.numel() == n:
            return x.reshape(n)
        if x.numel() == batch * n:
            return x.reshape(batch, n)
        raise ConfigError(
            f"{name} has {x.numel()} elements; with batch='independent' give one number, one per "
            f"channel of a sample ({n}) or one per channel of the batch ({batch * n})."
        )

    return replace(tol, rtol=lay("rtol", tol.rtol), atol=lay("atol", tol.atol))


def _record_forward(stats: SolveStats, count: SampleCount) -> None:
    stats.nfe_forward += count.calls
    stats.steps_accepted += int(count.accepted.sum())
    stats.steps_rejected += int(count.rejected.sum())
    per = stats.sample_counts(len(count.nfe))
    per.add("nfe_forward", count.nfe.tolist())
    per.add("steps_accepted", count.accepted.tolist())
    per.add("steps_rejected", count.rejected.tolist())


def record_backward(stats: SolveStats, count: SampleCount) -> None:
    """Add a backward pass's counts to ``stats`` (totals and per sample)."""
    stats.nfe_backward += count.calls
    stats.backward_steps_accepted += int(count.accepted.sum())
    stats.backward_steps_rejected += int(count.rejected.sum())
    per = stats.sample_counts(len(count.nfe))
    per.add("nfe_backward", count.nfe.tolist())
    per.add("backward_steps_accepted", count.accepted.tolist())
    per.add("backward_steps_rejected", count.rejected.tolist())


def forward_solve_per_sample(
    problem: Problem, *, graph: bool, trace: SampleTrace | None = None
) -> Tensor:
    """The forward solve of a ``batch="independent"`` problem; fills the forward counts.

    Args:
        graph: record the autograd graph of the whole loop (``naive``) or run graph-free.
        trace: filled with the iterations (``aca``).

    Returns:
        ``(T, B, *shape)``, the states at ``problem.t``.
    """
    y0 = problem.y0
    B = y0.shape[0]
    flat = y0.reshape(B, -1)
    tol = sample_tolerances(problem.tol, B, flat.shape[1])
    controllers = [problem.make_controller() for _ in range(B)]
    count = SampleCount.zeros(B)
    if graph:
        gstep = BatchGraphStepper(problem.tableau, y0, problem.time_dtype)
        outs, _ = integrate_per_sample(
            problem.func,
            flat,
            GraphBatchArithmetic(gstep, problem.t),
            controllers,
            RMSNorm(),
            tol,
            count,
        )
    else:
        fstep = BatchRKStepper(problem.tableau, y0, problem.time_dtype)
        f0 = problem.f0.reshape(B, -1) if problem.f0 is not None else None
        outs, _ = integrate_per_sample(
            problem.func,
            flat,
            FreeBatchArithmetic(fstep, problem.t.detach().cpu().numpy()),
            controllers,
            RMSNorm(),
            tol,
            count,
            trace,
            f0=f0,
        )
    _record_forward(problem.stats, count)
    return outs.view(outs.shape[0], *y0.shape)


def probe_per_sample(func: Func, y0: Tensor, t: Tensor) -> tuple[Tensor, list[Tensor]]:
    """:func:`physid.gradients.base.probe` for a batch: ``func`` sees ``t`` of shape ``(B,)``.

    Returns:
        ``(f0, leaves)``: the flat, detached derivatives ``(B, n)`` and the captured leaves.
    """
    t0 = torch.full((y0.shape[0],), float(t.detach()[0]), dtype=t.dtype, device=y0.device)
    with torch.enable_grad():
        out = check_derivative(func(t0, y0.detach()), y0.shape)
        leaves = captured_leaves(out)
    return out.detach().reshape(y0.shape[0], -1), leaves
