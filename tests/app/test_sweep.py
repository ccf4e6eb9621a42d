"""physid sweep: grids, jobs as processes, rerun/skip, failures, interrupts, aggregation, Ray,
the CLI.

The fits are tiny (three-body ``ode``, 40 training points, 1 epoch, rtol 1e-5): each job is a
Python process of a few seconds, most of it importing torch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from physid.app import registry, sweep
from physid.app.cli import app
from physid.app.sweep import process
from physid.errors import ConfigError, DataError, MissingDependencyError
from physid.runs import RunSummary

runner = CliRunner()
TIMING_KEYS = {"seconds", "wall_seconds", "train_seconds"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from physid.models.experiments import three_body

    path = tmp_path_factory.mktemp("data") / "three-body-tiny.npz"
    return three_body.simulate(path, n_train=40, n_test=80, rtol=1e-9, atol=1e-9)


def _options(data: Path, **extra) -> dict:
    return {
        "epochs": 1,
        "rtol": 1e-5,
        "atol": 1e-5,
        "data": str(data),
        "plots": False,
        "compile": False,
        **extra,
    }


def _grid(data: Path, methods=("aca", "naive"), **axes) -> sweep.Grid:
    return sweep.make_grid(
        ["three-body"], methods=list(methods), seeds=[0], axes=axes, options=_options(data)
    )


def _numbers(summary: dict) -> dict:
    return {
        k: v
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in TIMING_KEYS
    }


@pytest.fixture(scope="module")
def local_sweep(tiny_data, tmp_path_factory):
    """The aca + naive grid run once on this machine with 2 workers."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    result = sweep.run_sweep(_grid(tiny_data), out, workers=2, progress=False)
    return out, result


# ---- grids ------------------------------------------------------------------------------------


def test_expand_names_every_job_and_places_its_run(tmp_path, tiny_data):
    grid = sweep.make_grid(
        ["three-body"],
        models=["ode", "node"],
        methods=["aca", "adjoint"],
        seeds=[0, 1],
        axes={"rtol": [1e-5, 1e-6]},
        options=_options(tiny_data),
    )
    jobs = sweep.expand(grid, tmp_path)
    assert len(jobs) == 2 * 2 * 2 * 2
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    assert "three-body-ode-aca-rtol1e-05-0" in names
    job = jobs[0]
    assert job.cell == {"system": "three-body", "model": "ode", "method": "aca", "rtol": 1e-5}
    assert job.config["run_name"] == job.name
    assert Path(job.config["runs_dir"]) == tmp_path.resolve() / "runs"
    assert job.config["progress"] is False and job.config["threads"] == 1


@pytest.mark.parametrize("system", registry.names())
def test_every_system_expands_with_its_defaults(tmp_path, system):
    """Model, method and seed default to the system's Config defaults; every job is placed
    with runs_dir/run_name and its options build the system's Config."""
    config_cls = registry.get(system).Config
    defaults = config_cls()
    jobs = sweep.expand(sweep.make_grid([system], methods=["aca"], seeds=[3]), tmp_path)
    assert [j.name for j in jobs] == [f"{system}-{defaults.model}-aca-3"]
    job = jobs[0]
    assert job.config["model"] == defaults.model and job.config["run_name"] == job.name
    assert Path(job.config["runs_dir"]) / job.name == tmp_path.resolve() / "runs" / job.name
    assert config_cls.from_dict(job.config).run_dir.path == Path(job.run_dir)


def test_a_default_method_resolves_per_job(tmp_path):
    """Without a methods axis three-body's method "auto" resolves per model (forward and
    Levenberg-Marquardt for the known-form model, aca for a neural ODE): the job's name, cell
    and options say what it runs."""
    jobs = sweep.expand(sweep.make_grid(["three-body"], models=["ode", "node"]), tmp_path)
    assert [j.name for j in jobs] == ["three-body-ode-forward-0", "three-body-node-aca-0"]
    assert [j.cell["method"] for j in jobs] == ["forward", "aca"]
    assert [j.config["method"] for j in jobs] == ["forward", "aca"]
    assert all(j.config["run_name"] == j.name for j in jobs)


