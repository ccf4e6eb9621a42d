"""The public entry point: :func:`odeint`."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from physid.compiled import CompiledSolve, CompileUnavailable, prepare, warn_fallback
from physid.controllers import AbstractController, ConstantController, IController, PIController
from physid.errors import ConfigError, SolverError, SolverStatus
from physid.gradients import METHODS, AbstractGradientMethod, get_method
from physid.gradients._loop import Tolerances
from physid.gradients._per_sample import probe_per_sample
from physid.gradients.base import Problem, captured_leaves, probe
from physid.solvers import SOLVERS, ButcherTableau, get_tableau
from physid.stats import SolveStats

__all__ = [
    "odeint",
    "SolveStats",
    "SolverError",
    "SolverStatus",
    "GRADIENT_METHODS",
    "SOLVER_NAMES",
    "SUPPORTED_DTYPES",
    "BATCH_MODES",
]

GRADIENT_METHODS: tuple[str, ...] = tuple(METHODS)
"""The names ``method`` accepts (the keys of :data:`physid.gradients.METHODS`)."""

SOLVER_NAMES: tuple[str, ...] = tuple(SOLVERS)
"""The names ``solver`` accepts, fixed-step ones included (the keys of
:data:`physid.solvers.SOLVERS`)."""

SUPPORTED_DTYPES = (torch.float32, torch.float64)
"""The dtypes of ``y0`` and ``t``. Half precision is refused: its machine epsilon (``9.8e-4`` for
float16, ``7.8e-3`` for bfloat16) sits above the tolerances an adaptive solve is asked for, so the
error control cannot be met, and float16's range (``6.5e4``) overflows the squared error norms of
the step-size control (the initial step becomes NaN). Casting state and time up to float32 costs
little next to a solve; a model may still compute in half precision inside ``func``."""

BATCH_MODES: tuple[str, ...] = ("shared", "independent")
"""The values ``batch`` accepts: one step size for the whole tensor, or one per sample."""

_CONTROLLERS: dict[str, Callable[[], AbstractController]] = {"i": IController, "pi": PIController}


def _real(name: str, value: object) -> float:
    """``value`` as a float if it is a real number (not a bool), else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)


def _tolerance(name: str, value: object) -> float | Tensor:
    """A validated ``rtol``/``atol``: a non-negative finite number or real tensor."""
    checked: float | Tensor
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ConfigError(f"{name} must be a real tensor, got dtype {value.dtype}.")
        checked = value
        tv = value.detach()
    else:
        checked = _real(name, value)
        tv = torch.tensor(checked, dtype=torch.float64)
    if bool((tv < 0).any()) or not bool(torch.isfinite(tv).all()):
        raise ConfigError(f"{name} must be finite and non-negative, got {value}.")
    return checked


