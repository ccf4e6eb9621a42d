"""``physid fit three-body --optimizer lm``: Levenberg-Marquardt on forward-sensitivity Jacobians,
through the same run directory, metrics, checkpoint, resume and summary as the Adam path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from physid.models.experiments import three_body as tb
from physid.models.known_form import KnownFormThreeBody
from typer.testing import CliRunner

import physid
from physid.app.cli import app
from physid.errors import ConfigError, FitInterrupted
from physid.runs import RunDir
from physid.training import load_checkpoint

EXP = tb.ThreeBody()
QUIET = {"progress": False, "threads": 1, "compile": False, "plots": False}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper's system on a 200-point training grid (as the interrupt tests use)."""
    return tb.simulate(tmp_path_factory.mktemp("lm-data") / "tb.npz", n_train=200, n_test=400)


@pytest.fixture(scope="module")
def clean(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of an uninterrupted LM fit of ``small_data`` at 1e-5."""
    return EXP.fit(_lm_config(small_data, tmp_path_factory.mktemp("clean"))).read_summary()


def _lm_config(data: Path, runs: Path, **kw: object) -> tb.FitConfig:
    return tb.FitConfig(data=str(data), rtol=1e-5, atol=1e-5, runs_dir=str(runs), **QUIET, **kw)


def test_the_defaults_resolve_unambiguously() -> None:
    cases = [
        ({}, "forward", "lm", "three-body-ode-lm-0"),
        ({"method": "aca"}, "aca", "adam", "three-body-ode-aca-0"),
        ({"method": "naive"}, "naive", "adam", "three-body-ode-naive-0"),
        ({"method": "forward"}, "forward", "lm", "three-body-ode-lm-0"),
        ({"optimizer": "adam"}, "aca", "adam", "three-body-ode-aca-0"),
        ({"optimizer": "adam", "method": "forward"}, "forward", "adam", "three-body-ode-forward-0"),
        ({"optimizer": "lm"}, "forward", "lm", "three-body-ode-lm-0"),
        ({"model": "node"}, "aca", "adam", "three-body-node-aca-0"),
        ({"model": "lstm"}, "aca", "adam", "three-body-lstm-0"),
    ]
    for kw, method, optimizer, run_name in cases:
        cfg = tb.FitConfig(**kw)
        assert (cfg.method, cfg.optimizer, cfg.run_dir.name) == (method, optimizer, run_name), kw
        # the stored config resolves to itself
        assert tb.FitConfig.from_dict(cfg.to_dict(), ignore=("system",)) == cfg


def test_contradictory_combinations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="known-form model"):
        tb.FitConfig(model="node", optimizer="lm")
    with pytest.raises(ConfigError, match="forward sensitivities"):
        tb.FitConfig(optimizer="lm", method="aca")
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        tb.FitConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="lm_iterations"):
        tb.FitConfig(lm_iterations=0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "node-pair", "--optimizer", "lm"], "known-form model"),
        (["--optimizer", "lm", "--method", "adjoint"], "forward sensitivities"),
        (["--optimizer", "bfgs"], "optimizer must be one of"),
    ],
)
def test_cli_rejects_bad_combinations_in_one_sentence(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    res = CliRunner().invoke(app, ["fit", "three-body", *args, "--runs-dir", str(tmp_path)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert lines[0].rstrip().endswith(".")
    assert not any(tmp_path.iterdir())


def test_lm_recovers_the_masses_and_reports_their_uncertainty(tmp_path: Path) -> None:
    """The paper's data (1000 points on [0, 1]) at the default tolerance 1e-7: masses within
    1e-5 in at most 20 iterations; the summary's singular values and standard errors are those
    of the weighted residuals' Jacobian at the fitted masses."""
    run = EXP.fit(tb.FitConfig(runs_dir=str(tmp_path), **QUIET))
    assert run.name == "three-body-ode-lm-0"
    s = run.read_summary()
    assert s["lm_status"] in ("gtol", "ftol", "xtol") and s["lm_iterations"] <= 20
    assert max(s["mass_rel_error"]) <= 1e-5
    assert s["optimizer"] == "lm" and s["method"] == "forward"
    # the metrics contract: one record per iteration, the summary's totals are their sums
    records = run.read_metrics()
    assert s["epochs_completed"] == len(records) == s["lm_iterations"]
    assert [r["epoch"] for r in records] == list(range(len(records)))
    assert s["nfe_forward"] == sum(r["nfe_forward"] for r in records) > 0
    assert s["nfe_backward"] == 0
    assert s["seconds"] == pytest.approx(sum(r["seconds"] for r in records))
    losses = [r["loss"] for r in records]
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert s["train_mse"] == pytest.approx(records[-1]["train_mse"])

    # the report, against the Jacobian recomputed independently at the fitted masses
    data = tb.make_data()
    masses = torch.tensor(s["masses"], dtype=torch.float64)
    t = torch.as_tensor(data.t_train)
    jac = physid.odeint_jacobian(
        KnownFormThreeBody(masses), torch.as_tensor(data.y0), t, rtol=1e-7, atol=1e-7
    )
    w = (0.01**t / len(t)).sqrt()
    r = (w[:, None] * (jac.ys[:, :9] - torch.as_tensor(data.y_train[:, :9]))).reshape(-1)
    J = (w[:, None, None] * jac.dparams[:, :9]).reshape(-1, 3)
    sv = torch.linalg.svdvals(J)
    np.testing.assert_allclose(s["singular_values"], sv.numpy(), rtol=1e-6)
    variance = float(r @ r) / (len(r) - 3)
    std = torch.linalg.inv(J.T @ J).diagonal().mul(variance).sqrt()
    np.testing.assert_allclose(s["std_errors"], std.numpy(), rtol=1e-3)
    # the masses are off by about what the standard errors say (the solver's error, not noise)
    err = np.abs(np.asarray(s["masses"]) - np.asarray(s["true_masses"]))
    assert np.all(err < 1e3 * np.asarray(s["std_errors"]))
    # a finished run is not refitted on rerun
    EXP.fit(tb.FitConfig(runs_dir=str(tmp_path), **QUIET))
    assert len(run.read_metrics()) == len(records)


def test_checkpoint_holds_the_lm_state_weights_only(small_data: Path, tmp_path: Path) -> None:
    run = EXP.fit(_lm_config(small_data, tmp_path, lm_iterations=2))
    ckpt = load_checkpoint(run)  # torch.load(weights_only=True)
    assert ckpt["stopped"] == "done" and ckpt["optimizer"] == "lm"
    assert ckpt["last"]["lm_status"] == "max_iterations"
    assert ckpt["last"]["lm_state"]["iteration"] == 2
    assert ckpt["lm_report"]["std_errors"] == run.read_summary()["std_errors"]


def test_an_interrupted_lm_fit_resumes_to_the_uninterrupted_result(
    small_data: Path, clean: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    # Ctrl-C during the fifth residual evaluation (the start, then three checkpointed trials)
    calls = {"n": 0}
    original = physid.ShootingResiduals.__call__

    def interrupting(self: physid.ShootingResiduals, x: torch.Tensor):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(physid.ShootingResiduals, "__call__", interrupting)
    with pytest.raises(FitInterrupted, match="resume"):
        EXP.fit(_lm_config(small_data, tmp_path / "runs"))
    run = RunDir(tmp_path / "runs" / "three-body-ode-lm-0")
    assert run.read_summary()["interrupted"] is True
    assert len(run.read_metrics()) == 3
    assert load_checkpoint(run)["stopped"] == "interrupted"
    monkeypatch.setattr(physid.ShootingResiduals, "__call__", original)

    resumed = EXP.fit(_lm_config(small_data, tmp_path / "runs")).read_summary()
    assert resumed["interrupted"] is False
    assert resumed["epochs_completed"] == clean["epochs_completed"]
    assert resumed["lm_status"] == clean["lm_status"]
    np.testing.assert_allclose(resumed["masses"], clean["masses"], rtol=1e-12)
    np.testing.assert_allclose(resumed["std_errors"], clean["std_errors"], rtol=1e-9)
    assert resumed["test_mse"] == pytest.approx(clean["test_mse"], rel=1e-9)


def test_a_larger_budget_continues_a_finished_lm_fit(
    small_data: Path, clean: dict, tmp_path: Path
) -> None:
    run = EXP.fit(_lm_config(small_data, tmp_path / "runs", lm_iterations=2))
    assert run.read_summary()["lm_status"] == "max_iterations"
    resumed = EXP.fit(_lm_config(small_data, tmp_path / "runs")).read_summary()
    assert resumed["epochs_completed"] == clean["epochs_completed"]
    np.testing.assert_allclose(resumed["masses"], clean["masses"], rtol=1e-12)
