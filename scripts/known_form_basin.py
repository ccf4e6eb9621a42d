"""Basin of convergence of the three-body mass fit on [0, 2]: single vs multiple shooting vs Adam.

50 initial mass vectors, each mass drawn uniformly within ±50% of the truth (seeded), are fitted
to the paper's system observed on [0, 2] — 2000 points (the protocol's spacing), through both
close encounters — with the paper's loss (0.01^t-weighted position MSE), dopri5 at
rtol = atol = 1e-7, by

- **LM single shooting**: Levenberg-Marquardt on one solve from the known initial state;
- **LM multiple shooting**: the window split into 40 segments (0.05 time units each) whose
  initial states are unknowns too, started from the data (observed positions, velocities from
  central differences of them), with continuity residuals of weight 1e-2
  (:class:`physid.ShootingResiduals`); the fitted masses are judged, as for the other arms;
- **Adam**: the protocol's optimiser (lr 0.1, betas (0.5, 0.5), lr x 0.95 before every step,
  100 epochs, gradients by ``aca``, the epoch of lowest unweighted training MSE kept) — the
  loop of ``physid fit three-body``, written out here because that path draws its own initial
  masses.

A start *converges* when every mass is within 1e-4 (relative) of the truth. Results are saved
after every start (``basin.json``; a rerun resumes), then ``basin.md`` and ``basin.png``.

    python scripts/known_form_basin.py --out bench_results/known_form             # 50 starts
    python scripts/known_form_basin.py --adam-starts 20 --out bench_results/known_form
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.envs.three_body import K2  # noqa: E402
from physid.models.experiments.three_body import make_data, training_loss  # noqa: E402
from physid.models.known_form import KnownFormThreeBody  # noqa: E402

import physid  # noqa: E402
from physid._io import atomic_write, load_json, save_json  # noqa: E402
from physid.errors import PhysidError  # noqa: E402

POSITIONS = torch.eye(18, dtype=torch.float64)[:9]
ARMS = ("lm-single", "lm-multiple", "adam")
THRESHOLDS = (1e-2, 1e-4, 1e-6)
CONVERGED = 1e-4


def starts(n: int, seed: int, true: np.ndarray) -> np.ndarray:
    """``(n, 3)`` initial masses: the truth times U(0.5, 1.5), per mass."""
    rng = np.random.default_rng(seed)
    return true * rng.uniform(0.5, 1.5, size=(n, 3))


def _velocities(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Velocities from the observed positions by central differences (dr/dt = K2 v)."""
    v = torch.empty_like(pos)
    v[1:-1] = (pos[2:] - pos[:-2]) / (t[2:] - t[:-2])[:, None]
    v[0] = (pos[1] - pos[0]) / (t[1] - t[0])
    v[-1] = (pos[-1] - pos[-2]) / (t[-1] - t[-2])
    return v / K2


def fit_lm(data: Any, m0: np.ndarray, segments: int, args: argparse.Namespace) -> dict[str, Any]:
    t = torch.as_tensor(data.t_train)
    y = torch.as_tensor(data.y_train)
    pos = y[:, :9]
    model = KnownFormThreeBody(m0.tolist())
    stats = physid.SolveStats()
    res = physid.ShootingResiduals(
        model,
        t,
        pos,
        observe=POSITIONS,
        weights=0.01**t / len(t),
        y0=y[0],
        segments=segments,
        continuity_weight=args.continuity_weight,
        rtol=args.tol,
        atol=args.tol,
        stats=stats,
    )
    states = None
    if segments > 1:
        idx = res.bounds[1:-1]
        states = torch.cat([pos[idx], _velocities(t, pos)[idx]], 1)
    x0 = res.pack(torch.as_tensor(m0), states)
    cpu0 = time.process_time()
    try:
        fit = physid.levenberg_marquardt(
            res,
            x0,
            lower=res.lower_bounds(0.0),
            options=physid.LMOptions(max_iterations=args.lm_iterations),
        )
        masses, status, iterations, cost = fit.x[:3].tolist(), fit.status, fit.iterations, fit.cost
    except PhysidError as err:  # the starting point itself could not be solved
        masses, status, iterations, cost = list(m0), f"failed: {err}", 0, float("nan")
    return {
        "masses": masses,
        "status": status,
        "iterations": iterations,
        "cost": cost,
        "cpu_seconds": time.process_time() - cpu0,
        "nfe_forward": stats.nfe_forward,
    }


