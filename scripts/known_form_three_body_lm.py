"""Three-body masses by Levenberg-Marquardt on forward sensitivities, against the Adam fit.

Both fits start from the same initial masses (the Adam path's seed-0 initialisation, the paper's
1 + 0.2 (U - 0.5)) and minimise the same loss (the paper's: mean over the 1000 training times on
[0, 1] of 0.01^t times the squared position error), with dopri5 at the same tolerance:

- **LM**: :func:`physid.levenberg_marquardt` on the residuals ``sqrt(0.01^t / T) (r - r_data)``
  (:class:`physid.ShootingResiduals` with one segment), the Jacobian from
  :func:`physid.odeint_jacobian` (one forward-sensitivity solve per iteration), masses
  positive through ``log``.
- **Adam**: the ``physid fit three-body --model ode --method aca`` path
  (:class:`physid.models.experiments.three_body.ThreeBody`), run in this process: 100 epochs,
  lr 0.1 x 0.95 per step, best epoch by training MSE.

Writes ``three_body_lm.{json,md,png}`` into ``--out``: masses, relative errors, test MSE on
[0, 2] (the Adam path's evaluation: a solve at the training tolerance), iterations, NFE, wall
and CPU seconds (the CPU time is the steadier measure on a shared machine), and LM's singular
values and standard errors.

    python scripts/known_form_three_body_lm.py --out bench_results/known_form
    python scripts/known_form_three_body_lm.py --skip-adam --out /tmp/kf     # LM only

``--lm 1e-7:1e-5`` solves the residuals at 1e-7 and the Jacobian's sensitivities at 1e-5
(:class:`physid.ShootingResiduals`' ``jacobian_tol``: an inexact Gauss-Newton Jacobian).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.models.experiments.three_body import (  # noqa: E402
    FitConfig,
    ThreeBody,
    make_data,
    position_mse,
)
from physid.models.known_form import KnownFormThreeBody  # noqa: E402

import physid  # noqa: E402
from physid._io import atomic_write, save_json  # noqa: E402

POSITIONS = torch.eye(18, dtype=torch.float64)[:9]


def initial_masses(seed: int) -> torch.Tensor:
    """The Adam path's initial masses for ``seed`` (``build_model``'s generator)."""
    return KnownFormThreeBody(generator=torch.Generator().manual_seed(seed)).masses.detach()


def test_mse(masses: torch.Tensor, data: Any, tol: float) -> float:
    """The Adam path's metric: the positions on the test grid from y0, at the training tol."""
    model = KnownFormThreeBody(masses)
    with torch.no_grad():
        pred = physid.odeint(
            model,
            torch.as_tensor(data.y0),
            torch.as_tensor(data.t_test),
            method="aca",
            rtol=tol,
            atol=tol,
            max_steps=100_000,
        )
    return position_mse(pred.numpy(), data.y_test)


