"""The benchmark harness: exact memory accounting and a smoke run of `physid bench gradients`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import physid
from physid.app.cli import app
from physid.bench import TensorMemory
from physid.errors import ConfigError


def test_tensor_memory_counts_storages_exactly() -> None:
    with TensorMemory() as mem:
        a = torch.empty(1000, dtype=torch.float64)  # 8000 bytes
        v = a[10:20]  # a view: no new storage
        b = torch.empty(250, dtype=torch.float32)  # 1000 bytes
        assert mem.live == 9000
        mem.mark()
        del a
        assert mem.live == 9000  # the view keeps the storage alive
        del v
        assert mem.live == 1000
        c = b * 2
        assert mem.live == 2000 and mem.window_peak == 9000
        del b, c
    assert mem.live == 0
    assert mem.peak == 9000


def test_bench_gradients_toy_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(
        app,
        ["bench", "gradients", "-p", "toy", "--repeats", "1", "--no-torchdiffeq", "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "gradients.json").read_text())
    rows = data["problems"]["toy"]["rows"]
    assert {r["candidate"] for r in rows} == {
        "physid naive",
        "physid adjoint",
        "physid seminorm",
        "physid aca",
        "physid forward",
    }
    for r in rows:
        # dopri5 at 1e-5 on dz/dt = z: every method's gradient within 1e-3 of 2 z0 exp(2T)
        assert r["extra"]["rel_error"] < 1e-3
    assert (out / "toy_error_vs_T.png").stat().st_size > 0
    assert "physid aca" in (out / "gradients.md").read_text()


def test_bench_rejects_unknown_problem(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "gradients", "-p", "nope", "-o", str(tmp_path)])
    assert res.exit_code == 1


def test_ratios_and_overhead_ratios_by_hand() -> None:
    from physid.app.bench_gradients import add_overhead_ratios, ratios
    from physid.bench import Measurement

    rows = [
        Measurement(
            "physid aca", "physid", seconds=2.0, cpu_seconds=1.0, nfe_forward=60, nfe_backward=40
        ),
        Measurement(
            "physid aca (compiled)",
            "physid",
            seconds=0.5,
            cpu_seconds=0.25,
            nfe_forward=60,
            nfe_backward=40,
        ),
        Measurement(
            "torchdiffeq odeint",
            "torchdiffeq",
            seconds=4.0,
            cpu_seconds=2.0,
            nfe_forward=60,
            nfe_backward=40,
        ),
        # diffrax counts no backward evaluations: 2 + 6 (accepted + rejected) forward, and the
        # estimate adds 6 per accepted step; its own field costs 2 us
        Measurement(
            "diffrax RecursiveCheckpointAdjoint",
            "diffrax",
            seconds=1.0,
            cpu_seconds=0.5,
            nfe_forward=62,
            steps_forward=10,
            extra={"nfe_backward_counted": False, "field_cpu_seconds": 2e-6},
        ),
    ]
    add_overhead_ratios(rows, field_cpu_seconds=1e-4)
    assert rows[0].overhead_ratio == pytest.approx(1.0 / 100 / 1e-4)
    assert rows[1].overhead_ratio == pytest.approx(0.25 / 100 / 1e-4)
    assert rows[3].extra["nfe_estimate"] == 62 + 60
    assert rows[3].overhead_ratio == pytest.approx(0.5 / 122 / 2e-6)
    wall = ratios(rows)
    assert wall["aca / torchdiffeq odeint"] == pytest.approx(0.5)
    assert wall["aca (compiled) / aca"] == pytest.approx(0.25)
    assert wall["aca (compiled) / diffrax RecursiveCheckpointAdjoint"] == pytest.approx(0.5)
    assert ratios(rows, "cpu_seconds")["aca (compiled) / torchdiffeq odeint"] == pytest.approx(
        0.125
    )
    assert "aca / aca" not in wall and "aca (compiled) / aca (compiled)" not in wall


def test_the_timed_problems_are_the_ones_documented() -> None:
    """One definition for `physid bench gradients` and scripts/bench_fast_path.py: the
    three-body problem's loss vanishes at the true masses and its reference gradient (tight
    ACA) matches the eager default solve's to the solve's accuracy."""
    from physid.envs.three_body import DEFAULT_MASSES

    from physid.app.bench_gradients import build_problem

    p = build_problem("three-body")
    assert p.y0.shape == (18,) and p.t.shape == (1000,) and p.y0.dtype == torch.float64
    model = p.make_model()
    with torch.no_grad():
        model.masses.copy_(torch.tensor(DEFAULT_MASSES, dtype=torch.float64))
        truth_loss = p.loss_fn(physid.odeint(model, p.y0, p.t, rtol=1e-10, atol=1e-10))
    assert float(truth_loss) < 1e-15
    model = p.make_model()
    ys = physid.odeint(model, p.y0, p.t, method="aca", rtol=1e-9, atol=1e-9)
    (g,) = torch.autograd.grad(p.loss_fn(ys), list(model.parameters()))
    assert p.reference is not None
    assert float((g - p.reference[0]).norm() / p.reference[0].norm()) < 1e-4
    node = build_problem("node", reference=False)
    assert node.y0.shape == (256, 2) and node.y0.dtype == torch.float32
    assert node.reference is None and node.jax_kind == "mlp"
    with pytest.raises(ConfigError, match="unknown timed benchmark problem"):
        build_problem("toy")
