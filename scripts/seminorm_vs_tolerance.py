"""Where the seminorm can save backward steps: backward NFE per batch vs tolerance, per norm.

Takes fitted acrobot runs (from ``scripts/reproduce_seminorm.py``), and for each tolerance solves
a few training batches forward and backward with

- physid's ``adjoint`` (backward error over [y, a_y, a_theta], step size carried across the
  output intervals) and ``seminorm`` (a_theta left out of the error);
- torchdiffeq's ``odeint_adjoint`` with its default norm and with ``adjoint_options=
  dict(norm="seminorm")`` -- the seminorm paper's own baseline and method (optional: skipped if
  torchdiffeq is not installed), which selects a new initial step in every output interval;

and reports backward NFE and backward steps per batch, the seminorm's saving, and each method's
gradient error against ``aca`` at 1e-10 (float64). A window of 8 points has 7 output intervals,
so a backward solve that restarts at each output takes at least 7 steps: at that floor no norm
can save anything.

    python scripts/seminorm_vs_tolerance.py runs/seminorm/acrobot-symoden-adjoint-0

Writes ``OUT/seminorm_vs_tol.md``, ``.json`` and ``.png``. The norm the seminorm paper's acrobot
code actually used (sized from the window batch, not the state), and what it does to the backward
NFE at the paper's tolerance: ``scripts/seminorm_norms.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments import acrobot  # noqa: E402
from physid.models.symoden import build_symoden  # noqa: E402

import physid  # noqa: E402
from physid._io import save_json, write_text_atomic  # noqa: E402


class _Counted(nn.Module):
    """Counts evaluations of the wrapped field (torchdiffeq reports no NFE)."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, x)


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def _physid_case(
    model: nn.Module,
    xb: torch.Tensor,
    t: torch.Tensor,
    method: str,
    tol: float,
    loss_scale: float,
) -> dict[str, Any]:
    stats = physid.SolveStats()
    model.zero_grad(set_to_none=True)
    pred = physid.odeint(model, xb[:, 0], t, method=method, rtol=tol, atol=tol, stats=stats)
    (loss_scale * acrobot.window_loss(pred, xb)).backward()
    return {
        "nfe_backward": stats.nfe_backward,
        "steps_backward": stats.backward_steps_accepted + stats.backward_steps_rejected,
        "rejected_backward": stats.backward_steps_rejected,
        "grad": _flat_grad(model),
    }


def _torchdiffeq_case(
    model: nn.Module,
    xb: torch.Tensor,
    t: torch.Tensor,
    norm: str | None,
    tol: float,
    loss_scale: float,
) -> dict[str, Any]:
    import torchdiffeq

    counted = _Counted(model)
    model.zero_grad(set_to_none=True)
    options = {"norm": "seminorm"} if norm == "seminorm" else {}
    pred = torchdiffeq.odeint_adjoint(
        counted,
        xb[:, 0],
        t,
        rtol=tol,
        atol=tol,
        method="dopri5",
        adjoint_params=tuple(model.parameters()),
        adjoint_options=options,
    )
    forward = counted.calls
    (loss_scale * acrobot.window_loss(pred, xb)).backward()
    return {
        "nfe_backward": counted.calls - forward,
        "steps_backward": None,
        "rejected_backward": None,
        "grad": _flat_grad(model),
    }


def _case(
    name: str, model: nn.Module, xb: torch.Tensor, t: torch.Tensor, tol: float, loss_scale: float
) -> dict[str, Any]:
    family, method = name.split()
    if family == "physid":
        return _physid_case(model, xb, t, method, tol, loss_scale)
    norm = "seminorm" if method == "seminorm" else None
    return _torchdiffeq_case(model, xb, t, norm, tol, loss_scale)