def fit_lm(
    data: Any, x0: torch.Tensor, tol: float, jacobian_tol: float | None, max_iterations: int
) -> dict[str, Any]:
    t = torch.as_tensor(data.t_train)
    y = torch.as_tensor(data.y_train)
    weights = 0.01**t / len(t)
    model = KnownFormThreeBody(x0)
    stats = physid.SolveStats()
    residuals = physid.ShootingResiduals(
        model,
        t,
        y[:, :9],
        observe=POSITIONS,
        weights=weights,
        y0=y[0],
        rtol=tol,
        atol=tol,
        jacobian_tol=jacobian_tol,
        stats=stats,
    )
    true = torch.tensor(data.params.masses, dtype=torch.float64)
    history: list[dict[str, Any]] = []
    cpu0 = time.process_time()

    def record(it: Any, state: Any) -> None:
        x = torch.tensor(it.x)
        history.append(
            {
                **it.to_dict(),
                "cpu_seconds": time.process_time() - cpu0,
                "nfe_forward": stats.nfe_forward,
                "mass_rel_error": float(((x - true).abs() / true).max()),
            }
        )

    wall0 = time.perf_counter()
    res = physid.levenberg_marquardt(
        residuals,
        x0,
        lower=0.0,
        options=physid.LMOptions(max_iterations=max_iterations),
        callback=record,
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rel = ((res.x - true).abs() / true).tolist()
    return {
        "tol": tol,
        "jacobian_tol": jacobian_tol,
        "masses": res.x.tolist(),
        "mass_rel_error": rel,
        "max_mass_rel_error": max(rel),
        "iterations": res.iterations,
        "evaluations": res.evaluations,
        "status": res.status,
        "loss": res.cost,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "nfe_forward": stats.nfe_forward,
        "steps_accepted": stats.steps_accepted,
        "singular_values": res.singular_values.tolist(),
        "std_errors": res.std_errors.tolist(),
        "residual_variance": res.residual_variance,
        "test_mse": test_mse(res.x, data, tol),
        "history": history,
    }


def fit_adam(data: Any, seed: int, tol: float, runs_dir: Path) -> dict[str, Any]:
    config = FitConfig(
        model="ode",
        method="aca",
        seed=seed,
        rtol=tol,
        atol=tol,
        runs_dir=str(runs_dir),
        progress=False,
        plots=False,
        resume=False,
        threads=None,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run = ThreeBody().fit(config)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    summary = run.read_summary()
    metrics = run.read_metrics()
    true = np.asarray(data.params.masses)
    masses = np.asarray(summary["masses"])
    rel = (np.abs(masses - true) / true).tolist()
    elapsed = np.cumsum([float(r.get("seconds", r["train_seconds"])) for r in metrics])
    return {
        "tol": tol,
        "masses": masses.tolist(),
        "mass_rel_error": rel,
        "max_mass_rel_error": max(rel),
        "epochs": len(metrics),
        "best_epoch": summary.get("best_epoch"),
        "loss_best_epoch": float(min(r["loss"] for r in metrics)),
        "train_seconds": float(summary["train_seconds"]),
        "epoch_wall_seconds": float(elapsed[-1]),
        "fit_wall_seconds": wall,
        "fit_cpu_seconds": cpu,
        "nfe_forward": int(summary["nfe_forward"]),
        "nfe_backward": int(summary["nfe_backward"]),
        "test_mse": test_mse(torch.as_tensor(masses), data, tol),
        "test_mse_summary": float(summary["test_mse"]),
        "history": [
            {
                "epoch": int(r["epoch"]),
                "seconds": float(s),
                "loss": float(r["loss"]),
                "mass_rel_error": float(np.max(np.abs(np.asarray(r["masses"]) - true) / true)),
            }
            for r, s in zip(metrics, elapsed, strict=True)
        ],
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| fit | tol | iterations | max mass rel. error | test MSE | NFE (fwd+bwd) | "
        "wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lm in res["lm"]:
        jt = f", Jacobian at {lm['jacobian_tol']:g}" if lm["jacobian_tol"] else ""
        lines.append(
            f"| LM (forward sensitivities{jt}) | {lm['tol']:g} | {lm['iterations']} "
            f"({lm['evaluations']} Jacobians) | {lm['max_mass_rel_error']:.2e} | "
            f"{lm['test_mse']:.3g} | {lm['nfe_forward']} | {lm['wall_seconds']:.1f} | "
            f"{lm['cpu_seconds']:.1f} |"
        )
    adam = res.get("adam")
    if adam:
        lines.append(
            f"| Adam (`physid fit three-body --method aca`) | {adam['tol']:g} | "
            f"{adam['epochs']} epochs | {adam['max_mass_rel_error']:.2e} | "
            f"{adam['test_mse']:.3g} | {adam['nfe_forward'] + adam['nfe_backward']} | "
            f"{adam['epoch_wall_seconds']:.1f} (train {adam['train_seconds']:.1f}) | "
            f"{adam['fit_cpu_seconds']:.1f} |"
        )
        lm = res["lm"][0]
        wall = lm["wall_seconds"] / adam["epoch_wall_seconds"]
        cpu = lm["cpu_seconds"] / adam["fit_cpu_seconds"]
        lines += [
            "",
            f"LM at {lm['tol']:g} over Adam: wall {wall:.3f} (of Adam's epoch loop), CPU "
            f"{cpu:.3f} (of the whole Adam fit, data and evaluation included).",
        ]
    lm = res["lm"][0]
    lines += [
        "",
        f"LM at {lm['tol']:g}: singular values of the final Jacobian "
        + ", ".join(f"{s:.3g}" for s in lm["singular_values"])
        + "; standard errors of the masses "
        + ", ".join(f"{s:.2g}" for s in lm["std_errors"])
        + f" (residual variance {lm['residual_variance']:.2g}).",
    ]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for lm in res["lm"]:
        h = lm["history"]
        secs = [r["seconds"] for r in h]
        label = f"LM, tol {lm['tol']:g}" + (
            f", Jacobian {lm['jacobian_tol']:g}" if lm["jacobian_tol"] else ""
        )
        ax1.semilogy(secs, [r["mass_rel_error"] for r in h], marker="o", label=label)
        ax2.semilogy(secs, [r["cost"] for r in h], marker="o", label=label)
    adam = res.get("adam")
    if adam:
        h = adam["history"]
        secs = [r["seconds"] for r in h]
        label = f"Adam (aca), tol {adam['tol']:g}"
        ax1.semilogy(secs, [r["mass_rel_error"] for r in h], label=label)
        ax2.semilogy(secs, [r["loss"] for r in h], label=label)
    ax1.axhline(1e-5, color="grey", ls=":", lw=1)
    ax1.set_ylabel("max relative mass error")
    ax2.set_ylabel("training loss (0.01^t-weighted position MSE)")
    for ax in (ax1, ax2):
        ax.set_xlabel("wall seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("three-body masses from the paper's initial guess: Levenberg-Marquardt vs Adam")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/known_form"))
    parser.add_argument("--seed", type=int, default=0, help="Initial masses (the Adam seed).")
    parser.add_argument(
        "--lm",
        nargs="+",
        default=["1e-7", "1e-7:1e-5", "1e-8"],
        help="LM runs: TOL (residuals and Jacobian) or TOL:JACOBIAN_TOL.",
    )
    parser.add_argument("--adam-tol", type=float, default=1e-7)
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument("--skip-adam", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = make_data()
    x0 = initial_masses(args.seed)
    res: dict[str, Any] = {
        "initial_masses": x0.tolist(),
        "true_masses": list(data.params.masses),
        "threads": args.threads,
        "lm": [],
    }
    for spec in args.lm:
        tol_s, _, jac_s = spec.partition(":")
        tol, jac_tol = float(tol_s), (float(jac_s) if jac_s else None)
        lm = fit_lm(data, x0, tol, jac_tol, args.max_iterations)
        res["lm"].append(lm)
        print(
            f"LM {spec}: {lm['iterations']} iterations, max mass error "
            f"{lm['max_mass_rel_error']:.2e}, test MSE {lm['test_mse']:.3g}, "
            f"{lm['wall_seconds']:.1f} s wall, {lm['cpu_seconds']:.1f} s CPU",
            flush=True,
        )
    if not args.skip_adam:
        with tempfile.TemporaryDirectory() as tmp:
            adam = fit_adam(data, args.seed, args.adam_tol, Path(tmp))
        res["adam"] = adam
        print(
            f"Adam: {adam['epochs']} epochs, max mass error {adam['max_mass_rel_error']:.2e}, "
            f"test MSE {adam['test_mse']:.3g}, epochs {adam['epoch_wall_seconds']:.1f} s wall, "
            f"whole fit {adam['fit_cpu_seconds']:.1f} s CPU",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "three_body_lm.json", res)
    with atomic_write(args.out / "three_body_lm.md", "w") as fh:
        fh.write(markdown(res))
    plot(res, args.out / "three_body_lm.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