def odeint(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    method: str | AbstractGradientMethod = "aca",
    solver: str | ButcherTableau = "dopri5",
    rtol: float | Tensor = 1e-6,
    atol: float | Tensor = 1e-8,
    max_steps: int = 10_000,
    first_step: float | None = None,
    step_size: float | None = None,
    params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    controller: str | Callable[[], AbstractController] = "i",
    compile: bool = False,
    batch: str = "shared",
) -> Tensor:
    """Solve ``dy/dt = func(t, y)`` and return ``y`` at the times ``t``, differentiably.

    Args:
        func: the dynamics ``func(t, y) -> dy/dt``; ``t`` is a 0-d tensor (of ``t``'s dtype),
            ``y`` has ``y0``'s shape, and the result must have ``y0``'s shape. The tensors it
            uses that require grad receive gradients: an ``nn.Module``'s parameters and, for every
            method, the tensors a closure captured (a captured non-leaf such as
            ``k = exp(log_k)`` passes its gradient on to ``log_k``).
        y0: the initial state, any shape ``(*shape)`` (batch dimensions included, possibly
            empty), float32 or float64 (see :data:`SUPPORTED_DTYPES`).
        t: strictly increasing or decreasing output times ``(T,)``; ``t[0]`` is the initial time.
        method: the gradient method — ``"naive"`` (autograd through the whole adaptive loop; a
            baseline, memory-hungry), ``"adjoint"`` (continuous adjoint), ``"seminorm"`` (adjoint
            whose backward error norm ignores the parameter channels), ``"aca"`` (adaptive
            checkpoint adjoint: exact discrete gradient, the recommended default) or ``"forward"``
            (forward sensitivities: the same gradient as ``aca``'s from one augmented forward
            solve, for few parameters; :mod:`physid.gradients.forward`); or a method object,
            e.g. ``physid.AdjointMethod(physid.SemiNorm, backward_controller=...)`` or
            ``physid.ForwardSensitivityMethod(errcon=True)``.
        solver: ``"euler"``, ``"rk2"`` (= ``"midpoint"``), ``"rk4"`` (fixed step; give
            ``step_size``) or ``"heun_euler"``, ``"bosh3"``, ``"dopri5"`` (adaptive); or a
            :class:`~physid.solvers.ButcherTableau`.
        rtol, atol: relative and absolute tolerances of the local error.
        max_steps: the most steps (accepted and rejected) one solve may attempt.
        first_step: the first step size; by default Hairer's initial-step selection.
        step_size: the constant step of a fixed-step solve (an adaptive solver given a
            ``step_size`` also steps with it, ignoring its error estimate).
        params: the tensors that receive gradients (besides ``y0`` and ``t``); by default those
            ``func`` uses, found by evaluating it once at ``(t[0], y0)`` (that evaluation is the
            solve's first, not an extra one).
        stats: a :class:`SolveStats`, filled in place (counts accumulate).
        controller: ``"i"`` (integral, default) or ``"pi"`` (Gustafsson's PI), or a callable
            returning a fresh :class:`~physid.controllers.AbstractController`.
        batch: ``"shared"`` (default): the solve runs over the whole tensor with one step size,
            one error norm over every channel. ``"independent"``: the leading dimension of
            ``y0`` is a batch of ``B`` independent systems, each solved with its own step sizes,
            accept/reject decisions, initial step, error norm (its own RMS) and controller, as
            if solved alone; finished samples stop while the others go on, so a sweep over seeds
            or initial conditions costs each sample only its own steps. ``func`` then receives
            ``t`` of shape ``(B,)`` (each sample's own time; a time-dependent ``func`` broadcasts
            it, e.g. ``t[:, None]``) and ``y`` of shape ``(B, *shape)``, and must not mix
            samples. ``stats.per_sample`` holds each sample's counts. A sample that fails raises
            :class:`SolverError` naming it (``.sample``). Every built-in gradient method
            supports it (see ``docs/engine.md``).
        compile: run the compiled fast path (:mod:`physid.compiled`): each step, with ``func``
            inlined, is one compiled kernel, and so is ``aca``'s step replay. Same steps, values
            and gradients as the eager path (to round-off). The first call for a new ``func``,
            shape or solver compiles (seconds to tens of seconds; Inductor's on-disk cache makes
            later processes fast); later calls reuse the kernels. Falls back to the eager path
            with one :class:`~physid.compiled.CompileFallbackWarning` naming the cause when
            something cannot be compiled. See ``docs/fast-path.md``.

    Returns:
        ``(T, *y0.shape)``: ``out[i]`` approximates ``y(t[i])``; ``out[0]`` equals ``y0``.

    Raises:
        ConfigError: invalid arguments (unknown names, unsupported dtypes, non-monotone times,
            bad tolerances, ``func`` returning something other than a tensor of ``y0``'s shape).
        SolverError: the solve failed (max steps, step-size underflow, a non-finite state or
            step size); with ``batch="independent"``, ``.sample`` is the failing sample.
    """
    grad_method = get_method(method)
    problem, independent = _build_problem(
        func,
        y0,
        t,
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        first_step=first_step,
        step_size=step_size,
        params=params,
        stats=stats,
        controller=controller,
        grad_method=grad_method,
        compile=compile,
        batch=batch,
    )
    if problem.compiled is not None:
        need_grad = torch.is_grad_enabled() and (
            y0.requires_grad or any(p.requires_grad for p in problem.params)
        )
        try:
            if need_grad and t.requires_grad:
                raise CompileUnavailable("gradients with respect to t have no compiled form")
            grad_method.prepare_compiled(problem, need_grad)
        except CompileUnavailable as exc:
            warn_fallback(func, exc.cause)
            problem = dataclasses.replace(problem, compiled=None)
    if independent:
        return grad_method.solve_independent(problem)
    return grad_method.solve(problem)


