"""``physid bench gradients``: time, NFE, backward memory and gradient error per method.

Four problems (the engine issue's benchmark), each solved by physid's gradient methods (forward
sensitivities only where the parameters are few: ``toy`` and ``three-body``) and, side by side in
the same process, torchdiffeq's ``odeint``, ``odeint_adjoint`` and its seminorm option when
torchdiffeq is installed:

1. ``toy``: the ACA paper's Figure 6, ``dz/dt = k z``, ``L = z(T)^2``,
   ``dL/dz0 = 2 z0 exp(2kT)``, dopri5 at tolerance 1e-5, ``T`` in {1, 2, 5, 10}.
2. ``three-body``: the known-form three-body model (3 learnable masses), 1000 output times on
   [0, 1], the paper's training loss, dopri5 at rtol = atol = 1e-7, float64; reference gradient
   from physid ``aca`` at 1e-12.
3. ``node``: a neural ODE (MLP 2-64-64-2, tanh), float32, batch 256, 20 output times on [0, 2],
   dopri5 at rtol = 1e-6, atol = 1e-8; reference from physid ``aca`` in float64 at 1e-10.
4. ``memory``: backward-pass memory against the number of steps (x10 each), naive vs aca vs
   adjoint, on a learnable rotation (batch 256) whose step count grows linearly with the horizon.

The two timed problems (``three-body``, ``node``) are defined once, by :func:`build_problem`,
for this command and for ``scripts/bench_fast_path.py``. On them the command also runs, unless
told not to:

* physid's compiled fast path (``odeint(compile=True)``; rows ``"physid <method> (compiled)"``).
  The seconds the first call spent capturing and building kernels are reported apart
  (``extra.compile_seconds``); the timed median follows a warm-up call and never includes them.
* diffrax's ``RecursiveCheckpointAdjoint`` and ``BacksolveAdjoint`` on the same problem, through
  the subprocess peer of :mod:`physid.bench_jax` (one XLA thread; the ``jax.jit`` compile is
  reported apart), when the ``bench-jax`` extra is installed.

Each row of a timed problem carries its overhead ratio (:func:`add_overhead_ratios`): CPU
seconds per evaluation of the vector field during the solve over the CPU seconds of one bare
compiled evaluation of the field (:func:`field_seconds`) — how close the loop comes to the cost
of its own arithmetic.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import physid
from physid._io import save_json
from physid.bench import Candidate, Measurement, measure, physid_candidates, torchdiffeq_candidates
from physid.errors import ConfigError, MissingDependencyError

__all__ = [
    "PROBLEMS",
    "TIMED_PROBLEMS",
    "BenchProblem",
    "build_problem",
    "measure_problem",
    "diffrax_rows",
    "field_seconds",
    "add_overhead_ratios",
    "ratios",
    "jsonable",
    "run",
]

PROBLEMS = ("toy", "three-body", "node", "memory")
TIMED_PROBLEMS = ("three-body", "node")
TOY_T = (1.0, 2.0, 5.0, 10.0)
TOY_K, TOY_Z0 = 1.0, 1.0


def _methods(few_parameters: bool) -> list[str]:
    # forward sensitivities carry one tangent per parameter: thousands for the NODE
    return [m for m in physid.GRADIENT_METHODS if few_parameters or m != "forward"]


def _candidates(with_torchdiffeq: bool, few_parameters: bool = False) -> list[Candidate]:
    return physid_candidates(_methods(few_parameters)) + (
        torchdiffeq_candidates() if with_torchdiffeq else []
    )


class _Toy(nn.Module):
    """dz/dt = k z with ``k`` held outside (a tensor in ``params``)."""

    def __init__(self, k: Tensor):
        super().__init__()
        self.k = k

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.k * z


def _toy(device: torch.device, repeats: int, with_tdq: bool) -> dict[str, Any]:
    rows = []
    for T in TOY_T:
        k = torch.tensor(TOY_K, dtype=torch.float64, device=device, requires_grad=True)
        z0 = torch.tensor([TOY_Z0], dtype=torch.float64, device=device, requires_grad=True)
        t = torch.tensor([0.0, T], dtype=torch.float64, device=device)
        exact = 2 * TOY_Z0 * math.exp(2 * TOY_K * T)

        for c in _candidates(with_tdq, few_parameters=True):
            m = measure(
                c,
                _Toy(k),
                z0,
                t,
                lambda ys: ys[-1].pow(2).sum(),
                [z0],
                rtol=1e-5,
                atol=1e-5,
                repeats=repeats,
                memory=False,
                solve_kwargs={"params": [k]},
            )
            grad = _last_grad(c, _Toy(k), z0, t, k)
            m.extra = {
                "T": T,
                "grad": grad,
                "exact": exact,
                "abs_error": abs(grad - exact),
                "rel_error": abs(grad - exact) / exact,
            }
            m.gradient_error = abs(grad - exact) / exact
            rows.append(m)
    return {
        "description": "dz/dt = k z, L = z(T)^2, dopri5 rtol = atol = 1e-5, "
        f"k = {TOY_K}, z0 = {TOY_Z0}",
        "rows": rows,
    }


def _last_grad(c: Candidate, func: nn.Module, z0: Tensor, t: Tensor, k: Tensor) -> float:
    ys = c.solve(func, z0, t, 1e-5, 1e-5, None, params=[k])
    (g,) = torch.autograd.grad(ys[-1].pow(2).sum(), z0)
    return float(g)


# --- the timed problems: one definition for `physid bench gradients` and bench_fast_path.py ---


@dataclass
class BenchProblem:
    """One timed benchmark problem, fully defined for physid, torchdiffeq and the diffrax peer.

    Attributes:
        name: ``"three-body"`` or ``"node"``.
        description: one line for tables.
        make_model: a fresh vector field ``f(t, y)`` (an ``nn.Module`` whose parameters are the
            tensors differentiated), with the same values on every call.
        y0: the initial state: ``(18,)`` float64 (three-body) or ``(256, 2)`` float32 (node).
        t: the output times ``(T,)``, ``y0``'s dtype.
        loss_fn: ``ys (T, *y0.shape) -> ()``.
        rtol: relative tolerance of the dopri5 solve.
        atol: absolute tolerance of the dopri5 solve.
        reference: the reference gradient, one tensor per parameter of ``make_model()`` in
            ``parameters()`` order (None when built with ``reference=False``).
        jax_kind: the diffrax peer's kind of problem (:data:`physid.bench_jax.KINDS`).
        jax_arrays: the peer's arrays (NumPy, on the CPU), tolerances included.
    """

    name: str
    description: str
    make_model: Callable[[], nn.Module]
    y0: Tensor
    t: Tensor
    loss_fn: Callable[[Tensor], Tensor]
    rtol: float
    atol: float
    reference: list[Tensor] | None
    jax_kind: str
    jax_arrays: dict[str, Any]


def build_problem(
    name: str, *, device: torch.device | str = "cpu", reference: bool = True
) -> BenchProblem:
    """The timed problem ``name`` (one of :data:`TIMED_PROBLEMS`) on ``device``.

    Args:
        reference: compute the reference gradient (a tight solve: seconds).

    Raises:
        ConfigError: an unknown problem.
    """
    device = torch.device(device)
    if name == "three-body":
        return _three_body_problem(device, reference)
    if name == "node":
        return _node_problem(device, reference)
    raise ConfigError(f"unknown timed benchmark problem {name!r}; choose from {TIMED_PROBLEMS}.")


def _three_body_problem(device: torch.device, reference: bool) -> BenchProblem:
    from physid.envs.three_body import (
        K1,
        K2,
        ThreeBodyParams,
        default_initial_state,
        simulate,
        train_times,
    )
    from physid.models.known_form import KnownFormThreeBody

    t_np = train_times()
    truth = torch.tensor(simulate(ThreeBodyParams(), default_initial_state(), t_np), device=device)
    t = torch.tensor(t_np, device=device)
    y0 = truth[0].clone()
    weights = 0.01**t
    rtol = atol = 1e-7

    def make_model() -> nn.Module:
        return KnownFormThreeBody(torch.tensor([1.0, 1.05, 0.95])).to(device)

    def loss_fn(ys: Tensor) -> Tensor:
        err = (ys[:, :9] - truth[:, :9]).pow(2).sum(-1)
        return (weights * err).mean()

    model = make_model()
    ref = _reference(model, y0, t, loss_fn, 1e-12) if reference else None
    arrays = {
        "y0": y0.cpu().numpy(),
        "t": t_np,
        "truth": truth.cpu().numpy(),
        "weights": weights.cpu().numpy(),
        "masses": next(model.parameters()).detach().cpu().numpy(),
        "k1": K1,
        "k2": K2,
        "rtol": rtol,
        "atol": atol,
    }
    return BenchProblem(
        name="three-body",
        description="known-form three-body, 3 learnable masses, 1000 output times on [0, 1], "
        "dopri5 rtol = atol = 1e-7, float64; reference: physid aca at 1e-12",
        make_model=make_model,
        y0=y0,
        t=t,
        loss_fn=loss_fn,
        rtol=rtol,
        atol=atol,
        reference=ref,
        jax_kind="nbody",
        jax_arrays=arrays,
    )


def _reference(model: nn.Module, y0: Tensor, t: Tensor, loss_fn: Any, tol: float) -> list[Tensor]:
    ys = physid.odeint(model, y0, t, method="aca", rtol=tol, atol=tol, max_steps=1_000_000)
    return list(torch.autograd.grad(loss_fn(ys), list(model.parameters())))


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
        )

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def _node_problem(device: torch.device, reference: bool) -> BenchProblem:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = _MLP().state_dict()
    g = torch.Generator().manual_seed(0)
    y0 = torch.randn(256, 2, generator=g).to(device)
    target = torch.randn(20, 256, 2, generator=g).to(device)
    t = torch.linspace(0, 2, 20, device=device)
    rtol, atol = 1e-6, 1e-8

    def make_model() -> nn.Module:
        m = _MLP()
        m.load_state_dict(state)
        return m.to(device)

    def loss_fn(ys: Tensor) -> Tensor:
        return (ys - target).pow(2).mean()

    ref = None
    if reference:
        m64 = make_model().double()
        ys = physid.odeint(m64, y0.double(), t.double(), method="aca", rtol=1e-10, atol=1e-10)
        loss64 = (ys - target.double()).pow(2).mean()
        ref = [r.float() for r in torch.autograd.grad(loss64, list(m64.parameters()))]
    w = [p.detach().cpu().numpy() for p in make_model().parameters()]
    arrays: dict[str, Any] = dict(zip(("w1", "b1", "w2", "b2", "w3", "b3"), w, strict=True))
    arrays.update(
        y0=y0.cpu().numpy(), t=t.cpu().numpy(), target=target.cpu().numpy(), rtol=rtol, atol=atol
    )
    return BenchProblem(
        name="node",
        description="neural ODE MLP 2-64-64-2 tanh, float32, batch 256, 20 output times on "
        "[0, 2], dopri5 rtol = 1e-6, atol = 1e-8; reference: physid aca in float64 at 1e-10",
        make_model=make_model,
        y0=y0,
        t=t,
        loss_fn=loss_fn,
        rtol=rtol,
        atol=atol,
        reference=ref,
        jax_kind="mlp",
        jax_arrays={k: np.asarray(v) for k, v in arrays.items()},
    )


def measure_problem(
    problem: BenchProblem,
    candidates: Sequence[Candidate],
    repeats: int,
    *,
    memory: bool = True,
    say: Callable[[str], Any] | None = None,
) -> list[Measurement]:
    """Measure each candidate on a fresh copy of the problem's model (see
    :func:`physid.bench.measure`).

    A physid row's ``extra`` gets ``compile_seconds`` and ``kernels_built``: what its calls
    captured and built (0 when eager, or when earlier candidates built it already); every row's
    ``extra`` gets ``wall_seconds``, the whole measurement's.

    Args:
        memory: also measure the backward pass's peak memory (not for compiled rows on a CPU,
            whose memory counter cannot run compiled code).
        say: called with one line per candidate as it finishes.
    """
    from physid.compiled import compile_stats

    rows = []
    for c in candidates:
        compiled = c.name.endswith("(compiled)")
        model = problem.make_model()
        params = list(model.parameters())
        before = compile_stats()
        start = time.perf_counter()
        m = measure(
            c,
            model,
            problem.y0,
            problem.t,
            problem.loss_fn,
            params,
            rtol=problem.rtol,
            atol=problem.atol,
            repeats=repeats,
            reference=problem.reference,
            # the CPU memory counter is a TorchDispatchMode, which compiled code cannot run
            # under: a compiled row would count the eager path's memory, so it gets none
            memory=memory and not (compiled and problem.y0.device.type == "cpu"),
            solve_kwargs={"params": params},
        )
        after = compile_stats()
        if c.library == "physid":
            m.extra["compile_seconds"] = after.seconds - before.seconds
            m.extra["kernels_built"] = after.kernels - before.kernels
        m.extra["wall_seconds"] = time.perf_counter() - start
        rows.append(m)
        if say is not None:
            comp = m.extra.get("compile_seconds")
            note = f"  (compile {comp:.1f} s)" if comp else ""
            say(f"  {c.name:34s} {m.seconds:.5f} s{note}")
    return rows


def diffrax_rows(
    problem: BenchProblem, repeats: int, adjoints: Sequence[str] | None = None
) -> tuple[list[Measurement], dict[str, Any]]:
    """diffrax on the problem, in the one-thread subprocess peer
    (:func:`physid.bench_jax.run_peer`): ``(rows named "diffrax <Adjoint>", the peer's
    environment)``; the ``jax.jit`` compile is in each row's ``extra["compile_seconds"]``, not
    in its timed median.

    Raises:
        MissingDependencyError: the ``bench-jax`` extra is not installed.
        PhysidError: the peer failed.
    """
    from physid.bench_jax import ADJOINTS, peer_measurements, run_peer

    rep = run_peer(
        problem.jax_kind, problem.jax_arrays, adjoints=adjoints or ADJOINTS, repeats=repeats
    )
    ref = None
    if problem.reference is not None:
        ref = [r.detach().cpu().numpy() for r in problem.reference]
    env = dict(rep["environment"])
    env["field_seconds"] = rep["field_seconds"]
    env["field_cpu_seconds"] = rep.get("field_cpu_seconds")
    return peer_measurements(rep, ref), env


def field_seconds(problem: BenchProblem, calls: int = 2000) -> tuple[float, float]:
    """Seconds of one bare compiled evaluation of the problem's field — physid's ``field``
    kernel, called directly — as ``(wall, CPU)`` medians of 5 batches of ``calls`` (after one
    warm-up batch)."""
    from physid.compiled import prepare
    from physid.solvers import get_tableau

    model = problem.make_model()
    y0, t = problem.y0, problem.t
    cs = prepare(model, y0, t, get_tableau("dopri5"))
    t0 = torch.zeros((), dtype=torch.float64, device=y0.device)
    flat = y0.reshape(-1)
    extras = cs.cap.extras
    kernel = cs.kernels.field_kernel([t0, flat, *extras])
    wall, cpu = [], []
    with torch.no_grad():
        for _ in range(6):
            _sync(y0.device)
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                kernel(t0, flat, *extras)
            _sync(y0.device)
            wall.append((time.perf_counter() - start) / calls)
            cpu.append((time.thread_time() - start_cpu) / calls)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_overhead_ratios(rows: Sequence[Measurement], field_cpu_seconds: float | None) -> None:
    """Set each row's ``overhead_ratio``: its CPU seconds per evaluation of the vector field
    (forward and backward evaluations counted) over ``field_cpu_seconds``, the CPU seconds of
    one bare compiled evaluation (:func:`field_seconds`); None where either is unknown.

    diffrax counts no evaluations inside ``jit``: its rows use the estimate ``nfe_forward + 6``
    per accepted step for the backward pass (stored as ``extra["nfe_estimate"]``) over its own
    jitted field's CPU seconds (``extra["field_cpu_seconds"]``). CPU time is used because the
    load of other jobs disturbs it least.
    """
    for r in rows:
        if not r.extra.get("nfe_backward_counted", True):
            r.extra["nfe_estimate"] = r.nfe_forward + 6 * (r.steps_forward or 0)
        nfe = r.extra.get("nfe_estimate") or (r.nfe_forward + r.nfe_backward)
        own_field = r.extra.get("field_cpu_seconds", field_cpu_seconds)
        secs = r.cpu_seconds or r.seconds
        r.overhead_ratio = secs / nfe / own_field if nfe and own_field else None


RATIO_PEERS = (
    "torchdiffeq odeint",
    "torchdiffeq odeint_adjoint",
    "diffrax RecursiveCheckpointAdjoint",
    "diffrax BacksolveAdjoint",
    "physid aca",
)


def ratios(rows: Sequence[Any], key: str = "seconds") -> dict[str, float]:
    """physid ``aca``'s time, eager and compiled, over each peer's in ``rows`` (measurements or
    their dicts): ``"aca / torchdiffeq odeint"``, ``"aca (compiled) / diffrax
    RecursiveCheckpointAdjoint"``, ``"aca (compiled) / aca"``, ...

    Args:
        key: ``"seconds"`` (wall-clock) or ``"cpu_seconds"``.
    """
    by = {_get(r, "candidate"): _get(r, key) for r in rows}
    out: dict[str, float] = {}
    for fast, label in (("physid aca", "aca"), ("physid aca (compiled)", "aca (compiled)")):
        if not by.get(fast):
            continue
        for peer in RATIO_PEERS:
            if peer != fast and by.get(peer):
                out[f"{label} / {peer.removeprefix('physid ')}"] = by[fast] / by[peer]
    return out


def _timed_problem(
    name: str,
    device: torch.device,
    repeats: int,
    with_tdq: bool,
    with_compile: bool,
    with_diffrax: bool,
    environment: dict[str, Any],
) -> dict[str, Any]:
    problem = build_problem(name, device=device)
    methods = _methods(few_parameters=name == "three-body")
    cands = physid_candidates(methods)
    if with_compile:
        # forward sensitivities have no compiled form (they would fall back to the eager row)
        cands += physid_candidates([m for m in methods if m != "forward"], compile=True)
    if with_tdq:
        cands += torchdiffeq_candidates()
    rows = measure_problem(problem, cands, repeats)
    res: dict[str, Any] = {"description": problem.description}
    field_cpu = None
    if with_compile:
        field_wall, field_cpu = field_seconds(problem)
        res["field_seconds"], res["field_cpu_seconds"] = field_wall, field_cpu
    if with_diffrax:
        peer_rows, peer_env = diffrax_rows(problem, repeats)
        rows += peer_rows
        environment["diffrax"] = {k: v for k, v in peer_env.items() if "field" not in k}
        res["diffrax_field_seconds"] = peer_env["field_seconds"]
        res["diffrax_field_cpu_seconds"] = peer_env["field_cpu_seconds"]
    add_overhead_ratios(rows, field_cpu)
    res["rows"] = rows
    res["ratios"] = ratios(rows)
    res["ratios_cpu"] = ratios(rows, "cpu_seconds")
    return res


def _memory(device: torch.device, quick: bool) -> dict[str, Any]:
    W = nn.Parameter(torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64, device=device))

    class Rotation(nn.Module):
        def forward(self, t: Tensor, y: Tensor) -> Tensor:
            return y @ W.T

    y0 = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y0 = y0.to(device)
    horizons = (2 * math.pi, 20 * math.pi) if quick else (2 * math.pi, 20 * math.pi, 200 * math.pi)
    rows = []
    for T in horizons:
        t = torch.linspace(0, T, 5, dtype=torch.float64, device=device)
        for c in physid_candidates(("naive", "adjoint", "aca")):
            m = measure(
                c,
                Rotation(),
                y0,
                t,
                lambda ys: ys.pow(2).sum(),
                [W],
                rtol=1e-6,
                atol=1e-6,
                repeats=1,
                solve_kwargs={"params": [W]},
            )
            m.extra = {"T": T}
            rows.append(m)
    state_bytes = y0.numel() * y0.element_size()
    slopes = {}
    for name in ("physid naive", "physid adjoint", "physid aca"):
        rs = [r for r in rows if r.candidate == name]
        steps = np.array([r.steps_forward for r in rs], dtype=float)
        peak = np.array([r.backward_peak_bytes for r in rs], dtype=float)
        slopes[name] = float(np.polyfit(steps, peak, 1)[0])
    largest = [r for r in rows if r.extra["T"] == horizons[-1]]
    by = {r.candidate: r for r in largest}
    return {
        "description": "learnable rotation y' = W y, batch 256 (float64), dopri5 rtol = atol = "
        "1e-6, horizons x10; backward-pass peak memory vs accepted steps",
        "rows": rows,
        "state_bytes": state_bytes,
        "bytes_per_step": slopes,
        "states_per_step": {k: v / state_bytes for k, v in slopes.items()},
        "naive_over_aca_at_largest": float(by["physid naive"].backward_peak_bytes or 0)
        / float(by["physid aca"].backward_peak_bytes or 1),
    }


def run(
    out_dir: Path,
    problems: Sequence[str] = PROBLEMS,
    *,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    quick: bool = False,
    with_torchdiffeq: bool = True,
    with_compile: bool = True,
    with_diffrax: bool | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Run the gradient benchmark; write ``gradients.json`` and plots to ``out_dir``.

    Args:
        problems: a subset of :data:`PROBLEMS`.
        repeats: timed repeats after one warm-up (the median is reported).
        quick: smaller horizons for the memory problem (a smoke run).
        with_torchdiffeq: include torchdiffeq when it is installed.
        with_compile: add physid's compiled fast path on the timed problems.
        with_diffrax: add the diffrax peer on the timed problems; None: when the ``bench-jax``
            extra is installed.

    Returns:
        The results as written to JSON.

    Raises:
        ConfigError: an unknown problem.
        MissingDependencyError: ``with_diffrax`` without the ``bench-jax`` extra.
    """
    from physid.bench_jax import peer_available

    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        raise ConfigError(f"unknown benchmark problem(s) {unknown}; choose from {PROBLEMS}.")
    timed = any(p in TIMED_PROBLEMS for p in problems)
    if with_diffrax is None:
        with_diffrax = timed and peer_available()
    elif with_diffrax and timed and not peer_available():
        raise MissingDependencyError(
            "--diffrax needs JAX, diffrax and equinox: pip install 'physid[bench-jax]' "
            "(or pass --no-diffrax)."
        )
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "environment": {
            "torch": torch.__version__,
            "physid": physid.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "torchdiffeq": _tdq_version() if with_torchdiffeq else None,
            "compile": with_compile,
            "diffrax": None,
        },
        "repeats": repeats,
        "problems": {},
    }
    env = results["environment"]
    runners = {
        "toy": lambda: _toy(device, repeats, with_torchdiffeq),
        "three-body": lambda: _timed_problem(
            "three-body", device, repeats, with_torchdiffeq, with_compile, with_diffrax, env
        ),
        "node": lambda: _timed_problem(
            "node", device, repeats, with_torchdiffeq, with_compile, with_diffrax, env
        ),
        "memory": lambda: _memory(device, quick),
    }
    for name in problems:
        res = runners[name]()
        results["problems"][name] = res
        if console is not None:
            console.print(table(name, res))
        save_json(out_dir / "gradients.json", jsonable(results))
    data = jsonable(results)
    plot(data, out_dir)
    return data


