"""diffrax as a benchmark peer, run in its own process (``python -m physid.bench_jax``).

JAX and torch must not share threads or a process while they are timed, so the peer runs as a
subprocess with one XLA thread: :func:`run_peer` writes the problem's arrays to a ``.npz`` file,
starts ``python -m physid.bench_jax PROBLEM.npz``, and parses the one JSON document it prints.
Nothing here imports JAX unless the module runs as that subprocess; JAX, diffrax and equinox are
the ``bench-jax`` extra (``pip install physid[bench-jax]``), never a runtime dependency.

Two kinds of problem, each fully described by its arrays (no physical system is imported):

* ``nbody``: Newtonian gravity of three bodies in 3-D with learnable masses, the field of
  ``envs.three_body.dynamics``: ``dr_i/dt = k2 v_i``, ``dv_i/dt = k1 sum_j m_j (r_j - r_i) /
  (|r_j - r_i|^2 + [i = j])^{3/2}``. Arrays: ``y0 (18,)``, ``t (T,)``, ``truth (T, 18)``,
  ``weights (T,)``, ``masses (3,)``, ``k1``, ``k2``. Loss: ``mean_t(weights_t *
  sum_{positions} (y_t - truth_t)^2)``; gradient to the masses.
* ``mlp``: a neural ODE ``dy/dt = W3 tanh(W2 tanh(W1 y + b1) + b2) + b3`` (torch's ``nn.Linear``
  layout, weights ``(out, in)``). Arrays: ``w1, b1, w2, b2, w3, b3``, ``y0 (B, d)``, ``t (T,)``,
  ``target (T, B, d)``. Loss: ``mean((y - target)^2)``; gradient to every weight.

Both: ``rtol``, ``atol``; Dormand-Prince 5(4) (``diffrax.Dopri5``), an integral controller
(``PIDController`` with its defaults: safety 0.9, factors in [0.2, 10], Hairer's initial step),
outputs through the solver's dense interpolation (``SaveAt(ts=t)``) — the same method, controller
and interpolant as physid's ``dopri5``. Each adjoint (``RecursiveCheckpointAdjoint``: discretise
then optimise through checkpoints, the peer of ``aca``; ``BacksolveAdjoint``: the continuous
adjoint, the peer of ``adjoint``) is ``jax.jit(jax.value_and_grad(loss))``, compiled ahead of
time (``lower().compile()``, timed separately), then timed as the median of repeats after one
warm-up call.

The report also times one bare evaluation of the jitted vector field, for the overhead ratio
(seconds per function evaluation of a solve over seconds of one bare evaluation).

Kidger, *On Neural Differential Equations* (2021), and the diffrax documentation describe the
library; Dormand & Prince (1980) the method.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physid.errors import MissingDependencyError, PhysidError

__all__ = [
    "ADJOINTS",
    "KINDS",
    "PeerSession",
    "run_peer",
    "peer_available",
    "peer_measurements",
    "main",
]

ADJOINTS = ("RecursiveCheckpointAdjoint", "BacksolveAdjoint")
KINDS = ("nbody", "mlp")

_ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def peer_available() -> bool:
    """Whether JAX, diffrax and equinox can be imported (checked in a subprocess, so that this
    process never loads JAX)."""
    code = "import jax, diffrax, equinox"
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def run_peer(
    kind: str,
    arrays: Mapping[str, np.ndarray | float],
    *,
    adjoints: Sequence[str] = ADJOINTS,
    repeats: int = 5,
    timeout: float = 1200.0,
) -> dict[str, Any]:
    """Run the diffrax peer on one problem in a subprocess and return its report.

    Args:
        kind: ``"nbody"`` or ``"mlp"`` (see the module docstring for the arrays each needs).
        arrays: the problem's arrays and scalars (``rtol`` and ``atol`` included); the dtype of
            ``y0`` is the dtype of the solve (float64 turns on JAX's 64-bit mode).
        adjoints: a subset of :data:`ADJOINTS`.
        repeats: timed calls after one warm-up call; the median is reported.
        timeout: seconds before the subprocess is killed.

    Returns:
        ``{"environment": {...}, "field_seconds": float, "adjoints": {name: {"loss", "grads",
        "compile_seconds", "seconds", "seconds_all", "cpu_seconds", "steps_accepted",
        "steps_rejected", "nfe_forward"}}}``; ``grads`` is a list of nested lists in the order
        of the weights (``[masses]`` or ``[w1, b1, w2, b2, w3, b3]``).

    Raises:
        MissingDependencyError: JAX, diffrax or equinox is not installed.
        PhysidError: the subprocess failed (its last lines of stderr in the message).
    """
    if kind not in KINDS:
        raise PhysidError(f"unknown diffrax peer problem {kind!r}; choose one of {KINDS}.")
    with tempfile.TemporaryDirectory(prefix="physid-bench-jax-") as tmp:
        path = Path(tmp) / "problem.npz"
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        payload["kind"] = np.array(kind)
        np.savez(path, **payload)
        env = _peer_env()
        cmd = [sys.executable, "-m", "physid.bench_jax", str(path), "--repeats", str(repeats)]
        cmd += ["--adjoints", ",".join(adjoints)]
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    if res.returncode == 3:
        raise MissingDependencyError(res.stderr.strip().splitlines()[-1])
    if res.returncode != 0:
        tail = " | ".join(res.stderr.strip().splitlines()[-5:])
        raise PhysidError(f"the diffrax peer failed (exit {res.returncode}): {tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def peer_measurements(report: Mapping[str, Any], reference: Sequence[Any] | None = None) -> list:
    """The rows of :func:`run_peer`'s report as :class:`physid.bench.Measurement` objects.

    Args:
        report: what :func:`run_peer` returned.
        reference: the reference gradients (arrays or tensors, in the order of the report's
            ``grads``), for the relative gradient error.

    Returns:
        one measurement per adjoint, named ``"diffrax <Adjoint>"``; ``extra`` holds the compile
        seconds and the seconds of one bare evaluation of the jitted field.
    """
    from physid.bench import Measurement

    rows = []
    for name, r in report["adjoints"].items():
        err = None
        if reference is not None:
            num = den = 0.0
            for got, want in zip(r["grads"], reference, strict=True):
                w = np.asarray(want, dtype=np.float64)
                num += float(((np.asarray(got, dtype=np.float64) - w) ** 2).sum())
                den += float((w**2).sum())
            err = (num / max(den, 1e-300)) ** 0.5
        rows.append(
            Measurement(
                candidate=f"diffrax {name}",
                library="diffrax",
                seconds=r["seconds"],
                seconds_all=r["seconds_all"],
                cpu_seconds=r.get("cpu_seconds"),
                nfe_forward=r["nfe_forward"],
                nfe_backward=0,
                steps_forward=r["steps_accepted"],
                gradient_error=err,
                loss=r["loss"],
                extra={
                    "compile_seconds": r["compile_seconds"],
                    "steps_rejected": r["steps_rejected"],
                    "field_seconds": report["field_seconds"],
                    "field_cpu_seconds": report.get("field_cpu_seconds"),
                    "nfe_backward_counted": False,
                },
            )
        )
    return rows


class PeerSession:
    """A diffrax peer kept running, to time it again between other measurements.

    Timings on a shared machine drift with the load of other jobs; alternating the peer with
    the measurement it is compared to (paired rounds) makes the comparison fair. The
    subprocess compiles once (see :func:`run_peer` for the problem), prints its report, then
    times an adjoint each time :meth:`time` asks.

    Use as a context manager: ``with PeerSession("nbody", arrays) as peer: peer.time(name)``.
    """

    def __init__(
        self,
        kind: str,
        arrays: Mapping[str, np.ndarray | float],
        *,
        adjoints: Sequence[str] = ADJOINTS,
        repeats: int = 5,
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix="physid-bench-jax-")
        path = Path(self._tmp.name) / "problem.npz"
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        payload["kind"] = np.array(kind)
        np.savez(path, **payload)
        cmd = [sys.executable, "-m", "physid.bench_jax", str(path), "--repeats", str(repeats)]
        cmd += ["--adjoints", ",".join(adjoints), "--serve"]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_peer_env(),
        )
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self.close()
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise PhysidError(f"the diffrax peer failed to start: {tail}")
        self.report: dict[str, Any] = json.loads(line)

    def time(self, adjoint: str) -> dict[str, float]:
        """``{"seconds", "cpu_seconds"}``: medians of the session's repeats, measured now."""
        if self._proc.stdin is None or self._proc.stdout is None:
            raise PhysidError("the diffrax peer session is closed")
        self._proc.stdin.write(adjoint + "\n")
        self._proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._proc.stdout.readline())
        if "error" in answer:
            raise PhysidError(answer["error"])
        return answer

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self._proc.kill()
        self._tmp.cleanup()

    def __enter__(self) -> PeerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _ONE_THREAD_FLAGS).strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env


