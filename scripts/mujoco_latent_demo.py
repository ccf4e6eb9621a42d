"""A gymnasium MuJoCo task end to end: data, latent-ODE fit, baselines, a video.

Simulates a task's state-trajectory data set (:mod:`physid.envs.mujoco_tasks`), fits a latent
ODE with the hopper's preset (:mod:`physid.models.experiments.mujoco`, what ``physid fit mujoco``
runs), evaluates it beside the same baselines as the hopper, renders a test window of the truth
(left) beside the model's reconstruction (right, blue) with MuJoCo's renderer as an MP4, and
writes a summary (markdown, JSON), the reconstruction plot and a strip of video frames (PNG) to
``--out``.

Example (the documented run):
    python scripts/mujoco_latent_demo.py --env HalfCheetah-v5 --observed 0.1 \\
        --out bench_results/mujoco_halfcheetah
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments import mujoco as MX  # noqa: E402

from physid._io import save_json, write_text_atomic  # noqa: E402
from physid.errors import PhysidError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="HalfCheetah-v5", help="a gymnasium MuJoCo task id")
    p.add_argument("--policy", default="constant", help="zero, constant or random")
    p.add_argument("--frame-skip", type=int, default=1, help="MuJoCo steps per recorded state")
    p.add_argument("--reset-noise-scale", type=float, default=0.5)
    p.add_argument("--n-trajectories", type=int, default=None, help="default: the preset's")
    p.add_argument("--observed", type=float, default=0.1)
    p.add_argument("--task", default="interpolation")
    p.add_argument("--method", default="aca")
    p.add_argument("--preset", default="default")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default="runs/mujoco")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--index", type=int, default=0, help="the test window to render")
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--time-limit", type=float, default=None, help="stop the fit after the epoch passing this"
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="fit nothing: render and tabulate the finished run these options name",
    )
    return p.parse_args(argv)


def frame_strip(video: Path, path: Path, n: int = 6) -> Path:
    """``n`` evenly spaced frames of a video stacked vertically (a PNG for the docs)."""
    import imageio.v3 as iio

    frames = iio.imread(video)
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    iio.imwrite(path, np.concatenate([frames[i] for i in idx], axis=0))
    return path


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    base = summary["baselines"]
    lines = [
        f"**{args.env}** ({args.policy} policy, frame_skip {args.frame_skip}, reset noise "
        f"{args.reset_noise_scale}), latent ODE `{args.method}`, preset `{args.preset}`, "
        f"{args.task}, {args.observed:.0%} observed, seed {args.seed}: test MSE ×1e-2 "
        f"(normalisation {summary['normalisation']}, {summary['n_test']} test windows).",
        "",
        "| latent ODE | " + " | ".join(base) + " | acc. steps/iter | iterations | minutes |",
        "| --- | " + " | ".join("---" for _ in base) + " | --- | --- | --- |",
        f"| {100 * summary['test_mse']:.4f} | "
        + " | ".join(f"{100 * v:.4f} (×{summary['ratio_to'][k]:.2f})" for k, v in base.items())
        + f" | {summary['steps_accepted_per_iter']:.1f} | {summary['iterations']} | "
        f"{summary['seconds'] / 60:.0f} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = args.env.lower().replace("/", "-")
    out = Path(args.out or f"bench_results/mujoco_{env}")
    cfg = MX.FitConfig(
        env=args.env,
        policy=args.policy,
        frame_skip=args.frame_skip,
        reset_noise_scale=args.reset_noise_scale,
        n_trajectories=args.n_trajectories,
        observed=args.observed,
        task=args.task,
        method=args.method,
        preset=args.preset,
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        time_limit=args.time_limit,
    )
    t0 = time.perf_counter()
    exp = MX.MuJoCo()
    # fits, then evaluates (summary.json, plots/); --collect reads a finished run
    run = cfg.run_dir.require_finished() if args.collect else exp.fit(cfg)
    summary = run.read_summary().to_dict()
    video = exp.render(run, run / f"{env}_truth_vs_model.mp4", index=args.index)
    out.mkdir(parents=True, exist_ok=True)
    frame_strip(video, out / "frames.png")
    shutil.copyfile(run.plots / "reconstruction.png", out / "reconstruction.png")
    if (run.plots / "loss.png").exists():
        shutil.copyfile(run.plots / "loss.png", out / "loss.png")
    record = {"args": vars(args), "run_dir": str(run), "video": str(video), **summary}
    record["wall_seconds_this_call"] = time.perf_counter() - t0
    save_json(out / "summary.json", record)
    table = markdown(summary, args)
    write_text_atomic(out / "summary.md", table)
    print(table)
    print(f"video: {video}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except PhysidError as exc:  # bad input, a run not fitted yet: one sentence
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
