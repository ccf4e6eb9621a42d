"""Trace a pure tensor function and compile it with Inductor into a directly callable kernel.

A kernel is traced with ``make_fx`` on fake tensors (Inductor's decompositions applied), then
compiled by Inductor's inner compiler (``compile_fx_inner``) — the step Inductor itself runs after
AOTAutograd — and called through the compiled module's entry point with a list of tensors. No
TorchDynamo frame evaluation, guard check or AOTAutograd runtime wrapper runs per call: on this
CPU a compiled call costs ~10 µs of overhead instead of ~70 µs through ``torch.compile``. The
caller is the guard: :mod:`physid.compiled._capture` lets TorchDynamo check the user's function
once per solve and keys the kernels on every input's shape, dtype, stride and device.

On a CPU the C++ wrapper is used (Inductor's ``cpp_wrapper``): the kernel's buffers are
allocated in C++ rather than by a Python wrapper, which halves the cost of a call of an RK step.
On CUDA the Python wrapper (Triton kernels) is wrapped in a CUDA graph (:class:`CudaGraphKernel`)
so that a call is one graph launch.

Compiled artefacts are cached on disk by Inductor's FX graph cache, keyed on the traced graph, the
input metadata, the configuration and the torch version: a new process that builds the same
kernel traces it again (fractions of a second) and loads the compiled module instead of running
the C++ compiler.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CompileUnavailable", "Kernel", "CudaGraphKernel", "build_kernel", "BUILD_STATS"]


class CompileUnavailable(Exception):
    """The compiled path cannot run this solve; ``cause`` says why (shown in the warning)."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


@dataclass
class BuildStats:
    """Process-wide counts of the compiled path (read by tests and benchmarks).

    Attributes:
        captures: graphs TorchDynamo captured from users' functions (each new one is a
            recompile of the user's function).
        kernels: kernels traced and compiled (or loaded from Inductor's on-disk cache).
        seconds: wall-clock seconds spent building kernels and capturing functions.
    """

    captures: int = 0
    kernels: int = 0
    seconds: float = 0.0


BUILD_STATS = BuildStats()


class Kernel:
    """A compiled pure function: ``kernel(*tensors) -> tuple of tensors``.

    Attributes:
        name: what the kernel computes (for messages).
        seconds: wall-clock seconds its tracing and compilation took.
    """

    def __init__(self, name: str, call: Callable[[list[Any]], Sequence[Tensor]], seconds: float):
        self.name = name
        self.seconds = seconds
        self._call = call

    def __call__(self, *args: Tensor) -> Sequence[Tensor]:
        return self._call(list(args))

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, built in {self.seconds:.2f} s)"


class CudaGraphKernel(Kernel):
    """A kernel replayed as one CUDA graph (untested here: no GPU was available).

    The first call runs the kernel on a side stream to warm it up, then captures it into a
    ``torch.cuda.CUDAGraph`` over static input buffers. Every call copies its inputs into those
    buffers, replays the graph and returns clones of the static outputs (the next replay
    overwrites them).
    """

    def __init__(self, inner: Kernel):
        super().__init__(inner.name + " (CUDA graph)", inner._call, inner.seconds)
        self._graph: Any = None
        self._static_in: list[Tensor] = []
        self._static_out: Sequence[Tensor] = ()

    def _capture(self, args: Sequence[Tensor]) -> None:
        self._static_in = [a.detach().clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._call(list(self._static_in))
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._call(list(self._static_in))
        self._graph = graph

    def __call__(self, *args: Tensor) -> Sequence[Tensor]:
        if self._graph is None:
            self._capture(args)
        for dst, src in zip(self._static_in, args, strict=True):
            dst.copy_(src, non_blocking=True)
        self._graph.replay()
        return tuple(o.clone() for o in self._static_out)


def build_kernel(name: str, fn: Callable[..., Any], example_inputs: Sequence[Tensor]) -> Kernel:
    """Trace ``fn`` on fake copies of ``example_inputs`` and compile it.

    Args:
        name: what the kernel computes (for messages).
        fn: a pure function of tensors returning a tuple of tensors; it must not branch on tensor
            values (tracing runs on fake tensors, so such a branch fails instead of being baked
            in).
        example_inputs: tensors with the shapes, dtypes, strides and device of every later call.

    Returns:
        The kernel; on CUDA a :class:`CudaGraphKernel`.

    Raises:
        CompileUnavailable: tracing or compilation failed (no working C++ compiler, an operation
            Inductor cannot lower, a data-dependent branch), with the cause.
    """
    start = time.perf_counter()
    try:
        from torch._inductor.compile_fx import compile_fx_inner
        from torch._inductor.decomposition import select_decomp_table
        from torch.fx.experimental.proxy_tensor import make_fx
    except ImportError as exc:  # pragma: no cover - a torch without Inductor
        raise CompileUnavailable(f"this torch has no Inductor ({exc})") from exc
    with _inductor_options():
        kernel = _build(name, fn, example_inputs, compile_fx_inner, select_decomp_table, make_fx)
    seconds = time.perf_counter() - start
    kernel.seconds = seconds
    BUILD_STATS.kernels += 1
    BUILD_STATS.seconds += seconds
    return kernel


def _inductor_options() -> Any:
    """Inductor options for physid's kernels.

    Inductor checks each vector ISA the CPU's flags report by compiling a probe and loading it in
    a new Python process, once per process: ~3-5 s of every process's first kernel, cached or
    not, on this 2-core machine. The flags are trusted instead (``cpp.vec_isa_ok``), unless the
    user chose with ``TORCHINDUCTOR_VEC_ISA_OK``.
    """
    import torch._inductor.config as inductor_config

    if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") is not None:
        return contextlib.nullcontext()
    return inductor_config.patch({"cpp.vec_isa_ok": True})


def _build(
    name: str,
    fn: Callable[..., Any],
    example_inputs: Sequence[Tensor],
    compile_fx_inner: Any,
    select_decomp_table: Any,
    make_fx: Any,
) -> Kernel:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    inputs = [x.detach() for x in example_inputs]
    device = inputs[0].device if inputs else torch.device("cpu")
    # Inductor's FX graph cache keys need fake inputs of a mode with a shape environment
    fake_mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    fake_inputs = [fake_mode.from_tensor(x, static_shapes=True) for x in inputs]
    try:
        with torch.no_grad():
            gm = make_fx(
                fn,
                decomposition_table=select_decomp_table(),
                tracing_mode="real",
                _allow_non_fake_inputs=True,
            )(*fake_inputs)
    except Exception as exc:
        raise CompileUnavailable(
            f"tracing {name} failed ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    try:
        with torch._guards.tracing(torch._guards.TracingContext(fake_mode)):
            compiled = compile_fx_inner(gm, fake_inputs, cpp_wrapper=device.type == "cpu")
        call = getattr(compiled, "current_callable", None)
        if call is None:
            raise RuntimeError("Inductor returned no callable")
        # one call checks that the module loads and runs
        with torch.no_grad():
            call([x.clone() for x in inputs])
    except Exception as exc:
        raise CompileUnavailable(
            f"Inductor could not compile {name} ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    kernel = Kernel(name, call, 0.0)
    if device.type == "cuda":
        return CudaGraphKernel(kernel)
    return kernel


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__
