"""Gradient error of the four gradient methods along a fitted hopper latent-ODE run.

At every snapshot a fit saved (``FitConfig(snapshots=N)``: the initial model and N evenly spaced
ones), on fixed training batches (fixed windows, masks and z0 draws), computes the ELBO's
gradient with every method — naive (backpropagation through the solver), adjoint, seminorm
adjoint, ACA — at the run's solver and tolerances, in float32 (as trained) and float64, and
compares it with a float64 reference at tight tolerances (ACA at ``--ref-tol``; ACA differentiates
the discrete solve exactly, so at a tight tolerance it is the gradient of the exact ODE loss):
relative error ``|g - g_ref| / |g_ref|``, cosine, and the forward / backward NFE and forward
steps of the latent solve. This is where the methods can differ: at initialisation the latent
flow is near-constant (2-3 dopri5 steps) and every method is accurate; a fitted model's flow is
not.

Writes ``gradients.json``, ``gradients.md`` and ``gradients.png`` to ``--out``.

Example:
    python scripts/hopper_gradients_along_fit.py runs/hopper-latent-ode-obs10-aca-0 \\
        --out bench_results/hopper_gradients
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments import hopper as HX  # noqa: E402
from physid.models.latent_ode import kl_coefficient  # noqa: E402
from physid.models.latent_tasks import task_masks  # noqa: E402

import physid  # noqa: E402
from physid._io import save_json, write_text_atomic  # noqa: E402

METHODS = ("naive", "adjoint", "seminorm", "aca")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a hopper run directory with snapshots/")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batches", type=int, default=2, help="fixed training batches")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    p.add_argument("--ref-tol", type=float, default=1e-9, help="reference rtol = atol")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed batches")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_results/hopper_gradients")
    return p.parse_args(argv)


def _snapshots(run: Path) -> list[tuple[int, Path]]:
    snaps = []
    for path in (run / "snapshots").glob("*.pt"):
        epoch = -1 if path.stem == "initial" else int(path.stem.split("_")[1])
        snaps.append((epoch, path))
    if not snaps:
        raise SystemExit(f"{run}/snapshots has no snapshot; fit with FitConfig(snapshots=N).")
    return sorted(snaps)


def _grad(
    model: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    t: torch.Tensor,
    kl_coef: float,
    n_samples: int,
    **decode: Any,
) -> tuple[torch.Tensor, dict[str, float], float]:
    stats = physid.SolveStats()
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for b in batches:
        terms = model.elbo(
            b["x"], b["obs"], t, kl_coef=kl_coef, n_samples=n_samples, eps=b["eps"],
            stats=stats, **decode,
        )  # fmt: skip
        (terms.loss / len(batches)).backward()
    seconds = time.perf_counter() - t0
    g = torch.cat([p.grad.detach().double().flatten() for p in model.parameters()])
    n = len(batches)
    counts = {
        "nfe_forward": stats.nfe_forward / n,
        "nfe_backward": stats.nfe_backward / n,
        "steps_accepted": stats.steps_accepted / n,
        "steps_rejected": stats.steps_rejected / n,
    }
    return g, counts, seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    cfg, model, data, _, _, _ = HX._load_run(run_dir)
    opts = cfg.train_options()
    bs = args.batch_size or opts.batch_size
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(data.train.shape[0], generator=gen)[: args.batches * bs]
    batches64 = []
    for k in range(args.batches):
        x = data.train[idx[k * bs : (k + 1) * bs]].double()
        obs, _ = task_masks(x.shape[0], x.shape[1], opts.observed, opts.task, generator=gen)
        eps = torch.randn(opts.n_samples, x.shape[0], cfg.sizes.latent_dim, generator=gen)
        batches64.append({"x": x, "obs": obs, "eps": eps.double()})
    t64 = data.t.double()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    rows = []
    for epoch, path in _snapshots(run_dir):
        state = torch.load(path, weights_only=False)["model"]
        model.load_state_dict(state)
        # the KL weight of the epoch after the snapshot (the fit's next step)
        kl = kl_coefficient(epoch + 1, opts.kl_wait, opts.kl_rate)
        ref_model = model.double()
        g_ref, ref_counts, ref_s = _grad(
            ref_model, batches64, t64, kl, opts.n_samples,
            method="aca", solver=opts.solver, rtol=args.ref_tol, atol=args.ref_tol,
        )  # fmt: skip
        print(
            f"snapshot {epoch:>4}: reference {ref_counts['steps_accepted']:.0f} steps, "
            f"|g| {float(g_ref.norm()):.3e}",
            flush=True,
        )
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            m = model.to(dtype)
            batches = [{k: v.to(dtype) if v.is_floating_point() else v for k, v in b.items()}
                       for b in batches64]  # fmt: skip
            for method in methods:
                g, counts, seconds = _grad(
                    m, batches, t64.to(dtype), kl, opts.n_samples,
                    method=method, solver=opts.solver, rtol=opts.rtol, atol=opts.atol,
                )  # fmt: skip
                err = float((g - g_ref).norm() / g_ref.norm())
                cos = float(torch.dot(g, g_ref) / (g.norm() * g_ref.norm()))
                row = {
                    "epoch": epoch,
                    "dtype": dtype_name,
                    "method": method,
                    "rel_error": err,
                    "cosine": cos,
                    "seconds": seconds,
                    **counts,
                    "ref_steps_accepted": ref_counts["steps_accepted"],
                    "grad_norm_ref": float(g_ref.norm()),
                }
                rows.append(row)
                print(
                    f"  {dtype_name} {method:9s} rel.err {err:.2e} cos {cos:.6f} "
                    f"NFE {counts['nfe_forward']:.0f}/{counts['nfe_backward']:.0f} "
                    f"steps {counts['steps_accepted']:.1f}+{counts['steps_rejected']:.1f}r",
                    flush=True,
                )
        model.float()
    return {
        "run": str(run_dir),
        "config": {"solver": opts.solver, "rtol": opts.rtol, "atol": opts.atol},
        "observed": opts.observed,
        "task": opts.task,
        "batches": args.batches,
        "batch_size": bs,
        "ref_tol": args.ref_tol,
        "rows": rows,
    }


def markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    epochs = sorted({r["epoch"] for r in rows})
    lines = [
        f"Gradient of the ELBO along `{res['run']}` ({res['task']}, {res['observed']:.0%} "
        f"observed), {res['batches']} fixed batches of {res['batch_size']}; each method at "
        f"dopri5 rtol {res['config']['rtol']:g} / atol {res['config']['atol']:g} against a "
        f"float64 ACA reference at {res['ref_tol']:g}. Relative error ‖g − g_ref‖/‖g_ref‖ "
        "(cosine); NFE forward/backward per batch; forward steps accepted+rejected.",
        "",
        "| epoch | dtype | method | rel. error | cosine | NFE fwd/bwd | steps | ref. steps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in epochs:
        for r in (r for r in rows if r["epoch"] == e):
            lines.append(
                f"| {'init' if e < 0 else e} | {r['dtype']} | {r['method']} | "
                f"{r['rel_error']:.2e} | {r['cosine']:.6f} | {r['nfe_forward']:.0f}/"
                f"{r['nfe_backward']:.0f} | {r['steps_accepted']:.1f}+{r['steps_rejected']:.1f} "
                f"| {r['ref_steps_accepted']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def figure(res: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = res["rows"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for dtype, style in (("float32", "-"), ("float64", "--")):
        for method in METHODS:
            sel = sorted(
                (r for r in rows if r["dtype"] == dtype and r["method"] == method),
                key=lambda r: r["epoch"],
            )
            if not sel:
                continue
            ep = [r["epoch"] + 1 for r in sel]
            ax.plot(ep, [r["rel_error"] for r in sel], style, marker="o", label=f"{method} {dtype}")
            if dtype == "float32":
                ax2.plot(ep, [r["nfe_backward"] for r in sel], marker="o", label=method)
    ax.set_yscale("log")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("relative gradient error")
    ax.legend(fontsize="x-small")
    ax2.set_xlabel("epochs trained")
    ax2.set_ylabel("backward NFE per batch (float32)")
    ax2.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "gradients.json", res)
    write_text_atomic(out / "gradients.md", markdown(res))
    if not all(math.isfinite(r["rel_error"]) for r in res["rows"]):
        print("warning: some gradient errors are not finite", flush=True)
    figure(res, out / "gradients.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
