"""The latent ODE (models/latent_ode.py) and the hopper experiment around it, at tiny budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from physid.models import latent_fit as LF
from physid.models.experiments import hopper
from physid.models.latent_ode import (
    PRESET_SIZES,
    LatentODE,
    LatentODEConfig,
    kl_coefficient,
    mlp,
)
from typer.testing import CliRunner

import physid
from physid.data import subsample_mask
from physid.runs import RunDir

TINY = LatentODEConfig(
    input_dim=3,
    latent_dim=2,
    rec_dim=3,
    gru_units=4,
    units=5,
    gen_layers=1,
    rec_layers=1,
    z0_units=4,
)
EXP = hopper.Hopper()


def _batch(b: int = 4, n_times: int = 7, d: int = 3) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(b, n_times, d, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.3, n_times, dtype=torch.float64)
    mask = subsample_mask(b, n_times, 0.5, generator=gen)
    return x, t, mask


def test_mlp_matches_the_reference_layout() -> None:
    net = mlp(15, 15, 3, 300)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (15, 300),
        (300, 300),
        (300, 300),
        (300, 300),
        (300, 15),
    ]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in linears)
    w = torch.cat([m.weight.detach().flatten() for m in linears])
    assert float(w.std()) == pytest.approx(0.1, rel=0.05)


def test_paper_sizes() -> None:
    cfg = PRESET_SIZES["paper"]
    assert (cfg.latent_dim, cfg.rec_dim, cfg.gru_units, cfg.units) == (15, 30, 100, 300)
    assert (cfg.gen_layers, cfg.rec_layers, cfg.obs_std) == (3, 3, 1e-3)
    model = LatentODE(cfg)
    z0_net = model.encoder.to_z0
    assert (z0_net[0].in_features, z0_net[0].out_features, z0_net[2].out_features) == (60, 100, 30)
    assert (model.decoder.in_features, model.decoder.out_features) == (15, 14)


def test_shapes() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    x, t, mask = _batch()
    mean, std = model.encoder(x, mask, t)
    assert mean.shape == std.shape == (4, 2) and bool((std > 0).all())
    x_hat, _, _ = model.reconstruct(x, mask, t, n_samples=3, method="aca")
    assert x_hat.shape == (3, 4, 7, 3)


@pytest.mark.parametrize("method", physid.GRADIENT_METHODS)
def test_elbo_gradient_reaches_every_parameter(method: str) -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    x, t, mask = _batch()
    stats = physid.SolveStats()
    terms = model.elbo(x, mask, t, kl_coef=0.5, n_samples=2, method=method, stats=stats)
    terms.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name
    assert stats.nfe_forward > 0
    if method not in ("naive", "forward"):  # neither evaluates func in the backward pass
        assert stats.nfe_backward > 0


def test_methods_agree_on_the_gradient() -> None:
    """ACA and naive differentiate the same discrete solve; the adjoints are close to it."""
    x, t, mask = _batch()
    grads = {}
    for method in ("naive", "aca", "adjoint"):
        torch.manual_seed(0)
        model = LatentODE(TINY).double()
        torch.manual_seed(1)
        model.elbo(
            x, mask, t, kl_coef=1.0, n_samples=1, method=method, rtol=1e-9, atol=1e-9
        ).loss.backward()
        grads[method] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["aca"], grads["naive"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads["adjoint"], grads["naive"], rtol=1e-4, atol=1e-6)


def test_unobserved_points_do_not_matter() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    x, t, mask = _batch()
    noisy = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 123.0))
    m1, s1 = model.encoder(x, mask, t)
    m2, s2 = model.encoder(noisy, mask, t)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(s1, s2)


def test_batched_encoding_equals_per_sample() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    x, t, mask = _batch()
    mean, std = model.encoder(x, mask, t)
    for i in range(x.shape[0]):
        mi, si = model.encoder(x[i : i + 1], mask[i : i + 1], t)
        torch.testing.assert_close(mi[0], mean[i])
        torch.testing.assert_close(si[0], std[i])


def test_elbo_terms_are_the_reference_scaling() -> None:
    """loss = -logsumexp_k(loglik_k - beta KL); loglik averaged over points and features."""
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    x, t, mask = _batch()
    torch.manual_seed(3)
    terms = model.elbo(x, mask, t, kl_coef=0.0, n_samples=1)
    const = -math.log(TINY.obs_std) - 0.5 * math.log(2 * math.pi)
    assert terms.loglik == pytest.approx(-0.5 * terms.mse / TINY.obs_std**2 + const, rel=1e-9)
    assert float(terms.loss.detach()) == pytest.approx(-terms.loglik, rel=1e-9)


def test_kl_annealing() -> None:
    assert kl_coefficient(0) == 0.0 and kl_coefficient(9) == 0.0
    assert kl_coefficient(10) == 0.0
    assert kl_coefficient(11) == pytest.approx(0.01)
    assert kl_coefficient(310) == pytest.approx(1 - 0.99**300)


# ---- the experiment ---------------------------------------------------------------------------

TIMINGS = ("seconds", "train_seconds")


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "hopper.npz"
    hopper.simulate(10, seed=1, out=path)
    return path


def _tiny_config(tmp_path, data, **kw) -> hopper.FitConfig:
    options = dict(
        preset="tiny",
        epochs=2,
        data=str(data),
        runs_dir=str(tmp_path),
        progress=False,
        eval_samples=1,
        n_samples=2,
        batch_size=4,
        threads=1,
    )
    options.update(kw)
    return hopper.FitConfig(**options)


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


@pytest.mark.parametrize("method", physid.GRADIENT_METHODS)
def test_two_epoch_fit_records_nfe(tmp_path, hopper_data, method: str) -> None:
    run = EXP.fit(_tiny_config(tmp_path, hopper_data, method=method, observed=0.2))
    assert isinstance(run, RunDir) and run.name == f"hopper-latent-ode-tiny-obs20-{method}-0"
    lines = run.read_metrics()
    assert [r["epoch"] for r in lines] == [0, 1]
    n_batches = 2  # 8 training trajectories in batches of 4
    for r in lines:
        assert r["nfe_forward"] > 0 and (r["nfe_backward"] > 0) == (
            method not in ("naive", "forward")
        )
        # metrics.jsonl holds the epoch's totals; the per-iteration means beside them
        for key in ("nfe_forward", "nfe_backward", "steps_accepted", "encoder_nfe"):
            assert r[f"{key}_per_iter"] == pytest.approx(r[key] / n_batches)
    assert "test_mse" in lines[-1]
    summary = run.read_summary()
    assert summary.to_dict() == json.loads(run.summary_path.read_text())
    assert (summary.system, summary.model, summary.method) == ("hopper", "latent-ode", method)
    assert summary.epochs_completed == 2 and not summary.interrupted
    assert summary.nfe_forward == sum(r["nfe_forward"] for r in lines)
    assert summary.nfe_backward == sum(r["nfe_backward"] for r in lines)
    assert summary.seconds == pytest.approx(sum(r["seconds"] for r in lines))
    assert summary.train_mse == lines[-1]["train_mse"]
    assert summary["nfe_forward_per_iter"] == pytest.approx(
        np.mean([r["nfe_forward_per_iter"] for r in lines])
    )
    assert math.isfinite(summary.test_mse) and summary["test_mse_e2"] == pytest.approx(
        summary.test_mse * 100
    )
    assert summary["observed"] == 0.2 and summary["epoch_evaluated"] == 1
    assert summary["stopped_early"] is False
    assert (run.plots / "reconstruction.png").stat().st_size > 0
    mask = np.load(run / "test_mask.npy")
    assert mask.shape == (2, 100) and (mask.sum(axis=1) == 20).all()


def test_paper_preset_runs_unchanged(tmp_path, hopper_data) -> None:
    """The paper's sizes (the GPU setting) run through the same code; one short epoch here."""
    run = EXP.fit(_tiny_config(tmp_path, hopper_data, preset="paper", epochs=1))
    summary = run.read_summary()
    assert summary["preset"] == "paper" and math.isfinite(summary.test_mse)
    _, model, *_ = hopper._load_run(run)
    assert model.cfg == PRESET_SIZES["paper"]
    assert sum(p.numel() for p in model.parameters()) > 10 * sum(
        p.numel() for p in hopper.build_model(_tiny_config(tmp_path, hopper_data)).parameters()
    )


