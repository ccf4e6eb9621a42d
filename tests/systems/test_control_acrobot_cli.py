"""``physid control acrobot`` as a user types it (issue 16): no ``--run`` uses the newest
finished acrobot run under ``--runs-dir``, and where there is none it fits the default model
first. Everything goes through the command line; the automatic fit is made tiny with the
command's own ``--fit-*`` options, not a mock."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from physid.app.cli import app
from physid.runs import RunDir

SWING = ["--steps", "4", "--no-video"]
TINY_FIT = ["--epochs", "1", "--n-per-control", "2", "--max-batches", "1", "--no-progress"]


def _control(*args: str) -> tuple[dict, str]:
    """Run ``physid control acrobot ARGS``; its JSON record (the only line on stdout) and
    stderr."""
    res = CliRunner().invoke(app, ["control", "acrobot", *args, *SWING])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0]), res.stderr


def _used(run: Path, out: dict) -> dict:
    """The control record written into ``run/control``, checked against the printed one."""
    assert out["out"] == str(run / "control")
    record = json.loads((run / "control" / "control.json").read_text())
    assert record["controller"] == "learned" and record["run"] == str(run)
    assert record["final_measure"] == out["final_measure"]
    return record


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished tiny acrobot runs, ``first`` then ``second``, fitted through the CLI."""
    base = tmp_path_factory.mktemp("control-runs")
    for name, method in (("first", "aca"), ("second", "adjoint")):
        args = ["fit", "acrobot", "--method", method, "--run-name", name]
        args += ["--runs-dir", str(base / "runs"), "--data-dir", str(base / "data"), *TINY_FIT]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    return base / "runs"


def test_no_run_in_an_empty_folder_fits_the_default_model_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the fit caches its data set under ./data, as a user's would
    fit = ["--fit-epochs", "1", "--fit-n-per-control", "2", "--fit-max-batches", "1"]
    out, err = _control("--runs-dir", "runs", *fit, "--no-progress")
    run = Path("runs") / "acrobot-symoden-adjoint-0"
    assert "fitting the default acrobot model first" in err and str(run) in err
    assert RunDir(run).is_finished()
    config = json.loads((run / "config.json").read_text())
    assert (config["method"], config["preset"], config["epochs"]) == ("adjoint", "default", 1)
    assert config["n_per_control"] == 2 and config["max_batches"] == 1
    assert len(RunDir(run).read_metrics()) == 1
    _used(run, out)
    assert (tmp_path / "data" / "acrobot-n2-seed0.npz").exists()

    # the second time the run is there: it is used, nothing is fitted again
    out, err = _control("--runs-dir", "runs", *fit)
    assert "using the newest finished acrobot run" in err and "fitting" not in err
    assert [r.name for r in RunDir.find("runs")] == [run.name]
    assert len(RunDir(run).read_metrics()) == 1
    _used(run, out)


def test_one_run_is_used(two_runs: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(two_runs / "first", runs / "first")
    out, err = _control("--runs-dir", str(runs))
    assert f"using the newest finished acrobot run, {runs / 'first'}" in err
    _used(runs / "first", out)
    assert sorted(p.name for p in runs.iterdir()) == ["first"]  # nothing was fitted


def test_of_two_runs_the_newest_wins(two_runs: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)  # keeps the times: "second" finished last
    out, err = _control("--runs-dir", str(runs))
    assert f"run, {runs / 'second'}" in err
    record = _used(runs / "second", out)
    assert record["method"] == "adjoint"

    # newest by when the summary was written, not by name: make "first" the newer one
    later = (runs / "second" / "summary.json").stat().st_mtime + 60
    os.utime(runs / "first" / "summary.json", (later, later))
    out, err = _control("--runs-dir", str(runs))
    assert f"run, {runs / 'first'}" in err
    assert _used(runs / "first", out)["method"] == "aca"


def test_unfinished_and_other_systems_runs_are_not_used(
    two_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted acrobot run and a three-body run do not count: with only those, the
    default model is fitted (beside them)."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    shutil.copytree(two_runs / "first", runs / "interrupted")
    summary = json.loads((runs / "interrupted" / "summary.json").read_text())
    (runs / "interrupted" / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    (runs / "three-body").mkdir()
    (runs / "three-body" / "config.json").write_text(json.dumps({"system": "three-body"}))
    (runs / "three-body" / "summary.json").write_text(
        json.dumps({"system": "three-body", "model": "ode", "seed": 0})
    )
    fit = ["--fit-epochs", "1", "--fit-n-per-control", "2", "--fit-max-batches", "1"]
    out, err = _control("--runs-dir", str(runs), *fit, "--no-progress")
    assert "fitting the default acrobot model first" in err
    _used(runs / "acrobot-symoden-adjoint-0", out)


def test_run_and_oracle_keep_their_meaning(two_runs: Path, tmp_path: Path) -> None:
    out, err = _control("--run", str(two_runs / "first"), "--out", str(tmp_path / "ctl"))
    assert "newest" not in err and "fitting" not in err
    record = json.loads((tmp_path / "ctl" / "control.json").read_text())
    assert record["run"] == str(two_runs / "first") and out["out"] == str(tmp_path / "ctl")
    out, _ = _control("--oracle", "--runs-dir", str(tmp_path / "runs"))
    record = json.loads((tmp_path / "runs" / "acrobot-oracle-control" / "control.json").read_text())
    assert record["controller"] == "oracle"
