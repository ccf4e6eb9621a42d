"""``forward``: forward sensitivities, the state augmented with one tangent per input.

For ``y' = f(t, y, θ)`` the sensitivities ``S_i = ∂y/∂θ_i`` obey the variational equations

    S_i' = J_y(t, y) S_i + ∂f/∂θ_i,          S_i(t_0) = 0,

and ``∂y/∂y0`` obeys the same equation without the ``∂f/∂θ`` term from ``S(t_0) = I``;
``∂y(t)/∂t_0 = -Φ(t, t_0) f(t_0, y_0)`` is one more tangent, started at ``-f(t_0, y_0)``.
The state and its ``m`` tangents are integrated together as one augmented state ``(1 + m, n)``
by the shared adaptive loop (:func:`physid.gradients._loop.integrate`), with the same Runge-Kutta
method. For an explicit Runge-Kutta method this is *internal differentiation* (Bock 1981; Hairer,
Nørsett & Wanner I, II.6): the tangents are exactly the derivatives of the discrete solution with
the step sizes held fixed, the quantity ``aca`` differentiates in reverse mode — forward and
reverse give the same numbers to round-off, at a cost that grows with the number of tangents
instead of the number of output functionals. This is the forward mode of SUNDIALS CVODES and the
default of SciMLSensitivity.jl below about 100 parameters plus states.

**Error control.** By default the error norm sees only the state (the tangents ride along on the
state's steps; CVODES ``errconS = False``), so the step sequence is that of a plain solve. With
``errcon=True`` the norm is the largest of the RMS norms of the state and of each tangent (the
CVODES choice), each tangent scaled by ``rtol |S| + sens_atol``; steps then also resolve the
sensitivities, which matters where they grow faster than the state (close encounters, chaos).

**One NFE** of the augmented solve is one evaluation of ``f`` together with the ``m`` tangent
right-hand sides ``J_y S_i + ∂f/∂θ_i`` (one batched evaluation per stage; see ``tangents``). The
counts in :class:`~physid.SolveStats` are therefore directly comparable with a plain solve's:
with ``errcon=False`` the forward NFE and the steps equal those of a plain solve.

**How the tangent right-hand sides are computed** (``tangents``):

- ``"forward"``: ``torch.func.jvp`` vmapped over the ``m`` tangents, the parameters substituted
  with ``torch.func.functional_call`` (``nn.Module`` dynamics only). One batched evaluation.
- ``"reverse"``: the ``n`` rows of ``[J_y | J_θ]`` by one batched reverse pass
  (``autograd.grad(..., is_grads_batched=True)``), then ``J_y S + J_θ`` as one matrix product. It
  also serves closures (``params`` given to :func:`physid.odeint`), and its cost does not grow
  with ``m``.
- ``"auto"`` (default): ``reverse`` when ``n <= 128``, when ``f`` is not an ``nn.Module`` or
  when a parameter is not the module's own (a tensor a closure captured), ``forward``
  otherwise. In torch 2.x on the CPU forward-mode AD costs about 0.3 ms for every
  operation that mixes a dual tensor with a plain one (the zero tangent of the plain operand is a
  ``ZeroTensor`` whose shape is inferred by a meta kernel written in Python), which makes
  ``forward`` 20-50x a plain evaluation for small systems where ``reverse`` measured 5-10x
  (``scripts/known_form_tangent_cost.py``; docs/known-form.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from physid.controllers.norms import BlockNorm
from physid.errors import ConfigError
from physid.gradients._loop import Count, GraphFreeArithmetic, Tolerances, integrate
from physid.gradients.base import AbstractGradientMethod, Problem, vjp
from physid.solvers.rk import RKStepper, check_derivative

__all__ = [
    "TANGENT_MODES",
    "AUTO_REVERSE_MAX_STATE",
    "MAX_SENSITIVITY_BYTES",
    "Sensitivities",
    "ForwardSensitivityMethod",
    "solve_sensitivities",
]

TANGENT_MODES = ("auto", "forward", "reverse")
AUTO_REVERSE_MAX_STATE = 128
"""``tangents="auto"`` uses reverse rows up to this many state entries."""
MAX_SENSITIVITY_BYTES = 2 * 1024**3
"""The most memory the sensitivities may take (``(T + stages) · n · m`` numbers): forward
sensitivities are for few parameters, and beyond this a reverse method (``aca``) is the tool."""


@dataclasses.dataclass(frozen=True)
class Sensitivities:
    """The solution and its sensitivities at the output times.

    Attributes:
        ys: ``(T, *shape)`` the states.
        d_params: ``(T, *shape, P)`` with ``P`` the total number of parameter entries, the
            parameters flattened and concatenated in the order given; ``None`` if not asked.
        d_y0: ``(T, *shape, *shape)``: ``d_y0[k, i..., j...] = ∂y_i(t_k)/∂y0_j``; ``None`` if not
            asked.
        d_t0: ``(T, *shape)``: ``∂y(t_k)/∂t_0`` (zero at ``k = 0``); ``None`` if not asked.
    """

    ys: Tensor
    d_params: Tensor | None
    d_y0: Tensor | None
    d_t0: Tensor | None


def _resolve_tangent_mode(mode: str, func: Callable, n: int, params: Sequence[Tensor]) -> str:
    if mode not in TANGENT_MODES:
        raise ConfigError(f"tangents must be one of {', '.join(TANGENT_MODES)}, got {mode!r}.")
    if mode == "auto":
        if n <= AUTO_REVERSE_MAX_STATE or not isinstance(func, nn.Module):
            return "reverse"
        # forward substitutes module tensors only; a captured closure tensor needs reverse rows
        owned = {id(p) for p in func.parameters()} | {id(b) for b in func.buffers()}
        return "forward" if all(id(p) in owned for p in params) else "reverse"
    if mode == "forward" and not isinstance(func, nn.Module):
        raise ConfigError(
            "tangents='forward' substitutes the parameters of an nn.Module; for a closure over "
            "`params` use tangents='reverse' (or 'auto')."
        )
    return mode


def _module_names(module: nn.Module, params: Sequence[Tensor]) -> list[str]:
    """The names under which ``params`` are registered in ``module`` (parameters or buffers)."""
    by_id = {id(p): name for name, p in module.named_parameters(remove_duplicate=False)}
    by_id.update({id(b): name for name, b in module.named_buffers(remove_duplicate=False)})
    names = []
    for p in params:
        if id(p) not in by_id:
            raise ConfigError(
                "tangents='forward' needs every parameter to be a parameter or buffer of the "
                "module; use tangents='reverse' for other tensors."
            )
        names.append(by_id[id(p)])
    return names


class _TangentRHS:
    """The right-hand side of the augmented state ``Y = [y; S_1; ...; S_m]`` ``(1 + m, n)``.

    Row 0 of the result is ``f(t, y)``; row ``1 + i`` is ``J_y S_i + J_θ e_i`` where ``e_i`` is
    the parameter tangent of tangent ``i`` (a unit vector for a parameter tangent, zero for the
    ``y0`` and ``t0`` tangents).
    """

    def __init__(
        self,
        func: Callable[[Tensor, Tensor], Tensor],
        shape: torch.Size,
        params: Sequence[Tensor],
        n_tangents: int,
        mode: str,
    ):
        self.func = func
        self.shape = shape
        self.n = math.prod(shape)
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.P = sum(self.sizes)
        self.m = n_tangents
        self.mode = mode
        if mode == "reverse":
            self._substitute: list[bool] = [not p.requires_grad for p in self.params]
            if any(self._substitute) and not isinstance(func, nn.Module):
                raise ConfigError(
                    "a tensor in params does not require grad, so its sensitivity cannot be "
                    "traced through the closure; call requires_grad_() on it."
                )
            self.names = (
                _module_names(func, self.params)
                if isinstance(func, nn.Module) and any(self._substitute)
                else []
            )
        else:
            if not isinstance(func, nn.Module):
                raise ConfigError("tangents='forward' needs an nn.Module.")
            self.names = _module_names(func, self.params)
            # The parameter tangents, one (m, *p.shape) block per parameter: unit vectors for the
            # first P tangents, zero for the others.
            dtype = self.params[0].dtype if self.params else torch.get_default_dtype()
            eye = torch.zeros(self.m, self.P, dtype=dtype)
            if self.P:
                eye[: self.P, : self.P] = torch.eye(self.P, dtype=eye.dtype)
            blocks = eye.split(self.sizes, dim=1) if self.P else ()
            self.param_tangents = [
                b.reshape(self.m, *p.shape).to(p.device)
                for b, p in zip(blocks, self.params, strict=True)
            ]
        self._eye_n: Tensor | None = None

    def _f_flat(self, t: Tensor, y: Tensor) -> Tensor:
        return check_derivative(self.func(t, y.view(self.shape)), self.shape).reshape(-1)

    def __call__(self, t: Tensor, Y: Tensor) -> Tensor:
        if self.n == 0:  # an empty batch: nothing to differentiate, but func must still answer
            self._f_flat(t, Y[0])
            return torch.zeros_like(Y)
        if self.mode == "reverse":
            return self._reverse(t, Y)
        return self._forward(t, Y)

    def _reverse(self, t: Tensor, Y: Tensor) -> Tensor:
        y, S = Y[0], Y[1:]
        if self._eye_n is None or self._eye_n.dtype != Y.dtype:
            self._eye_n = torch.eye(self.n, dtype=Y.dtype, device=Y.device)
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            if any(self._substitute):
                leaves = [
                    p.detach().requires_grad_(True) if sub else p
                    for p, sub in zip(self.params, self._substitute, strict=True)
                ]
                fy = check_derivative(
                    torch.func.functional_call(
                        self.func,  # type: ignore[arg-type]
                        dict(zip(self.names, leaves, strict=True)),
                        (t, y_.view(self.shape)),
                        strict=False,
                    ),
                    self.shape,
                ).reshape(-1)
            else:
                leaves = self.params
                fy = self._f_flat(t, y_)
            grads = vjp(fy, [y_, *leaves], self._eye_n, batched=True)
        jy = grads[0]
        out = torch.empty((1 + self.m, self.n), dtype=Y.dtype, device=Y.device)
        out[0] = fy.detach()
        if jy is not None:
            torch.mm(S, jy.T, out=out[1:])
        else:
            out[1:].zero_()
        col = 0
        for g, size in zip(grads[1:], self.sizes, strict=True):
            if g is not None:
                out[1 + col : 1 + col + size] += g.reshape(self.n, size).T
            col += size
        return out

    def _forward(self, t: Tensor, Y: Tensor) -> Tensor:
        y, S = Y[0], Y[1:]
        theta = tuple(p.detach() for p in self.params)
        names = self.names
        func = self.func
        shape = self.shape

        def f_of(yy: Tensor, *th: Tensor) -> Tensor:
            out = torch.func.functional_call(
                func,  # type: ignore[arg-type]
                dict(zip(names, th, strict=True)),
                (t, yy.view(shape)),
                strict=False,
            )
            return check_derivative(out, shape).reshape(-1)

        def one(s: Tensor, *e: Tensor) -> tuple[Tensor, Tensor]:
            return torch.func.jvp(f_of, (y, *theta), (s, *e))  # type: ignore[return-value]

        fy, tang = torch.func.vmap(one, out_dims=(None, 0))(S, *self.param_tangents)  # type: ignore[arg-type]
        return torch.cat([fy.unsqueeze(0), tang], 0)


def _tiled(x: float | Tensor, copies: int, n: int, like: Tensor) -> float | Tensor:
    """A tolerance for the augmented state: a scalar stays one, a per-entry tensor is tiled."""
    if isinstance(x, Tensor) and x.numel() > 1:
        return x.to(like).reshape(-1).expand(copies, n).reshape(-1)
    return x


def _augmented_atol(
    state: float | Tensor, sens: float | Tensor, n: int, m: int, like: Tensor
) -> float | Tensor:
    """``atol`` for the state's ``n`` channels, then ``sens`` for each of the ``m`` tangents."""
    scalar = not isinstance(state, Tensor) and not isinstance(sens, Tensor)
    if scalar and float(state) == float(sens):
        return state

    def block(x: float | Tensor) -> Tensor:
        v = torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(-1)
        return v.expand(n) if v.numel() == 1 else v

    return torch.cat([block(state), block(sens).repeat(m)])


