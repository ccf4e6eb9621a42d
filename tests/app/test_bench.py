"""The benchmark harness: exact memory accounting and a smoke run of `physid bench gradients`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from physid.app.cli import app
from physid.bench import TensorMemory


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
    }
    for r in rows:
        # dopri5 at 1e-5 on dz/dt = z: every method's gradient within 1e-3 of 2 z0 exp(2T)
        assert r["extra"]["rel_error"] < 1e-3
    assert (out / "toy_error_vs_T.png").stat().st_size > 0
    assert "physid aca" in (out / "gradients.md").read_text()


def test_bench_rejects_unknown_problem(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "gradients", "-p", "nope", "-o", str(tmp_path)])
    assert res.exit_code == 1
