"""Benchmark harness: timing, function-evaluation counts and exact tensor-memory accounting.

Generic: it knows gradient methods and solvers, never a physical system. The problems live in
``physid.app.bench_gradients``. Timings are the median of repeats after one warm-up, with
``time.perf_counter`` and ``torch.cuda.synchronize`` on a GPU. They are measured here, never
asserted in the test suite.

Memory: on a GPU, ``torch.cuda.max_memory_allocated``. On a CPU there is no allocator statistic,
so :class:`TensorMemory` counts it exactly instead: a ``TorchDispatchMode`` sees every tensor a
kernel creates, adds its storage's bytes, and a finaliser on the storage subtracts them when the
storage is freed. It counts tensors created inside the measured region (the graph, checkpoints,
transients), which is what distinguishes the gradient methods.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import physid

__all__ = [
    "TensorMemory",
    "Candidate",
    "Measurement",
    "physid_candidates",
    "torchdiffeq_candidates",
    "measure",
    "relative_error",
]


class TensorMemory(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active.

    ``mark()`` starts a window; ``window_peak`` is the peak of live bytes since the last mark.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.window_peak = 0
        self._owned: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._owned.pop(key, 0)

    def mark(self) -> None:
        self.window_peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for x in tree_flatten(out)[0]:
            if isinstance(x, Tensor) and x.device.type != "meta":
                st = x.untyped_storage()
                key = st.data_ptr()
                nbytes = st.nbytes()
                if nbytes and key not in self._owned:
                    self._owned[key] = nbytes
                    self.live += nbytes
                    weakref.finalize(st, self._free, key)
        self.peak = max(self.peak, self.live)
        self.window_peak = max(self.window_peak, self.live)
        return out


@dataclass(frozen=True)
class Candidate:
    """One way of solving and differentiating: ``solve(func, y0, t, rtol, atol, stats)``."""

    name: str
    library: str
    solve: Callable[..., Tensor]
    counts_nfe: bool  # True: fills physid.SolveStats itself; False: count by wrapping func


@dataclass
class Measurement:
    """The numbers of one candidate on one problem."""

    candidate: str
    library: str
    seconds: float
    seconds_all: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None
    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_forward: int | None = None
    steps_backward: int | None = None
    backward_peak_bytes: int | None = None
    retained_bytes: int | None = None
    gradient_error: float | None = None
    loss: float | None = None
    overhead_ratio: float | None = None  # see physid.app.bench_gradients.add_overhead_ratios
    extra: dict[str, Any] = field(default_factory=dict)


def physid_candidates(
    methods: Sequence[str] = physid.GRADIENT_METHODS, *, compile: bool = False
) -> list[Candidate]:
    """physid's gradient methods, eager or on the compiled fast path (``compile=True``; named
    ``"physid <method> (compiled)"``)."""

    def make(method: str) -> Candidate:
        def solve(func, y0, t, rtol, atol, stats, solver="dopri5", **kw):  # type: ignore[no-untyped-def]
            return physid.odeint(
                func,
                y0,
                t,
                method=method,
                solver=solver,
                rtol=rtol,
                atol=atol,
                stats=stats,
                compile=compile,
                **kw,
            )

        suffix = " (compiled)" if compile else ""
        return Candidate(f"physid {method}{suffix}", "physid", solve, True)

    return [make(m) for m in methods]


def torchdiffeq_candidates() -> list[Candidate]:
    """torchdiffeq's ``odeint``, ``odeint_adjoint`` and its seminorm option (empty if absent)."""
    try:
        import torchdiffeq
    except ImportError:
        return []

    def plain(func, y0, t, rtol, atol, stats, solver="dopri5", **kw):  # type: ignore[no-untyped-def]
        return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=solver)

    def adjoint(func, y0, t, rtol, atol, stats, solver="dopri5", **kw):  # type: ignore[no-untyped-def]
        return torchdiffeq.odeint_adjoint(
            func, y0, t, rtol=rtol, atol=atol, method=solver, adjoint_params=kw.get("params")
        )

    def seminorm(func, y0, t, rtol, atol, stats, solver="dopri5", **kw):  # type: ignore[no-untyped-def]
        return torchdiffeq.odeint_adjoint(
            func,
            y0,
            t,
            rtol=rtol,
            atol=atol,
            method=solver,
            adjoint_params=kw.get("params"),
            adjoint_options={"norm": "seminorm"},
        )

    return [
        Candidate("torchdiffeq odeint", "torchdiffeq", plain, False),
        Candidate("torchdiffeq odeint_adjoint", "torchdiffeq", adjoint, False),
        Candidate("torchdiffeq adjoint+seminorm", "torchdiffeq", seminorm, False),
    ]


