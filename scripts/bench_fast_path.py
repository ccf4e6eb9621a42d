"""Benchmark the compiled fast path against eager physid, torchdiffeq and diffrax (issue 12).

One run measures, on the three-body and neural-ODE problems of ``physid bench gradients``:

* physid eager and compiled (``odeint(compile=True)``), every gradient method;
* torchdiffeq ``odeint`` and ``odeint_adjoint`` (same process);
* diffrax ``RecursiveCheckpointAdjoint`` and ``BacksolveAdjoint`` (a subprocess, one XLA thread,
  ``jax.jit`` compile excluded and reported separately) when the ``bench-jax`` extra is
  installed.

Every candidate runs one forward + backward of the same loss on one thread; the time is the
median of ``--repeats`` calls after one warm-up. Compile time is reported apart: for physid the
seconds its first compiled call spent capturing and building kernels in this process (with a
fresh Inductor cache directory unless ``--warm-cache``: cold), and, in a second process over the
now filled cache, the seconds a new process needs before its first compiled solve runs (warm:
imports, capture, tracing, loading the compiled modules).

Times are reported as wall-clock and CPU seconds (the thread's CPU time for torch, the
process's for the one-thread JAX subprocess); other jobs sharing the machine inflate wall time
much more than CPU time, so the ratios are given for both.

The overhead ratio of a candidate is its CPU seconds per evaluation of the vector field (forward
and backward evaluations counted) over the CPU seconds of one bare compiled evaluation of the
field (the physid ``field`` kernel called directly): how close the loop comes to the cost of its
own arithmetic. diffrax's evaluations are not counted inside ``jit``; its ratio uses the
forward count ``2 + 6 (accepted + rejected)`` plus ``6`` per accepted step for the backward
pass, an estimate, over its own jitted field's time.

Usage::

    python scripts/bench_fast_path.py --repeats 5 --out bench_results/fast_path

writes ``fast_path.json``, ``fast_path.md`` and ``fast_path.png`` there and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from physid._io import save_json
from physid.app import bench_gradients as bench

PROBLEMS = bench.TIMED_PROBLEMS


def _setup_cache(warm: bool) -> str:
    """Point Inductor at a fresh cache directory (cold compile) unless ``warm``."""
    if not warm and "PHYSID_BENCH_CACHE" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="physid-fastpath-")
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default)")


def measure_candidates(problem: bench.BenchProblem, repeats: int, say: Callable) -> list[Any]:
    """physid eager, physid compiled and torchdiffeq on one problem (no memory pass)."""
    import physid
    from physid.bench import physid_candidates, torchdiffeq_candidates

    # forward sensitivities have no compiled form (and suit only few parameters)
    methods = [m for m in physid.GRADIENT_METHODS if m != "forward"]
    cands = [
        *physid_candidates(methods),
        *physid_candidates(methods, compile=True),
        *[c for c in torchdiffeq_candidates() if "seminorm" not in c.name],
    ]
    return bench.measure_problem(problem, cands, repeats, memory=False, say=say)


_PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(1)
import physid
from physid.app.bench_gradients import build_problem
from physid.compiled import compile_stats


def cpu():
    a, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + c.ru_utime + c.ru_stime


p = build_problem(PROBLEM, reference=False)
model = p.make_model()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
ready, ready_cpu = time.perf_counter(), cpu()
for epoch in range(EPOCHS):
    ys = physid.odeint(model, p.y0, p.t, method=METHOD, rtol=p.rtol, atol=p.atol, compile=True)
    loss = p.loss_fn(ys)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if epoch == 0:
        first, first_cpu = time.perf_counter(), cpu()
end, end_cpu = time.perf_counter(), cpu()
print(json.dumps({
    "process_seconds": end - start,
    "setup_seconds": ready - start,
    "first_solve_seconds": first - ready,
    "first_solve_cpu_seconds": first_cpu - ready_cpu,
    "build_seconds": compile_stats().seconds,
    "kernels": compile_stats().kernels,
    "epochs": EPOCHS,
    "epochs_seconds": end - first,
    "process_cpu_seconds": end_cpu,
}))
"""