def test_resumed_fit_equals_a_straight_fit(tmp_path, hopper_data) -> None:
    """One epoch, then resumed to two, gives the numbers of two epochs in one go (the batch
    order, the masks and the z0 samples come from checkpointed generators)."""
    straight = EXP.fit(_tiny_config(tmp_path / "a", hopper_data))
    EXP.fit(_tiny_config(tmp_path / "b", hopper_data, epochs=1))
    resumed = EXP.fit(_tiny_config(tmp_path / "b", hopper_data))
    assert _untimed(resumed.read_metrics()) == _untimed(straight.read_metrics())
    a, b = straight.read_summary(), resumed.read_summary()
    assert (a.test_mse, a.train_mse, a.nfe_forward) == (b.test_mse, b.train_mse, b.nfe_forward)
    assert b.epochs_completed == 2


def test_config_fills_the_preset_in_and_round_trips(tmp_path, hopper_data) -> None:
    tiny, default = hopper.PRESETS["tiny"], hopper.PRESETS["default"]
    cfg = hopper.FitConfig(preset="tiny")
    assert (cfg.epochs, cfg.n_trajectories, cfg.eval_every) == (
        tiny.epochs,
        tiny.n_trajectories,
        tiny.eval_every,
    )
    assert hopper.FitConfig(preset="tiny", epochs=7, eval_every=3).epochs == 7
    cfg = hopper.FitConfig()
    assert (cfg.epochs, cfg.n_trajectories) == (default.epochs, default.n_trajectories)
    assert (cfg.model, cfg.method, cfg.rtol, cfg.atol) == ("latent-ode", "aca", 1e-3, 1e-4)
    assert (cfg.device, cfg.threads, cfg.dtype) == ("auto", None, "float32")
    assert cfg.run_dir.path == Path("runs") / "hopper-latent-ode-obs10-aca-0"
    named = hopper.FitConfig(observed=0.5, method="naive", seed=2, run_name="mine", runs_dir="r")
    assert named.run_dir.path == Path("r") / "mine"
    assert named.name == "latent-ode-obs50-naive"
    # the stored config is the resolved one, and reads back equal
    config = _tiny_config(tmp_path, hopper_data, epochs=1)
    run = EXP.fit(config)
    assert hopper.FitConfig.from_run(run) == config
    assert EXP.evaluate(run).to_dict() == run.read_summary().to_dict()
    with pytest.raises(physid.ConfigError, match="run_dir"):
        hopper.FitConfig.from_dict({"run_dir": str(tmp_path)})  # gone: runs_dir + run_name