# --- the subprocess side: everything below imports JAX lazily --------------------------------


def _nbody_field(jnp: Any, k1: float, k2: float) -> Any:
    def field(t: Any, y: Any, masses: Any) -> Any:
        r = y[:9].reshape(3, 3)
        v = y[9:]
        diff = r[None, :, :] - r[:, None, :]  # (i, j, xyz) = r_j - r_i
        dist2 = (diff * diff).sum(-1) + jnp.eye(3, dtype=y.dtype)
        weight = masses[None, :] * dist2**-1.5
        accel = k1 * (weight[..., None] * diff).sum(-2)
        return jnp.concatenate([k2 * v, accel.reshape(9)])

    return field


def _mlp_field(jnp: Any) -> Any:
    def field(t: Any, y: Any, w: Any) -> Any:
        w1, b1, w2, b2, w3, b3 = w
        h = jnp.tanh(y @ w1.T + b1)
        h = jnp.tanh(h @ w2.T + b2)
        return h @ w3.T + b3

    return field


def _timed(fn: Any, args: Any, repeats: int, jax: Any) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of ``repeats`` calls after one warm-up (CPU: the whole
    process, which runs one XLA thread)."""
    import time

    jax.block_until_ready(fn(*args))  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _solve_report(
    data: Mapping[str, np.ndarray], adjoints: Sequence[str], repeats: int, serve: bool = False
) -> dict:
    """Compile and time each adjoint; print the report (one JSON line). With ``serve``, then
    answer each line of stdin naming an adjoint with one more timing (a JSON line of ``seconds``
    and ``cpu_seconds`` medians), until stdin closes."""
    import statistics
    import time

    kind = str(data["kind"])
    if np.asarray(data["y0"]).dtype == np.float64:
        os.environ["JAX_ENABLE_X64"] = "1"
    import diffrax
    import equinox
    import jax
    import jax.numpy as jnp

    if np.asarray(data["y0"]).dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if np.asarray(data["y0"]).dtype == np.float64 else jnp.float32
    y0 = jnp.asarray(data["y0"], dtype=dtype)
    ts = jnp.asarray(data["t"], dtype=dtype)
    rtol, atol = float(data["rtol"]), float(data["atol"])

    if kind == "nbody":
        field = _nbody_field(jnp, float(data["k1"]), float(data["k2"]))
        truth = jnp.asarray(data["truth"], dtype=dtype)
        weights = jnp.asarray(data["weights"], dtype=dtype)
        params: Any = jnp.asarray(data["masses"], dtype=dtype)

        def loss_of(ys: Any) -> Any:
            err = ((ys[:, :9] - truth[:, :9]) ** 2).sum(-1)
            return (weights * err).mean()
    else:
        field = _mlp_field(jnp)
        target = jnp.asarray(data["target"], dtype=dtype)
        params = tuple(
            jnp.asarray(data[k], dtype=dtype) for k in ("w1", "b1", "w2", "b2", "w3", "b3")
        )

        def loss_of(ys: Any) -> Any:
            return ((ys - target) ** 2).mean()

    term = diffrax.ODETerm(field)
    solver = diffrax.Dopri5()
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=ts)
    max_steps = int(data["max_steps"]) if "max_steps" in data else 100_000

    def solve(p: Any, adjoint: Any) -> Any:
        return diffrax.diffeqsolve(
            term,
            solver,
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=p,
            saveat=saveat,
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=max_steps,
        )

    env = {
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "equinox": equinox.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": str(np.dtype(dtype)),
    }
    field_jit = jax.jit(field).lower(ts[0], y0, params).compile()
    field_times, field_cpu = _timed(field_jit, (ts[0], y0, params), max(repeats, 1) * 200, jax)
    report: dict[str, Any] = {
        "environment": env,
        "field_seconds": statistics.median(field_times),
        "field_cpu_seconds": statistics.median(field_cpu),
        "adjoints": {},
    }
    compiled_fns: dict[str, Any] = {}
    for name in adjoints:
        adjoint = getattr(diffrax, name)()

        def loss(p: Any, adjoint: Any = adjoint) -> Any:
            return loss_of(solve(p, adjoint).ys)

        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
        compile_s = time.perf_counter() - start
        compiled_fns[name] = compiled
        value, grads = compiled(params)
        stats = jax.jit(lambda p, adjoint=adjoint: solve(p, adjoint).stats)(params)
        times, cpu_times = _timed(compiled, (params,), repeats, jax)
        acc = int(stats["num_accepted_steps"])
        rej = int(stats["num_rejected_steps"])
        grads_list = [np.asarray(g).tolist() for g in jax.tree_util.tree_leaves(grads)]
        report["adjoints"][name] = {
            "loss": float(value),
            "grads": grads_list,
            "compile_seconds": compile_s,
            "seconds": statistics.median(times),
            "seconds_all": times,
            "cpu_seconds": statistics.median(cpu_times),
            "steps_accepted": acc,
            "steps_rejected": rej,
            # Dopri5 is FSAL: f(t0, y0), Hairer's trial evaluation, then 6 per attempted step.
            "nfe_forward": 2 + 6 * (acc + rej),
        }
    print(json.dumps(report), flush=True)
    if serve:
        for line in sys.stdin:
            name = line.strip()
            if name not in compiled_fns:
                print(json.dumps({"error": f"unknown adjoint {name!r}"}), flush=True)
                continue
            wall, cpu = _timed(compiled_fns[name], (params,), repeats, jax)
            answer = {"seconds": statistics.median(wall), "cpu_seconds": statistics.median(cpu)}
            print(json.dumps(answer), flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m physid.bench_jax PROBLEM.npz [--repeats N] [--adjoints A,B]``.

    Prints one JSON document to stdout. Exit codes: 0 success, 2 bad arguments, 3 JAX, diffrax
    or equinox missing.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m physid.bench_jax")
    parser.add_argument("problem", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--adjoints", default=",".join(ADJOINTS))
    parser.add_argument(
        "--serve", action="store_true", help="after the report, time again on request (stdin)"
    )
    args = parser.parse_args(argv)
    adjoints = [a for a in args.adjoints.split(",") if a]
    bad = [a for a in adjoints if a not in ADJOINTS]
    if bad:
        print(f"unknown adjoint(s) {bad}; choose from {ADJOINTS}", file=sys.stderr)
        return 2
    # one XLA thread, set before JAX is imported
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + _ONE_THREAD_FLAGS).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import diffrax  # noqa: F401
        import equinox  # noqa: F401
        import jax  # noqa: F401
    except ImportError as exc:
        print(
            f"the diffrax peer needs JAX, diffrax and equinox ({exc}); "
            "install them with `pip install physid[bench-jax]`.",
            file=sys.stderr,
        )
        return 3
    with np.load(args.problem) as f:
        data = {k: f[k] for k in f.files}
    _solve_report(data, adjoints, args.repeats, serve=args.serve)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