def test_a_model_the_system_does_not_fit(tmp_path):
    # no methods axis: the job takes the Config's default method (three-body's is "auto")
    message = "job three-body-gru-auto-0: model must be one of ode, .*, got 'gru'"
    with pytest.raises(ConfigError, match=message):
        sweep.expand(sweep.make_grid(["three-body"], models=["gru"]), tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochz": 2}, "three-body has no option 'epochz' \\(its options: .*epochs"),
        ({"runs_dir": "x"}, "the sweep sets 'runs_dir' itself"),
        ({"solver": "nope"}, "solver must be one of"),
    ],
)
def test_bad_options_are_one_clear_config_error(tmp_path, options, message):
    grid = sweep.make_grid(["three-body"], options=options)
    with pytest.raises(ConfigError, match=message):
        sweep.expand(grid, tmp_path)


def test_unknown_system(tmp_path):
    with pytest.raises(ConfigError, match="physid knows no system 'four-body'"):
        sweep.expand(sweep.make_grid(["four-body"]), tmp_path)


def test_grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(
        'out = "sweeps/x"\n'
        "[grid]\n"
        'systems = ["three-body", "hopper"]\n'
        'methods = ["aca", "adjoint"]\n'
        "seeds = [0, 1]\n"
        "[grid.hopper]\n"
        'methods = ["aca"]\n'
        "observed = [0.1, 0.5]\n"
        "[options]\n"
        "epochs = 3\n"
        "[options.three-body]\n"
        'model = "node"\n'
        "rtol = 1e-5\n"
    )
    grid = sweep.load_grid(path)
    assert grid.out == "sweeps/x"
    jobs = sweep.expand(grid, tmp_path / "out")
    tb = [j for j in jobs if j.system == "three-body"]
    hop = [j for j in jobs if j.system == "hopper"]
    assert len(tb) == 4 and len(hop) == 4
    assert all(j.config["model"] == "node" and j.config["rtol"] == 1e-5 for j in tb)
    assert {j.cell["observed"] for j in hop} == {0.1, 0.5}
    assert all(j.config["method"] == "aca" and j.config["epochs"] == 3 for j in hop)

    # Options given beside the file win over its tables, per-system ones included.
    grid = sweep.make_grid([], methods=["naive"], options={"rtol": 1e-6}, base=grid)
    jobs = sweep.expand(grid, tmp_path / "out")
    assert {j.config["method"] for j in jobs} == {"naive"}
    assert {j.config["rtol"] for j in jobs if j.system == "three-body"} == {1e-6}

    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nsystems = ["three-body"]\nmethods = "aca"\n')
    with pytest.raises(ConfigError, match="'methods' must be a list of values"):
        sweep.load_grid(bad)
    bad.write_text('[grid]\nsystems = ["three-body"]\n[sweep]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown top-level key"):
        sweep.load_grid(bad)


def test_example_grids_expand(tmp_path):
    grids = sorted((Path(__file__).resolve().parents[2] / "scripts" / "grids").glob("*.toml"))
    assert grids
    for path in grids:
        assert sweep.expand(sweep.load_grid(path), tmp_path / path.stem)


# ---- running ----------------------------------------------------------------------------------


def test_local_sweep_runs_every_job_and_aggregates(local_sweep):
    out, result = local_sweep
    assert result.backend == "local"
    assert result.failed == [] and result.count("done") == 2
    record = json.loads((out / "sweep.json").read_text())
    assert record["state"] == "finished" and record["counts"]["done"] == 2
    summaries = {}
    for job in result.jobs:
        run = Path(job.run_dir)
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done" and status["error"] is None
        assert (run / "model.pt").is_file() and (run / "job.log").is_file()
        summaries[job.cell["method"]] = json.loads((run / "summary.json").read_text())
    # ACA and naive: the same forward solve and nearly the same gradient (ACA holds the step
    # sizes fixed), so nearly the same fit after one step.
    assert summaries["aca"]["test_mse"] == pytest.approx(summaries["naive"]["test_mse"], rel=1e-5)
    agg = json.loads((out / "aggregate.json").read_text())
    assert {c["cell"]["method"] for c in agg["cells"]} == {"aca", "naive"}
    for c in agg["cells"]:
        s = summaries[c["cell"]["method"]]
        assert c["n"] == 1
        assert c["metrics"]["test_mse"]["mean"] == s["test_mse"]
        assert c["metrics"]["test_mse"]["std"] is None
        assert c["metrics"]["nfe_forward"]["mean"] == s["nfe_forward"]
    md = (out / "aggregate.md").read_text()
    assert md.startswith("| system | model | method | n | test_mse")
    assert (out / "plots" / "three-body-ode-test_mse.png").is_file()
    assert (out / "plots" / "three-body-ode-nfe.png").is_file()


def test_rerun_skips_done_jobs_and_reruns_failed_ones(local_sweep, tiny_data):
    out, _ = local_sweep
    runs = out / "runs"
    mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}
    again = sweep.run_sweep(_grid(tiny_data), out, workers=2, progress=False)
    assert all(o["state"] == "done" and o["ran"] is False for o in again.outcomes.values())
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")} == mtimes

    # A job left "failed" (or "running": interrupted) runs again; the other is still skipped.
    status_path = runs / "three-body-ode-naive-0" / "status.json"
    status = json.loads(status_path.read_text())
    status.update(state="failed", error="injected")
    status_path.write_text(json.dumps(status))
    third = sweep.run_sweep(_grid(tiny_data), out, workers=2, progress=False)
    assert third.outcomes["three-body-ode-naive-0"]["ran"] is True
    assert third.outcomes["three-body-ode-aca-0"]["ran"] is False
    assert third.failed == []
    naive, aca = runs / "three-body-ode-naive-0", runs / "three-body-ode-aca-0"
    assert (naive / "summary.json").stat().st_mtime_ns > mtimes[naive / "summary.json"]
    assert (aca / "summary.json").stat().st_mtime_ns == mtimes[aca / "summary.json"]
    assert json.loads(status_path.read_text())["attempt"] == 2


