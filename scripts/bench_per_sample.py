"""Per-sample step sizes on a batch of three-body systems: steps saved, evaluations, time.

A batch of three-body systems (``envs/three_body.py``'s :func:`random_system`, screened to stay
collision-free on [0, 2]) is solved with dopri5 at rtol = atol = 1e-7 three ways:

* ``shared``: one batched solve, one step size for the whole batch (``batch="shared"``): every
  sample takes every step, so the batch steps as finely as its hardest sample needs at each moment
  (close encounters of different systems fall at different times);
* ``independent``: one batched solve, every sample its own step sizes
  (``batch="independent"``); the batch runs until its slowest sample finishes;
* ``one-by-one``: a loop of single solves (the reference for the per-sample counts: each sample's
  steps in ``independent`` must equal its own solve's).

Two batches: ``masses`` (the paper's initial state, masses ~ U(0.8, 1.2): systems that differ
only in their masses) and ``random`` (masses and a perturbed initial state, a sweep over seeds).
Two horizons: [0, 1] (the paper's training window, 1000 output times) and [0, 2] (through the
close encounters, 1999 output times on the same grid). For each: sample-steps (the sum over the
samples of the steps each one took: for ``shared``, B times the shared steps), batched calls of
the dynamics (what a batched solve pays), evaluations per sample, wall and CPU seconds of the
forward solve and of forward + backward with ``aca`` (loss: mean squared positions, gradient to
the per-sample masses), and the largest position error against scipy's DOP853 at 1e-12.

Writes ``per_sample.json``, ``per_sample.md`` and ``per_sample.png`` into ``--out``.

    python scripts/bench_per_sample.py --out bench_results/per_sample
    python scripts/bench_per_sample.py --quick          # 4 systems, [0, 1], one repeat
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.envs.three_body import (  # noqa: E402
    ThreeBodyParams,
    dynamics,
    random_system,
    simulate,
)

import physid  # noqa: E402
from physid._io import atomic_path, save_json, write_text_atomic  # noqa: E402

MODES = ("shared", "independent", "one-by-one")
BATCHES = {
    "masses": {"position_noise": 0.0, "velocity_noise": 0.0},
    "random": {},
}


def make_batch(kind: str, n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(masses (n, 3), y0 (n, 18), seeds)`` of ``n`` collision-free systems."""
    masses, y0s, seeds = [], [], []
    for seed in range(n):
        params, y0 = random_system(seed, t_end=2.0, **BATCHES[kind])
        masses.append(params.masses)
        y0s.append(y0)
        seeds.append(seed)
    return np.array(masses), np.array(y0s), seeds


def reference(masses: np.ndarray, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(T, n, 18)`` from scipy's DOP853 at 1e-12 (the simulator's ground truth)."""
    out = [
        simulate(ThreeBodyParams(masses=tuple(m)), y, t)  # type: ignore[arg-type]
        for m, y in zip(masses, y0, strict=True)
    ]
    return np.stack(out, 1)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """``fn()``'s last result and its median wall and CPU seconds (after one warm-up)."""
    fn()
    walls, cpus = [], []
    result = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return result, statistics.median(walls), statistics.median(cpus)


def solve(
    mode: str, masses: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, tol: float, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, physid.SolveStats]:
    """One forward (and backward) solve of the whole batch in ``mode``."""
    B = y0.shape[0]
    stats = physid.SolveStats()
    m = masses.clone().requires_grad_(grad)
    kw = {"rtol": tol, "atol": tol, "method": "aca", "max_steps": 100_000}
    with torch.set_grad_enabled(grad):
        if mode == "one-by-one":
            ys_list: list[torch.Tensor] = []
            singles = [physid.SolveStats() for _ in range(B)]
            for b, sb in enumerate(singles):
                mb = m[b : b + 1]
                ys_b = physid.odeint(
                    lambda tt, y, mb=mb: dynamics(tt, y, mb), y0[b : b + 1], t, stats=sb, **kw
                )
                ys_list.append(ys_b)
            ys = torch.cat(ys_list, 1)
        else:
            ys = physid.odeint(
                lambda tt, y: dynamics(tt, y, m), y0, t, stats=stats, batch=mode, **kw
            )
        g = None
        if grad:
            loss = ys[..., :9].pow(2).mean()
            (g,) = torch.autograd.grad(loss, m)
    if mode == "one-by-one":  # the single solves' counts, backward included, as one batch
        stats.per_sample = physid.SampleCounts.zeros(B)
        for sb in singles:
            for key, value in sb.as_dict().items():
                setattr(stats, key, getattr(stats, key) + value)
        for key in stats.per_sample.as_dict():
            setattr(stats.per_sample, key, [getattr(sb, key) for sb in singles])
    return ys.detach(), g, stats


