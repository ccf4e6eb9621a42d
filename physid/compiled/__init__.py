"""The compiled fast path of :func:`physid.odeint` (``compile=True``).

On the small physical systems physid exists for, an eager solve spends nearly all its time in
per-operation overhead: a dopri5 step of the three-body field is ~40 torch operations of a few
microseconds each around ~1 µs of arithmetic. The fast path compiles each *step* — every stage
with the user's vector field inlined, the new state and the error norm — into one Inductor
kernel that the unchanged step loop calls once per attempt, and, for ``aca``, the replay of an
accepted step with its vector-Jacobian product into another. The loop, the controller, the
output bookkeeping and every failure status are those of the eager path, so both take the same
steps and give the same values and gradients up to the round-off of fused arithmetic.

Design, with the measurements behind it, in ``docs/fast-path.md``:

* TorchDynamo captures ``func`` once per solve (:mod:`physid.compiled._capture`) and guards it;
  the kernels are traced with ``make_fx`` and compiled by Inductor, then called directly, with
  no per-call guard (:mod:`physid.compiled._build`).
* Kernels are cached on the captured graph in this process and by Inductor's FX graph cache on
  disk across processes; what makes a new kernel is listed in :func:`recompile_triggers`.
* Anything that stops compilation — no C++ compiler, a graph break in ``func``, an operation
  Inductor cannot lower, a gradient method or norm without a compiled form — gives exactly one
  :class:`CompileFallbackWarning` naming the cause, and the eager path runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from physid.compiled._build import BUILD_STATS, CompileUnavailable
from physid.compiled._capture import Capture, capture
from physid.compiled._kernels import AdjointField, Field, KernelSet

if TYPE_CHECKING:
    from physid.compiled.arith import CompiledArithmetic, CompiledGraphArithmetic
    from physid.controllers.norms import AbstractNorm
    from physid.gradients._loop import Tolerances
    from physid.solvers.rk import GraphRKStepper

__all__ = [
    "CompileFallbackWarning",
    "CompiledSolve",
    "CompileUnavailable",
    "compile_stats",
    "prepare",
    "recompile_triggers",
    "reset",
    "warn_fallback",
]


class CompileFallbackWarning(UserWarning):
    """``compile=True`` could not compile this solve; the eager path ran instead."""


_WARNED: set[tuple[Any, str]] = set()
_FAILED_FUNCS: dict[Any, str] = {}


def _func_key(func: Callable[..., Any]) -> Any:
    """What identifies a user's function for remembering a failure: its code object (a
    module's ``forward``), else its type."""
    if isinstance(func, torch.nn.Module):
        fwd = getattr(type(func), "forward", None)
        return getattr(fwd, "__code__", type(func))
    return getattr(func, "__code__", type(func))


def warn_fallback(func: Callable[..., Any], cause: str) -> None:
    """Warn once per function and cause that the eager path runs instead."""
    key = (_func_key(func), cause)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(
        f"physid.odeint(compile=True): {cause}; running the eager path instead.",
        CompileFallbackWarning,
        stacklevel=3,
    )


@dataclass
class CompileStats:
    """Process-wide counts of the compiled path.

    Attributes:
        captures: graphs TorchDynamo captured from user functions (a new one is a recompile).
        kernels: kernels built (traced and compiled, or loaded from the on-disk cache).
        seconds: wall-clock seconds spent capturing and building.
    """

    captures: int
    kernels: int
    seconds: float


def compile_stats() -> CompileStats:
    """The counts so far (a copy); compare two to see what a call compiled."""
    return CompileStats(BUILD_STATS.captures, BUILD_STATS.kernels, BUILD_STATS.seconds)


def reset() -> None:
    """Forget remembered failures and warnings (compiled kernels stay cached on their graphs;
    ``torch._dynamo.reset()`` drops those too)."""
    _WARNED.clear()
    _FAILED_FUNCS.clear()


def recompile_triggers() -> tuple[str, ...]:
    """What makes the fast path compile again, in words (also in ``docs/fast-path.md``)."""
    return (
        "a new graph of func: TorchDynamo's guards failed — another shape, dtype, stride or "
        "device of y or of a tensor func reads, a changed Python value func reads (an "
        "attribute, a global, a closure's non-tensor), a different module structure",
        "another solver (tableau), another error norm, another state dtype or device, another "
        "layout of the tolerances (a number vs a tensor of some shape), another set of tensors "
        "that need gradients (adjoint/aca backward kernels)",
        "NOT: new values of y0, t, parameters or tolerances, another number of output times, "
        "other step sizes, another max_steps or first_step",
    )


