"""Reproduce Table 4 of the ACA paper: latent ODE on MuJoCo hopper, test MSE (×1e-2).

Fits a latent ODE for every gradient method × observed fraction × seed (``Hopper().fit``, what
``physid fit hopper`` runs), then writes a markdown table with the paper's numbers beside, a JSON
record of every run, and a figure. Runs that already exist are resumed (finished ones are only
re-evaluated), so an interrupted sweep continues where it stopped.

The paper trained 300 epochs on 10,000 trajectories (``--preset paper``, a GPU job); the default
preset keeps the protocol at a CPU budget, so its absolute numbers are higher. Note also that
physid's default normalisation (min-max over the training windows) differs from the reference's
(x - min)/max, which changes the scale of the MSE: compare methods within a column, and with
the paper only in ranking (or run with ``--normalisation reference``).

Warm start (``--warm-from-epoch E``), where full fits do not fit the CPU budget: every method
continues the ACA fit of its (observed, seed) cell — ``hopper-latent-ode-obsNN-aca-SEED`` under
``--runs-dir``, fitted with ``--snapshots 10`` — from the snapshot after epoch ``E`` for
``--warm-epochs`` epochs at the learning-rate floor (lr 1e-3, no decay, KL weight restarted), as
``RUNS_DIR/warm/warm-obsNN-METHOD-sSEED``; the table then adds one row per cell with the
snapshot's own test MSE (where all methods began) and each method's change against the adjoint
from that shared start. ``--control-rtol R`` adds a control per cell: ACA again from the same
snapshot at rtol ``R`` (``warm-obsNN-aca-rtolR-sSEED``), compared with ACA — how far a small
change of the gradient unrelated to the method moves the result. ``--collect`` fits nothing and
tabulates finished runs.

Examples:
    python scripts/reproduce_table4.py                       # default preset, seed 0
    python scripts/reproduce_table4.py --seeds 0,1,2
    python scripts/reproduce_table4.py --observed 0.5 --seeds 0,1,2 --warm-from-epoch 40 \
        --control-rtol 1.1e-3 --out bench_results/hopper_warm_table4  # 1,000 iterations each
    python scripts/reproduce_table4.py --epochs 1 --n-trajectories 20 --preset tiny  # smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments.hopper import (  # noqa: E402
    OBSERVED_FRACTIONS,
    PAPER_TABLE4,
    FitConfig,
    Hopper,
    snapshot_test_mse,
)

from physid._io import save_json, write_text_atomic  # noqa: E402
from physid.errors import ConfigError, DataError, FitInterrupted, PhysidError  # noqa: E402

METHODS = ("adjoint", "naive", "aca", "seminorm")
EXPERIMENT = Hopper()


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _strs(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", type=_strs, default=list(METHODS), help="comma list")
    p.add_argument("--observed", type=_floats, default=list(OBSERVED_FRACTIONS), help="comma list")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma list of seeds")
    p.add_argument("--preset", default="default", help="default, paper or tiny")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--n-trajectories", type=int, default=None, help="override the preset's")
    p.add_argument("--normalisation", default="minmax", help="minmax (default) or reference")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per fit")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="bench_results/table4", help="output folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--warm-from-epoch",
        type=int,
        default=None,
        help="continue each cell's ACA fit from its snapshot after this epoch (see above)",
    )
    p.add_argument("--warm-epochs", type=int, default=5, help="epochs of every warm-started fit")
    p.add_argument(
        "--control-rtol",
        type=float,
        default=None,
        help="warm starts: also continue ACA from each snapshot at this rtol (the noise floor)",
    )
    p.add_argument("--collect", action="store_true", help="fit nothing: tabulate finished runs")
    return p.parse_args(argv)


def _common(args: argparse.Namespace, s: float, method: str, seed: int) -> dict[str, Any]:
    return dict(
        observed=s,
        method=method,
        preset=args.preset,
        seed=seed,
        n_trajectories=args.n_trajectories,
        normalisation=args.normalisation,
        threads=args.threads,
        device=args.device,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )


def warm_source(args: argparse.Namespace, s: float, seed: int) -> tuple[FitConfig, Path]:
    """The (observed, seed) cell's ACA fit and its snapshot every warm-started method
    continues from.

    Raises:
        DataError: the snapshot does not exist.
    """
    source = FitConfig(**_common(args, s, "aca", seed), runs_dir=args.runs_dir)
    snapshot = source.run_dir.path / "snapshots" / f"epoch_{args.warm_from_epoch - 1:04d}.pt"
    if not snapshot.exists():
        raise DataError(
            f"{snapshot} does not exist: fit the cell's ACA run with --snapshots 10 first."
        )
    return source, snapshot


CONTROL = "aca@rtol"
"""The start of the control's row label (ACA again from the same snapshot at another rtol)."""