def solve_sensitivities(
    problem: Problem,
    *,
    param_mask: Sequence[bool] | None = None,
    wrt_y0: bool = False,
    wrt_t0: bool = False,
    errcon: bool = False,
    sens_atol: float | None = None,
    tangents: str = "auto",
) -> Sensitivities:
    """Solve ``problem`` and its forward sensitivities; fills the forward counts of its stats.

    Args:
        problem: the validated problem (``problem.params`` are the candidate parameters).
        param_mask: which of ``problem.params`` get tangents (default: all).
        wrt_y0: also the sensitivities to the initial state (``n`` more tangents).
        wrt_t0: also the sensitivity to the initial time (one more tangent).
        errcon: include the tangents in the error norm (CVODES ``errconS``).
        sens_atol: the absolute tolerance of the tangents under ``errcon`` (default: ``atol``).
        tangents: ``"auto"``, ``"forward"`` or ``"reverse"`` (see the module docstring).

    Returns:
        the :class:`Sensitivities`, detached from any graph.

    Raises:
        ConfigError: a bad option, or a parameter whose tangent cannot be traced.
        SolverError: the augmented solve failed.
    """
    y0 = problem.y0.detach()
    shape, n = y0.shape, y0.numel()
    mask = [True] * len(problem.params) if param_mask is None else list(param_mask)
    if len(mask) != len(problem.params):
        raise ConfigError("param_mask needs one flag per parameter.")
    ps = [p for p, need in zip(problem.params, mask, strict=True) if need]
    P = sum(p.numel() for p in ps)
    m = P + (n if wrt_y0 else 0) + (1 if wrt_t0 else 0)
    if sens_atol is not None and not (math.isfinite(sens_atol) and sens_atol >= 0):
        raise ConfigError(f"sens_atol must be finite and non-negative, got {sens_atol}.")
    mode = _resolve_tangent_mode(tangents, problem.func, n, ps)
    need = (len(problem.t) + problem.tableau.stages + 2) * n * (1 + m) * y0.element_size()
    if need > MAX_SENSITIVITY_BYTES:
        raise ConfigError(
            f"forward sensitivities of {m} tangents (parameters{' and y0' if wrt_y0 else ''}) "
            f"on a state of {n} at {len(problem.t)} output times need {need / 1024**3:.1f} GiB; "
            "they are for few parameters: use method='aca' (reverse mode) instead."
        )
    rhs = _TangentRHS(problem.func, shape, ps, m, mode)
    count = Count()
    S0 = torch.zeros((m, n), dtype=y0.dtype, device=y0.device)
    if wrt_y0:
        S0[P : P + n] = torch.eye(n, dtype=y0.dtype, device=y0.device)
    t0 = problem.t[0].detach()
    if wrt_t0:
        with torch.no_grad():
            S0[-1] = -check_derivative(problem.func(t0, y0), shape).reshape(-1)
        count.nfe += 1
    Y0 = torch.cat([y0.reshape(1, n), S0], 0)
    tol = problem.tol
    if errcon and m:
        norm = BlockNorm([n] * (1 + m))
        s_atol = tol.atol if sens_atol is None else sens_atol
        atol = _augmented_atol(tol.atol, s_atol, n, m, y0)
    else:
        # The state alone decides: channels after the first block are ignored by the norm.
        norm = BlockNorm([n])
        atol = _tiled(tol.atol, 1 + m, n, y0)
    rtol = _tiled(tol.rtol, 1 + m, n, y0)
    aug_tol = Tolerances(rtol, atol, tol.max_steps, tol.first_step, tol.step_size)
    stepper = RKStepper(problem.tableau, Y0, problem.time_dtype)
    arith = GraphFreeArithmetic(stepper, problem.t.detach().tolist())
    if problem.f0 is not None:
        # odeint evaluated func once to find captured tensors; that evaluation has no tangents,
        # so it cannot start this solve: it is counted as the extra evaluation it is.
        count.nfe += 1
    outs, _ = integrate(rhs, Y0.reshape(-1), arith, problem.make_controller(), norm, aug_tol, count)
    st = problem.stats
    st.nfe_forward += count.nfe
    st.steps_accepted += count.accepted
    st.steps_rejected += count.rejected
    Ys = torch.stack(outs, 0).view(len(outs), 1 + m, n)
    T = len(outs)
    ys = Ys[:, 0].reshape(T, *shape)
    S = Ys[:, 1:]  # (T, m, n)
    d_params = S[:, :P].transpose(1, 2).reshape(T, *shape, P) if ps else None
    d_y0 = S[:, P : P + n].transpose(1, 2).reshape(T, *shape, *shape) if wrt_y0 else None
    d_t0 = None
    if wrt_t0:
        d_t0 = S[:, -1].reshape(T, *shape).clone()
        d_t0[0] = 0.0  # y(t_0) = y0 whatever t_0 is
    return Sensitivities(ys=ys, d_params=d_params, d_y0=d_y0, d_t0=d_t0)