def _tdq_version() -> str | None:
    try:
        import torchdiffeq

        return str(getattr(torchdiffeq, "__version__", "installed"))
    except ImportError:
        return None


def jsonable(obj: Any) -> Any:
    """``obj`` with measurements as dicts and non-finite floats as None (JSON-ready)."""
    if isinstance(obj, Measurement):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key)


def _mib(x: Any) -> str:
    return "-" if x is None else f"{x / 2**20:.2f}"


def _cells(r: Any) -> dict[str, str]:
    """One row's formatted cells (a measurement or its dict)."""
    extra = _get(r, "extra") or {}
    err = _get(r, "gradient_error")
    comp = extra.get("compile_seconds")
    ratio = _get(r, "overhead_ratio")
    cpu = _get(r, "cpu_seconds")
    return {
        "candidate": _get(r, "candidate"),
        "T": f"{extra['T']:.3g}" if "T" in extra else "",
        "s (median)": f"{_get(r, 'seconds'):.4f}",
        "CPU s": "-" if cpu is None else f"{cpu:.4f}",
        "compile s": f"{comp:.1f}" if comp else "-",
        "NFE fwd": str(_get(r, "nfe_forward")),
        "NFE bwd": str(_get(r, "nfe_backward"))
        if extra.get("nfe_backward_counted", True)
        else "n/c",
        "steps": str(_get(r, "steps_forward") or "-"),
        "bwd peak MiB": _mib(_get(r, "backward_peak_bytes")),
        "retained MiB": _mib(_get(r, "retained_bytes")),
        "overhead": "-" if ratio is None else f"{ratio:.1f}",
        "grad rel. err": "-" if err is None else f"{err:.2e}",
    }