@dataclass
class CompiledSolve:
    """The compiled pieces serving one :func:`physid.odeint` call.

    Attributes:
        cap: the capture of ``func`` (its graph, its tensors in this call, ``f(t0, y0)``).
        kernels: the kernel set of ``func`` on the flat state.
        shape: ``y0``'s shape.
        time_dtype: ``t``'s dtype.
    """

    cap: Capture
    kernels: KernelSet
    shape: torch.Size
    time_dtype: torch.dtype
    backward: Any = None
    _adjoint: dict[Any, KernelSet] = field(default_factory=dict)

    def arithmetic(
        self,
        times: list[float],
        tol: Tolerances,
        norm: AbstractNorm,
        kernels: KernelSet | None = None,
        y0: Tensor | None = None,
    ) -> CompiledArithmetic:
        """The compiled graph-free arithmetic for a solve over ``times`` (builds its kernels).

        Args:
            kernels: the kernel set of the field to integrate (default: ``func``'s).
            y0: a flat state of that field (default: ``y0``).
        """
        from physid.compiled.arith import CompiledArithmetic, CompiledStepper

        ks = kernels if kernels is not None else self.kernels
        z0 = y0 if y0 is not None else torch.zeros(ks.n, dtype=ks.dtype, device=ks.device)
        stepper = CompiledStepper(ks, z0, self.cap.extras)
        return CompiledArithmetic(stepper, times, tol, norm)

    def graph_arithmetic(self, stepper: GraphRKStepper, times: Tensor) -> CompiledGraphArithmetic:
        """The compiled in-graph arithmetic (``naive``) over ``times``."""
        from physid.compiled.arith import CompiledGraphArithmetic

        return CompiledGraphArithmetic(stepper, times, self.kernels, self.cap.originals)

    def needs_grad(self) -> tuple[int, ...]:
        """Positions of the capture's tensors that require grad."""
        return tuple(i for i, x in enumerate(self.cap.originals) if x.requires_grad)

    def param_grads(
        self, grad_idx: Sequence[int], grads: Sequence[Tensor], params: Sequence[Tensor]
    ) -> list[Tensor]:
        """Gradients of ``params`` from those of the capture's tensors ``grad_idx``.

        A parameter ``func`` reads directly takes its tensor's gradient; a captured non-leaf
        (``k = exp(log_k)``) passes its gradient on to the parameters it was computed from, in
        one autograd call (its graph is kept for the next solve).
        """
        out = [torch.zeros_like(p) for p in params]
        where = {id(p): i for i, p in enumerate(params)}
        chain_in, chain_g = [], []
        for j, gj in zip(grad_idx, grads, strict=True):
            orig = self.cap.originals[j]
            i = where.get(id(orig))
            if i is not None:
                out[i] = out[i] + gj.to(params[i].dtype)
            elif orig.grad_fn is not None:
                chain_in.append(orig)
                chain_g.append(gj)
        if chain_in and params:
            from physid.gradients.base import freed_graph_error

            try:
                more = torch.autograd.grad(
                    chain_in, list(params), chain_g, allow_unused=True, retain_graph=True
                )
            except RuntimeError as exc:
                freed = freed_graph_error(exc)
                if freed is None:
                    raise
                raise freed from exc
            for i, gm in enumerate(more):
                if gm is not None:
                    out[i] = out[i] + gm
        return out

    def grad_positions(self, params: Sequence[Tensor]) -> list[int | None]:
        """For each of ``params``, its position among the capture's tensors (``None``: ``func``
        does not read it directly)."""
        where = {id(x): i for i, x in enumerate(self.cap.originals)}
        return [where.get(id(p)) for p in params]

    def adjoint_kernels(
        self, positions: Sequence[int | None], sizes: Sequence[int], z0: Tensor
    ) -> KernelSet:
        """The kernel set of the adjoint's augmented field over ``z = [y, a_y, a_theta]``."""
        key = (tuple(positions), tuple(sizes))
        ks = self._adjoint.get(key)
        if ks is None:
            aug = AdjointField(
                self.cap, self.shape, self.time_dtype, positions, sizes, self.kernels.dtype
            )
            ks = KernelSet(self.cap, self.kernels.tab, aug, z0)
            self._adjoint[key] = ks
        return ks


def _in_dispatch_mode() -> bool:
    """Whether a (non-infrastructure) ``TorchDispatchMode`` is active."""
    from torch.utils import _python_dispatch as dispatch

    try:
        return bool(dispatch.is_in_torch_dispatch_mode(include_infra_modes=False))
    except TypeError:  # torch < 2.3: no include_infra_modes
        return bool(dispatch._get_current_dispatch_mode())


def prepare(
    func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, t: Tensor, tableau: Any
) -> CompiledSolve:
    """Capture ``func`` for a solve from ``(t[0], y0)``.

    Raises:
        CompileUnavailable: ``func`` cannot be captured (remembered: a function that failed is
            not tried again in this process until :func:`reset`).
    """
    key = _func_key(func)
    if key in _FAILED_FUNCS:
        raise CompileUnavailable(_FAILED_FUNCS[key])
    if _in_dispatch_mode():
        # TorchDynamo does not trace under a user TorchDispatchMode (a memory or FLOP counter);
        # the cause is the caller's context, not func: run eagerly now, do not remember it.
        raise CompileUnavailable("a TorchDispatchMode is active (it cannot be compiled through)")
    if y0.dtype not in (torch.float32, torch.float64):
        raise CompileUnavailable(f"the state dtype {y0.dtype} has no compiled form")
    t0 = torch.tensor(float(t.detach()[0]), dtype=t.dtype, device=y0.device)
    try:
        cap = capture(func, t0, y0.detach())
    except CompileUnavailable as exc:
        if exc.cause.startswith("TorchDynamo could not capture"):
            _FAILED_FUNCS[key] = exc.cause
        raise
    flat = y0.detach().reshape(-1)
    kernels = KernelSet(cap, tableau, Field(cap, y0.shape, t.dtype), flat)
    return CompiledSolve(cap, kernels, y0.shape, t.dtype)