def fit_adam(data: Any, m0: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    t = torch.as_tensor(data.t_train)
    target = torch.as_tensor(data.y_train)
    model = KnownFormThreeBody(m0.tolist())
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.5, 0.5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.95 ** (e + 1))
    stats = physid.SolveStats()
    best = (float("inf"), list(m0))
    cpu0 = time.process_time()
    status = "done"
    solve = {"rtol": args.tol, "atol": args.tol, "max_steps": 100_000}
    try:
        for _ in range(args.adam_epochs):
            pred = physid.odeint(model, target[0], t, method="aca", stats=stats, **solve)
            loss, _ = training_loss(pred, target[:, :9], t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                after = physid.odeint(model, target[0], t, **solve)
                mse = float((after[:, :9] - target[:, :9]).pow(2).sum(-1).mean())
            if mse < best[0]:
                best = (mse, model.masses.detach().tolist())
    except PhysidError as err:
        status = f"failed: {err}"
    return {
        "masses": best[1],
        "status": status,
        "iterations": args.adam_epochs,
        "cost": best[0],
        "cpu_seconds": time.process_time() - cpu0,
        "nfe_forward": stats.nfe_forward,
        "nfe_backward": stats.nfe_backward,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/known_form"))
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--adam-starts", type=int, default=50, help="Adam on the first N only.")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--continuity-weight", type=float, default=1e-2)
    parser.add_argument("--lm-iterations", type=int, default=30)
    parser.add_argument("--adam-epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = make_data(n_train=2000, train_end=2.0, n_test=2)
    true = np.asarray(data.params.masses)
    m0s = starts(args.starts, args.seed, true)
    path = args.out / "basin.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "adam_starts", "starts")}
    saved = load_json(path) if path.exists() else {}
    if saved.get("settings") != settings:
        saved = {}
    results: dict[str, Any] = {
        "settings": settings,
        "true_masses": true.tolist(),
        "starts": m0s.tolist(),
        "runs": saved.get("runs", {arm: {} for arm in ARMS}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for i, m0 in enumerate(m0s):
        for arm in ARMS:
            if str(i) in results["runs"][arm] or (arm == "adam" and i >= args.adam_starts):
                continue
            if arm == "adam":
                r = fit_adam(data, m0, args)
            else:
                r = fit_lm(data, m0, 1 if arm == "lm-single" else args.segments, args)
            err = float(np.max(np.abs(np.asarray(r["masses"]) - true) / true))
            r["max_mass_rel_error"] = err
            results["runs"][arm][str(i)] = r
            save_json(path, results)
            print(
                f"start {i:2d} {arm:12s} err {err:9.2e} {r['status'][:20]:20s} "
                f"it {r['iterations']:3d} CPU {r['cpu_seconds']:7.1f} s",
                flush=True,
            )
    results["summary"] = summarise(results)
    save_json(path, results)
    with atomic_write(args.out / "basin.md", "w") as fh:
        fh.write(markdown(results))
    plot(results, args.out / "basin.png")
    print(markdown(results))
    return 0


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for arm, runs in results["runs"].items():
        if not runs:
            continue
        errs = np.array([r["max_mass_rel_error"] for r in runs.values()])
        out[arm] = {
            "n": len(runs),
            **{f"fraction_below_{th:g}": float(np.mean(errs <= th)) for th in THRESHOLDS},
            "median_iterations": float(np.median([r["iterations"] for r in runs.values()])),
            "median_cpu_seconds": float(np.median([r["cpu_seconds"] for r in runs.values()])),
            "failed": int(sum(r["status"].startswith("failed") for r in runs.values())),
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"Three-body masses on [0, 2] (2000 points), starts within ±50% of the truth (seed "
        f"{s['seed']}), dopri5 at {s['tol']:g}; multiple shooting: {s['segments']} segments, "
        f"continuity weight {s['continuity_weight']:g}.",
        "",
        "| arm | starts | "
        + " | ".join(f"max mass error ≤ {th:g}" for th in THRESHOLDS)
        + " | median iterations | median CPU s | solver failures |",
        "|---|---|" + "---|" * len(THRESHOLDS) + "---|---|---|",
    ]
    for arm, row in results["summary"].items():
        lines.append(
            f"| {arm} | {row['n']} | "
            + " | ".join(f"{row[f'fraction_below_{th:g}']:.0%}" for th in THRESHOLDS)
            + f" | {row['median_iterations']:.0f} | {row['median_cpu_seconds']:.1f} | "
            f"{row['failed']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    true = np.asarray(results["true_masses"])
    m0s = np.asarray(results["starts"])
    spread = np.max(np.abs(m0s - true) / true, axis=1)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    markers = {"lm-single": "o", "lm-multiple": "s", "adam": "^"}
    for arm, runs in results["runs"].items():
        if not runs:
            continue
        idx = np.array([int(i) for i in runs])
        errs = np.array([max(r["max_mass_rel_error"], 1e-12) for r in runs.values()])
        ax1.scatter(spread[idx], errs, marker=markers[arm], label=arm, alpha=0.7)
    ax1.axhline(CONVERGED, color="grey", ls=":", lw=1, label="converged (1e-4)")
    ax1.set_yscale("log")
    ax1.set_xlabel("initial max relative mass error")
    ax1.set_ylabel("final max relative mass error")
    ax1.legend(fontsize="small")
    ax1.grid(True, which="both", alpha=0.3)
    summary = results["summary"]
    arms = list(summary)
    for k, th in enumerate(THRESHOLDS):
        ax2.bar(
            np.arange(len(arms)) + (k - 1) * 0.25,
            [summary[a][f"fraction_below_{th:g}"] for a in arms],
            width=0.25,
            label=f"≤ {th:g}",
        )
    ax2.set_xticks(np.arange(len(arms)), [f"{a}\n(n={summary[a]['n']})" for a in arms])
    ax2.set_ylabel("fraction of starts")
    ax2.set_ylim(0, 1)
    ax2.legend(title="final max mass error", fontsize="small")
    fig.suptitle("three-body masses on [0, 2] from ±50% starts: basin of convergence")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