def process_probe(problem: str, method: str, cache_dir: str, epochs: int) -> dict[str, Any]:
    """A new process over the Inductor cache ``cache_dir`` fits the problem's parameters for
    ``epochs`` Adam steps with the compiled method: its seconds to set up, to the first
    result (capturing, building or loading kernels, the solve), and for the epochs (wall and CPU,
    children included: the CPU seconds estimate the wall time of an unshared machine)."""
    code = _PROBE.replace("PROBLEM", repr(problem)).replace("METHOD", repr(method))
    code = code.replace("EPOCHS", str(epochs))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
        return {"error": tail}
    return json.loads(res.stdout.strip().splitlines()[-1])


def compile_probes(problem: str, epochs: int) -> dict[str, Any]:
    """Cold (an empty Inductor cache) and warm (the same cache, a second process) runs of
    ``epochs`` compiled ``aca`` fitting steps."""
    cache = tempfile.mkdtemp(prefix="physid-fastpath-probe-")
    return {
        "cold": process_probe(problem, "aca", cache, epochs),
        "warm": process_probe(problem, "aca", cache, epochs),
    }


def main_job(cache_dir: str) -> dict[str, Any]:
    """``physid fit three-body --method aca`` (100 epochs) with ``--no-compile`` and with
    ``--compile`` (its default), the compiled fit in a new process with an empty Inductor cache
    (cold) and again (warm), each ``python -m physid ...`` in a new process; the run's
    ``summary.json`` seconds and the process's wall seconds (interpreter start-up included)."""
    runs = tempfile.mkdtemp(prefix="physid-fastpath-runs-")
    out: dict[str, Any] = {}
    for name, flag in (
        ("eager (--no-compile)", "--no-compile"),
        ("compiled, cold cache", "--compile"),
        ("compiled, warm cache", "--compile"),
    ):
        run_name = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")
        command = [sys.executable, "-m", "physid", "fit", "three-body", "--method", "aca"]
        command += ["--epochs", "100", "--runs-dir", runs, "--run-name", run_name, flag]
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
        start = time.perf_counter()
        res = subprocess.run(
            [*command, "--no-progress"], capture_output=True, text=True, env=env, check=False
        )
        process_seconds = time.perf_counter() - start
        if res.returncode != 0:
            out[name] = {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
            continue
        summary = json.loads((Path(runs) / run_name / "summary.json").read_text())
        out[name] = {
            "process_seconds": process_seconds,
            "seconds": summary["seconds"],
            "compile_seconds": summary.get("compile_seconds"),
            "test_mse": summary["test_mse"],
            "nfe_forward": summary["nfe_forward"],
            "masses": summary.get("masses"),
        }
        print(f"  main job, {name}: {out[name]}", flush=True)
    return out


def paired_rounds(problem: bench.BenchProblem, repeats: int, rounds: int) -> dict[str, Any]:
    """Compiled ``aca`` and diffrax's ``RecursiveCheckpointAdjoint`` timed alternately.

    The load of other jobs drifts over minutes; measuring the two in turns, ``rounds`` times
    (each a median of ``repeats`` after a warm-up), and taking the median of the per-round
    ratios compares them under the same conditions.
    """
    from physid.bench import measure, physid_candidates
    from physid.bench_jax import PeerSession

    cand = physid_candidates(["aca"], compile=True)[0]
    model = problem.make_model()
    params = list(model.parameters())
    out: list[dict[str, float]] = []
    with PeerSession(
        problem.jax_kind,
        problem.jax_arrays,
        adjoints=["RecursiveCheckpointAdjoint"],
        repeats=repeats,
    ) as peer:
        for _ in range(rounds):
            m = measure(
                cand,
                model,
                problem.y0,
                problem.t,
                problem.loss_fn,
                params,
                rtol=problem.rtol,
                atol=problem.atol,
                repeats=repeats,
                memory=False,
                solve_kwargs={"params": params},
            )
            d = peer.time("RecursiveCheckpointAdjoint")
            out.append(
                {
                    "physid_seconds": m.seconds,
                    "physid_cpu_seconds": m.cpu_seconds or float("nan"),
                    "diffrax_seconds": d["seconds"],
                    "diffrax_cpu_seconds": d["cpu_seconds"],
                }
            )
    wall = [r["physid_seconds"] / r["diffrax_seconds"] for r in out]
    cpu = [r["physid_cpu_seconds"] / r["diffrax_cpu_seconds"] for r in out]
    return {
        "rounds": out,
        "ratio_wall_median": statistics.median(wall),
        "ratio_cpu_median": statistics.median(cpu),
        "ratio_wall_range": [min(wall), max(wall)],
        "ratio_cpu_range": [min(cpu), max(cpu)],
    }


def run(
    out_dir: Path,
    problems: list[str],
    repeats: int,
    with_diffrax: bool,
    warm_check: bool,
    with_main_job: bool = False,
    rounds: int = 5,
) -> dict[str, Any]:
    import torch

    import physid

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            "torch": torch.__version__,
            "physid": physid.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default)"),
            "load_average_start": os.getloadavg(),
        },
        "repeats": repeats,
        "problems": {},
    }
    for name in problems:
        print(f"== {name}", flush=True)
        prob = bench.build_problem(name)
        rows = measure_candidates(prob, repeats, lambda line: print(line, flush=True))
        field_s, field_cpu = bench.field_seconds(prob)
        entry: dict[str, Any] = {
            "description": prob.description,
            "field_seconds": field_s,
            "field_cpu_seconds": field_cpu,
        }
        if with_diffrax:
            from physid.bench_jax import peer_available

            if peer_available():
                peer_rows, peer_env = bench.diffrax_rows(prob, repeats)
                for r in peer_rows:
                    jit_s = r.extra["compile_seconds"]
                    print(f"  {r.candidate:34s} {r.seconds:.5f} s  (jit {jit_s:.1f} s)")
                rows += peer_rows
                results["environment"]["diffrax"] = {
                    k: v for k, v in peer_env.items() if "field" not in k
                }
                if rounds:
                    entry["paired"] = paired_rounds(prob, repeats, rounds)
                    print(
                        f"  paired rounds: aca compiled / diffrax RCA = "
                        f"{entry['paired']['ratio_wall_median']:.2f} wall, "
                        f"{entry['paired']['ratio_cpu_median']:.2f} CPU",
                        flush=True,
                    )
            else:
                print("  diffrax: not installed (pip install physid[bench-jax])")
        bench.add_overhead_ratios(rows, field_cpu)
        entry["rows"] = [asdict(r) for r in rows]
        entry["ratios"] = bench.ratios(rows)
        entry["ratios_cpu"] = bench.ratios(rows, "cpu_seconds")
        if warm_check:
            print("  cold and warm processes (compiled aca, 100 fitting steps)", flush=True)
            entry["processes"] = compile_probes(name, 100)
        results["problems"][name] = entry
        results["environment"]["load_average_end"] = os.getloadavg()
        save_json(out_dir / "fast_path.json", bench.jsonable(results))
    if with_main_job:
        print("== main job", flush=True)
        results["main_job"] = main_job(tempfile.mkdtemp(prefix="physid-fastpath-main-"))
        save_json(out_dir / "fast_path.json", bench.jsonable(results))
    (out_dir / "fast_path.md").write_text(markdown(results))
    plot(results, out_dir / "fast_path.png")
    print(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Command: `{results['command']}`", ""]
    for name, res in results["problems"].items():
        lines += [
            f"**{name}** — {res['description']}; one bare compiled evaluation of the field "
            f"{res['field_seconds'] * 1e6:.1f} µs ({res['field_cpu_seconds'] * 1e6:.1f} µs CPU)",
            "",
            "| candidate | s (median) | CPU s (median) | compile s | NFE fwd | NFE bwd | steps "
            "| overhead ratio | grad rel. err |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            comp = r["extra"].get("compile_seconds")
            comp_s = f"{comp:.1f}" if comp else "-"
            nfe_b = r["nfe_backward"] if r["extra"].get("nfe_backward_counted", True) else "n/c"
            ratio = r.get("overhead_ratio")
            err = r.get("gradient_error")
            cpu = r.get("cpu_seconds")
            cpu_s = "-" if cpu is None else f"{cpu:.4f}"
            lines.append(
                f"| {r['candidate']} | {r['seconds']:.4f} | {cpu_s} | {comp_s} | "
                f"{r['nfe_forward']} | "
                f"{nfe_b} | {r['steps_forward'] or '-'} | "
                f"{'-' if ratio is None else f'{ratio:.1f}'} | "
                f"{'-' if err is None else f'{err:.1e}'} |"
            )
        if res.get("ratios"):
            lines += [
                "",
                "Wall: " + "; ".join(f"{k} = **{v:.3f}**" for k, v in res["ratios"].items()),
            ]
        if res.get("ratios_cpu"):
            lines += [
                "",
                "CPU: " + "; ".join(f"{k} = **{v:.3f}**" for k, v in res["ratios_cpu"].items()),
            ]
        if res.get("paired"):
            pr = res["paired"]
            lines += [
                "",
                f"Paired rounds (compiled aca and diffrax RecursiveCheckpointAdjoint measured "
                f"alternately, {len(pr['rounds'])} rounds): aca compiled / diffrax = "
                f"**{pr['ratio_wall_median']:.2f}** wall (range "
                f"{pr['ratio_wall_range'][0]:.2f}-{pr['ratio_wall_range'][1]:.2f}), "
                f"**{pr['ratio_cpu_median']:.2f}** CPU (range {pr['ratio_cpu_range'][0]:.2f}-"
                f"{pr['ratio_cpu_range'][1]:.2f}).",
            ]
        for kind, w in (res.get("processes") or {}).items():
            if "error" in w:
                lines += ["", f"{kind} cache, new process: failed ({w['error']})"]
                continue
            lines += [
                "",
                f"{kind.capitalize()} Inductor cache, a new process fitting with compiled aca: "
                f"set-up {w['setup_seconds']:.1f} s, first solve + backward "
                f"{w['first_solve_seconds']:.1f} s ({w['first_solve_cpu_seconds']:.1f} s CPU; "
                f"{w['build_seconds']:.1f} s of it capturing and building {w['kernels']} "
                f"kernels), then {w['epochs'] - 1} more epochs {w['epochs_seconds']:.1f} s; the "
                f"whole process {w['process_seconds']:.1f} s ({w['process_cpu_seconds']:.1f} s "
                "CPU).",
            ]
        lines.append("")
    if results.get("main_job"):
        lines += [
            "**main job** — `physid fit three-body --method aca` (100 epochs, known-form model), "
            "a new process each; `seconds` (training) and `compile_seconds` from its "
            "`summary.json`",
            "",
            "| fit | process s | summary seconds | of which compiling | NFE fwd | test MSE |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in results["main_job"].items():
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error']} | | | | |")
                continue
            lines.append(
                f"| {name} | {r['process_seconds']:.1f} | {r['seconds']:.1f} | "
                f"{r.get('compile_seconds') or 0:.1f} | {r['nfe_forward']} | {r['test_mse']:.6e} |"
            )
        lines.append("")
    env = results["environment"]
    lines.append(
        f"torch {env['torch']}, {env['cpus']} CPUs, 1 thread; load average "
        f"{env['load_average_start'][0]:.1f} at start, {env.get('load_average_end', [0])[0]:.1f} "
        "at end (other jobs share the machine: timings are noisy)."
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(results["problems"])
    fig, axes = plt.subplots(2, len(probs), figsize=(7 * len(probs), 9), squeeze=False)
    colors = {"physid": "tab:blue", "torchdiffeq": "tab:orange", "diffrax": "tab:green"}
    for row, (key, what) in enumerate(
        (("cpu_seconds", "CPU seconds"), ("seconds", "wall-clock seconds"))
    ):
        for ax, name in zip(axes[row], probs, strict=True):
            rows = [r for r in results["problems"][name]["rows"] if r.get(key)]
            labels = [r["candidate"] for r in rows]
            vals = [r[key] for r in rows]
            cols = [
                "tab:purple" if "compiled" in r["candidate"] else colors.get(r["library"], "gray")
                for r in rows
            ]
            ax.barh(labels, vals, color=cols)
            ax.set_xscale("log")
            ax.invert_yaxis()
            ax.set_xlabel(f"{what} per forward + backward (median, 1 thread)")
            ax.set_title(f"{name} ({what})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/fast_path"))
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-diffrax", action="store_true")
    parser.add_argument("--no-warm-check", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="paired rounds of compiled aca vs diffrax (0: none)",
    )
    parser.add_argument(
        "--main-job",
        action="store_true",
        help="also time physid fit three-body --method aca (100 epochs) eager and compiled",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use the usual Inductor cache (default: a fresh one, so compile times are cold)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cache = _setup_cache(args.warm_cache)
    print(f"Inductor cache: {cache}", flush=True)
    run(
        args.out,
        [p for p in args.problems.split(",") if p],
        args.repeats,
        not args.no_diffrax,
        not args.no_warm_check,
        args.main_job,
        args.rounds,
    )


if __name__ == "__main__":
    main()
