"""Gradient of the three-body training loss with respect to the masses, against the tolerance.

For each gradient method (naive, adjoint, seminorm, aca) and each tolerance (rtol = atol), the
script computes the training loss of the known-form model (the paper's loss: 0.01^t-weighted
squared position error on the 1000 training points of [0, 1]) and its gradient with respect to
the three masses, with dopri5. The reference is ACA at 1e-12 (the exact gradient of a converged
discrete solve; the adjoint at 1e-12 is reported beside it as a check). Three points in mass
space: the initial masses of seed 0 (far from the optimum) and the true masses with a 1% and a
0.1% error on mass 1 (near the optimum, where the direction of the gradient decides where Adam
goes and where the solver's own error is of the size of the signal).

Writes ``gradient_vs_tol.json`` and ``gradient_vs_tol.png`` into ``--out`` and prints a table.

    python scripts/three_body_gradient_vs_tol.py --out bench_results/three_body
    python scripts/three_body_gradient_vs_tol.py --quick      # 3 tolerances, a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.models.experiments.three_body import make_data, training_loss  # noqa: E402
from physid.models.known_form import KnownFormThreeBody  # noqa: E402

import physid  # noqa: E402
from physid._io import save_json  # noqa: E402

METHODS = ("naive", "adjoint", "seminorm", "aca")
REFERENCE_TOL = 1e-12


def loss_and_gradient(
    masses: list[float], method: str, tol: float, data, solver: str = "dopri5"
) -> dict:
    """Loss, d loss / d masses, NFE and seconds of one forward + backward."""
    model = KnownFormThreeBody(masses)
    t = torch.as_tensor(data.t_train)
    target = torch.as_tensor(data.y_train)
    stats = physid.SolveStats()
    t0 = time.perf_counter()
    pred = physid.odeint(
        model,
        target[0],
        t,
        method=method,
        solver=solver,
        rtol=tol,
        atol=tol,
        max_steps=1_000_000,
        stats=stats,
    )
    loss, _ = training_loss(pred, target, t)
    loss.backward()
    seconds = time.perf_counter() - t0
    grad = model.masses.grad
    if grad is None:
        raise RuntimeError(f"{method} produced no gradient for the masses")
    return {
        "loss": float(loss.detach()),
        "grad": grad.tolist(),
        "seconds": seconds,
        **stats.as_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/three_body"))
    parser.add_argument(
        "--tols", type=float, nargs="+", default=[1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--quick", action="store_true", help="Tolerances 1e-4, 1e-6, 1e-8 only.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tols = [1e-4, 1e-6, 1e-8] if args.quick else args.tols

    data = make_data()
    true = list(data.params.masses)
    init = KnownFormThreeBody(generator=torch.Generator().manual_seed(0)).masses.tolist()
    points = {
        "init (seed 0)": init,
        "truth, mass 1 +1%": [true[0] * 1.01, *true[1:]],
        "truth, mass 1 +0.1%": [true[0] * 1.001, *true[1:]],
    }

    results: dict = {"tolerances": tols, "methods": args.methods, "points": {}}
    for label, masses in points.items():
        ref = loss_and_gradient(masses, "aca", REFERENCE_TOL, data)
        check = loss_and_gradient(masses, "adjoint", REFERENCE_TOL, data)
        g_ref = np.asarray(ref["grad"])
        entry: dict = {
            "masses": masses,
            "reference": ref,
            "reference_check_adjoint": check,
            "reference_check_rel_error": float(
                np.linalg.norm(np.asarray(check["grad"]) - g_ref) / np.linalg.norm(g_ref)
            ),
            "runs": {m: [] for m in args.methods},
        }
        print(f"\n{label}: masses {np.round(masses, 6).tolist()}")
        print(f"  reference (aca, {REFERENCE_TOL:g}): loss {ref['loss']:.10g}, grad {g_ref}")
        print(
            f"  adjoint at {REFERENCE_TOL:g}: relative difference "
            f"{entry['reference_check_rel_error']:.2e}"
        )
        print(
            f"  {'method':9s} {'tol':>7s} {'loss rel err':>12s} {'grad rel err':>12s} "
            f"{'cos':>8s} {'nfe f':>7s} {'nfe b':>7s} {'s':>6s}"
        )
        for method in args.methods:
            for tol in tols:
                r = loss_and_gradient(masses, method, tol, data)
                g = np.asarray(r["grad"])
                r["tol"] = tol
                r["grad_rel_error"] = float(np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref))
                r["loss_rel_error"] = abs(r["loss"] - ref["loss"]) / abs(ref["loss"])
                r["cosine"] = float(g @ g_ref / (np.linalg.norm(g) * np.linalg.norm(g_ref)))
                r["sign_agrees"] = [bool(a) for a in np.sign(g) == np.sign(g_ref)]
                entry["runs"][method].append(r)
                print(
                    f"  {method:9s} {tol:7.0e} {r['loss_rel_error']:12.2e} "
                    f"{r['grad_rel_error']:12.2e} {r['cosine']:8.4f} {r['nfe_forward']:7d} "
                    f"{r['nfe_backward']:7d} {r['seconds']:6.2f}"
                )
        results["points"][label] = entry

    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "gradient_vs_tol.json", results)
    _plot(results, args.out / "gradient_vs_tol.png")
    print(f"\nwrote {args.out / 'gradient_vs_tol.json'} and {args.out / 'gradient_vs_tol.png'}")
    return 0


def _plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    labels = list(results["points"])
    fig = Figure(figsize=(6 * len(labels), 4.5), layout="constrained")
    for k, label in enumerate(labels):
        ax = fig.add_subplot(1, len(labels), k + 1)
        entry = results["points"][label]
        for method, runs in entry["runs"].items():
            tol = [r["tol"] for r in runs]
            err = [max(r["grad_rel_error"], 1e-16) for r in runs]
            ax.loglog(tol, err, marker="o", label=f"{method}: gradient")
        first = next(iter(entry["runs"].values()))
        ax.loglog(
            [r["tol"] for r in first],
            [max(r["loss_rel_error"], 1e-16) for r in first],
            color="grey",
            ls=":",
            marker=".",
            label="loss (any method)",
        )
        ax.axhline(1.0, color="black", lw=0.8)
        ax.invert_xaxis()
        ax.set_xlabel("rtol = atol (dopri5)")
        ax.set_ylabel(f"relative error vs aca at {REFERENCE_TOL:g}")
        ax.set_title(f"d loss / d masses at {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