def test_float64_fit(tmp_path, hopper_data) -> None:
    run = EXP.fit(_tiny_config(tmp_path, hopper_data, epochs=1, dtype="float64"))
    _, model, data, *_ = hopper._load_run(run)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert data.test.dtype == torch.float64
    assert math.isfinite(run.read_summary().test_mse)


def test_time_limit_stops_early_and_says_so(tmp_path, hopper_data) -> None:
    run = EXP.fit(_tiny_config(tmp_path, hopper_data, epochs=3, time_limit=1e-6))
    summary = run.read_summary()
    assert summary.epochs_completed == 1 and not summary.interrupted
    assert summary["stopped_early"] is True and summary["epoch_evaluated"] == 0


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory, hopper_data) -> RunDir:
    return EXP.fit(_tiny_config(tmp_path_factory.mktemp("runs"), hopper_data, epochs=1))


@pytest.mark.slow  # MuJoCo renders 100 frames in software; the contract test renders a hopper run
def test_render_writes_a_video(tmp_path, fitted_run, hopper_data) -> None:
    import imageio.v3 as iio

    out = EXP.render(fitted_run, tmp_path / "hopper.mp4", index=1, width=64, height=48)
    assert out == tmp_path / "hopper.mp4" and out.stat().st_size > 1000
    frames = iio.imread(out)
    assert frames.shape[0] == 100 and frames.shape[1:3] == (48, 128)  # truth | model
    with pytest.raises(physid.ConfigError):
        EXP.render(fitted_run, tmp_path / "x.mp4", index=2)  # 2 test trajectories
    out2 = EXP.render_dataset(hopper_data, tmp_path / "data.mp4", trajectory=3)
    assert out2.stat().st_size > 1000
    assert iio.imread(out2).shape[:3] == (100, 240, 320)
    with pytest.raises(physid.ConfigError):
        EXP.render_dataset(hopper_data, tmp_path / "x.mp4", trajectory=10)


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "euler"},
        {"preset": "huge"},
        {"observed": 0.0},
        {"solver": "rk45"},
        {"model": "lstm"},
        {"normalisation": "zscore"},
        {"eval_every": 0},
        {"epochs": 0},
        {"batch_size": 0},
        {"lr_decay": 1.5},
        {"dtype": "float16"},
        {"n_trajectories": 1},
    ],
)
def test_bad_options_are_config_errors(bad) -> None:
    with pytest.raises(physid.ConfigError):
        hopper.FitConfig(**{"preset": "tiny", **bad})


