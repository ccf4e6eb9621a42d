"""The adaptive step loop, shared by every gradient method.

One loop serves two arithmetics: graph-free (time and step size are Python floats, stages in a
preallocated buffer, used by ``adjoint``, ``seminorm`` and ``aca``) and in-graph (time and step
size are tensors, used by ``naive``, whose rejected trials and step-size arithmetic are part of
the autograd graph on purpose). The only host synchronisation per step is the accept decision.

Output times strictly inside a step come from the solver's dense output; only the final time
shortens a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from physid.controllers.base import AbstractController
from physid.controllers.initial_step import initial_step
from physid.controllers.norms import AbstractNorm
from physid.errors import SolverError, SolverStatus
from physid.solvers.rk import Func, GraphRKStepper, RKStepper

__all__ = ["Count", "Trace", "Tolerances", "integrate"]

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


def _f(x: float | Tensor) -> float:
    """A Python float of a scalar (one host sync for a tensor)."""
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def _fail(status: SolverStatus, t: float, h: float, tol: Tolerances, detail: str) -> SolverError:
    hints = {
        SolverStatus.MAX_STEPS_REACHED: (
            f"increase max_steps (now {tol.max_steps}) or loosen rtol={tol.rtol}, atol={tol.atol}"
        ),
        SolverStatus.STEP_SIZE_UNDERFLOW: (
            "the problem may be stiff or singular there; loosen rtol/atol or check the dynamics"
        ),
        SolverStatus.NON_FINITE: "the dynamics produced NaN or inf; check the model and state",
    }
    msg = f"ODE solve failed at t={t:.6g} with step size {h:.3g}: {detail}; {hints[status]}."
    return SolverError(status, msg, t=t, step_size=h)


def integrate(
    func: Func,
    y0: Tensor,
    times: list[float] | Tensor,
    stepper: RKStepper | GraphRKStepper,
    controller: AbstractController,
    norm: AbstractNorm,
    tol: Tolerances,
    count: Count,
    trace: Trace | None = None,
) -> tuple[list[Tensor], float]:
    """Integrate ``y' = func(t, y)`` from ``times[0]`` through every output time.

    Args:
        func: the dynamics on the user's shape.
        y0: flat initial state ``(n,)``.
        times: strictly monotone output times; Python floats for the graph-free stepper, a 1-D
            tensor (possibly requiring grad) for the in-graph stepper.
        trace: filled with the accepted steps when given (graph-free only).

    Returns:
        ``(outputs, h_next)``: the flat states at every output time (``outputs[0] is y0``) and the
        step size the controller proposes next, for a solve that continues from the end.

    Raises:
        SolverError: on max steps, step-size underflow or a non-finite state.
    """
    graph = isinstance(stepper, GraphRKStepper)
    tf_all = times.detach().tolist() if isinstance(times, Tensor) else list(times)
    n_out = len(tf_all)
    outputs: list[Tensor] = [y0]
    if n_out == 1:
        return outputs, float(tol.first_step or 0.0)
    t_end_f = tf_all[-1]
    direction = 1.0 if t_end_f > tf_all[0] else -1.0

    t: float | Tensor = times[0]
    tf = tf_all[0]
    y = y0
    f0 = stepper.f(func, t, y)
    count.nfe += 1
    adaptive = controller.adaptive
    if not bool(torch.isfinite(f0).all()):
        raise _fail(SolverStatus.NON_FINITE, tf, 0.0, tol, "the initial derivative is not finite")
    controller.reset(stepper.tableau.error_order)

    h: float | Tensor
    if not adaptive:
        h = direction * abs(float(tol.step_size))  # type: ignore[arg-type]
    elif tol.first_step is not None:
        h = direction * abs(tol.first_step)
    else:

        def flat_f(tt: Tensor | float, yy: Tensor) -> Tensor:
            return stepper.f(func, tt, yy)

        h0 = initial_step(
            flat_f, t, y, f0, direction, stepper.tableau.order, tol.rtol, tol.atol, norm
        )
        count.nfe += 1
        h = direction * h0 if graph else direction * float(h0)
    hf = _f(h)
    abs_y = torch.abs(y) if adaptive else y
    attempts = 0
    k = 1
    nonfinite = False
    while True:
        clipped = direction * (tf + hf - t_end_f) >= -4 * _EPS * abs(t_end_f)
        if clipped:
            h_try: float | Tensor = times[-1] - t if graph else t_end_f - tf
        else:
            h_try = h
        h_try_f = _f(h_try)  # type: ignore[assignment]
        if attempts >= tol.max_steps:
            raise _fail(SolverStatus.MAX_STEPS_REACHED, tf, hf, tol, f"{tol.max_steps} steps taken")
        attempts += 1
        if graph:
            y1, err, f1, ks = stepper.step(func, t, h_try, y, f0)  # type: ignore[call-arg,arg-type,misc]
        else:
            y1, err, f1 = stepper.step(func, t, h_try, y, f0)  # type: ignore[call-arg,arg-type,misc]
        count.nfe += stepper.nfe_per_step

        factor: float | Tensor
        if err is None:
            accept, factor = True, 1.0
            abs_y1 = y1
        else:
            abs_y1 = torch.abs(y1)
            scale = tol.atol + tol.rtol * torch.maximum(abs_y, abs_y1)
            ratio = norm(err / scale) * abs(h_try)  # type: ignore[operator]
            r = _f(ratio)
            nonfinite = not math.isfinite(r)
            if nonfinite:  # reject and shrink before it can become a failure
                accept, factor = False, controller.min_factor
            else:
                accept, factor = controller.decide(ratio if graph else r)

        if accept:
            t_new_f = t_end_f if clipped else tf + h_try_f
            t_new = times[-1] if clipped else t + h_try
            first_k = k
            while k < n_out and direction * (tf_all[k] - t_new_f) <= 0:
                k += 1
            ks_here = range(first_k, k)
            if len(ks_here):
                inner = [j for j in ks_here if tf_all[j] != t_new_f]
                if inner:
                    if graph:
                        theta = (times[inner[0] : inner[-1] + 1] - t) / h_try  # type: ignore[index,operator]
                        dense = stepper.dense(y, h_try, ks, theta)  # type: ignore[call-arg,arg-type]
                    else:
                        theta_np = (np.asarray(tf_all[inner[0] : inner[-1] + 1]) - tf) / h_try_f
                        dense = stepper.dense(y, h_try_f, theta_np)  # type: ignore[call-arg]
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
                h_next = hf if clipped else hf * _f(factor)
                break
            if stepper.fsal:
                f0 = f1 if graph else stepper.accept_fsal(f1)  # type: ignore[union-attr,assignment]
            else:
                f0 = stepper.f(func, t, y)
                count.nfe += 1
        else:
            count.rejected += 1
        h = h_try * factor
        hf = _f(h)
        if abs(hf) <= 4 * _EPS * max(abs(tf), 1e-300) or hf == 0.0:
            status = SolverStatus.NON_FINITE if nonfinite else SolverStatus.STEP_SIZE_UNDERFLOW
            detail = (
                "the error estimate stayed non-finite while the step shrank to nothing"
                if nonfinite
                else "the step size underflowed"
            )
            raise _fail(status, tf, hf, tol, detail)
    if not adaptive and not bool(torch.isfinite(outputs[-1]).all()):
        bad = next(i for i, o in enumerate(outputs) if not bool(torch.isfinite(o).all()))
        raise _fail(SolverStatus.NON_FINITE, tf_all[bad], hf, tol, "the state became non-finite")
    return outputs, h_next
