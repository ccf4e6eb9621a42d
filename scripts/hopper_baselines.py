"""Model-free baselines on the hopper test windows, no fit: what a latent ODE must beat.

For a hopper data set (generated on the fly, cached under ``--data-dir``), a normalisation and
the observed fractions, computes every baseline of :mod:`physid.baselines` for the interpolation
and the extrapolation task on the test windows, with the same fixed test masks a fit draws
(``test_mask_seed`` 2024), and writes a markdown table and JSON. With ``--normalisation
reference`` on 10,000 trajectories the numbers are on the scale of the papers' Table 4.

Examples:
    python scripts/hopper_baselines.py --n-trajectories 10000 --normalisation reference
    python scripts/hopper_baselines.py --n-trajectories 5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models import latent_fit as LF  # noqa: E402
from physid.models.experiments.hopper import (  # noqa: E402
    OBSERVED_FRACTIONS,
    PAPER_TABLE4,
    FitConfig,
    _tensors,
    load_data,
)
from physid.models.latent_tasks import TASKS  # noqa: E402

from physid._io import save_json, write_text_atomic  # noqa: E402
from physid.baselines import baseline_mse  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-trajectories", type=int, default=5000)
    p.add_argument("--data-seed", type=int, default=123)
    p.add_argument("--normalisation", default="minmax", help="minmax or reference")
    p.add_argument("--observed", type=_floats, default=list(OBSERVED_FRACTIONS))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=None, help="default bench_results/hopper_baselines_<...>")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    rows = []
    for task in TASKS:
        for s in args.observed:
            cfg = FitConfig(
                observed=s,
                task=task,
                n_trajectories=args.n_trajectories,
                data_seed=args.data_seed,
                normalisation=args.normalisation,
                data_dir=args.data_dir,
            )
            data = _tensors(load_data(cfg), cfg, torch.device("cpu"))
            x, t = data.test.double(), data.t.double()
            obs, target = LF.fixed_test_masks(
                LF.WindowData(t=t, train=data.train, test=x, stats={}, labels=()),
                cfg.train_options(),
                cfg.test_mask_seed,
            )
            mse = baseline_mse(x, t, obs, target, task)
            rows.append({"task": task, "observed": s, **{k: 100 * v for k, v in mse.items()}})
    return {
        "n_trajectories": args.n_trajectories,
        "n_test": int(x.shape[0]),
        "normalisation": args.normalisation,
        "units": "MSE x 1e-2",
        "rows": rows,
        "paper_table4_e2": {m: {str(k): v for k, v in d.items()} for m, d in PAPER_TABLE4.items()},
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Baselines on the {res['n_test']} test windows of the hopper set with "
        f"{res['n_trajectories']} trajectories, normalisation `{res['normalisation']}`, "
        "test MSE ×1e-2 (interpolation: all 100 points; extrapolation: the 50 points after the "
        "observed first half).",
        "",
    ]
    for task in TASKS:
        rows = [r for r in res["rows"] if r["task"] == task]
        names = [k for k in rows[0] if k not in ("task", "observed")]
        lines += [
            f"**{task}**",
            "",
            "| observed | " + " | ".join(names) + " |",
            "| --- | " + " | ".join("---" for _ in names) + " |",
        ]
        for r in rows:
            cells = " | ".join(f"{r[n]:.4f}" for n in names)
            lines.append(f"| {r['observed']:.0%} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    out = Path(
        args.out or f"bench_results/hopper_baselines_n{args.n_trajectories}_{args.normalisation}"
    )
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "baselines.json", res)
    write_text_atomic(out / "baselines.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
