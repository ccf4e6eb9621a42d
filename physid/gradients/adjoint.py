"""``adjoint`` and ``seminorm``: the continuous adjoint (Chen et al. 2018, Algorithm 1).

Forward: the adaptive solve runs without a graph and keeps only the states at the output
times (memory ``O(N_f)`` per output). Backward: the augmented state ``[y, a_y, a_theta]`` is solved
from ``t_N`` back to ``t_0`` with the same solver and tolerances, with
``y' = f``, ``a_y' = -a_y df/dy``, ``a_theta' = -a_y df/dtheta``. At every output time ``y`` is
restarted from the stored forward value (as torchdiffeq does; re-integrating ``y`` backwards
through several intervals drifts) and ``dL/dy(t_i)`` is added to ``a_y``.

The gradient is that of the continuous problem, computed with the reverse-trajectory error of an
approximate backward solve: it is not the gradient of the discrete forward map, and on problems
whose reversal is unstable (``y' = -100 y``, Gholami et al. 2019) it can be badly wrong.

The backward error norm covers every channel: the largest of the RMS norms of ``y``, ``a_y`` and
``a_theta`` (each block weighed on its own scale, as in torchdiffeq's adjoint — the baseline of
Kidger et al. 2021). ``seminorm`` is this method with one change, passed in as that norm: the
parameter channels ``a_theta`` are left out (Kidger et al. 2021), because they are an integral —
nothing downstream depends on their local accuracy the way it does on ``y`` and ``a_y``. It takes
fewer backward steps at essentially the same accuracy. Both are instances of
:class:`AdjointMethod`, which also takes the backward step-size controller, as diffrax's
``BacksolveAdjoint`` takes its ``adjoint_controller``.

The backward solve carries its step size from one output interval to the next instead of
selecting a fresh initial step in each (torchdiffeq does the latter, two extra evaluations per
interval).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from physid.controllers.base import AbstractController
from physid.controllers.norms import AbstractNorm, BlockNorm, RMSNorm, SemiNorm
from physid.errors import ConfigError
from physid.gradients._loop import Count, GraphFreeArithmetic, integrate
from physid.gradients._per_sample_adjoint import solve_adjoint_per_sample
from physid.gradients.base import (
    AbstractGradientMethod,
    Problem,
    forward_solve,
    vjp,
)
from physid.solvers.rk import RKStepper

__all__ = ["AdjointMethod", "ADJOINT", "SEMINORM", "NormFactory"]

NormFactory = Callable[[int, int], AbstractNorm]
"""Builds the backward norm from ``(channels of y, channels of a_theta)``."""


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        problem: Problem,
        method: AdjointMethod,
        y0: Tensor,
        t: Tensor,
        *params: Tensor,
    ) -> Tensor:
        ys = forward_solve(problem, graph=False)
        ctx.problem = problem
        ctx.method = method
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        problem: Problem = ctx.problem
        t, ys, *params = ctx.saved_tensors
        need_t = ctx.needs_input_grad[3]
        need_p = [bool(x) for x in ctx.needs_input_grad[4:]]
        func = problem.func
        shape = problem.y0.shape
        n = problem.y0.numel()
        gp = [p for p, need in zip(params, need_p, strict=True) if need]
        sizes = [p.numel() for p in gp]
        dtype = ys.dtype

        def aug_f(tt: Tensor, z: Tensor) -> Tensor:
            with torch.enable_grad():
                y = z[:n].view(shape).detach().requires_grad_(True)
                a = z[n : 2 * n].view(shape)
                f = func(tt, y)
                vj = vjp(f, (y, *gp), -a)
            parts = [f.reshape(-1), _flat(vj[0], y)]
            parts.extend(_flat(v, p).to(dtype) for v, p in zip(vj[1:], gp, strict=True))
            return torch.cat(parts)

        tf = t.tolist()
        g = grad_ys.reshape(grad_ys.shape[0], -1)
        flat_ys = ys.reshape(ys.shape[0], -1)
        z = torch.cat([flat_ys[-1], g[-1], torch.zeros(sum(sizes), dtype=dtype, device=ys.device)])
        z = z.detach()
        grad_t = torch.zeros_like(t) if need_t else None
        method: AdjointMethod = ctx.method
        norm = method.backward_norm(n, sum(sizes))
        make_controller = method.backward_make_controller(problem)
        count = Count()
        stepper = RKStepper(problem.tableau, z, problem.time_dtype)
        cs = problem.compiled
        fast = cs.backward if cs is not None else None
        if fast is not None and not fast.matches(sizes):
            fast = None  # another set of parameters than prepared: eager
        first_step = problem.tol.first_step
        with torch.no_grad():
            for i in range(len(tf) - 1, 0, -1):
                if grad_t is not None:
                    f_i = func(torch.as_tensor(tf[i], dtype=t.dtype), ys[i])
                    count.nfe += 1
                    grad_t[i] = (g[i] * f_i.reshape(-1)).sum()
                tol_i = dataclasses.replace(problem.tol, first_step=first_step)
                outs, h_next = integrate(
                    aug_f,
                    z,
                    fast.arithmetic([tf[i], tf[i - 1]])
                    if fast is not None
                    else GraphFreeArithmetic(stepper, [tf[i], tf[i - 1]]),
                    make_controller(),
                    norm,
                    tol_i,
                    count,
                )
                first_step = abs(h_next) if problem.tol.step_size is None else None
                z = outs[-1]
                # restart y from the forward solution; add the loss gradient at t_{i-1}
                z = torch.cat([flat_ys[i - 1], z[n : 2 * n] + g[i - 1], z[2 * n :]])
            a0 = z[n : 2 * n]
            if grad_t is not None:
                f_0 = func(torch.as_tensor(tf[0], dtype=t.dtype), ys[0])
                count.nfe += 1
                # y(t_0) = y0 itself does not move with t_0: leave its own loss gradient out
                grad_t[0] = -((a0 - g[0]) * f_0.reshape(-1)).sum()
        st = problem.stats
        st.nfe_backward += count.nfe
        st.backward_steps_accepted += count.accepted
        st.backward_steps_rejected += count.rejected

        grads_p: list[Tensor | None] = []
        offset = 2 * n
        flat_p = iter(zip(gp, sizes, strict=True))
        for need in need_p:
            if not need:
                grads_p.append(None)
                continue
            p, size = next(flat_p)
            grads_p.append(z[offset : offset + size].view_as(p).to(p.dtype))
            offset += size
        return (None, None, a0.view(shape), grad_t, *grads_p)


def _flat(v: Tensor | None, like: Tensor) -> Tensor:
    return (
        torch.zeros(like.numel(), dtype=like.dtype, device=like.device)
        if v is None
        else v.reshape(-1)
    )


class AdjointMethod(AbstractGradientMethod):
    """The continuous adjoint, with its backward solve's error norm and controller as choices.

    ``physid.ADJOINT`` (``"adjoint"``) and ``physid.SEMINORM`` (``"seminorm"``) are two
    instances; build others to compose, for example the seminorm with a PI controller::

        method = physid.AdjointMethod(physid.SemiNorm, backward_controller=physid.PIController)
        ys = physid.odeint(func, y0, t, method=method)

    Args:
        backward_norm: the backward norm: a norm class (its
            :meth:`~physid.controllers.norms.AbstractNorm.for_adjoint` lays it over
            ``[y, a_y, a_theta]``; :class:`~physid.controllers.norms.BlockNorm` counts every
            channel, :class:`~physid.controllers.norms.SemiNorm` leaves ``a_theta`` out) or a
            callable ``(channels of y, channels of a_theta) -> AbstractNorm``.
        backward_controller: makes the backward solve's fresh controller (a controller class
            such as ``PIController``, or any zero-argument callable); ``None`` uses the forward
            solve's. A solve with ``step_size`` steps with it backwards too, whatever this says.
        name: the method's name (in reprs and benchmarks).

    Raises:
        ConfigError: ``backward_norm`` or ``backward_controller`` is not of a kind above.
    """

    def __init__(
        self,
        backward_norm: type[AbstractNorm] | NormFactory = BlockNorm,
        backward_controller: Callable[[], AbstractController] | None = None,
        *,
        name: str = "adjoint",
    ):
        if isinstance(backward_norm, type):
            if not issubclass(backward_norm, AbstractNorm):
                raise ConfigError(
                    f"backward_norm must be a norm class or a callable, got {backward_norm!r}."
                )
            self.backward_norm: NormFactory = backward_norm.for_adjoint
        elif callable(backward_norm):
            self.backward_norm = backward_norm
        else:
            raise ConfigError(
                f"backward_norm must be a norm class or a callable, got {backward_norm!r}."
            )
        if backward_controller is not None and not callable(backward_controller):
            raise ConfigError(
                "backward_controller must make a controller (e.g. physid.PIController), "
                f"got {backward_controller!r}."
            )
        self.backward_controller = backward_controller
        self.name = name
        self._norm_repr = getattr(backward_norm, "__name__", repr(backward_norm))

    def prepare_compiled(self, problem: Problem, need_grad: bool) -> None:
        from physid.compiled.adjoint import AdjointBackward

        cs = problem.compiled
        if cs is None:
            return
        cs.arithmetic([0.0], problem.tol, RMSNorm())
        if need_grad:
            gp = [p for p in problem.params if p.requires_grad]
            n = problem.y0.numel()
            norm = self.backward_norm(n, sum(p.numel() for p in gp))
            cs.backward = AdjointBackward(cs, gp, norm, problem.tol)

    def backward_make_controller(self, problem: Problem) -> Callable[[], AbstractController]:
        """What makes the controllers of ``problem``'s backward solve."""
        if self.backward_controller is None or problem.tol.step_size is not None:
            return problem.make_controller
        return self.backward_controller

    def solve(self, problem: Problem) -> Tensor:
        return _AdjointFunction.apply(  # type: ignore[no-any-return]
            problem, self, problem.y0, problem.t, *problem.params
        )

    def solve_independent(self, problem: Problem) -> Tensor:
        return solve_adjoint_per_sample(problem, self)

    def __repr__(self) -> str:
        ctrl = getattr(self.backward_controller, "__name__", repr(self.backward_controller))
        return (
            f"{type(self).__name__}(backward_norm={self._norm_repr}, "
            f"backward_controller={ctrl}, name={self.name!r})"
        )


ADJOINT = AdjointMethod(BlockNorm, name="adjoint")
SEMINORM = AdjointMethod(SemiNorm, name="seminorm")
