"""What one function evaluation of a forward-sensitivity solve costs, by tangent computation.

For three systems, the same solve (dopri5, same steps) is timed as a plain solve and as
:func:`physid.odeint_jacobian` with ``tangents="reverse"`` (the rows of ``[J_y | J_θ]`` by one
batched reverse pass per evaluation) and ``tangents="forward"`` (``torch.func.jvp`` vmapped over
the tangents); the table gives CPU microseconds per NFE and the ratio to the plain solve:

- ``three-body``: the known-form model, 18 states, 3 masses, 1000 outputs on [0, 1], 1e-7;
- ``acrobot``: the known-form acrobot, 18 trajectories x 4 states, 7 constants, 1.6 s, 1e-8;
- ``node``: the three-body paper's NODE (5,509 parameters), 18 states, 100 outputs, 1e-5.

Writes ``tangent_cost.{json,md}`` into ``--out``. Timings are the median of ``--repeats`` and are
noisy on a shared machine.

    python scripts/known_form_tangent_cost.py --out bench_results/known_form
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.envs import acrobot as sim  # noqa: E402
from physid.envs.three_body import default_initial_state  # noqa: E402
from physid.models.known_form import KnownFormAcrobot, KnownFormThreeBody  # noqa: E402
from physid.models.node import AugmentedNODE  # noqa: E402

import physid  # noqa: E402
from physid._io import atomic_write, save_json  # noqa: E402


def problems() -> dict[str, tuple[Any, torch.Tensor, torch.Tensor, float, str]]:
    y0 = torch.as_tensor(default_initial_state())
    t_acro, states, u = sim.simulate_constant_controls(2, seed=0)
    torch.manual_seed(0)
    return {
        "three-body": (
            KnownFormThreeBody([1.1, 1.1, 0.9]),
            y0,
            torch.linspace(0, 1, 1000, dtype=torch.float64),
            1e-7,
            "18 states, 3 parameters",
        ),
        "acrobot": (
            KnownFormAcrobot(control=torch.as_tensor(u)),
            torch.as_tensor(states[:, 0]),
            torch.as_tensor(t_acro),
            1e-8,
            "72 states (18 trajectories), 7 parameters",
        ),
        "node": (
            AugmentedNODE(dtype=torch.float64),
            y0,
            torch.linspace(0, 1, 100, dtype=torch.float64),
            1e-5,
            "18 states, 5509 parameters",
        ),
    }


def timed(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/known_form"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, (model, y0, t, tol, what) in problems().items():
        opts = {"rtol": tol, "atol": tol, "max_steps": 100_000}
        stats = physid.SolveStats()
        with torch.no_grad():
            physid.odeint(model, y0, t, stats=stats, **opts)
        nfe = stats.nfe_forward

        def plain(model=model, y0=y0, t=t, opts=opts) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                physid.odeint(model, y0, t, **opts)

        row: dict[str, Any] = {"problem": name, "what": what, "tol": tol, "nfe": nfe}
        row["plain_us_per_nfe"] = 1e6 * timed(plain, args.repeats) / nfe
        for mode in ("reverse", "forward"):
            if name == "node" and mode == "forward":
                row[f"{mode}_us_per_nfe"] = None  # 5509 tangents through a vmapped jvp
                continue

            def sens(model=model, y0=y0, t=t, opts=opts, mode=mode) -> None:  # type: ignore[no-untyped-def]
                physid.odeint_jacobian(model, y0, t, tangents=mode, **opts)

            row[f"{mode}_us_per_nfe"] = 1e6 * timed(sens, args.repeats) / nfe
        rows.append(row)
        print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "tangent_cost.json", {"rows": rows, "threads": args.threads})
    lines = [
        "| problem | size | NFE | plain µs/NFE | reverse rows µs/NFE (x plain) | "
        "forward jvp µs/NFE (x plain) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for mode in ("reverse", "forward"):
            v = r[f"{mode}_us_per_nfe"]
            cells.append("—" if v is None else f"{v:.0f} ({v / r['plain_us_per_nfe']:.1f}x)")
        lines.append(
            f"| {r['problem']} | {r['what']} | {r['nfe']} | {r['plain_us_per_nfe']:.0f} | "
            f"{cells[0]} | {cells[1]} |"
        )
    with atomic_write(args.out / "tangent_cost.md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