def _notes(res: dict[str, Any], bold: str = "") -> list[str]:
    """The lines under a problem's table: field time, ratios, memory slopes."""
    out = []
    if res.get("field_cpu_seconds"):
        line = (
            f"one bare compiled evaluation of the field: {res['field_seconds'] * 1e6:.1f} µs "
            f"({res['field_cpu_seconds'] * 1e6:.1f} µs CPU)"
        )
        if res.get("diffrax_field_cpu_seconds"):
            line += f", diffrax's jitted field {res['diffrax_field_cpu_seconds'] * 1e6:.1f} µs CPU"
        out.append(
            line + "; overhead = CPU s per field evaluation / CPU s of one bare evaluation "
            "(diffrax: estimated evaluations, its own field); compile s: capturing and building, "
            "not in the median"
        )
    if res.get("ratios"):
        out.append("; ".join(f"{k} = {bold}{v:.3f}{bold}" for k, v in res["ratios"].items()))
    if res.get("ratios_cpu") and any(k.startswith("aca (compiled)") for k in res["ratios_cpu"]):
        out.append(
            "CPU seconds: "
            + "; ".join(f"{k} = {bold}{v:.3f}{bold}" for k, v in res["ratios_cpu"].items())
        )
    if "states_per_step" in res:
        out.append(
            "backward memory per accepted step (in stored states): "
            + ", ".join(f"{k} {bold}{v:.2f}{bold}" for k, v in res["states_per_step"].items())
            + "; naive/aca at the largest horizon = "
            + f"{bold}{res['naive_over_aca_at_largest']:.1f}x{bold}"
        )
    return out