class _Counting(torch.nn.Module):
    """Wraps ``func`` to count its calls; records the count at the start of the backward pass."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        return self.func(t, y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative_error(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    """``||got - want|| / ||want||`` over all tensors together."""
    num = sum(float((g - w).pow(2).sum()) for g, w in zip(got, want, strict=True))
    den = sum(float(w.pow(2).sum()) for w in want)
    return (num / max(den, 1e-300)) ** 0.5


def measure(
    candidate: Candidate,
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    wrt: Sequence[Tensor],
    *,
    rtol: float,
    atol: float,
    repeats: int = 5,
    reference: Sequence[Tensor] | None = None,
    memory: bool = True,
    solve_kwargs: dict[str, Any] | None = None,
) -> Measurement:
    """Time forward + backward of ``loss_fn(solve(...))`` and count its cost.

    Args:
        wrt: the tensors to differentiate with respect to (``y0`` and/or parameters).
        reference: the reference gradient, for the relative gradient error.
        memory: also run once under :class:`TensorMemory` (slow; CPU only — on a GPU the CUDA
            allocator's peak is used).
    """
    kw = dict(solve_kwargs or {})
    device = y0.device

    def once(f: Callable[[Tensor, Tensor], Tensor], stats: physid.SolveStats | None = None):  # type: ignore[no-untyped-def]
        ys = candidate.solve(f, y0, t, rtol, atol, stats, **kw)
        loss = loss_fn(ys)
        return loss, torch.autograd.grad(loss, list(wrt), allow_unused=True)

    # counts and gradient error
    stats = physid.SolveStats()
    steps_f: int | None
    steps_b: int | None
    if candidate.counts_nfe:
        loss, grads = once(func, stats)
        nfe_f, nfe_b = stats.nfe_forward, stats.nfe_backward
        steps_f, steps_b = stats.steps_accepted, stats.backward_steps_accepted
    else:
        counting = _Counting(func)
        ys = candidate.solve(counting, y0, t, rtol, atol, None, **kw)
        nfe_f = counting.calls
        loss = loss_fn(ys)
        grads = torch.autograd.grad(loss, list(wrt), allow_unused=True)
        nfe_b = counting.calls - nfe_f
        steps_f = steps_b = None
    grads = tuple(
        g if g is not None else torch.zeros_like(w) for g, w in zip(grads, wrt, strict=True)
    )
    err = relative_error(grads, reference) if reference is not None else None

    # timing: one warm-up, then the median
    times, cpu_times = [], []
    for i in range(repeats + 1):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.thread_time()
        once(func)
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.thread_time() - start_cpu)

    peak = retained = None
    if memory:
        peak, retained = _memory(
            lambda: candidate.solve(func, y0, t, rtol, atol, None, **kw), loss_fn, wrt, device
        )
    return Measurement(
        candidate=candidate.name,
        library=candidate.library,
        seconds=statistics.median(times),
        seconds_all=times,
        cpu_seconds=statistics.median(cpu_times),
        nfe_forward=nfe_f,
        nfe_backward=nfe_b,
        steps_forward=steps_f,
        steps_backward=steps_b,
        backward_peak_bytes=peak,
        retained_bytes=retained,
        gradient_error=err,
        loss=float(loss.detach()),
    )


def _memory(
    forward: Callable[[], Tensor],
    loss_fn: Callable[[Tensor], Tensor],
    wrt: Sequence[Tensor],
    device: torch.device,
) -> tuple[int, int]:
    """``(peak bytes during the backward pass, bytes the forward pass left for it)``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        loss = loss_fn(forward())
        torch.cuda.synchronize(device)
        retained = torch.cuda.memory_allocated(device) - base
        torch.cuda.reset_peak_memory_stats(device)
        torch.autograd.grad(loss, list(wrt), allow_unused=True)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, retained
    with TensorMemory() as mem:
        loss = loss_fn(forward())
        retained = mem.live
        mem.mark()
        torch.autograd.grad(loss, list(wrt), allow_unused=True)
        peak = mem.window_peak
    return peak, retained