def sample_steps(
    mode: str, stats: physid.SolveStats, B: int
) -> tuple[list[int], list[int], list[int]]:
    """Accepted steps, rejected steps and evaluations of each sample (in ``shared`` every
    sample takes, and rejects, every step)."""
    if mode == "shared":
        return [stats.steps_accepted] * B, [stats.steps_rejected] * B, [stats.nfe_forward] * B
    per = stats.per_sample
    assert per is not None
    return list(per.steps_accepted), list(per.steps_rejected), list(per.nfe_forward)


def run_case(
    kind: str,
    masses_np: np.ndarray,
    y0_np: np.ndarray,
    t_np: np.ndarray,
    ref: np.ndarray,
    tol: float,
    repeats: int,
) -> dict[str, Any]:
    B = len(masses_np)
    masses = torch.tensor(masses_np, dtype=torch.float64)
    y0 = torch.tensor(y0_np, dtype=torch.float64)
    t = torch.tensor(t_np, dtype=torch.float64)
    results: dict[str, Any] = {}
    grads: dict[str, torch.Tensor] = {}
    for mode in MODES:
        (ys, _, st), wall_f, cpu_f = timed(
            lambda mode=mode: solve(mode, masses, y0, t, tol, False), repeats
        )
        (_, g, st_b), wall_b, cpu_b = timed(
            lambda mode=mode: solve(mode, masses, y0, t, tol, True), repeats
        )
        assert g is not None
        grads[mode] = g
        steps, rejected, nfe = sample_steps(mode, st, B)
        err = np.abs(ys.numpy()[..., :9] - ref[..., :9]).max(axis=(0, 2))  # per sample
        results[mode] = {
            "sample_steps": int(sum(steps)),
            "steps_per_sample": steps,
            "sample_rejected": int(sum(rejected)),
            "batched_calls": int(st.nfe_forward),
            "nfe_per_sample_mean": float(np.mean(nfe)),
            "nfe_per_sample_max": int(max(nfe)),
            "nfe_per_sample": nfe,
            "forward_wall_s": wall_f,
            "forward_cpu_s": cpu_f,
            "fwd_bwd_wall_s": wall_b,
            "fwd_bwd_cpu_s": cpu_b,
            "backward_calls": int(st_b.nfe_backward),
            "max_position_error": float(err.max()),
            "median_position_error": float(np.median(err)),
        }
    # each sample of the independent solve takes its own solve's steps, and the same gradient
    ind, one = results["independent"], results["one-by-one"]
    rel = float((grads["independent"] - grads["one-by-one"]).norm() / grads["one-by-one"].norm())
    return {
        "batch": kind,
        "t_end": float(t_np[-1]),
        "n_outputs": len(t_np),
        "masses": masses_np.tolist(),
        "results": results,
        "same_steps_as_one_by_one": ind["steps_per_sample"] == one["steps_per_sample"],
        "gradient_rel_diff_independent_vs_one_by_one": rel,
    }


