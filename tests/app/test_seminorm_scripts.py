"""The seminorm scripts on a tiny acrobot problem: the numbers they report obey the adjoint's
invariants (at least one backward step per output interval; the seminorm never takes more
backward steps than the block norm on the same problem; every gradient close to ACA at a tight
tolerance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from physid.runs import RunDir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce_seminorm  # noqa: E402
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