class _ForwardFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        problem: Problem,
        method: ForwardSensitivityMethod,
        y0: Tensor,
        t: Tensor,
        *params: Tensor,
    ) -> Tensor:
        need_y0, need_t = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        need_p = [bool(x) for x in ctx.needs_input_grad[4:]]
        sens = solve_sensitivities(
            problem,
            param_mask=need_p,
            wrt_y0=bool(need_y0),
            wrt_t0=bool(need_t),
            errcon=method.errcon,
            sens_atol=method.sens_atol,
            tangents=method.tangents,
        )
        ctx.problem = problem
        ctx.need_p = need_p
        ctx.sens = sens
        return sens.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        problem: Problem = ctx.problem
        sens: Sensitivities = ctx.sens
        T = grad_ys.shape[0]
        n = problem.y0.numel()
        g = grad_ys.reshape(T, n)
        grad_params: list[Tensor | None] = []
        if sens.d_params is not None:
            P = sens.d_params.shape[-1]
            flat = torch.einsum("tn,tnp->p", g, sens.d_params.reshape(T, n, P))
            chunks = iter(
                flat.split(
                    [p.numel() for p, need in zip(problem.params, ctx.need_p, strict=True) if need]
                )
            )
            for p, need in zip(problem.params, ctx.need_p, strict=True):
                grad_params.append(next(chunks).view_as(p) if need else None)
        else:
            grad_params = [None] * len(problem.params)
        grad_y0 = None
        if sens.d_y0 is not None:
            grad_y0 = torch.einsum("tn,tnj->j", g, sens.d_y0.reshape(T, n, n)).view(
                problem.y0.shape
            )
        grad_t = None
        if sens.d_t0 is not None:
            grad_t = torch.zeros_like(problem.t)
            # y(t_k) moves with t_k at the speed f(t_k, y_k) (k >= 1) ...
            with torch.no_grad():
                for k in range(1, T):
                    fk = problem.func(problem.t[k].detach(), sens.ys[k]).reshape(-1)
                    grad_t[k] = g[k] @ fk.to(g)
            problem.stats.nfe_backward += T - 1
            # ... and every output moves with t_0 through the tangent started at -f(t_0, y_0).
            grad_t[0] = (g * sens.d_t0.reshape(T, n)).sum()
        return (None, None, grad_y0, grad_t, *grad_params)


