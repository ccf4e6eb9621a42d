"""Where the seminorm paper's 43% comes from: the acrobot's backward norms, one batch at a time.

Kidger et al. 2021 (Table 3) report 46.45 vs 26.55 (x1e4) backward NFE for Symplectic ODE-Net on
the fully-actuated acrobot, default norm vs "seminorm". Their acrobot code
(FasterNeuralDiffEq, ``models/symode.py``) builds the seminorm as ``make_norm(x)`` from the whole
window batch ``x`` of shape ``(B, 8, state)``, where the paper's own listing (Section 2.3) sizes
it from the ODE state ``y0`` ``(B, state)``. The norm (``models/common.py``) reads two slices of
the flat augmented state ``[a_t, y, a_y, a_theta]``, each as long as the tensor it was sized from:
sized from ``x`` (8x the state) its "y" slice covers y, a_y and the first parameter adjoints, its
"a_y" slice parameter adjoints only, and the state's error is diluted by a factor 2 to sqrt(8):
a looser backward tolerance.

For each model and batch (float64 unless ``--dtype float32``; SymODEN, windows of 8 points = 7
output intervals of 0.05 s, dopri5 at rtol = atol = 1e-4) this script solves forward and backward
with

- ``torchdiffeq default``: ``torchdiffeq.odeint_adjoint`` with its default adjoint norm (0.2.x:
  the largest of |a_t|, RMS(y), RMS(a_y) and each parameter tensor's RMS);
- ``torchdiffeq default, 0.1 layout``: the default of torchdiffeq 0.1 (the flat adjoint state
  the paper's norm was written for): the same, with all parameter adjoints as one RMS block;
- ``torchdiffeq seminorm``: ``adjoint_options=dict(norm="seminorm")``;
- ``paper norm from x``: the paper's norm sized from the window batch, as in its acrobot code;
- ``paper norm from y0``: the same norm sized from the initial state, as the method intends;
- ``torchdiffeq default, tol x sqrt8``: the default norm at a sqrt(8) = 2.83x looser backward
  tolerance;
- ``physid adjoint`` and ``physid seminorm`` (backward step carried across the output intervals);
- on request (``--cases``), where the gradient's error comes from: ``torchdiffeq default,
  backward tol 1e-10`` and ``torchdiffeq default, forward tol 1e-10``;

and records forward and backward NFE per batch, the backward steps accepted and rejected (the
solver's own decisions, from torchdiffeq's step callbacks), the steps the paper's counter
reports from the backward evaluation times (``train/train.py::_count_accept_rejects``: every
6th evaluation from the 8th, a "rejection" whenever the next sampled time lies back in the
solve's past -- a counter written for one solve, fed the 7 restarted solves of a window), and
the gradient's relative error and cosine against ``aca`` at 1e-10 (float64).

    python scripts/seminorm_norms.py runs/seminorm_norms/acrobot-symoden-adjoint-{0,1,2} \\
        --fresh-seeds 0 1 2 --out bench_results/seminorm_norms

Writes ``OUT/seminorm_norms.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments import acrobot  # noqa: E402
from physid.models.symoden import build_symoden  # noqa: E402

import physid  # noqa: E402
from physid._io import save_json, write_text_atomic  # noqa: E402

SQRT8 = math.sqrt(8.0)

# The paper's setting, from its code (FasterNeuralDiffEq: root ``acrobot.py``, batch 256 and 50
# epochs; ``datasets/acrobot.py``, 128 trajectories per control of 32 points, split 89/19/20,
# windows of 8 points; ``train/train.py``, a metrics pass over the train set at epochs
# 0, 10, ..., 40 and 49).
PAPER_TRAIN_BATCHES = math.ceil(9 * 89 * 25 / 256)  # 79
PAPER_TEST_BATCHES = math.ceil(9 * 20 * 25 / 256)  # 18
PAPER_TRAIN_PASSES = 6
PAPER_TABLE3 = {"default": 46.45, "seminorm": 26.55}  # backward NFE, "x1e4"
PAPER_TABLE4_HNN = {  # one pass over the test set, x1e3
    "default": {"rejected": 0.11, "accepted": 0.18},
    "seminorm": {"rejected": 0.00, "accepted": 0.16},
}

CASES = (
    "torchdiffeq default",
    "torchdiffeq default, 0.1 layout",
    "torchdiffeq seminorm",
    "paper norm from x",
    "paper norm from y0",
    "torchdiffeq default, tol x sqrt8",
    "physid adjoint",
    "physid seminorm",
)

EXTRA_CASES = (
    "torchdiffeq default, backward tol 1e-10",
    "torchdiffeq default, forward tol 1e-10",
)
"""Where the gradient's error comes from (``--cases``; not run by default): the default norm with
a tight backward solve, and with a tight forward solve."""
ALL_CASES = CASES + EXTRA_CASES


# ---- norms ------------------------------------------------------------------------------------


def _rms(x: Tensor) -> Tensor:
    """RMS of ``x``; 0 for an empty slice (where the paper's ``max`` drops the slice's NaN)."""
    if x.numel() == 0:
        return x.new_zeros(())
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def paper_norm(sized_from: Tensor) -> Callable[[Sequence[Tensor]], Tensor]:
    """The seminorm of Kidger et al. 2021's code (``make_norm``), sized from ``sized_from``.

    The norm flattens torchdiffeq's adjoint state ``(a_t, y, a_y, *a_theta)`` into one vector
    (the layout the code was written for, torchdiffeq 0.1) and returns the larger RMS of two
    consecutive slices after the leading ``a_t``, each ``n = sized_from.numel()`` long. Sized from
    the ODE state ``y0`` ``(B, S)`` they are exactly ``y`` and ``a_y``: the seminorm. Sized from
    the window batch ``x`` ``(B, W, S)``, ``n = W * B * S``: the first slice holds ``y``, ``a_y``
    and the first ``(W - 2) * B * S`` parameter adjoints, the second only parameter adjoints.

    Args:
        sized_from: the tensor whose element count sizes the slices.

    Returns:
        ``norm(parts)`` for ``adjoint_options=dict(norm=...)`` of ``torchdiffeq.odeint_adjoint``.
    """
    n = sized_from.numel()

    def norm(parts: Sequence[Tensor]) -> Tensor:
        flat = torch.cat([p.reshape(-1) for p in parts])
        return torch.maximum(_rms(flat[1 : 1 + n]), _rms(flat[1 + n : 1 + 2 * n]))

    return norm


def default_norm_01(parts: Sequence[Tensor]) -> Tensor:
    """torchdiffeq 0.1's default adjoint norm: max(|a_t|, RMS(y), RMS(a_y), RMS(all a_theta))."""
    t, y, a_y, *a_theta = parts
    blocks = [t.abs().reshape(()), _rms(y), _rms(a_y)]
    if a_theta:
        blocks.append(_rms(torch.cat([p.reshape(-1) for p in a_theta])))
    return torch.stack(blocks).max()


