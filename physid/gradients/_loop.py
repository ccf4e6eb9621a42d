"""The adaptive step loop, shared by every gradient method.

One loop serves two arithmetics, two implementations of :class:`Arithmetic`:
:class:`GraphFreeArithmetic` (time and step size are Python floats, stages in a preallocated
buffer; used by ``adjoint``, ``seminorm`` and ``aca``) and :class:`InGraphArithmetic` (time and
step size may be tensors; used by ``naive``, whose rejected trials and step-size arithmetic are
part of the autograd graph on purpose). The loop makes every decision on Python-float mirrors of
time and step size and hands the arithmetic's own values back to it untouched. The only host
synchronisation per step is the accept decision.

Output times strictly inside a step come from the solver's dense output; only the final time
shortens a step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

import numpy as np
import torch
from torch import Tensor

from physid.controllers.base import AbstractController, Scalar
from physid.controllers.initial_step import initial_step
from physid.controllers.norms import AbstractNorm
from physid.errors import SolverError, SolverStatus
from physid.solvers.rk import Func, GraphRKStepper, RKStepper, StepperBase

__all__ = [
    "Count",
    "Trace",
    "Tolerances",
    "Arithmetic",
    "GraphFreeArithmetic",
    "InGraphArithmetic",
    "integrate",
]

_EPS = float(np.finfo(np.float64).eps)


@dataclass
class Count:
    """Function evaluations and steps of one or more solves."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Tolerances:
    """What the loop needs besides the stepper: tolerances and limits."""

    rtol: float | Tensor
    atol: float | Tensor
    max_steps: int
    first_step: float | None
    step_size: float | None


@dataclass
class Trace:
    """The accepted steps of a graph-free solve, for ``aca``'s backward pass.

    ``ts[j]``, ``hs[j]`` and ``ys[j]`` (flat) are the start time, size and start state of accepted
    step ``j``; ``clipped[j]`` says the step was shortened to end exactly at the final time.
    ``outputs[j]`` lists ``(k, theta)`` for the output times in step ``j``: ``theta == 1.0``
    means the output is the step's end state.
    """

    ts: list[float] = field(default_factory=list)
    hs: list[float] = field(default_factory=list)
    ys: list[Tensor] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    outputs: list[list[tuple[int, float]]] = field(default_factory=list)


def _float(x: Scalar) -> float:
    """A Python float of a scalar (one host sync for a tensor)."""
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def _fail(status: SolverStatus, t: float, h: float, tol: Tolerances, detail: str) -> SolverError:
    hints = {
        SolverStatus.MAX_STEPS_REACHED: (
            f"increase max_steps (now {tol.max_steps}) or loosen rtol={tol.rtol}, atol={tol.atol}"
        ),
        SolverStatus.STEP_SIZE_UNDERFLOW: (
            "the solution may blow up there (a finite-time singularity) or the problem be stiff; "
            "stop before that time, loosen rtol/atol, use float64 times or check the dynamics"
        ),
        SolverStatus.NON_FINITE: "the dynamics produced NaN or inf; check the model and state",
        SolverStatus.NON_FINITE_STEP_SIZE: (
            "give atol > 0, check the scale of the state and of func (an error norm may overflow) "
            "and the controller, or pass first_step"
        ),
    }
    msg = f"ODE solve failed at t={t:.6g} with step size {h:.3g}: {detail}; {hints[status]}."
    return SolverError(status, msg, t=t, step_size=h)


S = TypeVar("S", bound=Scalar)
"""The type of time and step size in one arithmetic: ``float``, or ``float | Tensor``."""


