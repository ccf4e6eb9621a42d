"""Capture the user's vector field as one graph with TorchDynamo, guarded once per solve.

``func(t, y)`` is an arbitrary Python callable. TorchDynamo turns it into an FX graph of torch
operations whose inputs are ``y``, ``t`` (when used) and every tensor ``func`` reads — module
parameters and buffers, tensors a closure or a global holds — and guards the graph on everything
else it read: shapes, dtypes, strides and devices of those tensors, Python attributes and
globals, the module's structure. ``torch.compile`` is called with a backend of ours that does not
compile anything: it records the graph and returns a runner that evaluates it and remembers the
tensors of the call. Each solve calls the compiled function once (the *probe*, which is also the
solve's first evaluation ``f(t0, y0)``): TorchDynamo checks its guards — and captures a new graph
if one failed — and the runner tells which graph serves this call and with which tensors. The
kernels built from a graph live on it, so a graph is compiled into kernels once.

What ends capture: a graph break (``fullgraph=True`` turns it into an error), TorchDynamo's
recompile limit for the function's code (``torch._dynamo.config.recompile_limit``), an output
other than one tensor of ``y``'s shape, an in-place update of an input. Each raises
:class:`~physid.compiled._build.CompileUnavailable` with the cause.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from physid.compiled._build import BUILD_STATS, CompileUnavailable, Kernel

__all__ = ["Graph", "Capture", "capture"]


@dataclass(eq=False)
class Graph:
    """One TorchDynamo graph of a user's function, and the kernels built from it.

    Attributes:
        gm: the graph; called as ``gm(*inputs)``, returns a 1-tuple.
        n_inputs: the number of its inputs.
        kernels: compiled kernels, keyed by what they compute and their input metadata.
        failed: a cause when building kernels from this graph failed once (not retried).
    """

    gm: torch.fx.GraphModule
    n_inputs: int
    kernels: dict[tuple[Any, ...], Kernel] = field(default_factory=dict)
    failed: str | None = None


@dataclass(frozen=True)
class Capture:
    """The graph serving one solve and the tensors it reads in that solve.

    Attributes:
        graph: the graph.
        t_pos: the input position of ``t`` (``None`` when ``func`` ignores it).
        y_pos: the input position of ``y`` (``None`` when ``func`` ignores it).
        extras: every other input, in order (detached): parameters, buffers, captured tensors.
        originals: the same inputs as ``func`` holds them (not detached), for gradients.
        f0: ``func(t0, y0)`` from the probe, flat and detached.
    """

    graph: Graph
    t_pos: int | None
    y_pos: int | None
    extras: tuple[Tensor, ...]
    originals: tuple[Tensor, ...]
    f0: Tensor


class _Recorder(threading.local):
    graph: Graph | None = None
    args: tuple[Any, ...] = ()


_RECORD = _Recorder()


def _backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    """TorchDynamo backend: record the graph, run it uncompiled, remember each call's inputs."""
    graph = Graph(gm=gm, n_inputs=len(example_inputs))
    BUILD_STATS.captures += 1

    def runner(*args: Any) -> Any:
        _RECORD.graph = graph
        _RECORD.args = args
        return gm(*args)

    return runner


def _probe(func: Callable[[Tensor, Tensor], Tensor], t: Tensor, y: Tensor) -> Tensor:
    return func(t, y)


_TRAMPOLINES: dict[Any, Callable[..., Any]] = {}


def _code_key(func: Callable[..., Any]) -> Any:
    """The code that identifies ``func`` for TorchDynamo: a module's class, a function's code."""
    if isinstance(func, torch.nn.Module):
        return type(func)
    inner = getattr(func, "__func__", func)
    return getattr(inner, "__code__", type(func))


def _trampoline(func: Callable[..., Any]) -> Callable[..., Any]:
    """The compiled probe that serves functions with ``func``'s code.

    ``torch.compile`` is applied to a small trampoline ``(func, t, y) -> func(t, y)`` rather than
    to ``func``: the wrapper then holds no reference to ``func`` (a wrapper cached per function
    would keep every function and module alive), one call costs a guard check (~60 µs) instead
    of a module wrapper's ~0.5 ms, and TorchDynamo does not guard on the identity of a module
    passed in, so new instances of a model reuse the graph. Each code (a module class, a
    function's code object) gets its own copy of the trampoline — a distinct code object — so
    that TorchDynamo's recompile limit counts per user function, as with ``torch.compile(func)``.
    """
    key = _code_key(func)
    tramp = _TRAMPOLINES.get(key)
    if tramp is None:
        code = _probe.__code__.replace(co_name=f"_physid_probe_{len(_TRAMPOLINES)}")
        fn = types.FunctionType(code, _probe.__globals__, code.co_name)
        tramp = torch.compile(fn, backend=_backend, fullgraph=True, dynamic=False)
        _TRAMPOLINES[key] = tramp
    return tramp


def _mutates_inputs(gm: torch.fx.GraphModule) -> bool:
    """Whether the graph updates one of its inputs in place (a side effect kernels cannot
    repeat faithfully)."""
    placeholders = set(gm.graph.find_nodes(op="placeholder"))
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and node.args:
            if node.args[0] in placeholders:
                return True
    return False


def capture(func: Callable[[Tensor, Tensor], Tensor], t0: Tensor, y0: Tensor) -> Capture:
    """Evaluate ``func(t0, y0)`` through TorchDynamo and return the graph that served it.

    Args:
        func: the user's dynamics.
        t0: the initial time, a 0-d tensor of the time dtype.
        y0: the initial state, detached, the user's shape.

    Raises:
        CompileUnavailable: TorchDynamo could not capture ``func`` as one graph, or the graph is
            not a pure function of its inputs.
    """
    start = time.perf_counter()
    _RECORD.graph, _RECORD.args = None, ()
    try:
        with torch.no_grad():
            out = _trampoline(func)(func, t0, y0)
    except Exception as exc:
        raise CompileUnavailable(
            f"TorchDynamo could not capture func as one graph ({type(exc).__name__}: {_brief(exc)})"
        ) from exc
    finally:
        BUILD_STATS.seconds += time.perf_counter() - start
    graph, args = _RECORD.graph, _RECORD.args
    _RECORD.graph, _RECORD.args = None, ()
    if graph is None:
        raise CompileUnavailable(
            "TorchDynamo ran func without a graph (its recompile limit for this function was "
            "reached; see torch._dynamo.config.recompile_limit)"
        )
    if graph.failed is not None:
        raise CompileUnavailable(graph.failed)
    if not isinstance(out, Tensor) or out.shape != y0.shape:
        raise CompileUnavailable("func must return one tensor of y's shape")
    if _mutates_inputs(graph.gm):
        graph.failed = "func updates one of its input tensors in place"
        raise CompileUnavailable(graph.failed)
    t_pos = y_pos = None
    extras, originals = [], []
    for i, a in enumerate(args):
        if a is t0:
            t_pos = i
        elif a is y0:
            y_pos = i
        elif isinstance(a, Tensor):
            originals.append(a)
            extras.append(a.detach())
        else:
            raise CompileUnavailable(f"the captured graph takes a non-tensor input ({type(a)})")
    return Capture(graph, t_pos, y_pos, tuple(extras), tuple(originals), out.reshape(-1))


def _brief(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__