# ---- the paper's step counter -----------------------------------------------------------------


def paper_step_count(
    times: Sequence[float], *, evals_per_step: int = 6, reverse_time: bool = True
) -> tuple[list[float], list[float]]:
    """Accepted and rejected step times as the seminorm paper's training code counts them.

    It assumes ONE dopri5 solve whose initial step was selected (2 evaluations) followed by steps
    of 6 evaluations, so it samples the evaluation times at indices 7, 13, 19, ... (the end of each
    step) and calls a sample rejected when the next sample lies back in the solve's past (for a
    backward solve: later in time). Fed the 7 restarted solves of a window (2 + 6 k evaluations
    each), the samples drift off the step ends after the first solve.

    Args:
        times: the evaluation times of one backward pass, in call order.

    Returns:
        ``(accepted, rejected)`` sample times.
    """
    samples = list(times[evals_per_step + 1 :: evals_per_step])
    accepted: list[float] = []
    rejected: list[float] = []
    for now, nxt in zip(samples[:-1], samples[1:], strict=False):
        went_back = now < nxt if reverse_time else nxt < now
        (rejected if went_back else accepted).append(now)
    if samples:
        accepted.append(samples[-1])
    return accepted, rejected


# ---- one case ---------------------------------------------------------------------------------


class _Traced(nn.Module):
    """Counts and times the field's evaluations and torchdiffeq's backward step decisions."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.times: list[float] = []
        self.accepted = 0
        self.rejected = 0
        self.attempts: list[tuple[float, float]] = []

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.times.append(float(t.detach()))
        return self.field(t, x)

    def callback_step_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.attempts.append((float(t0), float(dt)))

    def callback_accept_step_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.accepted += 1

    def callback_reject_step_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


def _flat_grad(model: nn.Module) -> Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def _physid(model: nn.Module, xb: Tensor, t: Tensor, method: str, tol: float) -> dict[str, Any]:
    stats = physid.SolveStats()
    model.zero_grad(set_to_none=True)
    pred = physid.odeint(model, xb[:, 0], t, method=method, rtol=tol, atol=tol, stats=stats)
    acrobot.window_loss(pred, xb).backward()
    return {
        "nfe_forward": stats.nfe_forward,
        "nfe_backward": stats.nfe_backward,
        "backward_accepted": stats.backward_steps_accepted,
        "backward_rejected": stats.backward_steps_rejected,
        "counter_accepted": None,
        "counter_rejected": None,
        "counter_rejected_times": None,
        "first_step": None,
        "grad": _flat_grad(model),
    }


def _torchdiffeq(model: nn.Module, xb: Tensor, t: Tensor, case: str, tol: float) -> dict[str, Any]:
    import torchdiffeq

    forward_tol, adjoint_tol = tol, tol
    if case.endswith("x sqrt8"):
        adjoint_tol = tol * SQRT8
    elif case.endswith("backward tol 1e-10"):
        adjoint_tol = 1e-10
    elif case.endswith("forward tol 1e-10"):
        forward_tol = 1e-10
    options: dict[str, Any] = {}
    if case == "torchdiffeq seminorm":
        options["norm"] = "seminorm"
    elif case == "torchdiffeq default, 0.1 layout":
        options["norm"] = default_norm_01
    elif case == "paper norm from x":
        options["norm"] = paper_norm(xb)
    elif case == "paper norm from y0":
        options["norm"] = paper_norm(xb[:, 0])
    traced = _Traced(model)
    model.zero_grad(set_to_none=True)
    pred = torchdiffeq.odeint_adjoint(
        traced,
        xb[:, 0],
        t,
        rtol=forward_tol,
        atol=forward_tol,
        method="dopri5",
        adjoint_rtol=adjoint_tol,
        adjoint_atol=adjoint_tol,
        adjoint_params=tuple(model.parameters()),
        adjoint_options=options,
    )
    forward = len(traced.times)
    acrobot.window_loss(pred, xb).backward()
    backward_times = traced.times[forward:]
    accepted, rejected = paper_step_count(backward_times)
    # the first attempt of each restarted solve starts on an output time: the selected first step
    grid = t.abs().tolist()
    first_steps = [
        dt
        for k, (t0, dt) in enumerate(traced.attempts)
        if min(abs(abs(t0) - g) for g in grid) < 1e-9
        and (k == 0 or traced.attempts[k - 1][0] != t0)
    ]
    return {
        "nfe_forward": forward,
        "nfe_backward": len(backward_times),
        "backward_accepted": traced.accepted,
        "backward_rejected": traced.rejected,
        "counter_accepted": len(accepted),
        "counter_rejected": len(rejected),
        "counter_rejected_times": rejected,
        "first_step": float(np.mean(first_steps)),
        "grad": _flat_grad(model),
    }


def run_case(model: nn.Module, xb: Tensor, t: Tensor, case: str, tol: float) -> dict[str, Any]:
    """One forward and backward pass of the window loss on ``xb`` ``(B, W, 8)`` with ``case``.

    Returns:
        NFE, backward steps (the solver's and the paper counter's), and the flat gradient.
    """
    if case.startswith("physid "):
        return _physid(model, xb, t, case.removeprefix("physid "), tol)
    return _torchdiffeq(model, xb, t, case, tol)


# ---- measurement ------------------------------------------------------------------------------


def _models(
    runs: Sequence[Path], fresh_seeds: Sequence[int], fresh_preset: str, trained: bool = True
) -> list[tuple[str, str, nn.Module, Path]]:
    """``(label, kind, model, data run)``: each fitted run's best model (unless not
    ``trained``), then the fresh ones (``torch.manual_seed(seed); build_symoden(preset)``: a
    fit's initial model) on the first run's data."""
    out: list[tuple[str, str, nn.Module, Path]] = []
    for run in runs if trained else []:
        model, _config = acrobot.load_run(run)
        out.append((run.name, "trained", model, run))
    for seed in fresh_seeds:
        torch.manual_seed(seed)
        out.append(
            (f"fresh {fresh_preset} seed {seed}", "fresh", build_symoden(fresh_preset), runs[0])
        )
    return out


def measure(
    runs: Sequence[Path],
    *,
    fresh_seeds: Sequence[int] = (),
    fresh_preset: str = "default",
    tol: float = 1e-4,
    n_batches: int = 3,
    batch_size: int = 256,
    cases: Sequence[str] = CASES,
    reference_tol: float = 1e-10,
    trained: bool = True,
    dtype: torch.dtype = torch.float64,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per model x case: per-batch means of NFE and steps, gradient error and cosine.

    Args:
        runs: fitted acrobot run directories (at least one: it supplies the data).
        fresh_seeds: also measure freshly initialised models of ``fresh_preset``.
        tol: rtol = atol of the forward and backward solves.
        n_batches, batch_size: random training batches per model (seeded, the same for all).
        cases: names from :data:`ALL_CASES`.
        reference_tol: tolerance of the float64 ``aca`` reference gradient.
        trained: measure the runs' fitted models (else the runs only supply the data).
        dtype: of the measured solves (the reference is float64 always; ``float32`` is the
            paper's).
    """
    if not runs:
        raise ValueError("give at least one fitted acrobot run (it supplies the data)")
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        raise ValueError(f"unknown cases {unknown}; choose from {list(ALL_CASES)}")
    rows: list[dict[str, Any]] = []
    splits_cache: dict[Path, Any] = {}
    for label, kind, model, data_run in _models(runs, fresh_seeds, fresh_preset, trained):
        model = model.double()
        if data_run not in splits_cache:
            splits_cache[data_run] = acrobot.run_splits(data_run, dtype=torch.float64)
        splits = splits_cache[data_run]
        t = splits.t_window
        gen = torch.Generator().manual_seed(0)
        batches = [
            splits.train[torch.randperm(len(splits.train), generator=gen)[:batch_size]]
            for _ in range(n_batches)
        ]
        refs = [run_case(model, xb, t, "physid aca", reference_tol)["grad"] for xb in batches]
        work = model if dtype == torch.float64 else copy.deepcopy(model).to(dtype)
        t_work = t.to(dtype)
        for case in cases:
            outs, secs = [], 0.0
            for xb, ref in zip(batches, refs, strict=True):
                t0 = time.perf_counter()
                out = run_case(work, xb.to(dtype), t_work, case, tol)
                secs += time.perf_counter() - t0
                g = out.pop("grad").double()
                out["grad_rel_error"] = float((g - ref).norm() / ref.norm())
                out["grad_cosine"] = float(torch.dot(g, ref) / (g.norm() * ref.norm()))
                outs.append(out)

            def mean(key: str, outs: list[dict[str, Any]] = outs) -> float | None:
                vals = [o[key] for o in outs]
                return None if vals[0] is None else float(np.mean(vals))

            row = {
                "model": label,
                "kind": kind,
                "n_parameters": sum(p.numel() for p in model.parameters()),
                "case": case,
                "tol": tol,
                "dtype": str(dtype).removeprefix("torch."),
                "batch_size": batch_size,
                "n_batches": n_batches,
                "window": int(t.numel()),
                "nfe_forward_per_batch": mean("nfe_forward"),
                "nfe_backward_per_batch": mean("nfe_backward"),
                "backward_accepted_per_batch": mean("backward_accepted"),
                "backward_rejected_per_batch": mean("backward_rejected"),
                "counter_accepted_per_batch": mean("counter_accepted"),
                "counter_rejected_per_batch": mean("counter_rejected"),
                "counter_rejected_times": outs[0]["counter_rejected_times"],
                "first_step_mean": mean("first_step"),
                "grad_rel_error": float(np.median([o["grad_rel_error"] for o in outs])),
                "grad_cosine": float(np.min([o["grad_cosine"] for o in outs])),
                "seconds_per_batch": secs / len(batches),
            }
            rows.append(row)
            log(
                f"{label:32s} {case:34s} bwd NFE {row['nfe_backward_per_batch']:6.1f}  "
                f"fwd NFE {row['nfe_forward_per_batch']:5.1f}  "
                f"err {row['grad_rel_error']:.2e}  cos {row['grad_cosine']:.8f}"
            )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model kind (fresh/trained) and case: means over models of the per-batch numbers,
    the worst gradient error and cosine, and the paper's totals these per-batch counts give."""
    out = []
    for kind in ("fresh", "trained"):
        for case in ALL_CASES:
            sel = [r for r in rows if r["kind"] == kind and r["case"] == case]
            if not sel:
                continue

            def mean(key: str, sel: list[dict[str, Any]] = sel) -> float | None:
                vals = [r[key] for r in sel]
                return None if vals[0] is None else float(np.mean(vals))

            nfe = float(np.mean([r["nfe_backward_per_batch"] for r in sel]))
            ca, cr = mean("counter_accepted_per_batch"), mean("counter_rejected_per_batch")
            out.append(
                {
                    "kind": kind,
                    "case": case,
                    "models": len(sel),
                    "nfe_forward_per_batch": mean("nfe_forward_per_batch"),
                    "nfe_backward_per_batch": nfe,
                    "backward_accepted_per_batch": mean("backward_accepted_per_batch"),
                    "backward_rejected_per_batch": mean("backward_rejected_per_batch"),
                    "counter_accepted_per_batch": ca,
                    "counter_rejected_per_batch": cr,
                    "first_step_mean": mean("first_step_mean"),
                    "grad_rel_error_max": max(r["grad_rel_error"] for r in sel),
                    "grad_rel_error_median": float(np.median([r["grad_rel_error"] for r in sel])),
                    "grad_cosine_min": min(r["grad_cosine"] for r in sel),
                    # x 6 metrics passes x 79 train batches, in units of 1e3
                    "paper_total_e3": nfe * PAPER_TRAIN_PASSES * PAPER_TRAIN_BATCHES / 1e3,
                    # the counter over the 18 test batches, in units of 1e3
                    "counter_test_pass_accepted_e3": None
                    if ca is None
                    else ca * PAPER_TEST_BATCHES / 1e3,
                    "counter_test_pass_rejected_e3": None
                    if cr is None
                    else cr * PAPER_TEST_BATCHES / 1e3,
                }
            )
    return out


# ---- report -----------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], command: str) -> str:
    """The tables of ``seminorm_norms.md``."""
    first = rows[0]
    lines = [
        "# The acrobot's backward norms: where the seminorm paper's 43% comes from",
        "",
        f"`{command}`",
        "",
        f"SymODEN, {first['dtype']}, windows of {first['window']} points "
        "(7 output intervals of 0.05 s), "
        f"dopri5 at rtol = atol = {first['tol']:g}, {first['n_batches']} training batches of "
        f"{first['batch_size']} per model; gradient error and cosine against `aca` at 1e-10. "
        "Per batch, mean over models (error: worst model; cosine: lowest). Steps: the solver's "
        "own accepted / rejected backward steps; first step: the step torchdiffeq selects at the "
        "start of each restarted interval solve (mean); counter: what the paper's step counter "
        "reports from the same backward pass.",
        "",
        "| models | case | fwd NFE | bwd NFE | bwd steps acc. / rej. | first step (s) "
        "| counter acc. / rej. | grad rel. error | cosine | x6x79 (1e3) "
        "| counter x18 test batches (1e3) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['kind']} ({s['models']}) | {s['case']} "
            f"| {_f(s['nfe_forward_per_batch'], '.1f')} "
            f"| {s['nfe_backward_per_batch']:.1f} "
            f"| {_f(s['backward_accepted_per_batch'], '.2f')} / "
            f"{_f(s['backward_rejected_per_batch'], '.2f')} "
            f"| {_f(s['first_step_mean'], '.4f')} "
            f"| {_f(s['counter_accepted_per_batch'], '.2f')} / "
            f"{_f(s['counter_rejected_per_batch'], '.2f')} "
            f"| {s['grad_rel_error_max']:.2e} | {s['grad_cosine_min']:.8f} "
            f"| {s['paper_total_e3']:.2f} "
            f"| {_f(s['counter_test_pass_accepted_e3'], '.3f')} / "
            f"{_f(s['counter_test_pass_rejected_e3'], '.3f')} |"
        )
    lines += [
        "",
        f"Paper: Table 3 backward NFE {PAPER_TABLE3['default']} (default) vs "
        f"{PAPER_TABLE3['seminorm']} (seminorm), labelled x1e4; Table 4 (HNN, one pass over the "
        f"test set, x1e3) accepted / rejected {PAPER_TABLE4_HNN['default']['accepted']} / "
        f"{PAPER_TABLE4_HNN['default']['rejected']} (default) vs "
        f"{PAPER_TABLE4_HNN['seminorm']['accepted']} / "
        f"{PAPER_TABLE4_HNN['seminorm']['rejected']} (seminorm). x6x79: per-batch backward NFE "
        f"x {PAPER_TRAIN_PASSES} metrics passes x {PAPER_TRAIN_BATCHES} training batches of the "
        f"paper's data; x18: the counter's steps per batch x {PAPER_TEST_BATCHES} test batches.",
        "",
        "## Every model",
        "",
        "| model | parameters | case | fwd NFE | bwd NFE | bwd acc. / rej. | counter acc. / rej. "
        "| counter's rejections at t (first batch) | grad rel. error | cosine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        times = r["counter_rejected_times"]
        where = "—" if times is None else ", ".join(f"{x:.3f}" for x in times) or "none"
        lines.append(
            f"| {r['model']} | {r['n_parameters']} | {r['case']} "
            f"| {r['nfe_forward_per_batch']:.1f} | {r['nfe_backward_per_batch']:.1f} "
            f"| {_f(r['backward_accepted_per_batch'], '.2f')} / "
            f"{_f(r['backward_rejected_per_batch'], '.2f')} "
            f"| {_f(r['counter_accepted_per_batch'], '.2f')} / "
            f"{_f(r['counter_rejected_per_batch'], '.2f')} | {where} "
            f"| {r['grad_rel_error']:.2e} | {r['grad_cosine']:.8f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Backward NFE per batch and gradient error per case, fresh and trained models side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("fresh", "trained") if any(s["kind"] == k for s in summary)]
    cases = [c for c in ALL_CASES if any(s["case"] == c for s in summary)]
    by = {(s["kind"], s["case"]): s for s in summary}
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(cases) + 3.0), sharey=True)
    height = 0.8 / max(len(kinds), 1)
    y = np.arange(len(cases))
    for i, kind in enumerate(kinds):
        offset = (i - (len(kinds) - 1) / 2) * height
        nfe = [
            by[(kind, c)]["nfe_backward_per_batch"] if (kind, c) in by else np.nan for c in cases
        ]
        bars = axes[0].barh(y + offset, nfe, height, label=f"{kind} models")
        axes[0].bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        err = [by[(kind, c)]["grad_rel_error_max"] if (kind, c) in by else np.nan for c in cases]
        axes[1].plot(err, y + offset, "o", color=bars.patches[0].get_facecolor(), label=kind)
    styles = (
        (50, ":", "50: one step per interval, step carried (physid)"),
        (56, "--", "56: one step per interval, restarted (torchdiffeq)"),
        (98, "-.", "98: two steps per interval, restarted"),
    )
    for floor, ls, text in styles:
        axes[0].axvline(floor, color="0.4", lw=0.9, ls=ls, label=text)
    axes[0].set(xlabel="backward NFE per batch (7 intervals)", title="backward cost")
    axes[1].set(
        xlabel="gradient rel. error vs aca at 1e-10 (worst model)",
        title="gradient accuracy",
        xscale="log",
    )
    axes[0].set_yticks(y, cases)
    axes[0].invert_yaxis()
    top = max(s["nfe_backward_per_batch"] for s in summary)
    axes[0].set_xlim(0, max(118.0, 1.15 * top))
    for ax in axes:
        ax.grid(True, axis="x", which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="fitted acrobot run directories")
    parser.add_argument("--fresh-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--fresh-preset", choices=["default", "paper"], default="default")
    parser.add_argument(
        "--fresh-only",
        action="store_true",
        help="measure only the fresh models (the runs supply the data)",
    )
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="of the measured solves (the paper trained in float32; the reference is float64)",
    )
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(ALL_CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench_results/seminorm_norms"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = measure(
        args.runs,
        fresh_seeds=args.fresh_seeds,
        fresh_preset=args.fresh_preset,
        tol=args.tol,
        n_batches=args.batches,
        batch_size=args.batch_size,
        cases=args.cases,
        trained=not args.fresh_only,
        dtype=getattr(torch, args.dtype),
    )
    summary = summarise(rows)
    command = "python scripts/seminorm_norms.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"rows": rows, "summary": summary, "command": command}
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "seminorm_norms.json", report)
    md = markdown(rows, summary, command)
    write_text_atomic(args.out / "seminorm_norms.md", md)
    plot(summary, args.out / "seminorm_norms.png")
    print(md)
    return report


if __name__ == "__main__":
    main()
