"""Interrupting a real fit (SIGINT, SIGTERM): exit code 130, one line saying how to resume, the
interruption recorded in summary.json, and a rerun that ends with the same numbers as a fit that
was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIT = [
    "fit",
    "three-body",
    "--method",
    "aca",
    "--rtol",
    "1e-5",
    "--atol",
    "1e-5",
    "--no-progress",
    "--no-plots",
    "--no-compile",
]


def _physid(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "physid", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(predicate, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the fit ended early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the fit")
        time.sleep(0.05)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt-data")
    out = root / "tb.npz"
    proc = _physid(["simulate", "three-body", "--out", str(out), "--n-train", "200"], root)
    assert proc.wait() == 0
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_fit_exits_130_and_resumes_to_the_same_numbers(
    sig: signal.Signals, data: Path, tmp_path: Path
) -> None:
    args = [*FIT, "--data", str(data), "--epochs", "6", "--runs-dir", "runs"]
    proc = _physid(args, tmp_path)
    run = tmp_path / "runs" / "three-body-ode-aca-0"
    _wait_for(lambda: _lines(run / "metrics.jsonl") >= 2, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], err
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True and 2 <= summary["epochs_completed"] < 6

    rerun = _physid(args, tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["interrupted"] is False and resumed["epochs_completed"] == 6

    straight = _physid(
        [*FIT, "--data", str(data), "--epochs", "6", "--runs-dir", "straight"], tmp_path
    )
    assert straight.wait(timeout=300) == 0
    clean = json.loads(
        (tmp_path / "straight" / "three-body-ode-aca-0" / "summary.json").read_text()
    )
    assert resumed["masses"] == pytest.approx(clean["masses"], rel=1e-12)
    assert resumed["test_mse"] == pytest.approx(clean["test_mse"], rel=1e-9)


def test_an_interrupt_before_the_first_epoch_keeps_nothing(data: Path, tmp_path: Path) -> None:
    # the full 1000-point grid at a tight tolerance: epoch 0 takes long enough to interrupt
    args = [
        "fit",
        "three-body",
        "--method",
        "aca",
        "--epochs",
        "3",
        "--no-progress",
        "--no-compile",
        "--runs-dir",
        "runs",
    ]
    proc = _physid(args, tmp_path)
    run = tmp_path / "runs" / "three-body-ode-aca-0"
    _wait_for(lambda: (run / "config.json").exists(), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "nothing to keep yet" in err and "epoch -1" not in err
    assert not (run / "model.pt").exists()


@pytest.mark.slow  # ~40 s; test_three_body_lm.py resumes an interrupted LM fit in-process
def test_an_interrupted_lm_fit_resumes_to_the_same_numbers(data: Path, tmp_path: Path) -> None:
    """``--optimizer lm`` (the known-form default): Ctrl-C after two iterations keeps the LM
    state in the checkpoint; the rerun continues it and ends where an uninterrupted fit ends."""
    lm = [a for a in FIT if a not in ("--method", "aca")]
    args = [*lm, "--optimizer", "lm", "--data", str(data), "--runs-dir", "runs"]
    proc = _physid(args, tmp_path)
    run = tmp_path / "runs" / "three-body-ode-lm-0"
    _wait_for(lambda: _lines(run / "metrics.jsonl") >= 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], err
    summary = json.loads((run / "summary.json").read_text())
    done = summary["epochs_completed"]
    assert summary["interrupted"] is True and done >= 2

    rerun = _physid(args, tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["interrupted"] is False and resumed["epochs_completed"] > done

    straight = _physid([*lm, "--data", str(data), "--runs-dir", "straight"], tmp_path)
    assert straight.wait(timeout=300) == 0
    clean = json.loads((tmp_path / "straight" / "three-body-ode-lm-0" / "summary.json").read_text())
    assert resumed["epochs_completed"] == clean["epochs_completed"]
    assert resumed["lm_status"] == clean["lm_status"]
    assert resumed["masses"] == pytest.approx(clean["masses"], rel=1e-12)
    assert resumed["std_errors"] == pytest.approx(clean["std_errors"], rel=1e-9)
    assert resumed["test_mse"] == pytest.approx(clean["test_mse"], rel=1e-9)
