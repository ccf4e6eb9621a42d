"""The hopper latent ODE beside model-free baselines: interpolation and extrapolation tables.

Fits a latent ODE (``physid fit hopper``'s library call, one gradient method, default ACA) for
every observed fraction × seed of a task, and writes a markdown table of the model's test MSE
beside the baselines of :mod:`physid.baselines` — computed on the same test windows, masks and
normalisation — with ratios, the forward solver's accepted/rejected steps per iteration, time and
iterations; plus a JSON record of every run and a figure. Existing runs are resumed (finished
ones only re-evaluated), so an interrupted sweep continues where it stopped.

Run one at a time on a shared CPU (each fit uses ``--threads`` threads, 1 by default).

Examples:
    python scripts/hopper_vs_baselines.py --seeds 0,1,2                      # interpolation
    python scripts/hopper_vs_baselines.py --task extrapolation --seeds 0,1,2
    python scripts/hopper_vs_baselines.py --seeds 0,1,2 --collect --runs-dir runs   # tables only
    python scripts/hopper_vs_baselines.py --preset tiny --epochs 1 --n-trajectories 20 \\
        --out /tmp/t --runs-dir /tmp/r                                       # smoke test
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

from physid.models.experiments.hopper import OBSERVED_FRACTIONS, FitConfig, Hopper  # noqa: E402

from physid._io import save_json, write_text_atomic  # noqa: E402
from physid.baselines import EXTRAPOLATION_BASELINES, INTERPOLATION_BASELINES  # noqa: E402
from physid.errors import PhysidError  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="interpolation", help="interpolation or extrapolation")
    p.add_argument("--method", default="aca", help="gradient method of the latent ODE solve")
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
    p.add_argument("--out", default=None, help="output folder (default bench_results/hopper_…)")
    p.add_argument("--snapshots", type=int, default=0, help="model snapshots along each fit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--collect",
        action="store_true",
        help="fit nothing: read the finished runs' summary.json (each run made by this script or "
        "by the matching `physid fit hopper` command) and write the tables",
    )
    return p.parse_args(argv)


_KEYS = (
    "test_mse",
    "test_mse_posterior_mean",
    "baselines",
    "ratio_to",
    "beats",
    "epochs_completed",
    "iterations",
    "seconds",
    "seconds_per_epoch",
    "nfe_forward",
    "nfe_backward",
    "nfe_forward_per_iter",
    "nfe_backward_per_iter",
    "steps_accepted",
    "steps_rejected",
    "steps_accepted_last_epoch",
    "steps_rejected_last_epoch",
    "train_mse",
    "lr_final",
)


# record key -> summary.json key (the summary keeps totals under nfe_* and per-iteration means
# under *_per_iter; the tables here show forward steps per iteration)
_SUMMARY_NAME = {
    "steps_accepted": "steps_accepted_per_iter",
    "steps_rejected": "steps_rejected_per_iter",
}
EXPERIMENT = Hopper()


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    records = []
    for seed in args.seeds:
        for s in args.observed:
            cfg = FitConfig(
                observed=s,
                method=args.method,
                task=args.task,
                preset=args.preset,
                seed=seed,
                epochs=args.epochs,
                n_trajectories=args.n_trajectories,
                normalisation=args.normalisation,
                threads=args.threads,
                device=args.device,
                runs_dir=args.runs_dir,
                data_dir=args.data_dir,
                snapshots=args.snapshots,
                progress=not args.no_progress,
            )
            t0 = time.perf_counter()
            # fits, then evaluates (summary.json); --collect reads a finished run
            run = cfg.run_dir.require_finished() if args.collect else EXPERIMENT.fit(cfg)
            summary = run.read_summary().to_dict()
            rec = {
                "task": args.task,
                "method": args.method,
                "observed": s,
                "seed": seed,
                "run_dir": str(run),
                "wall_seconds_this_call": time.perf_counter() - t0,
                # summaries written before the per-iteration names keep the means under k
                **{k: summary.get(_SUMMARY_NAME.get(k, k), summary.get(k)) for k in _KEYS},
            }
            records.append(rec)
            base = rec["baselines"] or {}
            print(
                f"{args.task} s={s:.1f} seed={seed}: model {100 * rec['test_mse']:.4f}e-2, "
                + ", ".join(f"{k} {100 * v:.4f}e-2" for k, v in base.items())
                + f"; {rec['seconds']:.0f} s, {rec['steps_accepted']:.1f} accepted steps/iter",
                flush=True,
            )
    return records


def _names(task: str) -> tuple[str, ...]:
    return INTERPOLATION_BASELINES if task == "interpolation" else EXTRAPOLATION_BASELINES


def aggregate(records: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """observed ("0.1") -> {n, model mean/std (×1e-2), per-baseline mean (×1e-2), ratios,
    seeds beating each baseline, steps, seconds}."""
    out: dict[str, dict[str, Any]] = {}
    by_s: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_s.setdefault(f"{r['observed']:.1f}", []).append(r)
    for key, runs in by_s.items():

        def vals(get: Any, runs: list[dict[str, Any]] = runs) -> list[float]:
            got = [get(r) for r in runs]
            return [float(v) for v in got if v is not None]

        model = [100 * v for v in vals(lambda r: r["test_mse"])]
        cell: dict[str, Any] = {
            "n": len(model),
            "model_mean": float(np.mean(model)) if model else math.nan,
            "model_std": float(np.std(model, ddof=1)) if len(model) > 1 else 0.0,
            "model_posterior_mean": float(
                np.mean([100 * v for v in vals(lambda r: r["test_mse_posterior_mean"])])
            ),
            "baselines": {},
            "ratio_to": {},
            "seeds_beating": {},
        }
        for name in _names(task):
            b = [100 * v for v in vals(lambda r, n=name: (r["baselines"] or {}).get(n))]
            ratio = vals(lambda r, n=name: (r["ratio_to"] or {}).get(n))
            cell["baselines"][name] = float(np.mean(b)) if b else math.nan
            cell["ratio_to"][name] = float(np.mean(ratio)) if ratio else math.nan
            cell["seeds_beating"][name] = sum(name in (r["beats"] or []) for r in runs)
        for k in ("steps_accepted", "steps_rejected", "steps_accepted_last_epoch", "seconds"):
            v = vals(lambda r, k=k: r.get(k))
            cell[k] = float(np.mean(v)) if v else math.nan
        it = vals(lambda r: r.get("iterations"))
        cell["iterations"] = int(np.mean(it)) if it else 0
        out[key] = cell
    return out


def markdown(agg: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    names = _names(args.task)
    scored = "all 100 points" if args.task == "interpolation" else "the second half (50 points)"
    lines = [
        f"Hopper latent ODE, task **{args.task}**, method `{args.method}`, preset "
        f"`{args.preset}`, seeds {args.seeds}: test MSE ×1e-2 (normalisation {args.normalisation}"
        f") over {scored} of every test window, mean ± std over seeds; the baselines see the same "
        "observed points. Ratio = model / baseline (mean over seeds); k/n = seeds where the "
        "model beats it.",
        "",
        "| observed | latent ODE | "
        + " | ".join(names)
        + " | acc. steps/iter (last epoch) | iterations | minutes |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |",
    ]
    for key in sorted(agg, key=float):
        c = agg[key]
        model = f"{c['model_mean']:.4f}" + (f" ± {c['model_std']:.4f}" if c["n"] > 1 else "")
        cells = [
            f"{c['baselines'][n]:.4f} (×{c['ratio_to'][n]:.2f}, {c['seeds_beating'][n]}/{c['n']})"
            for n in names
        ]
        lines.append(
            f"| {int(round(100 * float(key)))}% | {model} | "
            + " | ".join(cells)
            + f" | {c['steps_accepted']:.1f} ({c['steps_accepted_last_epoch']:.1f}) | "
            f"{c['iterations']} | {c['seconds'] / 60:.0f} |"
        )
    return "\n".join(lines) + "\n"


def figure(agg: dict[str, dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.figure import Figure

    keys = sorted(agg, key=float)
    names = _names(args.task)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(keys))
    width = 0.8 / (len(names) + 1)
    ax.bar(
        x,
        [agg[k]["model_mean"] for k in keys],
        width,
        yerr=[agg[k]["model_std"] for k in keys],
        label="latent ODE",
        color="tab:red",
    )
    for i, n in enumerate(names):
        ax.bar(x + (i + 1) * width, [agg[k]["baselines"][n] for k in keys], width, label=n)
    ax.set_xticks(x + width * len(names) / 2, [f"{float(k):.0%}" for k in keys])
    ax.set_xlabel("observed points")
    ax.set_ylabel("test MSE (×1e-2)")
    ax.set_yscale("log")
    ax.set_title(f"hopper, {args.task}, preset {args.preset}")
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    records = run_all(args)
    agg = aggregate(records, args.task)
    out = Path(args.out or f"bench_results/hopper_{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(agg, args)
    write_text_atomic(out / "table.md", table)
    save_json(out / "table.json", {"args": vars(args), "aggregate": agg, "runs": records})
    figure(agg, args, out / "table.png")
    print(table)
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'table.png'}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except PhysidError as exc:  # bad input, a run not fitted yet: one sentence
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
