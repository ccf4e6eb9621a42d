"""The seminorm scripts on a tiny acrobot problem: the numbers they report obey the adjoint's
invariants (at least one backward step per output interval; the seminorm never takes more
backward steps than the block norm on the same problem; every gradient close to ACA at a tight
tolerance), and the seminorm paper's acrobot norm, sized from the window batch, is the diluted
norm issue 14 describes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from physid.controllers.norms import SemiNorm
from physid.runs import RunDir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce_seminorm  # noqa: E402
import seminorm_norms  # noqa: E402
import seminorm_vs_tolerance  # noqa: E402


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("seminorm")
    argv = ["--tiny", "--seeds", "0", "--methods", "adjoint", "seminorm"]
    argv += ["--runs-dir", str(base / "runs"), "--data-dir", str(base / "data")]
    argv += ["--out", str(base / "out"), "--no-progress"]
    report = reproduce_seminorm.main(argv)
    assert (base / "out" / "seminorm.md").exists()
    assert (base / "out" / "backward_locations.png").stat().st_size > 0
    for method in ("adjoint", "seminorm"):
        row = report["results"][method]
        # a window of 8 points: at least 7 backward steps per batch
        assert row["backward_steps_per_batch"][0] >= 7
        assert row["control_successes"] is None  # no --control (tested in test_acrobot)
        # the table is read from the runs' summaries (RunSummary's fixed keys)
        summary = RunDir(base / "runs" / f"acrobot-symoden-{method}-0").read_summary()
        assert row["test_loss"][0] == summary.test_mse
        assert row["backward_nfe"][0] == summary.nfe_backward
        assert row["n_parameters"] == summary["n_parameters"]
    md = (base / "out" / "seminorm.md").read_text()
    assert "swing-up successes" in md
    return base / "runs"


def test_backward_nfe_vs_tolerance_obeys_the_floor_and_the_reference(tiny_runs, tmp_path):
    run = tiny_runs / "acrobot-symoden-adjoint-0"
    out = tmp_path / "svt"
    argv = [str(run), "--tolerances", "1e-4", "1e-7", "--batches", "1", "--batch-size", "16"]
    seminorm_vs_tolerance.main([*argv, "--out", str(out)])
    data = json.loads((out / "seminorm_vs_tol.json").read_text())
    rows = {(r["method"], r["tol"]): r for r in data["rows"]}
    for tol in (1e-4, 1e-7):
        adj, semi = rows[("physid adjoint", tol)], rows[("physid seminorm", tol)]
        assert adj["steps_backward_per_batch"] >= 7 and semi["steps_backward_per_batch"] >= 7
        assert semi["steps_backward_per_batch"] <= adj["steps_backward_per_batch"]
        for method in ("physid adjoint", "physid seminorm", "physid aca"):
            assert rows[(method, tol)]["grad_rel_error"] < (1e-2 if tol == 1e-4 else 1e-4)
    # tighter tolerance, more accurate gradients
    assert (
        rows[("physid adjoint", 1e-7)]["grad_rel_error"]
        < rows[("physid adjoint", 1e-4)]["grad_rel_error"]
    )
    assert (out / "seminorm_vs_tol.png").stat().st_size > 0
    assert "seminorm saving" in (out / "seminorm_vs_tol.md").read_text()


def _adjoint_state(batch: int, state: int, n_params: int, *, a_y: bool, params: bool):
    """torchdiffeq's adjoint state ``(a_t, y, a_y, *a_theta)`` filled with random errors."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(batch, state, generator=gen, dtype=torch.float64)
    adj = torch.randn(batch, state, generator=gen, dtype=torch.float64)
    theta = torch.randn(n_params, generator=gen, dtype=torch.float64)
    return (
        torch.zeros((), dtype=torch.float64),
        y,
        adj if a_y else torch.zeros_like(adj),
        *(theta if params else torch.zeros_like(theta)).split(
            [n_params // 3, n_params - n_params // 3]
        ),
    )


def test_the_papers_norm_sized_from_the_window_batch_dilutes_the_state_by_sqrt8():
    batch, window, state, n_params = 3, 8, 4, 500
    x = torch.zeros(batch, window, state)  # the window batch the paper's code sizes its norm from
    from_x = seminorm_norms.paper_norm(x)
    from_y0 = seminorm_norms.paper_norm(x[:, 0])
    n = batch * state

    # sized from y0 it is the seminorm: max(RMS(y), RMS(a_y)), parameter adjoints left out
    parts = _adjoint_state(batch, state, n_params, a_y=True, params=True)
    flat = torch.cat([p.reshape(-1) for p in parts[1:]])
    assert torch.equal(from_y0(parts), SemiNorm(n)(flat))
    assert from_y0(parts) == SemiNorm(n)(flat[: 2 * n])

    # an error in y only: sized from x, the norm is the correct one / sqrt(8)
    parts = _adjoint_state(batch, state, n_params, a_y=False, params=False)
    assert float(from_x(parts)) == pytest.approx(float(from_y0(parts)) / math.sqrt(8), rel=1e-14)

    # errors in y and a_y, none in a_theta: one RMS over both blocks, spread over 8x the channels
    parts = _adjoint_state(batch, state, n_params, a_y=True, params=False)
    y, a_y = parts[1], parts[2]
    pooled = torch.sqrt((y.pow(2).sum() + a_y.pow(2).sum()) / (window * n))
    assert float(from_x(parts)) == pytest.approx(float(pooled), rel=1e-14)
    assert float(from_x(parts)) <= float(from_y0(parts)) / 2 + 1e-15

    # errors in a_theta only: the correct seminorm ignores them, the x-sized one does not
    parts = _adjoint_state(batch, state, n_params, a_y=False, params=True)
    parts = (parts[0], torch.zeros_like(parts[1]), parts[2], *parts[3:])
    theta = torch.cat([p.reshape(-1) for p in parts[3:]])
    assert float(from_y0(parts)) == 0.0
    first = theta[: (window - 2) * n]  # the "y" slice's share of the parameter adjoints
    second = theta[(window - 2) * n : (2 * window - 2) * n]  # the whole "a_y" slice
    expected = max(first.pow(2).sum() / (window * n), second.pow(2).mean()) ** 0.5
    assert float(from_x(parts)) == pytest.approx(float(expected), rel=1e-14)


def test_the_papers_counter_on_one_solve_and_on_restarted_solves():
    # one backward solve from 1 to 0 with an initial step selection (2 evaluations), then steps of
    # 6 evaluations ending at 0.7, a rejected attempt ending at 0.2, and accepted ends 0.4, 0.0
    c = (0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0)

    def step(t0: float, h: float) -> list[float]:
        return [t0 - ci * h for ci in c]

    one = [1.0, 0.99, *step(1.0, 0.3), *step(0.7, 0.5), *step(0.7, 0.3), *step(0.4, 0.4)]
    accepted, rejected = seminorm_norms.paper_step_count(one)
    assert rejected == [pytest.approx(0.2)] and len(accepted) == 3
    # 7 restarted solves of one accepted step each (8 evaluations each): no rejection
    grid = [0.35 - 0.05 * i for i in range(8)]
    intervals = list(zip(grid[:-1], grid[1:], strict=True))
    seven = [e for a, b in intervals for e in [a, a - 0.001, *step(a, a - b)]]
    accepted, rejected = seminorm_norms.paper_step_count(seven)
    assert (len(accepted), len(rejected)) == (9, 0)
    # 7 restarted solves of two accepted steps each, the second overshooting the interval's end
    # (torchdiffeq steps past it and interpolates): the counter reports rejections that never were
    seven = [e for a, _b in intervals for e in [a, a - 0.001, *step(a, 0.02), *step(a - 0.02, 0.3)]]
    accepted, rejected = seminorm_norms.paper_step_count(seven)
    assert len(seven) == 98 and len(accepted) + len(rejected) == 16 and len(rejected) > 0


def test_norm_comparison_on_a_tiny_model(tiny_runs, tmp_path):
    run = tiny_runs / "acrobot-symoden-adjoint-0"
    out = tmp_path / "norms"
    argv = [str(run), "--fresh-seeds", "1", "--batches", "1", "--batch-size", "8"]
    report = seminorm_norms.main([*argv, "--out", str(out)])
    data = json.loads((out / "seminorm_norms.json").read_text())
    assert data["command"].startswith("python scripts/seminorm_norms.py")
    assert (out / "seminorm_norms.png").stat().st_size > 0
    assert "paper norm from x" in (out / "seminorm_norms.md").read_text()
    rows = report["rows"]
    for model in ("acrobot-symoden-adjoint-0", "fresh default seed 1"):
        by = {r["case"]: r for r in rows if r["model"] == model}
        assert set(by) == set(seminorm_norms.CASES)
        for case, r in by.items():
            assert r["grad_rel_error"] < 1e-2 and r["grad_cosine"] > 0.9999, case
            steps = r["backward_accepted_per_batch"] + r["backward_rejected_per_batch"]
            assert steps >= 7, case  # at least one step per output interval
            if case.startswith("physid"):
                continue
            # torchdiffeq restarts at each of the 7 outputs: f0 and an initial-step trial, then
            # 6 evaluations per step attempt
            assert r["nfe_backward_per_batch"] == 7 * 2 + 6 * steps, case
            samples = r["counter_accepted_per_batch"] + r["counter_rejected_per_batch"]
            assert samples == (r["nfe_backward_per_batch"] - 8) // 6 + 1, case
        # the paper's norm sized from y0 is torchdiffeq's seminorm (a_t = 0 here)
        # (the same steps; the norm's last bits differ, so the step sizes do at rounding level)
        for key in ("nfe_backward_per_batch", "backward_accepted_per_batch"):
            assert by["paper norm from y0"][key] == by["torchdiffeq seminorm"][key]
        assert by["paper norm from y0"]["grad_rel_error"] == pytest.approx(
            by["torchdiffeq seminorm"]["grad_rel_error"], rel=1e-6
        )
        # the diluted norm never takes more steps than the correct one
        assert (
            by["paper norm from x"]["nfe_backward_per_batch"]
            <= by["paper norm from y0"]["nfe_backward_per_batch"]
        )
        # physid carries the step across the outputs: never more backward NFE than torchdiffeq
        assert (
            by["physid adjoint"]["nfe_backward_per_batch"]
            <= by["torchdiffeq default"]["nfe_backward_per_batch"]
        )
    kinds = {(s["kind"], s["case"]) for s in report["summary"]}
    assert ("fresh", "paper norm from x") in kinds and ("trained", "physid adjoint") in kinds