def _columns(res: dict[str, Any], markdown: bool) -> list[str]:
    rows = res["rows"]
    cols = ["candidate", "T", "s (median)"]
    if any(_get(r, "library") == "diffrax" or "(compiled)" in _get(r, "candidate") for r in rows):
        cols.append("CPU s")
    if any((_get(r, "extra") or {}).get("compile_seconds") for r in rows):
        cols.append("compile s")
    cols += ["NFE fwd", "NFE bwd"]
    if not markdown:
        cols.append("steps")
    cols.append("bwd peak MiB")
    if not markdown:
        cols.append("retained MiB")
    if any(_get(r, "overhead_ratio") is not None for r in rows):
        cols.append("overhead")
    cols.append("grad rel. err")
    return cols


def table(name: str, res: dict[str, Any]) -> Any:
    """A rich table of one problem's rows."""
    from rich.table import Table

    tab = Table(title=f"{name}: {res['description']}")
    cols = _columns(res, markdown=False)
    for c in cols:
        tab.add_column(c, justify="left" if c == "candidate" else "right")
    for r in res["rows"]:
        cells = _cells(r)
        tab.add_row(*(cells[c] for c in cols))
    notes = _notes(res)
    if notes:
        tab.caption = "\n".join(notes)
    return tab


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (for the README)."""
    lines = []
    for name, res in results["problems"].items():
        lines += [f"**{name}** — {res['description']}", ""]
        cols = _columns(res, markdown=True)
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in res["rows"]:
            cells = _cells(r)
            lines.append("| " + " | ".join(cells[c] for c in cols) + " |")
        for note in _notes(res, bold="**"):
            lines += ["", note]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figure 6 (toy error vs T), time per candidate, memory vs steps, and ``gradients.md``.

    Args:
        results: the results as :func:`run` returns them (JSON-ready).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = results["problems"]
    paths = []
    if "toy" in res:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = sorted({r["candidate"] for r in res["toy"]["rows"]})
        for n in names:
            rs = [r for r in res["toy"]["rows"] if r["candidate"] == n]
            ax.semilogy(
                [r["extra"]["T"] for r in rs],
                [max(r["extra"]["abs_error"], 1e-300) for r in rs],
                "o-",
                label=n,
            )
        ax.set_xlabel("T")
        ax.set_ylabel("|dL/dz0 - 2 z0 exp(2kT)|")
        ax.set_title("ACA paper Figure 6: gradient error on dz/dt = kz (dopri5, tol 1e-5)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / "toy_error_vs_T.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    timed = [p for p in ("three-body", "node") if p in res]
    if timed:
        height = max(4.0, 0.3 * max(len(res[p]["rows"]) for p in timed) + 1.5)
        fig, axes = plt.subplots(1, len(timed), figsize=(7 * len(timed), height), squeeze=False)
        colors = {"physid": "tab:blue", "torchdiffeq": "tab:orange", "diffrax": "tab:green"}
        for ax, p in zip(axes[0], timed, strict=True):
            rows = res[p]["rows"]
            ax.barh(
                [r["candidate"] for r in rows],
                [r["seconds"] for r in rows],
                color=[
                    "tab:purple"
                    if "(compiled)" in r["candidate"]
                    else colors.get(r["library"], "gray")
                    for r in rows
                ],
            )
            ax.set_xscale("log")
            ax.invert_yaxis()
            ax.set_xlabel("seconds per forward + backward (median)")
            ax.set_title(p)
        fig.tight_layout()
        paths.append(out_dir / "time_per_method.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if "memory" in res:
        fig, ax = plt.subplots(figsize=(6, 4))
        for n in ("physid naive", "physid adjoint", "physid aca"):
            rs = [r for r in res["memory"]["rows"] if r["candidate"] == n]
            ax.loglog(
                [r["steps_forward"] for r in rs],
                [r["backward_peak_bytes"] / 2**20 for r in rs],
                "o-",
                label=n,
            )
        ax.set_xlabel("accepted steps")
        ax.set_ylabel("backward-pass peak memory (MiB)")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "memory_vs_steps.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    (out_dir / "gradients.md").write_text(markdown(results))
    return paths


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(Path("bench_results"), quick=True), indent=1)[:2000])