def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path, tiny_data):
    # The data set holds one system: trajectory 5 fails inside fit, trajectory 0 trains.
    grid = _grid(tiny_data, methods=["aca"], trajectory=[0, 5])
    result = sweep.run_sweep(grid, tmp_path / "s", workers=2, progress=False)
    good, bad = "three-body-ode-aca-trajectory0-0", "three-body-ode-aca-trajectory5-0"
    assert result.outcomes[good]["state"] == "done"
    assert result.outcomes[bad]["state"] == "failed"
    assert result.failed == [bad]
    message = "trajectory must be in [0, 1), got 5."
    assert result.outcomes[bad]["error"] == message
    status = json.loads((tmp_path / "s" / "runs" / bad / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message
    assert status["error_type"] == "ConfigError"
    record = json.loads((tmp_path / "s" / "sweep.json").read_text())
    by_name = {j["name"]: j for j in record["jobs"]}
    assert by_name[bad]["error"] == message and record["counts"]["failed"] == 1
    agg = json.loads((tmp_path / "s" / "aggregate.json").read_text())
    assert [c["cell"]["trajectory"] for c in agg["cells"]] == [0]


def test_a_crashing_job_process_is_recorded(tmp_path, tiny_data, monkeypatch):
    scripts = {
        "three-body-ode-aca-0": "print('about to crash'); raise SystemExit(3)",
        "three-body-ode-naive-0": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    }

    def command(job_file: Path) -> list[str]:
        return [sys.executable, "-c", scripts[job_file.parent.name]]

    monkeypatch.setattr(process, "job_command", command)
    result = sweep.run_sweep(_grid(tiny_data), tmp_path / "s", workers=2, progress=False)
    crashed = result.outcomes["three-body-ode-aca-0"]
    assert crashed["state"] == "failed"
    assert crashed["error"] == "the job process exited with code 3: about to crash"
    killed = result.outcomes["three-body-ode-naive-0"]
    assert killed["state"] == "failed" and "signal SIGKILL" in killed["error"]
    assert result.aggregate is None


def test_an_interrupted_sweep_stops_its_jobs_and_resumes_them(tmp_path, tiny_data):
    """SIGTERM (or Ctrl-C) stops the running jobs and records them as interrupted; the rerun
    resumes from the checkpoint (here with fewer epochs: it only evaluates)."""
    grid = sweep.make_grid(
        ["three-body"], methods=["aca"], options=_options(tiny_data, epochs=10_000)
    )
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep.run_sweep(grid, tmp_path, workers=1, progress=False)
    finally:
        timer.cancel()
    run = tmp_path / "runs" / "three-body-ode-aca-0"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGTERM" in status["error"]
    assert json.loads((tmp_path / "sweep.json").read_text())["state"] == "interrupted"
    assert not process._LIVE

    metrics = run / "metrics.jsonl"  # none yet if it was stopped during its first epoch
    done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    grid = sweep.make_grid(["three-body"], methods=["aca"], options=_options(tiny_data, epochs=1))
    again = sweep.run_sweep(grid, tmp_path, workers=1, progress=False)
    assert again.outcomes["three-body-ode-aca-0"]["state"] == "done"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == max(done, 1)
    assert json.loads((run / "status.json").read_text())["attempt"] == 2


def _interrupt_job_when(run: Path, sig: signal.Signals, epochs: int, sweep_thread) -> None:
    """Send ``sig`` to the job process of ``run`` once ``epochs`` epochs are recorded."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sweep_thread.is_alive():
        status = sweep.read_status(run) or {}
        metrics = run / "metrics.jsonl"
        done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        if status.get("state") == "running" and status.get("pid") and done >= epochs:
            os.kill(status["pid"], sig)
            return
        time.sleep(0.02)
    raise AssertionError(f"the job never reached {epochs} epochs")


def _sweep_in_thread(grid, out) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(
        target=lambda: box.update(result=sweep.run_sweep(grid, out, workers=1, progress=False))
    )
    thread.start()
    return thread, box


def test_a_job_interrupted_by_sigint_or_sigterm_is_resumed_to_the_same_numbers(tmp_path, tiny_data):
    """Issue 13: SIGINT or SIGTERM to a job's process records it as interrupted (never done),
    with the fit's summary saying so; each rerun of the sweep resumes it from its checkpoint,
    and the finished run equals an uninterrupted one."""
    epochs = 8
    grid = sweep.make_grid(
        ["three-body"], methods=["aca"], seeds=[0], options=_options(tiny_data, epochs=epochs)
    )
    name = "three-body-ode-aca-0"
    reference = sweep.run_sweep(grid, tmp_path / "reference", workers=1, progress=False)
    assert reference.outcomes[name]["state"] == "done"
    expected = json.loads((tmp_path / "reference" / "runs" / name / "summary.json").read_text())
    assert expected["epochs_completed"] == epochs and expected["interrupted"] is False

    out = tmp_path / "interrupted"
    run = out / "runs" / name
    for attempt, (sig, after) in enumerate(((signal.SIGINT, 2), (signal.SIGTERM, 4)), 1):
        thread, box = _sweep_in_thread(grid, out)
        _interrupt_job_when(run, sig, after, thread)
        thread.join(timeout=300)
        result = box["result"]
        assert result.outcomes[name]["state"] == "interrupted" and result.failed == [name]
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "interrupted" and status["attempt"] == attempt
        assert f"interrupted by {sig.name}" in status["error"]
        assert "run the sweep again to resume it" in status["error"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["interrupted"] is True
        assert after <= summary["epochs_completed"] < epochs
        record = json.loads((out / "sweep.json").read_text())
        assert record["counts"]["interrupted"] == 1 and record["counts"]["done"] == 0
        assert result.aggregate is None  # an interrupted run is not aggregated

    finished = sweep.run_sweep(grid, out, workers=1, progress=False)
    assert finished.outcomes[name]["state"] == "done" and finished.outcomes[name]["ran"]
    assert json.loads((run / "status.json").read_text())["attempt"] == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["epochs_completed"] == epochs
    assert summary["test_mse"] == expected["test_mse"]
    assert summary["masses"] == expected["masses"]
    assert _numbers(summary) == _numbers(expected)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs


def test_aggregate_equals_a_hand_computation(tmp_path):
    values = {
        ("aca", 0): 0.5,
        ("aca", 1): 0.7,
        ("aca", 2): 1.2,
        ("naive", 0): 2.0,
        ("naive", 1): 4.0,
    }
    for (method, seed), mse in values.items():
        run = tmp_path / "runs" / f"three-body-ode-{method}-{seed}"
        run.mkdir(parents=True)
        cfg = {"system": "three-body", "model": "ode", "method": method, "seed": seed}
        (run / "config.json").write_text(json.dumps(cfg))
        nfe = 100 * (seed + 1)
        summary = RunSummary(
            **cfg, test_mse=mse, nfe_forward=nfe, extras={"masses": [1, 2], "ok": True}
        )
        (run / "summary.json").write_text(json.dumps(summary.to_dict()))
    interrupted = tmp_path / "runs" / "three-body-ode-aca-9"
    interrupted.mkdir()
    cfg = {"system": "three-body", "model": "ode", "method": "aca", "seed": 9}
    (interrupted / "config.json").write_text(json.dumps(cfg))
    summary = RunSummary(**cfg, test_mse=50.0, interrupted=True)
    (interrupted / "summary.json").write_text(json.dumps(summary.to_dict()))
    failed = tmp_path / "runs" / "three-body-ode-naive-2"
    failed.mkdir()
    (failed / "config.json").write_text(json.dumps({"system": "three-body", "method": "naive"}))
    (failed / "summary.json").write_text(json.dumps({"test_mse": 99.0}))
    (failed / "status.json").write_text(json.dumps({"state": "failed"}))

    agg = sweep.aggregate(tmp_path)
    cells = {c["cell"]["method"]: c for c in agg["cells"]}
    aca = np.array([0.5, 0.7, 1.2])
    assert cells["aca"]["n"] == 3 and cells["naive"]["n"] == 2
    assert cells["aca"]["metrics"]["test_mse"]["mean"] == pytest.approx(aca.mean(), rel=1e-15)
    assert cells["aca"]["metrics"]["test_mse"]["std"] == pytest.approx(aca.std(ddof=1), rel=1e-14)
    assert cells["naive"]["metrics"]["test_mse"]["mean"] == 3.0
    assert cells["naive"]["metrics"]["test_mse"]["std"] == pytest.approx(math.sqrt(2.0))
    assert cells["aca"]["metrics"]["nfe_forward"]["mean"] == 200.0
    assert "masses" not in cells["aca"]["metrics"] and "ok" not in cells["aca"]["metrics"]
    # Every summary has the fixed keys: seconds, nfe_backward and epochs_completed (0 here).
    md = (tmp_path / "aggregate.md").read_text().splitlines()
    assert md[0] == (
        "| system | model | method | n | test_mse | seconds | nfe_forward | nfe_backward "
        "| epochs_completed |"
    )
    assert (
        md[2] == "| three-body | ode | aca | 3 | 0.8 ± 0.36 | 0 ± 0 | 200 ± 100 | 0 ± 0 | 0 ± 0 |"
    )
    assert md[3] == "| three-body | ode | naive | 2 | 3 ± 1.4 | 0 ± 0 | 150 ± 71 | 0 ± 0 | 0 ± 0 |"
    with pytest.raises(DataError, match="no finished run directory"):
        sweep.aggregate(tmp_path / "runs" / "three-body-ode-naive-2")


def test_ray_missing_names_the_extra(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'physid\[ray\]'"):
        sweep.run_sweep(_grid(tiny_data), tmp_path, ray_address="auto", progress=False)


@pytest.mark.slow  # starts a local Ray cluster
def test_ray_sweep_equals_the_local_sweep(local_sweep, tiny_data, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'physid[ray]')")
    out_local, local = local_sweep
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = sweep.run_sweep(_grid(tiny_data), tmp_path, ray_address="auto", progress=False)
    finally:
        ray.shutdown()
    assert result.backend == "ray" and result.failed == []
    for job in local.jobs:
        ours = json.loads((tmp_path / "runs" / job.name / "summary.json").read_text())
        theirs = json.loads((Path(job.run_dir) / "summary.json").read_text())
        assert _numbers(ours) == _numbers(theirs)
    cells = lambda agg: {  # noqa: E731
        c["cell"]["method"]: {k: v["mean"] for k, v in c["metrics"].items() if k not in TIMING_KEYS}
        for c in agg["cells"]
    }
    local_agg = json.loads((out_local / "aggregate.json").read_text())
    assert cells(result.aggregate) == cells(local_agg)


# ---- the command line -------------------------------------------------------------------------


def _lines(result) -> list[str]:
    return [ln for ln in result.output.splitlines() if ln.strip()]


def test_cli_dry_run_lists_jobs_and_states(local_sweep, tiny_data):
    out, _ = local_sweep
    args = ["sweep", "run", "-s", "three-body", "--method", "aca", "--method", "naive"]
    args += ["--method", "adjoint", "--seed", "0", "--out", str(out), "--dry-run"]
    for key, value in _options(tiny_data).items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    states = dict(line.split("\t")[:2] for line in _lines(result))
    assert states == {
        "three-body-ode-aca-0": "done",
        "three-body-ode-naive-0": "done",
        "three-body-ode-adjoint-0": "new",
    }


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["sweep", "run", "-s", "three-body", "--set", "epochz=1"])
    assert result.exit_code == 1
    assert _lines(result) == [
        "Error: three-body has no option 'epochz' (its options: "
        + _lines(result)[0].split("(its options: ")[1]
    ]
    result = runner.invoke(app, ["sweep", "run", "--set", "epochs"])
    assert result.exit_code == 1 and _lines(result)[0].startswith("Error: --set takes KEY=VALUE")
    result = runner.invoke(app, ["sweep", "run", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1 and "does not exist" in _lines(result)[0]


def test_cli_failed_jobs_exit_1_with_a_summary(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setattr(
        process, "job_command", lambda f: [sys.executable, "-c", "raise SystemExit(4)"]
    )
    args = ["sweep", "run", "-s", "three-body", "--method", "aca", "--no-progress"]
    args += ["--out", str(tmp_path), "--set", f"data={json.dumps(str(tiny_data))}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "three-body-ode-aca-0" in result.output and "failed" in result.output
    assert _lines(result)[-1] == (
        "Error: 1 of 1 jobs did not finish (first: three-body-ode-aca-0: the job process "
        f"exited with code 4.); see {tmp_path.resolve() / 'sweep.json'}."
    )


def test_cli_aggregate(local_sweep, tmp_path):
    out, _ = local_sweep
    result = runner.invoke(
        app, ["sweep", "aggregate", str(out), "--metric", "test_mse", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert _lines(result)[0] == "| system | model | method | n | test_mse |"
    assert (tmp_path / "aggregate.json").is_file()
    result = runner.invoke(app, ["sweep", "aggregate", str(out), "--metric", "nope"])
    assert result.exit_code == 1 and _lines(result)[0].startswith("Error: no run's summary.json")


def test_job_main_usage():
    assert process.job_main([]) == 2
    command = process.job_command(Path("x/job.json"))
    assert command[-3:-1] == ["-m", "physid.app.sweep"]
    assert os.path.basename(command[-1]) == "job.json"