def table(cases: list[dict[str, Any]]) -> str:
    head = (
        "| batch | T | mode | sample-steps | sample-rejections | batched calls | "
        "NFE/sample (mean, max) | fwd s (wall, cpu) | fwd+bwd aca s (wall, cpu) | "
        "bwd calls | max pos. error |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in cases:
        for mode in MODES:
            r = c["results"][mode]
            rows.append(
                f"| {c['batch']} | {c['t_end']:g} | {mode} | {r['sample_steps']} | "
                f"{r['sample_rejected']} | {r['batched_calls']} | "
                f"{r['nfe_per_sample_mean']:.0f}, {r['nfe_per_sample_max']} | "
                f"{r['forward_wall_s']:.2f}, {r['forward_cpu_s']:.2f} | "
                f"{r['fwd_bwd_wall_s']:.2f}, {r['fwd_bwd_cpu_s']:.2f} | "
                f"{r['backward_calls']} | {r['max_position_error']:.1e} |"
            )
    lines = [head + "\n".join(rows), ""]
    for c in cases:
        sh, ind = c["results"]["shared"], c["results"]["independent"]
        lines.append(
            f"- {c['batch']} [0, {c['t_end']:g}]: independent takes "
            f"**{ind['sample_steps'] / sh['sample_steps']:.2f}x** the sample-steps of shared "
            f"({ind['sample_steps']} vs {sh['sample_steps']}), "
            f"{ind['batched_calls'] / sh['batched_calls']:.2f}x the batched calls, "
            f"{ind['fwd_bwd_cpu_s'] / sh['fwd_bwd_cpu_s']:.2f}x the fwd+bwd CPU time; "
            f"same steps per sample as one-by-one: {c['same_steps_as_one_by_one']}, "
            "gradient rel. diff vs one-by-one "
            f"{c['gradient_rel_diff_independent_vs_one_by_one']:.1e}"
        )
    return "\n".join(lines) + "\n"


def plot(cases: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({c["batch"] for c in cases}, key=list(BATCHES).index)
    horizons = sorted({c["t_end"] for c in cases})
    fig, axes = plt.subplots(
        len(batches),
        len(horizons),
        figsize=(5.5 * len(horizons), 3.6 * len(batches)),
        squeeze=False,
    )
    for c in cases:
        ax = axes[batches.index(c["batch"])][horizons.index(c["t_end"])]
        ind = c["results"]["independent"]["steps_per_sample"]
        shared = c["results"]["shared"]["steps_per_sample"][0]
        x = np.arange(len(ind))
        ax.bar(x, ind, color="tab:blue", label="independent: own accepted steps")
        ax.axhline(shared, color="tab:red", label=f"shared: every sample {shared}")
        ax.set_title(f"{c['batch']}, [0, {c['t_end']:g}]")
        ax.set_xlabel("system (seed)")
        ax.set_ylabel("accepted steps")
        ax.legend(fontsize=8)
    fig.suptitle("three-body batch, dopri5 rtol = atol = 1e-7: accepted steps per system")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_results/per_sample")
    ap.add_argument("--n-systems", type=int, default=16)
    ap.add_argument("--tol", type=float, default=1e-7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="4 systems, [0, 1], one repeat")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, repeats, horizons = args.n_systems, args.repeats, (1.0, 2.0)
    if args.quick:
        n, repeats, horizons = 4, 1, (1.0,)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = np.arange(1999) / 999.0  # [0, 2]; its first 1000 points are linspace(0, 1, 1000)
    cases = []
    for kind in BATCHES:
        t0 = time.perf_counter()
        masses, y0, seeds = make_batch(kind, n)
        ref = reference(masses, y0, grid)
        print(f"{kind}: {n} systems screened and referenced in {time.perf_counter() - t0:.0f} s")
        for t_end in horizons:
            m = 1000 if t_end == 1.0 else len(grid)
            case = run_case(kind, masses, y0, grid[:m], ref[:m], args.tol, repeats)
            case["seeds"] = seeds
            cases.append(case)
            print(table([case]))
    md = table(cases)
    meta = {
        "command": " ".join(["python", "scripts/bench_per_sample.py", *(argv or sys.argv[1:])]),
        "n_systems": n,
        "tol": args.tol,
        "repeats": repeats,
        "threads": args.threads,
        "solver": "dopri5",
        "method_for_backward": "aca",
        "torch": torch.__version__,
        "physid": physid.__version__,
        "machine": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "note": "median of repeats after one warm-up; wall times on a shared machine are noisy, "
        "CPU seconds are steadier",
    }
    save_json(out / "per_sample.json", {"meta": meta, "cases": cases})
    write_text_atomic(
        out / "per_sample.md", f"# Per-sample step sizes\n\n`{meta['command']}`\n\n{md}"
    )
    plot(cases, out / "per_sample.png")
    print(md)
    print(f"wrote {out}/per_sample.json, per_sample.md, per_sample.png")


if __name__ == "__main__":
    main()