class ForwardSensitivityMethod(AbstractGradientMethod):
    """Reverse-mode gradients through forward sensitivities: cheap for few parameters.

    The forward pass solves the state with one tangent per parameter entry (and per ``y0`` entry
    when ``y0`` needs a gradient, and one for ``t_0`` when ``t`` does) and keeps the sensitivities
    at the output times; the backward pass contracts the incoming gradient with them (no function
    evaluation, except ``f`` at the output times when ``t`` needs a gradient). Memory
    ``O(T · n · m)``. The parameter and ``y0`` gradients are those of the discrete solution with
    the step sizes held fixed (as ``aca``'s); the gradient to ``t`` is the continuous one
    (``f(t_k, y_k)`` and ``-Φ f(t_0, y_0)``), accurate to the tolerance.

    Args:
        errcon: include the sensitivities in the error norm (CVODES ``errconS``; default off).
        sens_atol: absolute tolerance of the sensitivities under ``errcon`` (default: ``atol``).
        tangents: ``"auto"``, ``"forward"`` (``torch.func.jvp``) or ``"reverse"`` (Jacobian rows).
    """

    name = "forward"

    def __init__(
        self, errcon: bool = False, sens_atol: float | None = None, tangents: str = "auto"
    ):
        if tangents not in TANGENT_MODES:
            raise ConfigError(
                f"tangents must be one of {', '.join(TANGENT_MODES)}, got {tangents!r}."
            )
        if sens_atol is not None and not (math.isfinite(sens_atol) and sens_atol >= 0):
            raise ConfigError(f"sens_atol must be finite and non-negative, got {sens_atol}.")
        self.errcon = bool(errcon)
        self.sens_atol = sens_atol
        self.tangents = tangents

    def solve(self, problem: Problem) -> Tensor:
        return _ForwardFunction.apply(problem, self, problem.y0, problem.t, *problem.params)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (
            f"ForwardSensitivityMethod(errcon={self.errcon}, sens_atol={self.sens_atol}, "
            f"tangents={self.tangents!r})"
        )
