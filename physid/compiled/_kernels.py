"""The compiled pieces of a Runge-Kutta solve, each one kernel with the user's field inlined.

Every kernel is a pure function of tensors built from three things: the captured vector field
(:class:`Field`), a Butcher tableau, and the metadata of its inputs. Time and step size travel
as one float64 tensor ``th = [t, h]`` so that changing them never recompiles; tolerances travel
as tensors for the same reason. The arithmetic mirrors the eager steppers of
:mod:`physid.solvers.rk` operation for operation (stage inputs ``y + h sum_j a_ij k_j`` with
``h`` cast to the state's dtype, stage times ``t + c_i h`` in float64 cast to the time dtype, the
error ratio ``norm(err / (atol + rtol max(|y|, |y1|))) * |h|``), so a compiled solve takes the
same steps as the eager one; values differ only by the round-off of fused arithmetic.

Kernels:

* ``attempt``: one step attempt of the graph-free loop: all stages, the new state, the error
  ratio. Returns ``(y1, K, ratio)`` with the stages ``K`` ``(s, n)`` (the dense output needs
  them; with FSAL ``K[-1]`` is the next step's first stage).
* ``fixed``: the same for a method without an error estimate: ``(y1, K)``.
* ``field``: one evaluation of the field, flat.
* ``replay_vjp``: ``aca``'s backward step: replay an accepted step from its stored start state
  and pull the adjoint back through it, accumulating the parameter gradients in place of a
  separate sum: ``(a_y, *acc) <- (a_{y1}, stage cotangents, *acc)``.
* ``field_vjp``: one vector-Jacobian product of the field (``aca``'s last FSAL stage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from physid.compiled._build import CompileUnavailable, Kernel, build_kernel
from physid.compiled._capture import Capture
from physid.controllers.norms import AbstractNorm, BlockNorm, RMSNorm
from physid.solvers.tableau import ButcherTableau

__all__ = ["Field", "KernelSet", "norm_key"]


def norm_key(norm: AbstractNorm) -> tuple[Any, ...]:
    """What identifies a norm's arithmetic, for the kernel cache.

    Raises:
        CompileUnavailable: a norm class the compiled path does not know (its configuration
            could not be told apart).
    """
    if type(norm) is RMSNorm:
        return ("rms",)
    if isinstance(norm, BlockNorm) and type(norm).__call__ is BlockNorm.__call__:
        return ("block", tuple(norm.bounds))
    raise CompileUnavailable(f"the error norm {type(norm).__name__} has no compiled form")


class Field:
    """The captured vector field on flat states: ``field(t, y, extras) -> f`` (all ``(n,)``).

    ``t`` is a float64 0-d tensor, cast to the time dtype the user's function receives.

    Args:
        cap: the capture of the user's function.
        shape: ``y``'s shape as the user's function sees it.
        time_dtype: the dtype of ``t`` the function receives.
    """

    tag: tuple[Any, ...] = ("f",)

    def __init__(self, cap: Capture, shape: torch.Size, time_dtype: torch.dtype):
        self.gm = cap.graph.gm
        self.n_inputs = cap.graph.n_inputs
        self.t_pos = cap.t_pos
        self.y_pos = cap.y_pos
        self.shape = shape
        self.time_dtype = time_dtype

    def __call__(self, t: Tensor, y: Tensor, extras: Sequence[Tensor]) -> Tensor:
        args: list[Any] = []
        it = iter(extras)
        for i in range(self.n_inputs):
            if i == self.t_pos:
                args.append(t.to(self.time_dtype))
            elif i == self.y_pos:
                args.append(y.view(self.shape))
            else:
                args.append(next(it))
        out = self.gm(*args)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(-1)


class AdjointField(Field):
    """The continuous adjoint's augmented field on ``z = [y, a_y, a_theta]`` (flat):
    ``[f, -a_y^T df/dy, -a_y^T df/dtheta]``, as :mod:`physid.gradients.adjoint` forms it.

    Args:
        cap, shape, time_dtype: as :class:`Field`.
        positions: for each tensor ``theta_k`` of ``a_theta``, in order, its position among the
            capture's extras, or ``None`` when ``func`` does not read it (its channels stay 0).
        sizes: the number of elements of each ``theta_k``.
        dtype: the state's dtype (``a_theta`` is kept in it).
    """

    def __init__(
        self,
        cap: Capture,
        shape: torch.Size,
        time_dtype: torch.dtype,
        positions: Sequence[int | None],
        sizes: Sequence[int],
        dtype: torch.dtype,
    ):
        super().__init__(cap, shape, time_dtype)
        self.positions = tuple(positions)
        self.sizes = tuple(sizes)
        self.dtype = dtype
        self.n = int(torch.Size(shape).numel())
        self.tag = ("adjoint", self.positions, self.sizes)

    def __call__(self, t: Tensor, z: Tensor, extras: Sequence[Tensor]) -> Tensor:
        n = self.n
        read = [j for j in self.positions if j is not None]

        def f(yy: Tensor, *th: Tensor) -> Tensor:
            ex = list(extras)
            for j, v in zip(read, th, strict=True):
                ex[j] = v
            return Field.__call__(self, t, yy, ex)

        res = torch.func.vjp(f, z[:n], *[extras[j] for j in read])
        fval, pull = res[0], res[1]
        pulled: tuple[Tensor, ...] = pull(-z[n : 2 * n])
        grads = iter(pulled[1:])
        parts = [fval, pulled[0]]
        for j, size in zip(self.positions, self.sizes, strict=True):
            if j is None:
                parts.append(torch.zeros(size, dtype=self.dtype, device=z.device))
            else:
                parts.append(next(grads).reshape(-1).to(self.dtype))
        return torch.cat(parts)


def _combine(y: Tensor, h: Tensor, coefs: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``y + h * sum_j coefs[j] ks[j]`` (zero coefficients skipped)."""
    acc: Tensor | None = None
    for cj, kj in zip(coefs, ks, strict=False):
        if cj != 0.0:
            term = cj * kj
            acc = term if acc is None else acc + term
    if acc is None:
        return y
    return y + h * acc


