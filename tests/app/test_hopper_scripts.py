"""The hopper table scripts on the tiny preset: ``--collect`` tabulates finished runs exactly as
the fitting call did, and ``reproduce_table4.py --warm-from-epoch`` continues every method from
its cell's ACA snapshot at the learning-rate floor (the warm-started Table 4 of
docs/reproduce-hopper.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from physid.models.experiments.hopper import snapshot_test_mse

from physid.errors import DataError
from physid.runs import RunDir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import hopper_vs_baselines  # noqa: E402
import reproduce_table4  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("hopper_scripts")
    common = ["--preset", "tiny", "--observed", "0.5", "--seeds", "0", "--no-progress"]
    common += ["--runs-dir", str(base / "runs"), "--data-dir", str(base / "data")]
    fit = [*common, "--snapshots", "2", "--out", str(base / "fit")]
    assert hopper_vs_baselines.main(fit) == 0
    return {"base": base, "common": common}


def test_collect_tabulates_the_finished_runs_as_the_fit_did(tiny) -> None:
    base: Path = tiny["base"]
    common = tiny["common"]
    assert hopper_vs_baselines.main([*common, "--collect", "--out", str(base / "collect")]) == 0
    fitted = json.loads((base / "fit" / "table.json").read_text())
    collected = json.loads((base / "collect" / "table.json").read_text())
    assert collected["aggregate"] == fitted["aggregate"]
    assert (base / "collect" / "table.md").read_text() == (base / "fit" / "table.md").read_text()
    run = RunDir(fitted["runs"][0]["run_dir"])
    assert fitted["runs"][0]["test_mse"] == run.read_summary().test_mse
    # a fraction never fitted is refused, nothing is fitted for it
    with pytest.raises(DataError, match="no summary.json"):
        hopper_vs_baselines.main(
            [*common, "--observed", "0.2", "--collect", "--out", str(base / "x")]
        )
    assert not (base / "runs" / "hopper-latent-ode-tiny-obs20-aca-0").exists()


def test_a_snapshot_is_scored_as_the_run_scores_its_last_model(tiny) -> None:
    source = tiny["base"] / "runs" / "hopper-latent-ode-tiny-obs50-aca-0"
    last = source / "snapshots" / "epoch_0001.pt"  # the tiny preset's last epoch
    summary = RunDir(source).read_summary()
    assert summary.epochs_completed == 2
    assert snapshot_test_mse(source, last) == pytest.approx(summary.test_mse, rel=1e-9)
    # the initial model scores differently (the snapshot is really loaded)
    initial = snapshot_test_mse(source, source / "snapshots" / "initial.pt")
    assert initial != pytest.approx(summary.test_mse, rel=1e-3)


def test_warm_started_table4_continues_every_method_from_the_aca_snapshot(tiny, capsys) -> None:
    base: Path = tiny["base"]
    common = tiny["common"]
    warm = [*common, "--warm-from-epoch", "1", "--warm-epochs", "1", "--methods", "naive,aca"]
    assert reproduce_table4.main([*warm, "--out", str(base / "t4")]) == 0
    source = base / "runs" / "hopper-latent-ode-tiny-obs50-aca-0"
    snapshot = source / "snapshots" / "epoch_0000.pt"
    assert snapshot.exists()
    start = snapshot_test_mse(source, snapshot)
    table = json.loads((base / "t4" / "table4.json").read_text())
    for method in ("naive", "aca"):
        run = RunDir(base / "runs" / "warm" / f"warm-obs50-{method}-s0")
        config = json.loads((run.path / "config.json").read_text())
        assert config["init_from"] == str(snapshot)
        assert config["method"] == method
        assert (config["lr"], config["lr_decay"], config["kl_wait"]) == (1e-3, 1.0, 0)
        assert config["epochs"] == 1
        (rec,) = [r for r in table["runs"] if r["method"] == method]
        assert rec["test_mse"] == run.read_summary().test_mse
        # every method's row names the shared start and its score
        assert rec["start_snapshot"] == str(snapshot)
        assert rec["start_test_mse_e2"] == pytest.approx(start / 1e-2, rel=1e-12)
    # the paired table: aca's change against naive (the first method; no adjoint here)
    by_method = {r["method"]: r["test_mse_e2"] for r in table["runs"]}
    change = 100 * (by_method["aca"] / by_method["naive"] - 1)
    md = (base / "t4" / "table4.md").read_text()
    assert "| aca vs naive |" in md
    assert f"| 50% | 0 | {start / 1e-2:.4f} | {by_method['naive']:.4f} |" in md
    assert md.rstrip().endswith(f"| {change:+.2f}% |")
    # --collect gives the same table without fitting
    assert reproduce_table4.main([*warm, "--collect", "--out", str(base / "t4c")]) == 0
    assert (base / "t4c" / "table4.md").read_text() == (base / "t4" / "table4.md").read_text()
    # the control: ACA again from the same snapshot at another tolerance, against ACA
    ctl = [*warm, "--control-rtol", "0.002", "--out", str(base / "t4ctl")]
    assert reproduce_table4.main(ctl) == 0
    run = RunDir(base / "runs" / "warm" / "warm-obs50-aca-rtol0.002-s0")
    config = json.loads((run.path / "config.json").read_text())
    assert (config["method"], config["rtol"], config["init_from"]) == ("aca", 2e-3, str(snapshot))
    ctl_table = json.loads((base / "t4ctl" / "table4.json").read_text())
    mse = {r["method"]: r["test_mse_e2"] for r in ctl_table["runs"]}
    assert mse["aca"] == by_method["aca"]  # the finished runs are only re-evaluated
    assert mse["aca@rtol0.002"] == run.read_summary().test_mse / 1e-2
    row = (base / "t4ctl" / "table4.md").read_text().rstrip().splitlines()[-1]
    assert row.endswith(f"| {100 * (mse['aca@rtol0.002'] / mse['aca'] - 1):+.2f}% |")
    # a control needs warm starts: one sentence, exit 1, nothing written
    no_warm = [*common, "--control-rtol", "0.002", "--out", str(base / "c")]
    assert reproduce_table4.main(no_warm) == 1
    assert "--control-rtol needs --warm-from-epoch" in capsys.readouterr().err
    assert not (base / "c").exists()
    # a snapshot the source fit never saved is named
    missing = [*common, "--warm-from-epoch", "7", "--out", str(base / "t4x")]
    assert reproduce_table4.main(missing) == 1
    assert "epoch_0006.pt does not exist" in capsys.readouterr().err


def test_the_paired_table_summarises_the_changes_over_cells() -> None:
    def rec(s: float, seed: int, method: str, mse: float) -> dict[str, Any]:
        return {"observed": s, "seed": seed, "method": method, "test_mse_e2": mse}

    start = {"start_test_mse_e2": 0.2}
    records = [
        {**rec(0.1, 0, "adjoint", 0.100), **start},
        {**rec(0.1, 0, "naive", 0.101), **start},
        {**rec(0.5, 1, "adjoint", 0.200), **start},
        {**rec(0.5, 1, "naive", 0.198), **start},
    ]
    md = reproduce_table4.paired_markdown(records, ["naive", "adjoint"])
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0] == "| observed | seed | snapshot | naive | adjoint | naive vs adjoint |"
    assert rows[2] == "| 10% | 0 | 0.2000 | 0.1010 | 0.1000 | +1.00% |"
    assert rows[3] == "| 50% | 1 | 0.2000 | 0.1980 | 0.2000 | -1.00% |"
    # mean 0 of +1% and -1%, sample std √2, above in one cell of two
    assert rows[4] == "| all | 2 cells |  |  |  | +0.00% ± 1.41, above in 1/2 |"
