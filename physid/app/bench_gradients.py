"""``physid bench gradients``: time, NFE, backward memory and gradient error per method.

Four problems (the engine issue's benchmark), each solved by physid's four gradient methods
and, side by side in the same process, torchdiffeq's ``odeint``, ``odeint_adjoint`` and its
seminorm option when torchdiffeq is installed:

1. ``toy``: the ACA paper's Figure 6, ``dz/dt = k z``, ``L = z(T)^2``,
   ``dL/dz0 = 2 z0 exp(2kT)``, dopri5 at tolerance 1e-5, ``T`` in {1, 2, 5, 10}.
2. ``three-body``: the known-form three-body model (3 learnable masses), 1000 output times on
   [0, 1], the paper's training loss, dopri5 at rtol = atol = 1e-7; reference gradient from
   physid ``aca`` at 1e-12.
3. ``node``: a neural ODE (MLP 2-64-64-2, tanh), batch 256, 20 output times on [0, 2].
4. ``memory``: backward-pass memory against the number of steps (x10 each), naive vs aca vs
   adjoint, on a learnable rotation (batch 256) whose step count grows linearly with the horizon.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import physid
from physid._io import save_json
from physid.bench import Candidate, Measurement, measure, physid_candidates, torchdiffeq_candidates
from physid.errors import ConfigError

__all__ = ["PROBLEMS", "run"]

PROBLEMS = ("toy", "three-body", "node", "memory")
TOY_T = (1.0, 2.0, 5.0, 10.0)
TOY_K, TOY_Z0 = 1.0, 1.0


def _candidates(with_torchdiffeq: bool) -> list[Candidate]:
    return physid_candidates() + (torchdiffeq_candidates() if with_torchdiffeq else [])


class _Toy(nn.Module):
    """dz/dt = k z with ``k`` held outside (a tensor in ``params``)."""

    def __init__(self, k: Tensor):
        super().__init__()
        self.k = k

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.k * z


def _toy(device: torch.device, repeats: int, with_tdq: bool) -> dict[str, Any]:
    rows = []
    for T in TOY_T:
        k = torch.tensor(TOY_K, dtype=torch.float64, device=device, requires_grad=True)
        z0 = torch.tensor([TOY_Z0], dtype=torch.float64, device=device, requires_grad=True)
        t = torch.tensor([0.0, T], dtype=torch.float64, device=device)
        exact = 2 * TOY_Z0 * math.exp(2 * TOY_K * T)

        for c in _candidates(with_tdq):
            m = measure(
                c,
                _Toy(k),
                z0,
                t,
                lambda ys: ys[-1].pow(2).sum(),
                [z0],
                rtol=1e-5,
                atol=1e-5,
                repeats=repeats,
                memory=False,
                solve_kwargs={"params": [k]},
            )
            grad = _last_grad(c, _Toy(k), z0, t, k)
            m.extra = {
                "T": T,
                "grad": grad,
                "exact": exact,
                "abs_error": abs(grad - exact),
                "rel_error": abs(grad - exact) / exact,
            }
            m.gradient_error = abs(grad - exact) / exact
            rows.append(m)
    return {
        "description": "dz/dt = k z, L = z(T)^2, dopri5 rtol = atol = 1e-5, "
        f"k = {TOY_K}, z0 = {TOY_Z0}",
        "rows": rows,
    }


def _last_grad(c: Candidate, func: nn.Module, z0: Tensor, t: Tensor, k: Tensor) -> float:
    ys = c.solve(func, z0, t, 1e-5, 1e-5, None, params=[k])
    (g,) = torch.autograd.grad(ys[-1].pow(2).sum(), z0)
    return float(g)


def _three_body(device: torch.device, repeats: int, with_tdq: bool) -> dict[str, Any]:
    from physid.envs.three_body import ThreeBodyParams, default_initial_state, simulate, train_times
    from physid.models.known_form import KnownFormThreeBody

    t_np = train_times()
    truth = torch.tensor(simulate(ThreeBodyParams(), default_initial_state(), t_np), device=device)
    t = torch.tensor(t_np, device=device)
    y0 = truth[0].clone()
    model = KnownFormThreeBody(torch.tensor([1.0, 1.05, 0.95])).to(device)
    weights = 0.01**t

    def loss_fn(ys: Tensor) -> Tensor:
        err = (ys[:, :9] - truth[:, :9]).pow(2).sum(-1)
        return (weights * err).mean()

    ref = _reference(model, y0, t, loss_fn, 1e-12)
    rows = [
        measure(
            c,
            model,
            y0,
            t,
            loss_fn,
            [model.masses],
            rtol=1e-7,
            atol=1e-7,
            repeats=repeats,
            reference=ref,
            solve_kwargs={"params": [model.masses]},
        )
        for c in _candidates(with_tdq)
    ]
    return {
        "description": "known-form three-body, 3 learnable masses, 1000 output times on "
        "[0, 1], dopri5 rtol = atol = 1e-7; reference: physid aca at 1e-12",
        "rows": rows,
    }


def _reference(model: nn.Module, y0: Tensor, t: Tensor, loss_fn: Any, tol: float) -> list[Tensor]:
    ys = physid.odeint(model, y0, t, method="aca", rtol=tol, atol=tol, max_steps=1_000_000)
    return list(torch.autograd.grad(loss_fn(ys), list(model.parameters())))


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
        )

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def _node(device: torch.device, repeats: int, with_tdq: bool) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = _MLP().to(device=device, dtype=torch.float32)
    y0 = torch.randn(256, 2, generator=g).to(device)
    target = torch.randn(20, 256, 2, generator=g).to(device)
    t = torch.linspace(0, 2, 20, device=device)
    params = list(model.parameters())

    def loss_fn(ys: Tensor) -> Tensor:
        return (ys - target).pow(2).mean()

    model64 = _MLP().to(device=device, dtype=torch.float64)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    ref64 = physid.odeint(model64, y0.double(), t.double(), method="aca", rtol=1e-10, atol=1e-10)
    ref_loss = (ref64 - target.double()).pow(2).mean()
    ref = [r.float() for r in torch.autograd.grad(ref_loss, list(model64.parameters()))]
    rows = [
        measure(
            c,
            model,
            y0,
            t,
            loss_fn,
            params,
            rtol=1e-6,
            atol=1e-8,
            repeats=repeats,
            reference=ref,
            solve_kwargs={"params": params},
        )
        for c in _candidates(with_tdq)
    ]
    return {
        "description": "neural ODE MLP 2-64-64-2 tanh, float32, batch 256, 20 output times "
        "on [0, 2], dopri5 rtol = 1e-6, atol = 1e-8; reference: physid aca "
        "in float64 at 1e-10",
        "rows": rows,
    }


def _memory(device: torch.device, quick: bool) -> dict[str, Any]:
    W = nn.Parameter(torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64, device=device))

    class Rotation(nn.Module):
        def forward(self, t: Tensor, y: Tensor) -> Tensor:
            return y @ W.T

    y0 = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y0 = y0.to(device)
    horizons = (2 * math.pi, 20 * math.pi) if quick else (2 * math.pi, 20 * math.pi, 200 * math.pi)
    rows = []
    for T in horizons:
        t = torch.linspace(0, T, 5, dtype=torch.float64, device=device)
        for c in physid_candidates(("naive", "adjoint", "aca")):
            m = measure(
                c,
                Rotation(),
                y0,
                t,
                lambda ys: ys.pow(2).sum(),
                [W],
                rtol=1e-6,
                atol=1e-6,
                repeats=1,
                solve_kwargs={"params": [W]},
            )
            m.extra = {"T": T}
            rows.append(m)
    state_bytes = y0.numel() * y0.element_size()
    slopes = {}
    for name in ("physid naive", "physid adjoint", "physid aca"):
        rs = [r for r in rows if r.candidate == name]
        steps = np.array([r.steps_forward for r in rs], dtype=float)
        peak = np.array([r.backward_peak_bytes for r in rs], dtype=float)
        slopes[name] = float(np.polyfit(steps, peak, 1)[0])
    largest = [r for r in rows if r.extra["T"] == horizons[-1]]
    by = {r.candidate: r for r in largest}
    return {
        "description": "learnable rotation y' = W y, batch 256 (float64), dopri5 rtol = atol = "
        "1e-6, horizons x10; backward-pass peak memory vs accepted steps",
        "rows": rows,
        "state_bytes": state_bytes,
        "bytes_per_step": slopes,
        "states_per_step": {k: v / state_bytes for k, v in slopes.items()},
        "naive_over_aca_at_largest": float(by["physid naive"].backward_peak_bytes or 0)
        / float(by["physid aca"].backward_peak_bytes or 1),
    }


def _ratios(rows: Sequence[Measurement]) -> dict[str, float]:
    by = {r.candidate: r.seconds for r in rows}
    out = {}
    if "torchdiffeq odeint" in by:
        out["aca / torchdiffeq odeint"] = by["physid aca"] / by["torchdiffeq odeint"]
    if "torchdiffeq odeint_adjoint" in by:
        out["aca / torchdiffeq odeint_adjoint"] = (
            by["physid aca"] / by["torchdiffeq odeint_adjoint"]
        )
    return out


def run(
    out_dir: Path,
    problems: Sequence[str] = PROBLEMS,
    *,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    quick: bool = False,
    with_torchdiffeq: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Run the gradient benchmark; write ``gradients.json`` and plots to ``out_dir``.

    Args:
        problems: a subset of :data:`PROBLEMS`.
        repeats: timed repeats after one warm-up (the median is reported).
        quick: smaller horizons for the memory problem (a smoke run).
        with_torchdiffeq: include torchdiffeq when it is installed.

    Returns:
        The results as written to JSON.
    """
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        raise ConfigError(f"unknown benchmark problem(s) {unknown}; choose from {PROBLEMS}.")
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "environment": {
            "torch": torch.__version__,
            "physid": physid.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "torchdiffeq": _tdq_version() if with_torchdiffeq else None,
        },
        "repeats": repeats,
        "problems": {},
    }
    runners = {
        "toy": lambda: _toy(device, repeats, with_torchdiffeq),
        "three-body": lambda: _three_body(device, repeats, with_torchdiffeq),
        "node": lambda: _node(device, repeats, with_torchdiffeq),
        "memory": lambda: _memory(device, quick),
    }
    for name in problems:
        res = runners[name]()
        if name in ("three-body", "node"):
            res["ratios"] = _ratios(res["rows"])
        results["problems"][name] = res
        if console is not None:
            console.print(table(name, res))
        save_json(out_dir / "gradients.json", _jsonable(results))
    data = _jsonable(results)
    plot(data, out_dir)
    return data