def _build_problem(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    solver: str | ButcherTableau,
    rtol: float | Tensor,
    atol: float | Tensor,
    max_steps: int,
    first_step: float | None,
    step_size: float | None,
    params: Sequence[Tensor] | None,
    stats: SolveStats | None,
    controller: str | Callable[[], AbstractController],
    grad_method: AbstractGradientMethod | None,
    compile: bool = False,
    batch: str = "shared",
) -> tuple[Problem, bool]:
    """Validate the arguments of :func:`odeint` (and :func:`physid.odeint_jacobian`) into a
    :class:`~physid.gradients.base.Problem`.

    Args:
        grad_method: the method that will differentiate the solve; with ``params=None`` and a
            method that does not record the graph, ``func`` is evaluated once to find the
            tensors a closure captured. ``None``: no search (the caller lists ``params``).

    Returns:
        The problem (``compiled`` set when the compiled pieces were prepared) and whether the
        batch is ``"independent"``.

    Raises:
        ConfigError: see :func:`odeint`.
    """
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise ConfigError("y0 must be a floating-point tensor.")
    if not isinstance(t, Tensor) or t.ndim != 1 or not t.is_floating_point() or len(t) < 1:
        raise ConfigError("t must be a non-empty 1-D floating-point tensor of output times.")
    for name, dtype in (("y0", y0.dtype), ("t", t.dtype)):
        if dtype not in SUPPORTED_DTYPES:
            raise ConfigError(
                f"{name} has dtype {dtype}; odeint supports float32 and float64 (half precision "
                "cannot meet usual tolerances and overflows the step-size control): cast with "
                ".float() or .double()."
            )
    tableau = get_tableau(solver)
    if len(t) > 1:
        dt = torch.diff(t.detach())
        if not (bool((dt > 0).all()) or bool((dt < 0).all())):
            raise ConfigError("t must be strictly increasing or strictly decreasing.")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ConfigError("t must be finite.")
    rtol = _tolerance("rtol", rtol)
    atol = _tolerance("atol", atol)
    if float(torch.as_tensor(rtol).max()) == 0 and float(torch.as_tensor(atol).max()) == 0:
        raise ConfigError("rtol and atol cannot both be zero.")
    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}.")
    max_steps = int(max_steps)
    if first_step is not None:
        first_step = _real("first_step", first_step)
        if not (math.isfinite(first_step) and first_step != 0):
            raise ConfigError(f"first_step must be finite and non-zero, got {first_step}.")
    if step_size is not None:
        step_size = _real("step_size", step_size)
        if not (math.isfinite(step_size) and step_size > 0):
            raise ConfigError(f"step_size must be positive, got {step_size}.")

    if step_size is not None:
        make_controller: Callable[[], AbstractController] = ConstantController
    elif not tableau.adaptive:
        raise ConfigError(f"the fixed-step solver {tableau.name!r} needs step_size.")
    elif isinstance(controller, str):
        if controller not in _CONTROLLERS:
            raise ConfigError(f"unknown controller {controller!r}; choose 'i' or 'pi'.")
        make_controller = _CONTROLLERS[controller]
    elif callable(controller):
        make_controller = controller
    else:
        raise ConfigError(f"controller must be 'i', 'pi' or a callable, got {controller!r}.")

    if batch not in BATCH_MODES:
        raise ConfigError(f"batch must be 'shared' or 'independent', got {batch!r}.")
    if batch == "independent" and (y0.ndim == 0 or y0.shape[0] == 0):
        raise ConfigError(
            "batch='independent' takes the leading dimension of y0 as the batch: y0 needs at "
            f"least one dimension and one sample, got shape {tuple(y0.shape)}."
        )
    independent = batch == "independent"

    compiled = None
    if compile and independent:
        warn_fallback(func, "batch='independent' has no compiled form")
    elif compile and len(t) > 1:
        compiled = _compiled(func, y0, t, tableau)
    probe_captured = grad_method is not None and not grad_method.records_graph
    f0: Tensor | None = None
    if params is None:
        params = list(func.parameters()) if isinstance(func, nn.Module) else []
        if compiled is not None and probe_captured:
            # the capture saw every tensor func reads: their leaves are what it closed over
            known = {id(p) for p in params}
            for x in compiled.cap.originals:
                for leaf in captured_leaves(x):
                    if id(leaf) not in known:
                        known.add(id(leaf))
                        params.append(leaf)
        elif probe_captured and len(t) > 1 and torch.is_grad_enabled():
            # find what func closed over; the evaluation is reused as the solve's first
            f0, leaves = (probe_per_sample if independent else probe)(func, y0, t)
            known = {id(p) for p in params}
            params = [*params, *(p for p in leaves if id(p) not in known)]
    if compiled is not None and probe_captured:
        f0 = compiled.cap.f0
    ps = tuple(p for p in params if isinstance(p, Tensor))
    problem = Problem(
        func=func,
        y0=y0,
        t=t,
        tableau=tableau,
        make_controller=make_controller,
        tol=Tolerances(rtol, atol, max_steps, first_step, step_size),
        params=ps,
        stats=stats if stats is not None else SolveStats(),
        f0=f0,
        compiled=compiled,
    )
    return problem, independent


def _compiled(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    tableau: ButcherTableau,
) -> CompiledSolve | None:
    """The compiled pieces of a solve, or ``None`` after one warning naming the cause."""
    try:
        return prepare(func, y0, t, tableau)
    except CompileUnavailable as exc:
        warn_fallback(func, exc.cause)
        return None