def control_label(rtol: float) -> str:
    """The control's row: ACA again from the same snapshot at another solver tolerance."""
    return f"{CONTROL}{rtol:g}"


def config(args: argparse.Namespace, s: float, method: str, seed: int) -> FitConfig:
    """The fit of one cell: a full fit, or a warm start from the cell's ACA snapshot (the
    control, :func:`control_label`, is ACA at ``--control-rtol``)."""
    control = args.control_rtol is not None and method == control_label(args.control_rtol)
    common = _common(args, s, "aca" if control else method, seed)
    if args.warm_from_epoch is None:
        return FitConfig(epochs=args.epochs, runs_dir=args.runs_dir, **common)
    pct = int(round(100 * s))
    _, snapshot = warm_source(args, s, seed)
    name = f"aca-rtol{args.control_rtol:g}" if control else method
    return FitConfig(
        epochs=args.warm_epochs,
        lr=1e-3,
        lr_decay=1.0,
        kl_wait=0,
        init_from=str(snapshot),
        runs_dir=str(Path(args.runs_dir) / "warm"),
        run_name=f"warm-obs{pct}-{name}-s{seed}",
        **({"rtol": args.control_rtol} if control else {}),
        **common,
    )


def row_labels(args: argparse.Namespace) -> list[str]:
    """The methods, then the control where ``--control-rtol`` asks for one."""
    if args.control_rtol is None:
        return list(args.methods)
    return [*args.methods, control_label(args.control_rtol)]


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.control_rtol is not None and args.warm_from_epoch is None:
        raise ConfigError("--control-rtol needs --warm-from-epoch: a control continues a snapshot.")
    records = []
    for seed in args.seeds:
        for s in args.observed:
            start: dict[str, Any] = {}
            if args.warm_from_epoch is not None:  # where every method of the cell begins
                source, snapshot = warm_source(args, s, seed)
                mse0 = snapshot_test_mse(source.run_dir.path, snapshot)
                start = {"start_snapshot": str(snapshot), "start_test_mse_e2": mse0 / 1e-2}
            for method in row_labels(args):
                cfg = config(args, s, method, seed)
                t0 = time.perf_counter()
                # fits (or resumes) and evaluates; --collect reads a finished run
                run = cfg.run_dir.require_finished() if args.collect else EXPERIMENT.fit(cfg)
                summary = run.read_summary()
                rec = {
                    "method": method,
                    "observed": s,
                    "seed": seed,
                    "run_dir": str(run),
                    "wall_seconds_this_call": time.perf_counter() - t0,
                    **start,
                    "seconds_total": summary.seconds,  # training seconds, summed over epochs
                    **{
                        k: summary.get(k)
                        for k in (
                            "test_mse",
                            "test_mse_e2",
                            "epochs_completed",
                            "seconds_per_epoch",
                            "nfe_forward_per_iter",
                            "nfe_backward_per_iter",
                        )
                    },
                }
                records.append(rec)
                print(
                    f"{method:9s} s={s:.1f} seed={seed}: test MSE {rec['test_mse_e2']:.4f}e-2, "
                    f"{rec['seconds_per_epoch']:.1f} s/epoch",
                    flush=True,
                )
    return records


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> "0.1" -> {n, mean, std of test MSE ×1e-2, seconds, NFE, paper}."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        groups.setdefault(r["method"], {}).setdefault(f"{r['observed']:.1f}", []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, by_s in groups.items():
        out[method] = {}
        for s_key, runs in by_s.items():

            def stat(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [float(r[key]) for r in runs if r.get(key) is not None]

            def mean(key: str) -> float:
                vals = stat(key)
                return float(np.mean(vals)) if vals else math.nan

            mse = stat("test_mse_e2")
            out[method][s_key] = {
                "n": len(mse),
                "mean": float(np.mean(mse)) if mse else math.nan,
                "std": float(np.std(mse, ddof=1)) if len(mse) > 1 else 0.0,
                "seconds_per_epoch": mean("seconds_per_epoch"),
                "seconds_total": mean("seconds_total"),
                "nfe_forward": mean("nfe_forward_per_iter"),
                "nfe_backward": mean("nfe_backward_per_iter"),
                "paper": PAPER_TABLE4.get(method, {}).get(float(s_key)),
            }
    return out


def markdown(agg: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    fractions = [f"{s:.1f}" for s in args.observed]
    lines = [
        f"Test MSE (×1e-2, normalisation: {args.normalisation}) on the hopper test set, "
        f"preset `{args.preset}`, seeds {args.seeds}; the ACA paper's Table 4 in parentheses.",
        "",
        "| method | "
        + " | ".join(f"{int(round(100 * float(s)))}% observed" for s in fractions)
        + " | s/epoch | NFE fwd/iter | NFE bwd/iter |",
        "| --- | " + " | ".join("---" for _ in fractions) + " | --- | --- | --- |",
    ]
    for method, by_s in agg.items():
        cells = []
        for s in fractions:
            c = by_s.get(s)
            paper = PAPER_TABLE4.get(method, {}).get(float(s))
            p = f" ({paper:.2f})" if paper is not None else " (–)"
            if c is None:
                cells.append("–" + p)
            elif c["n"] > 1:
                cells.append(f"{c['mean']:.4f} ± {c['std']:.4f}{p}")
            else:
                cells.append(f"{c['mean']:.4f}{p}")
        cs = [c for c in by_s.values()]
        spe = np.nanmean([c["seconds_per_epoch"] for c in cs])
        nf = np.nanmean([c["nfe_forward"] for c in cs])
        nb = np.nanmean([c["nfe_backward"] for c in cs])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {spe:.1f} | {nf:.0f} | {nb:.0f} |")
    return "\n".join(lines) + "\n"


def paired_with(methods: list[str]) -> list[tuple[str, str]]:
    """``(row, what it is compared with)``: every method with the adjoint (the first method
    without one), a control (``aca@rtol…``) with ACA at the default tolerance."""
    ref = "adjoint" if "adjoint" in methods else methods[0]
    return [(m, "aca" if m.startswith(CONTROL) else ref) for m in methods if m != ref]


def paired_changes(
    records: list[dict[str, Any]], methods: list[str]
) -> dict[tuple[str, str], dict[tuple[float, int], float]]:
    """``(row, compared with) -> (observed, seed) -> % change of its test MSE`` over the cells
    where both ran (:func:`paired_with`'s pairs): the numbers of the paired table and figure."""
    mse = {(r["observed"], r["seed"], r["method"]): r["test_mse_e2"] for r in records}
    out: dict[tuple[str, str], dict[tuple[float, int], float]] = {}
    for m, b in paired_with(methods):
        out[(m, b)] = {
            (s, seed): 100 * (v / mse[(s, seed, b)] - 1)
            for (s, seed, method), v in mse.items()
            if method == m and (s, seed, b) in mse
        }
    return out


def paired_markdown(records: list[dict[str, Any]], methods: list[str]) -> str:
    """Warm starts: one row per (observed, seed) cell — the shared snapshot's test MSE, each
    method's, and each method's change against the adjoint from the same start (paired); a
    control (``aca@rtol…``) against ACA at the default tolerance."""
    cells: dict[tuple[float, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["observed"], r["seed"]), {})[r["method"]] = r
    changes = paired_changes(records, methods)
    head = ["observed", "seed", "snapshot", *methods, *(f"{m} vs {b}" for m, b in changes)]
    lines = [
        "Per cell, test MSE ×1e-2: the shared snapshot every method starts from, each method "
        "after the warm start, and each one's relative change against another from the same "
        "start (paired; the last line: mean ± std over the cells, and in how many it is above).",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    for cell, by_m in sorted(cells.items()):
        s, seed = cell
        row = [f"{s:.0%}", str(seed), f"{next(iter(by_m.values()))['start_test_mse_e2']:.4f}"]
        row += [f"{by_m[m]['test_mse_e2']:.4f}" if m in by_m else "–" for m in methods]
        row += [f"{c[cell]:+.2f}%" if cell in c else "–" for c in changes.values()]
        lines.append("| " + " | ".join(row) + " |")
    if len(cells) > 1:  # over the cells: mean ± std of each change, and how often it is above
        row = ["all", f"{len(cells)} cells", "", *("" for _ in methods)]
        for by_cell in changes.values():
            c = np.array([by_cell[cell] for cell in sorted(by_cell)])
            sd = float(np.std(c, ddof=1)) if len(c) > 1 else 0.0
            above = int((c > 0).sum())
            row.append(f"{c.mean():+.2f}% ± {sd:.2f}, above in {above}/{len(c)}" if len(c) else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def figure(
    agg: dict[str, dict[str, dict[str, Any]]],
    args: argparse.Namespace,
    path: Path,
    records: list[dict[str, Any]] | None = None,
) -> None:
    """Test MSE per method and fraction beside the paper's, the cost per epoch, and with warm
    starts (``records``) each cell's paired change against the adjoint."""
    from matplotlib.figure import Figure

    fractions = [f"{s:.1f}" for s in args.observed]
    methods = list(agg)
    panels = 3 if records else 2
    fig = Figure(figsize=(5 * panels, 4), layout="constrained")
    ax, ax2 = fig.add_subplot(1, panels, 1), fig.add_subplot(1, panels, 2)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(fractions))
    for i, m in enumerate(methods):
        means = [agg[m].get(s, {}).get("mean", math.nan) for s in fractions]
        stds = [agg[m].get(s, {}).get("std", 0.0) for s in fractions]
        ax.bar(x + i * width, means, width, yerr=stds, label=f"{m} (physid)")
        paper = [PAPER_TABLE4.get(m, {}).get(float(s), math.nan) for s in fractions]
        ax.plot(x + i * width, paper, "k_", markersize=14)
    ax.plot([], [], "k_", markersize=14, label="paper (Table 4)")
    ax.set_xticks(x + width * (len(methods) - 1) / 2, [f"{float(s):.0%}" for s in fractions])
    ax.set_xlabel("observed points")
    ax.set_ylabel("test MSE (×1e-2)")
    ax.legend(fontsize="small")
    spe = [np.nanmean([c["seconds_per_epoch"] for c in agg[m].values()]) for m in methods]
    ax2.bar(methods, spe)
    ax2.set_ylabel("seconds per epoch")
    ax2.set_title(f"cost per epoch (preset {args.preset})")
    if records:
        ax3 = fig.add_subplot(1, panels, 3)
        changes = paired_changes(records, methods)
        for i, ((m, b), by_cell) in enumerate(changes.items()):
            offset = (i - (len(changes) - 1) / 2) * 0.15
            xs = [fractions.index(f"{s:.1f}") + offset for s, _ in by_cell]
            ax3.plot(xs, list(by_cell.values()), "o", label=f"{m} vs {b}")
        ax3.axhline(0.0, color="k", lw=0.8)
        ax3.set_xticks(range(len(fractions)), [f"{float(s):.0%}" for s in fractions])
        ax3.set_xlim(-0.5, len(fractions) - 0.5)
        ax3.set_xlabel("observed points (one dot per seed)")
        ax3.set_ylabel("test MSE change (%)")
        ax3.set_title("paired: the same snapshot for every method")
        ax3.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        records = run_all(args)
    except FitInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except PhysidError as exc:  # bad input, a run not fitted yet: one sentence
        print(exc, file=sys.stderr)
        return 1
    agg = aggregate(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(agg, args)
    if args.warm_from_epoch is not None:
        table += "\n" + paired_markdown(records, row_labels(args))
    write_text_atomic(out / "table4.md", table)
    save_json(
        out / "table4.json",
        {
            "args": vars(args),
            "paper": {m: {str(k): v for k, v in d.items()} for m, d in PAPER_TABLE4.items()},
            "aggregate": agg,
            "runs": records,
        },
    )
    figure(agg, args, out / "table4.png", records if args.warm_from_epoch is not None else None)
    print(table)
    print(f"wrote {out / 'table4.md'}, {out / 'table4.json'}, {out / 'table4.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