def measure(
    runs: list[Path],
    tolerances: list[float],
    n_batches: int,
    batch_size: int,
    fresh: str | None = None,
    loss_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Rows per run x tolerance x method; ``fresh`` replaces each run's fitted model by a freshly
    initialised one of that preset (the run then only supplies the data). The loss is the
    training's window MSE times ``loss_scale`` (which scales a_theta with it)."""
    try:
        import torchdiffeq  # noqa: F401

        peers = ["torchdiffeq adjoint", "torchdiffeq seminorm"]
    except ImportError:
        print("torchdiffeq not installed: its rows are skipped (pip install -e '.[bench]').")
        peers = []
    rows: list[dict[str, Any]] = []
    for run in runs:
        model, config = acrobot.load_run(run)
        if fresh is not None:
            torch.manual_seed(0)
            model = build_symoden(fresh)
        model = model.double()
        splits = acrobot.run_splits(run, config, dtype=torch.float64)
        t = splits.t_window
        gen = torch.Generator().manual_seed(0)
        batches = [
            splits.train[torch.randperm(len(splits.train), generator=gen)[:batch_size]]
            for _b in range(n_batches)
        ]
        refs = [_physid_case(model, xb, t, "aca", 1e-10, loss_scale)["grad"] for xb in batches]
        names = ["physid adjoint", "physid seminorm", "physid aca", *peers]
        for tol in tolerances:
            for name in names:
                nfe, steps, rej, errs, secs = [], [], [], [], 0.0
                for xb, ref in zip(batches, refs, strict=True):
                    t0 = time.perf_counter()
                    out = _case(name, model, xb, t, tol, loss_scale)
                    secs += time.perf_counter() - t0
                    nfe.append(out["nfe_backward"])
                    steps.append(out["steps_backward"])
                    rej.append(out["rejected_backward"])
                    errs.append(float((out["grad"] - ref).norm() / ref.norm()))
                row = {
                    "run": run.name if fresh is None else f"{run.name} data, fresh {fresh}",
                    "tol": tol,
                    "method": name,
                    "nfe_backward_per_batch": float(np.mean(nfe)),
                    "steps_backward_per_batch": None if steps[0] is None else float(np.mean(steps)),
                    "rejected_backward_per_batch": None if rej[0] is None else float(np.mean(rej)),
                    "grad_rel_error": float(np.median(errs)),
                    "seconds_per_batch": secs / len(batches),
                }
                rows.append(row)
                print(
                    f"{run.name} tol {tol:g} {name:22s} "
                    f"backward NFE {row['nfe_backward_per_batch']:8.1f}  "
                    f"grad err {row['grad_rel_error']:.2e}",
                    flush=True,
                )
    return rows


def _savings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per tolerance and family: mean backward NFE of the default norm and of the seminorm."""
    out = []
    for family in ("physid", "torchdiffeq"):
        for tol in sorted({r["tol"] for r in rows}, reverse=True):
            adj = [
                r["nfe_backward_per_batch"]
                for r in rows
                if r["tol"] == tol and r["method"] == f"{family} adjoint"
            ]
            semi = [
                r["nfe_backward_per_batch"]
                for r in rows
                if r["tol"] == tol and r["method"] == f"{family} seminorm"
            ]
            if adj and semi:
                a, s = float(np.mean(adj)), float(np.mean(semi))
                out.append(
                    {"family": family, "tol": tol, "adjoint": a, "seminorm": s, "saving": 1 - s / a}
                )
    return out


def _markdown(rows: list[dict[str, Any]], savings: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Backward NFE per batch vs tolerance: default norm vs seminorm (acrobot SymODEN)",
        "",
        f"`{command}` (float64; gradient error vs aca at 1e-10; mean over runs and batches)",
        "",
        "| tol | family | adjoint NFE/batch | seminorm NFE/batch | seminorm saving |",
        "|---|---|---|---|---|",
    ]
    for s in savings:
        lines.append(
            f"| {s['tol']:g} | {s['family']} | {s['adjoint']:.1f} | {s['seminorm']:.1f} | "
            f"{100 * s['saving']:.0f}% |"
        )
    lines += [
        "",
        "| run | tol | method | backward NFE | backward steps | rejected | grad rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = (
            "—" if r["steps_backward_per_batch"] is None else f"{r['steps_backward_per_batch']:.1f}"
        )
        rej = (
            "—"
            if r["rejected_backward_per_batch"] is None
            else f"{r['rejected_backward_per_batch']:.2f}"
        )
        lines.append(
            f"| {r['run']} | {r['tol']:g} | {r['method']} | {r['nfe_backward_per_batch']:.1f} | "
            f"{steps} | {rej} | {r['grad_rel_error']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in sorted({r["method"] for r in rows}):
        sel = [r for r in rows if r["method"] == method]
        tols = sorted({r["tol"] for r in sel})
        nfe = [
            np.mean([r["nfe_backward_per_batch"] for r in sel if r["tol"] == tol]) for tol in tols
        ]
        err = [np.median([r["grad_rel_error"] for r in sel if r["tol"] == tol]) for tol in tols]
        # the default norm wide and pale underneath, so that a seminorm on top of it shows
        wide = method.endswith("adjoint")
        style = {
            "ls": "--" if method.startswith("torchdiffeq") else "-",
            "lw": 5 if wide else 1.5,
            "alpha": 0.45 if wide else 1.0,
            "marker": "o" if wide else ".",
            "label": method,
        }
        axes[0].loglog(tols, nfe, **style)
        axes[1].loglog(tols, err, **style)
    axes[0].set(xlabel="rtol = atol", ylabel="backward NFE per batch", title="backward cost")
    axes[1].set(xlabel="rtol = atol", ylabel="gradient rel. error", title="vs aca at 1e-10")
    for ax in axes:
        ax.invert_xaxis()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="fitted acrobot run directories")
    parser.add_argument(
        "--tolerances", type=float, nargs="+", default=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    )
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--loss-scale",
        type=float,
        default=1.0,
        help="multiply the (mean) window MSE by this (the paper's loss: 1)",
    )
    parser.add_argument(
        "--fresh",
        choices=["default", "paper"],
        help="use a freshly initialised model of this preset instead of each run's fitted one",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results/seminorm_vs_tol"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(
        args.runs, args.tolerances, args.batches, args.batch_size, args.fresh, args.loss_scale
    )
    savings = _savings(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/seminorm_vs_tolerance.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    for r in rows:
        r.pop("grad", None)
    save_json(
        args.out / "seminorm_vs_tol.json", {"rows": rows, "savings": savings, "command": command}
    )
    write_text_atomic(args.out / "seminorm_vs_tol.md", _markdown(rows, savings, command))
    _plot(rows, args.out / "seminorm_vs_tol.png")
    print(_markdown(rows, savings, command))


if __name__ == "__main__":
    main()
