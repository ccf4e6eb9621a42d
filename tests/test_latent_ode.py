"""The latent ODE (models/latent_ode.py) and the hopper experiment around it, at tiny budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
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
    if method != "naive":
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


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory):
    from physid.models.experiments import hopper

    path = tmp_path_factory.mktemp("data") / "hopper.npz"
    hopper.simulate(10, seed=1, out=path)
    return path


def _tiny_config(tmp_path, data, **kw):
    from physid.models.experiments.hopper import FitConfig

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
    return FitConfig(**options)


@pytest.mark.parametrize("method", physid.GRADIENT_METHODS)
def test_two_epoch_fit_records_nfe(tmp_path, hopper_data, method: str) -> None:
    from physid.models.experiments import hopper

    run = hopper.fit(_tiny_config(tmp_path, hopper_data, method=method, observed=0.2))
    assert run.name == f"hopper-latent-ode-tiny-obs20-{method}-0"
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all(r["nfe_forward"] > 0 for r in lines)
    assert all((r["nfe_backward"] > 0) == (method != "naive") for r in lines)
    assert "test_mse" in lines[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["test_mse"]) and summary["test_mse_e2"] == pytest.approx(
        summary["test_mse"] * 100
    )
    assert (run / "plots" / "reconstruction.png").stat().st_size > 0
    mask = np.load(run / "test_mask.npy")
    assert mask.shape == (2, 100) and (mask.sum(axis=1) == 20).all()


def test_paper_preset_runs_unchanged(tmp_path, hopper_data) -> None:
    """The paper's sizes (the GPU setting) run through the same code; one short epoch here."""
    from physid.models.experiments import hopper
    from physid.models.latent_ode import PRESET_SIZES

    run = hopper.fit(_tiny_config(tmp_path, hopper_data, preset="paper", epochs=1))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preset"] == "paper" and math.isfinite(summary["test_mse"])
    _, model, *_ = hopper._load_run(run)
    assert model.cfg == PRESET_SIZES["paper"]
    assert sum(p.numel() for p in model.parameters()) > 10 * sum(
        p.numel() for p in hopper.build_model(_tiny_config(tmp_path, hopper_data)).parameters()
    )


def test_same_seed_same_fit(tmp_path, hopper_data) -> None:
    from physid.models.experiments import hopper

    a = hopper.fit(_tiny_config(tmp_path / "a", hopper_data, epochs=1))
    b = hopper.fit(_tiny_config(tmp_path / "b", hopper_data, epochs=1))
    ra = json.loads((a / "metrics.jsonl").read_text().splitlines()[0])
    rb = json.loads((b / "metrics.jsonl").read_text().splitlines()[0])
    assert ra["loss"] == rb["loss"] and ra["test_mse"] == rb["test_mse"]


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory, hopper_data):
    from physid.models.experiments import hopper

    return hopper.fit(_tiny_config(tmp_path_factory.mktemp("runs"), hopper_data, epochs=1))


def test_render_writes_a_video(tmp_path, fitted_run, hopper_data) -> None:
    from physid.models.experiments import hopper

    out = hopper.render(fitted_run, tmp_path / "hopper.mp4", width=64, height=48)
    assert out.stat().st_size > 1000
    import imageio.v3 as iio

    frames = iio.imread(out)
    assert frames.shape[0] == 100 and frames.shape[2] == 128
    out2 = hopper.render_dataset(hopper_data, tmp_path / "data.mp4", width=64, height=48)
    assert out2.stat().st_size > 1000


def test_bad_options_are_config_errors(tmp_path, hopper_data) -> None:
    from physid.models.experiments import hopper

    for bad in ({"method": "euler"}, {"preset": "huge"}, {"observed": 0.0}, {"solver": "rk45"}):
        with pytest.raises(physid.ConfigError):
            hopper.fit(_tiny_config(tmp_path, hopper_data, **bad))


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
    assert runner.invoke(app, ["evaluate", str(fitted_run)]).exit_code == 0
    video = tmp_path / "v.mp4"
    res = runner.invoke(app, ["render", str(fitted_run), "-o", str(video)])
    assert res.exit_code == 0, res.output
    assert video.stat().st_size > 0
    res = runner.invoke(app, ["render", str(tmp_path / "nothing"), "-o", str(video)])
    assert res.exit_code == 1
    res = runner.invoke(app, ["fit", "hopper", "--model", "lstm", "--data", str(hopper_data)])
    assert res.exit_code == 1 and "latent-ode" in res.output