class Arithmetic(ABC, Generic[S]):
    """How the loop computes with time and step size, and takes a step.

    The loop keeps Python-float mirrors of time and step size for its decisions and never
    computes with an ``S`` itself: it passes them back to these methods.

    Attributes:
        stepper: the Runge-Kutta stepper.
        times_f: the output times as Python floats.
    """

    stepper: StepperBase
    times_f: list[float]

    @abstractmethod
    def start(self) -> S:
        """The initial time, ``times[0]``."""

    @abstractmethod
    def constant(self, h: float) -> S:
        """A step size given as a number (``first_step``, ``step_size``)."""

    @abstractmethod
    def initial(self, h0: Tensor, direction: float) -> S:
        """The step size from Hairer's guess ``h0`` (positive, 0-d) in ``direction``."""

    @abstractmethod
    def value(self, x: S) -> float:
        """The Python float of a time or step size."""

    @abstractmethod
    def magnitude(self, h: S) -> Scalar:
        """``|h|``."""

    @abstractmethod
    def to_end(self, t: S) -> S:
        """The step from ``t`` to the final output time."""

    @abstractmethod
    def step(
        self, func: Func, t: S, h: S, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(y1, err, f1)`` of one step, as :meth:`~physid.solvers.rk.RKStepper.step`."""

    @abstractmethod
    def decide(self, controller: AbstractController, ratio: Tensor) -> tuple[bool, Scalar]:
        """The controller's decision on the error ratio (0-d), in this arithmetic."""

    @abstractmethod
    def advance(self, t: S, h: S, clipped: bool) -> S:
        """The time after an accepted step of size ``h`` (the final time when ``clipped``)."""

    @abstractmethod
    def dense(self, y: Tensor, t: S, h: S, lo: int, hi: int) -> Tensor:
        """States ``(hi - lo, n)`` at ``times[lo:hi]``, inside the step just taken from ``t``."""

    @abstractmethod
    def fsal(self, f1: Tensor | None) -> Tensor:
        """The next step's first stage from an FSAL step's last (no evaluation)."""

    @abstractmethod
    def scale(self, h: S, factor: Scalar) -> S:
        """``h * factor``."""

    def finish(self) -> None:
        """Complete work deferred during the solve (the compiled path forms its dense outputs
        here, all at once); called once, before the outputs are read."""

    def attempt(
        self,
        func: Func,
        t: S,
        h: S,
        y: Tensor,
        abs_y: Tensor,
        f0: Tensor,
        tol: Tolerances,
        norm: AbstractNorm,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """One step attempt and its error ratio: ``(y1, abs_y1, ratio, f1)``.

        ``ratio = norm(err / (atol + rtol * max(|y|, |y1|))) * |h|`` (0-d; at most 1 accepts),
        ``None`` for a method without an error estimate (then ``abs_y1`` is ``y1``). ``abs_y``
        is ``|y|`` from the previous accepted step. An arithmetic may compute the ratio inside
        its step (the compiled path does, in the step's kernel); this one takes the step and
        forms the ratio from its error estimate.
        """
        y1, err, f1 = self.step(func, t, h, y, f0)
        if err is None:
            return y1, y1, None, f1
        abs_y1 = torch.abs(y1)
        scale = tol.atol + tol.rtol * torch.maximum(abs_y, abs_y1)
        return y1, abs_y1, norm(err / scale) * self.magnitude(h), f1


class GraphFreeArithmetic(Arithmetic[float]):
    """Python-float time and step size over the lean :class:`RKStepper` (no autograd graph).

    Args:
        stepper: the stepper.
        times: the output times.
    """

    stepper: RKStepper

    def __init__(self, stepper: RKStepper, times: list[float]):
        self.stepper = stepper
        self.times_f = list(times)

    def start(self) -> float:
        return self.times_f[0]

    def constant(self, h: float) -> float:
        return h

    def initial(self, h0: Tensor, direction: float) -> float:
        return direction * float(h0)

    def value(self, x: float) -> float:
        return x

    def magnitude(self, h: float) -> Scalar:
        return abs(h)

    def to_end(self, t: float) -> float:
        return self.times_f[-1] - t

    def step(
        self, func: Func, t: float, h: float, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.stepper.step(func, t, h, y, f0)

    def decide(self, controller: AbstractController, ratio: Tensor) -> tuple[bool, Scalar]:
        return controller.decide(float(ratio.detach()))

    def advance(self, t: float, h: float, clipped: bool) -> float:
        return self.times_f[-1] if clipped else t + h

    def dense(self, y: Tensor, t: float, h: float, lo: int, hi: int) -> Tensor:
        theta = (np.asarray(self.times_f[lo:hi]) - t) / h
        return self.stepper.dense(y, h, theta)

    def fsal(self, f1: Tensor | None) -> Tensor:
        f0 = self.stepper.accept_fsal(f1)
        if f0 is None:
            raise TypeError("fsal() needs the last stage of an FSAL step.")
        return f0

    def scale(self, h: float, factor: Scalar) -> float:
        return h * _float(factor)


class InGraphArithmetic(Arithmetic[Scalar]):
    """Time and step size in the autograd graph over :class:`GraphRKStepper` (``naive``).

    Time is a tensor from ``times`` on; a step size is a Python float until a tensor (Hairer's
    guess, a controller's factor) multiplies into it. The stages of the last step are kept for
    its dense output.

    Args:
        stepper: the stepper.
        times: the output times ``(T,)``, possibly requiring grad.
    """

    stepper: GraphRKStepper

    def __init__(self, stepper: GraphRKStepper, times: Tensor):
        self.stepper = stepper
        self.times = times
        self.times_f = times.detach().tolist()
        self._ks: list[Tensor] = []

    def start(self) -> Scalar:
        return self.times[0]

    def constant(self, h: float) -> Scalar:
        return h

    def initial(self, h0: Tensor, direction: float) -> Scalar:
        return direction * h0

    def value(self, x: Scalar) -> float:
        return _float(x)

    def magnitude(self, h: Scalar) -> Scalar:
        return cast(Scalar, abs(h))  # torch's stubs type Tensor.__abs__ loosely

    def to_end(self, t: Scalar) -> Scalar:
        return self.times[-1] - t

    def step(
        self, func: Func, t: Scalar, h: Scalar, y: Tensor, f0: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        y1, err, f1, self._ks = self.stepper.step(func, t, h, y, f0)
        return y1, err, f1

    def decide(self, controller: AbstractController, ratio: Tensor) -> tuple[bool, Scalar]:
        return controller.decide(ratio)

    def advance(self, t: Scalar, h: Scalar, clipped: bool) -> Scalar:
        return self.times[-1] if clipped else t + h

    def dense(self, y: Tensor, t: Scalar, h: Scalar, lo: int, hi: int) -> Tensor:
        theta = (self.times[lo:hi] - t) / h
        return self.stepper.dense(y, h, self._ks, theta)

    def fsal(self, f1: Tensor | None) -> Tensor:
        if f1 is None:
            raise TypeError("fsal() needs the last stage of an FSAL step.")
        return f1

    def scale(self, h: Scalar, factor: Scalar) -> Scalar:
        return h * factor


def integrate(
    func: Func,
    y0: Tensor,
    arith: Arithmetic[S],
    controller: AbstractController,
    norm: AbstractNorm,
    tol: Tolerances,
    count: Count,
    trace: Trace | None = None,
    f0: Tensor | None = None,
) -> tuple[list[Tensor], float]:
    """Integrate ``y' = func(t, y)`` from the first output time through every output time.

    Args:
        func: the dynamics on the user's shape.
        y0: flat initial state ``(n,)``.
        arith: the arithmetic of time and step size; holds the stepper and the output times.
        trace: filled with the accepted steps when given.
        f0: ``func(times[0], y0)`` (flat) when the caller has evaluated it already; counted as
            this solve's first evaluation all the same.

    Returns:
        ``(outputs, h_next)``: the flat states at every output time (``outputs[0] is y0``) and the
        step size the controller proposes next, for a solve that continues from the end.

    Raises:
        ConfigError: ``func`` returned something other than a tensor of ``y``'s shape.
        SolverError: on max steps, step-size underflow, a non-finite state or step size.
    """
    stepper = arith.stepper
    tf_all = arith.times_f
    n_out = len(tf_all)
    outputs: list[Tensor] = [y0]
    if n_out == 1:
        return outputs, float(tol.first_step or 0.0)
    t_end_f = tf_all[-1]
    direction = 1.0 if t_end_f > tf_all[0] else -1.0
    # a step below a few units in the last place of t (in t's own dtype) cannot move the stage
    # times func sees (scipy's criterion, on t's precision rather than always float64's)
    eps_t = max(float(torch.finfo(stepper.time_dtype).eps), _EPS)

    t = arith.start()
    tf = tf_all[0]
    y = y0
    if f0 is None:
        f0 = stepper.f_checked(func, t, y)
    count.nfe += 1
    adaptive = controller.adaptive
    if not bool(torch.isfinite(f0).all()):
        raise _fail(SolverStatus.NON_FINITE, tf, 0.0, tol, "the initial derivative is not finite")
    controller.reset(stepper.tableau.error_order)

    if not adaptive and tol.step_size is not None:
        h = arith.constant(direction * abs(float(tol.step_size)))
    elif tol.first_step is not None:
        h = arith.constant(direction * abs(tol.first_step))
    else:

        def flat_f(tt: Tensor | float, yy: Tensor) -> Tensor:
            return stepper.f(func, tt, yy)

        h0 = initial_step(
            flat_f, t, y, f0, direction, stepper.tableau.order, tol.rtol, tol.atol, norm
        )
        count.nfe += 1
        h = arith.initial(h0, direction)
    hf = arith.value(h)
    if not math.isfinite(hf):
        raise _fail(
            SolverStatus.NON_FINITE_STEP_SIZE,
            tf,
            hf,
            tol,
            "the initial step size is not finite (with atol=0 a zero component of y0 makes its "
            "scaled norm 0/0)",
        )
    abs_y = torch.abs(y) if adaptive else y
    attempts = 0
    k = 1
    nonfinite = False
    while True:
        clipped = direction * (tf + hf - t_end_f) >= -4 * _EPS * abs(t_end_f)
        h_try = arith.to_end(t) if clipped else h
        h_try_f = arith.value(h_try)
        if attempts >= tol.max_steps:
            raise _fail(SolverStatus.MAX_STEPS_REACHED, tf, hf, tol, f"{tol.max_steps} steps taken")
        attempts += 1
        y1, abs_y1, ratio, f1 = arith.attempt(func, t, h_try, y, abs_y, f0, tol, norm)
        count.nfe += stepper.nfe_per_step

        factor: Scalar
        if ratio is None:
            accept, factor = True, 1.0
        else:
            r = float(ratio.detach())
            nonfinite = not math.isfinite(r)
            if nonfinite:  # reject and shrink before it can become a failure
                accept, factor = False, controller.min_factor
            else:
                accept, factor = arith.decide(controller, ratio)

        if accept:
            t_new_f = t_end_f if clipped else tf + h_try_f
            t_new = arith.advance(t, h_try, clipped)
            first_k = k
            while k < n_out and direction * (tf_all[k] - t_new_f) <= 0:
                k += 1
            ks_here = range(first_k, k)
            if len(ks_here):
                inner = [j for j in ks_here if tf_all[j] != t_new_f]
                if inner:
                    dense = arith.dense(y, t, h_try, inner[0], inner[-1] + 1)
                    outputs.extend(dense.unbind(0))
                if tf_all[k - 1] == t_new_f:
                    outputs.append(y1)
                if trace is not None:
                    trace.outputs.append(
                        [
                            (j, 1.0 if tf_all[j] == t_new_f else (tf_all[j] - tf) / h_try_f)
                            for j in ks_here
                        ]
                    )
            elif trace is not None:
                trace.outputs.append([])
            if trace is not None:
                trace.ts.append(tf)
                trace.hs.append(h_try_f)
                trace.ys.append(y)
                trace.clipped.append(clipped)
            count.accepted += 1
            t, tf, y, abs_y = t_new, t_new_f, y1, abs_y1
            if k >= n_out:
                h_next = hf if clipped else hf * _float(factor)
                break
            if stepper.fsal:
                f0 = arith.fsal(f1)
            else:
                f0 = stepper.f(func, t, y)
                count.nfe += 1
        else:
            count.rejected += 1
        h = arith.scale(h_try, factor)
        hf = arith.value(h)
        if not math.isfinite(hf):
            raise _fail(
                SolverStatus.NON_FINITE_STEP_SIZE,
                tf,
                hf,
                tol,
                f"the controller proposed a non-finite step size (factor {_float(factor):.3g})",
            )
        if abs(hf) <= 4 * eps_t * max(abs(tf), 1e-300) or hf == 0.0:
            status = SolverStatus.NON_FINITE if nonfinite else SolverStatus.STEP_SIZE_UNDERFLOW
            detail = (
                "the error estimate stayed non-finite while the step shrank to nothing"
                if nonfinite
                else f"the step size fell below the resolution of t ({stepper.time_dtype})"
            )
            raise _fail(status, tf, hf, tol, detail)
    arith.finish()
    if not adaptive and not bool(torch.isfinite(outputs[-1]).all()):
        bad = next(i for i, o in enumerate(outputs) if not bool(torch.isfinite(o).all()))
        raise _fail(SolverStatus.NON_FINITE, tf_all[bad], hf, tol, "the state became non-finite")
    return outputs, h_next