@pytest.mark.slow  # end to end through the CLI with a video; the contract test covers the same path
def test_cli_simulate_fit_evaluate_render(tmp_path, hopper_data, fitted_run) -> None:
    from physid.app.cli import app

    runner = CliRunner()
    data = tmp_path / "h.npz"
    res = runner.invoke(app, ["simulate", "hopper", "--n-trajectories", "6", "--out", str(data)])
    assert res.exit_code == 0, res.output
    assert data.exists()
    res = runner.invoke(
        app,
        [
            "fit",
            "hopper",
            "--model",
            "latent-ode",
            "--observed",
            "0.5",
            "--method",
            "seminorm",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--data",
            str(hopper_data),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "hopper-latent-ode-tiny-obs50-seminorm-0"
    assert run.is_dir() and res.output.strip().endswith(run.name)
    res = runner.invoke(app, ["evaluate", str(fitted_run)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test_mse"] == fitted_run.read_summary().test_mse
    video = tmp_path / "v.mp4"
    res = runner.invoke(app, ["render", str(fitted_run), "-o", str(video)])
    assert res.exit_code == 0, res.output
    assert video.stat().st_size > 0
    res = runner.invoke(app, ["render", str(tmp_path / "nothing"), "-o", str(video)])
    assert res.exit_code == 1
    res = runner.invoke(app, ["fit", "hopper", "--model", "lstm", "--data", str(hopper_data)])
    assert res.exit_code == 1 and "latent-ode" in res.output


def test_extrapolation_fit_scores_the_second_half_beside_its_baselines(
    tmp_path, hopper_data
) -> None:
    run = EXP.fit(_tiny_config(tmp_path, hopper_data, epochs=1, task="extrapolation", observed=0.2))
    assert run.name == "hopper-latent-ode-tiny-extrap-obs20-aca-0"
    obs, target = np.load(run / "test_mask.npy"), np.load(run / "test_target.npy")
    assert (obs.sum(axis=1) == 10).all() and not obs[:, 50:].any()
    assert not target[:, :50].any() and target[:, 50:].all()
    summary = run.read_summary()
    assert summary["task"] == "extrapolation" and summary["paper_test_mse_e2"] is None
    assert set(summary["baselines"]) == {
        "observed_mean",
        "last_value",
        "linear_extrapolation_last_two",
        "linear_extrapolation_least_squares",
    }
    for name, value in summary["baselines"].items():
        assert summary["ratio_to"][name] == pytest.approx(summary.test_mse / value)
        assert (name in summary["beats"]) == (summary.test_mse < value)
    # the test MSE covers the second half only: the model's own number, recomputed
    cfg, model, data, obs_t, target_t, _ = hopper._load_run(run)
    gen = torch.Generator().manual_seed(cfg.test_mask_seed)
    again = hopper.test_mse(model, data.test, data.t, obs_t, cfg, target=target_t, generator=gen)
    assert again == pytest.approx(summary.test_mse, rel=1e-6)


def test_interpolation_summary_has_the_baselines(fitted_run) -> None:
    summary = fitted_run.read_summary()
    assert set(summary["baselines"]) == {
        "observed_mean",
        "least_squares_line",
        "linear_interpolation",
    }
    assert summary["task"] == "interpolation" and math.isfinite(summary["test_mse_posterior_mean"])
    # the training record shows the forward solver's regime
    line = fitted_run.read_metrics()[0]
    assert line["steps_accepted_per_iter"] >= 1 and line["steps_rejected"] >= 0
    assert line["steps_accepted_max"] >= line["steps_accepted_per_iter"]
    assert summary["steps_accepted_per_iter"] == pytest.approx(line["steps_accepted_per_iter"])


def test_preset_owns_the_training_budget() -> None:
    paper = hopper.FitConfig(preset="paper")
    assert (paper.batch_size, paper.lr, paper.lr_decay, paper.lr_min_factor) == (
        50,
        1e-2,
        0.999,
        0.1,
    )
    assert paper.n_samples == 3 and paper.epochs == 300 and paper.n_trajectories == 10_000
    default = hopper.FitConfig()
    assert (default.batch_size, default.n_trajectories, default.lr_decay) == (20, 5_000, 0.9997)
    # 10,000 iterations: 4,000 training trajectories / 20 per batch x 50 epochs
    assert default.epochs * (default.n_trajectories * 8 // 10) // default.batch_size == 10_000
    # the learning rate reaches its 1e-3 floor before the end
    assert LF.iterations_to_floor(default.train_options()) < 10_000
    # explicit options win over the preset
    mine = hopper.FitConfig(preset="paper", batch_size=7, lr_decay=1.0)
    assert (mine.batch_size, mine.lr_decay) == (7, 1.0)
    with pytest.raises(physid.ConfigError):
        hopper.FitConfig(task="forecast")
    with pytest.raises(physid.ConfigError):
        hopper.FitConfig(task="extrapolation", extrap_split=1.0)


def test_warm_start_from_a_run(tmp_path, hopper_data, fitted_run) -> None:
    """init_from starts a fit from a run's last model instead of a fresh initialisation."""
    _, source, *_ = hopper._load_run(fitted_run)
    torch.manual_seed(0)
    fresh = hopper.build_model(_tiny_config(tmp_path, hopper_data))
    model = hopper.build_model(_tiny_config(tmp_path, hopper_data))
    LF.load_initial_state(model, fitted_run.path)
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )
    run = EXP.fit(
        _tiny_config(tmp_path, hopper_data, epochs=1, init_from=str(fitted_run.path), snapshots=1)
    )
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch_0000.pt", "initial.pt"]
    initial = torch.load(run / "snapshots" / "initial.pt", weights_only=False)["model"]
    for k, v in source.state_dict().items():
        torch.testing.assert_close(initial[k], v, msg=k)