class KernelSet:
    """The kernels of one captured field, one tableau and one state layout.

    Kernels are built on first use and cached on the captured graph
    (:attr:`~physid.compiled._capture.Graph.kernels`), keyed by kind, tableau, norm, the
    positions of the inputs that need gradients and every input's shape, stride, dtype and
    device. A failure is remembered on the graph, so it is reported once and not retried.

    Args:
        cap: the capture serving this solve.
        tableau: the Runge-Kutta method.
        field: the flat field the kernels integrate (:class:`Field` or :class:`AdjointField`).
        y0: the flat initial state ``(n,)`` of that field (its dtype and device are the solve's).
    """

    def __init__(self, cap: Capture, tableau: ButcherTableau, field: Field, y0: Tensor):
        self.cap = cap
        self.tab = tableau
        self.field = field
        self.n = y0.numel()
        self.dtype = y0.dtype
        self.device = y0.device
        self.time_dtype = field.time_dtype
        self.s = tableau.stages
        self.a = tableau.a_matrix.tolist()
        self.b = list(tableau.b)
        self.c = list(tableau.c)
        self.e = list(tableau.b_err) if tableau.b_err is not None else None
        self.fsal = tableau.fsal
        # stages a replay evaluates: an FSAL method's last stage is the next step's first
        self.n_replay = self.s - 1 if self.fsal else self.s

    # -- cache ------------------------------------------------------------------------------

    def _get(
        self,
        kind: str,
        options: tuple[Any, ...],
        make: Callable[[], Callable[..., Any]],
        inputs: Sequence[Tensor],
    ) -> Kernel:
        graph = self.cap.graph
        key = (kind, self.field.tag, self.tab.name, options, tuple(_meta(x) for x in inputs))
        kernel = graph.kernels.get(key)
        if kernel is None:
            if graph.failed is not None:
                raise CompileUnavailable(graph.failed)
            try:
                kernel = build_kernel(f"{kind} ({self.tab.name})", make(), inputs)
            except CompileUnavailable as exc:
                graph.failed = exc.cause
                raise
            graph.kernels[key] = kernel
        return kernel

    def th(self, t: float, h: float) -> Tensor:
        """``[t, h]`` as the float64 tensor the kernels take."""
        return torch.tensor([t, h], dtype=torch.float64, device=self.device)

    # -- the forward step -------------------------------------------------------------------

    def _stages(
        self, t: Tensor, h: Tensor, y: Tensor, k0: Tensor, extras: Sequence[Tensor], count: int
    ) -> tuple[list[Tensor], Tensor]:
        """Stages ``k_0 .. k_{count-1}`` (``k_0`` given) and the last stage input."""
        hs = h.to(self.dtype)
        ks = [k0]
        yi = y
        for i in range(1, count):
            yi = _combine(y, hs, self.a[i][:i], ks)
            ks.append(self.field(t + self.c[i] * h, yi, extras))
        return ks, yi

    def attempt(
        self, norm: AbstractNorm, rtol: Tensor, atol: Tensor, example: Sequence[Tensor]
    ) -> Kernel:
        """The ``attempt`` kernel: ``(th, y, f0, rtol, atol, *extras) -> (y1, K, ratio)``."""
        e = self.e
        if e is None:
            raise CompileUnavailable(f"{self.tab.name} has no error estimate")

        def fn(th: Tensor, y: Tensor, f0: Tensor, rt: Tensor, at: Tensor, *extras: Tensor) -> Any:
            t, h = th[0], th[1]
            ks, yi = self._stages(t, h, y, f0, extras, self.s)
            y1 = yi if self.fsal else _combine(y, h.to(self.dtype), self.b, ks)
            err = _combine(
                torch.zeros_like(y), torch.ones((), dtype=self.dtype, device=y.device), e, ks
            )
            scale = at + rt * torch.maximum(torch.abs(y), torch.abs(y1))
            ratio = norm(err / scale) * torch.abs(h).to(self.dtype)
            return y1, torch.stack(ks), ratio

        return self._get(
            "attempt", norm_key(norm), lambda: fn, [*example[:3], rtol, atol, *example[3:]]
        )

    def fixed(self, example: Sequence[Tensor]) -> Kernel:
        """The ``fixed`` kernel: ``(th, y, f0, *extras) -> (y1, K)`` (no error estimate)."""

        def fn(th: Tensor, y: Tensor, f0: Tensor, *extras: Tensor) -> Any:
            t, h = th[0], th[1]
            ks, yi = self._stages(t, h, y, f0, extras, self.s)
            y1 = yi if self.fsal else _combine(y, h.to(self.dtype), self.b, ks)
            return y1, torch.stack(ks)

        return self._get("fixed", (), lambda: fn, example)

    def field_kernel(self, example: Sequence[Tensor]) -> Kernel:
        """The ``field`` kernel: ``(t, y, *extras) -> (f,)`` with ``t`` a float64 0-d tensor."""

        def fn(t: Tensor, y: Tensor, *extras: Tensor) -> Any:
            return (self.field(t, y, extras),)

        return self._get("field", (), lambda: fn, example)

    # -- naive: attempts as autograd nodes ----------------------------------------------------

    def _graph_stages(
        self, t: Tensor, h: Tensor, y: Tensor, f0: Tensor, extras: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One attempt as :class:`~physid.solvers.rk.GraphRKStepper` takes it, with ``t`` and
        ``h`` tensors of any dtype: ``(y1, K, err)``."""
        ks = [f0]
        yi = y
        for i in range(1, self.s):
            yi = _combine(y, h, self.a[i][:i], ks)
            ks.append(self.field(t + self.c[i] * h, yi, extras))
        y1 = yi if self.fsal else _combine(y, h, self.b, ks)
        err = None
        if self.e is not None:
            err = _combine(torch.zeros_like(y), torch.ones((), dtype=y.dtype), self.e, ks)
        return y1, torch.stack(ks), err

    def graph_step(self, example: Sequence[Tensor]) -> Kernel:
        """The ``graph_step`` kernel: ``(t, h, y, f0, *extras) -> (y1, K[, err])``."""

        def fn(t: Tensor, h: Tensor, y: Tensor, f0: Tensor, *extras: Tensor) -> Any:
            y1, K, err = self._graph_stages(t, h, y, f0, extras)
            return (y1, K) if err is None else (y1, K, err)

        return self._get("graph_step", (), lambda: fn, example)

    def graph_step_vjp(self, grad_idx: tuple[int, ...], example: Sequence[Tensor]) -> Kernel:
        """The ``graph_step_vjp`` kernel: ``(t, h, y, f0, g_y1, g_K[, g_err], *extras) -> (g_t,
        g_h, g_y, g_f0, *g_extras[grad_idx])``."""
        n_cot = 2 if self.e is None else 3

        def fn(t: Tensor, h: Tensor, y: Tensor, f0: Tensor, *rest: Tensor) -> Any:
            cots, extras = rest[:n_cot], list(rest[n_cot:])

            def attempt(tt: Tensor, hh: Tensor, yy: Tensor, ff: Tensor, *gx: Tensor) -> Any:
                ex = list(extras)
                for j, v in zip(grad_idx, gx, strict=True):
                    ex[j] = v
                y1, K, err = self._graph_stages(tt, hh, yy, ff, ex)
                return (y1, K) if err is None else (y1, K, err)

            pull = torch.func.vjp(attempt, t, h, y, f0, *[extras[j] for j in grad_idx])[1]
            return tuple(pull(tuple(cots)))

        return self._get("graph_step_vjp", grad_idx, lambda: fn, example)

    # -- aca's backward ---------------------------------------------------------------------

    def replay_vjp(self, grad_idx: tuple[int, ...], example: Sequence[Tensor]) -> Kernel:
        """The ``replay_vjp`` kernel.

        Signature: ``(th, y, a, cot, *acc, *extras) -> (a_y, *acc)``: ``a`` is the adjoint of the
        step's end state, ``cot`` ``(n_replay + 1, n)`` holds the cotangent that reaches ``y``
        directly (row 0, from dense outputs) and those of the replayed stages (rows 1..);
        ``acc`` are the running gradients of ``extras[grad_idx]``.
        """
        m = self.n_replay
        nacc = len(grad_idx)

        def fn(th: Tensor, y: Tensor, a: Tensor, cot: Tensor, *rest: Tensor) -> Any:
            acc, extras = rest[:nacc], list(rest[nacc:])
            t, h = th[0], th[1]

            def step(yy: Tensor, *gx: Tensor) -> tuple[Tensor, Tensor]:
                ex = list(extras)
                for j, v in zip(grad_idx, gx, strict=True):
                    ex[j] = v
                ks, _ = self._stages(t, h, yy, self.field(t, yy, ex), ex, m)
                y1 = _combine(yy, h.to(self.dtype), self.b[:m], ks)
                return y1, torch.stack(ks)

            pull = torch.func.vjp(step, y, *[extras[j] for j in grad_idx])[1]
            pulled: tuple[Tensor, ...] = pull((a, cot[1:]))
            gy, gx = pulled[0], pulled[1:]
            return (gy + cot[0], *[ac + g for ac, g in zip(acc, gx, strict=True)])

        return self._get("replay_vjp", grad_idx, lambda: fn, example)

    def field_vjp(self, grad_idx: tuple[int, ...], example: Sequence[Tensor]) -> Kernel:
        """The ``field_vjp`` kernel: ``(t, y, v, *acc, *extras) -> (v^T df/dy, *acc + v^T
        df/dextras)``."""
        nacc = len(grad_idx)

        def fn(t: Tensor, y: Tensor, v: Tensor, *rest: Tensor) -> Any:
            acc, extras = rest[:nacc], list(rest[nacc:])

            def f(yy: Tensor, *gx: Tensor) -> Tensor:
                ex = list(extras)
                for j, val in zip(grad_idx, gx, strict=True):
                    ex[j] = val
                return self.field(t, yy, ex)

            pull = torch.func.vjp(f, y, *[extras[j] for j in grad_idx])[1]
            pulled: tuple[Tensor, ...] = pull(v)
            gy, gx = pulled[0], pulled[1:]
            return (gy, *[ac + g for ac, g in zip(acc, gx, strict=True)])

        return self._get("field_vjp", grad_idx, lambda: fn, example)


def _meta(x: Tensor) -> tuple[Any, ...]:
    return (tuple(x.shape), x.stride(), x.dtype, x.device)