def _tdq_version() -> str | None:
    try:
        import torchdiffeq

        return str(getattr(torchdiffeq, "__version__", "installed"))
    except ImportError:
        return None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Measurement):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _get(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else getattr(row, key)


def _mib(x: Any) -> str:
    return "-" if x is None else f"{x / 2**20:.2f}"


def table(name: str, res: dict[str, Any]) -> Any:
    """A rich table of one problem's rows."""
    from rich.table import Table

    tab = Table(title=f"{name}: {res['description']}")
    cols = [
        "candidate",
        "T",
        "s (median)",
        "NFE fwd",
        "NFE bwd",
        "steps",
        "bwd peak MiB",
        "retained MiB",
        "grad rel. error",
    ]
    for c in cols:
        tab.add_column(c, justify="left" if c == "candidate" else "right")
    for r in res["rows"]:
        extra = _get(r, "extra") or {}
        err = _get(r, "gradient_error")
        tab.add_row(
            _get(r, "candidate"),
            f"{extra['T']:.3g}" if "T" in extra else "",
            f"{_get(r, 'seconds'):.4f}",
            str(_get(r, "nfe_forward")),
            str(_get(r, "nfe_backward")),
            str(_get(r, "steps_forward") or "-"),
            _mib(_get(r, "backward_peak_bytes")),
            _mib(_get(r, "retained_bytes")),
            "-" if err is None else f"{err:.2e}",
        )
    if "ratios" in res:
        tab.caption = "; ".join(f"{k} = {v:.3f}" for k, v in res["ratios"].items())
    if "states_per_step" in res:
        tab.caption = (
            "backward memory per accepted step, in states: "
            + ", ".join(f"{k} {v:.2f}" for k, v in res["states_per_step"].items())
            + f"; naive/aca at the largest horizon = {res['naive_over_aca_at_largest']:.1f}x"
        )
    return tab


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (for the README)."""
    lines = []
    for name, res in results["problems"].items():
        lines += [f"**{name}** — {res['description']}", ""]
        lines += [
            "| candidate | T | s (median) | NFE fwd | NFE bwd | bwd peak MiB | grad rel. err |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            extra = r.get("extra") or {}
            err = r.get("gradient_error")
            lines.append(
                f"| {r['candidate']} | {extra.get('T', ''):{'.3g' if 'T' in extra else ''}} | "
                f"{r['seconds']:.4f} | {r['nfe_forward']} | {r['nfe_backward']} | "
                f"{_mib(r.get('backward_peak_bytes'))} | "
                f"{'-' if err is None else f'{err:.2e}'} |"
            )
        if "ratios" in res:
            lines += ["", "; ".join(f"{k} = **{v:.3f}**" for k, v in res["ratios"].items())]
        if "states_per_step" in res:
            lines += [
                "",
                "backward memory per accepted step (in stored states): "
                + ", ".join(f"{k} **{v:.2f}**" for k, v in res["states_per_step"].items())
                + "; naive/aca at the largest horizon = "
                + f"**{res['naive_over_aca_at_largest']:.1f}x**",
            ]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figure 6 (toy error vs T), time per candidate, memory vs steps, and ``gradients.md``.

    Args:
        results: the results as :func:`run` returns them (JSON-ready).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = results["problems"]
    paths = []
    if "toy" in res:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = sorted({r["candidate"] for r in res["toy"]["rows"]})
        for n in names:
            rs = [r for r in res["toy"]["rows"] if r["candidate"] == n]
            ax.semilogy(
                [r["extra"]["T"] for r in rs],
                [max(r["extra"]["abs_error"], 1e-300) for r in rs],
                "o-",
                label=n,
            )
        ax.set_xlabel("T")
        ax.set_ylabel("|dL/dz0 - 2 z0 exp(2kT)|")
        ax.set_title("ACA paper Figure 6: gradient error on dz/dt = kz (dopri5, tol 1e-5)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / "toy_error_vs_T.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    timed = [p for p in ("three-body", "node") if p in res]
    if timed:
        fig, axes = plt.subplots(1, len(timed), figsize=(6 * len(timed), 4), squeeze=False)
        for ax, p in zip(axes[0], timed, strict=True):
            rows = res[p]["rows"]
            ax.barh([r["candidate"] for r in rows], [r["seconds"] for r in rows])
            ax.set_xscale("log")
            ax.set_xlabel("seconds per forward + backward (median)")
            ax.set_title(p)
        fig.tight_layout()
        paths.append(out_dir / "time_per_method.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if "memory" in res:
        fig, ax = plt.subplots(figsize=(6, 4))
        for n in ("physid naive", "physid adjoint", "physid aca"):
            rs = [r for r in res["memory"]["rows"] if r["candidate"] == n]
            ax.loglog(
                [r["steps_forward"] for r in rs],
                [r["backward_peak_bytes"] / 2**20 for r in rs],
                "o-",
                label=n,
            )
        ax.set_xlabel("accepted steps")
        ax.set_ylabel("backward-pass peak memory (MiB)")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "memory_vs_steps.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    (out_dir / "gradients.md").write_text(markdown(results))
    return paths


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(Path("bench_results"), quick=True), indent=1)[:2000])
