"""models.latent_tasks and models.latent_fit: task masks, scoring, the training options."""

from __future__ import annotations

import math

import pytest
import torch
from physid.models import latent_fit as LF
from physid.models.latent_ode import LatentODE, LatentODEConfig
from physid.models.latent_tasks import (
    model_mse,
    model_predictions,
    observed_span,
    score,
    task_masks,
)

import physid
from physid.errors import ConfigError

TINY = LatentODEConfig(
    input_dim=3, latent_dim=2, rec_dim=3, gru_units=4, units=5, gen_layers=1, rec_layers=1
)


@pytest.mark.parametrize("fraction,k", [(0.1, 10), (0.2, 20), (0.5, 50)])
def test_interpolation_masks(fraction: float, k: int) -> None:
    obs, target = task_masks(16, 100, fraction, seed=0)
    assert obs.shape == target.shape == (16, 100)
    assert (obs.sum(dim=1) == k).all()
    assert bool(target.all())


@pytest.mark.parametrize("fraction,k", [(0.1, 5), (0.2, 10), (0.5, 25)])
def test_extrapolation_masks_observe_the_first_half_and_score_the_second(
    fraction: float, k: int
) -> None:
    obs, target = task_masks(16, 100, fraction, "extrapolation", seed=0)
    assert (obs.sum(dim=1) == k).all()
    assert not bool(obs[:, 50:].any())
    assert not bool(target[:, :50].any()) and bool(target[:, 50:].all())
    # another split
    obs, target = task_masks(4, 10, 1.0, "extrapolation", split=0.3)
    assert bool(obs[:, :3].all()) and not bool(obs[:, 3:].any())
    assert bool(target[:, 3:].all()) and not bool(target[:, :3].any())


def test_masks_are_reproducible_and_redrawn() -> None:
    a, _ = task_masks(8, 100, 0.1, "extrapolation", seed=3)
    b, _ = task_masks(8, 100, 0.1, "extrapolation", seed=3)
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(0)
    c, _ = task_masks(8, 100, 0.1, generator=gen)
    d, _ = task_masks(8, 100, 0.1, generator=gen)
    assert not torch.equal(c, d)


def test_observed_span_and_errors() -> None:
    assert observed_span(100, "interpolation") == 100
    assert observed_span(100, "extrapolation") == 50
    assert observed_span(3, "extrapolation", split=0.1) == 1
    assert observed_span(3, "extrapolation", split=0.9) == 2
    with pytest.raises(ConfigError):
        observed_span(100, "forecast")
    with pytest.raises(ConfigError):
        task_masks(2, 10, 0.5, "extrapolation", split=1.0)
    with pytest.raises(ConfigError):
        observed_span(1, "extrapolation")


def test_model_mse_scores_only_the_target_points() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 8, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.35, 8, dtype=torch.float64)
    obs, target = task_masks(5, 8, 0.5, "extrapolation", seed=2)
    pred = model_predictions(model, x, t, obs, posterior_mean=True)
    assert pred.shape == (1, 5, 8, 3)
    expected = float(((pred[0] - x) ** 2)[:, 4:].mean())
    got = model_mse(model, x, t, obs, target, posterior_mean=True)
    assert got == pytest.approx(expected, rel=1e-12)
    # chunking does not change the number
    assert model_mse(model, x, t, obs, target, posterior_mean=True, batch_size=2) == pytest.approx(
        expected, rel=1e-12
    )


def test_score_reports_ratios_and_beaten_baselines() -> None:
    x = torch.tensor([[1.0, 4.0, 9.0, 16.0, 25.0]], dtype=torch.float64).unsqueeze(-1)
    t = torch.arange(5.0, dtype=torch.float64)
    obs = torch.tensor([[True, True, True, False, False]])
    target = ~obs
    s = score(30.0, x, t, obs, target, "extrapolation")
    assert s["baselines"]["last_value"] == pytest.approx((49 + 256) / 2)
    assert s["ratio_to"]["last_value"] == pytest.approx(30.0 / 152.5)
    assert "last_value" in s["beats"] and "linear_extrapolation_last_two" not in s["beats"]


def test_train_options_validate_and_schedule() -> None:
    opts = LF.TrainOptions()
    assert (opts.batch_size, opts.lr, opts.lr_decay, opts.lr_min_factor) == (50, 1e-2, 0.999, 0.1)
    # 0.999 per iteration reaches lr/10 after ceil(ln 0.1 / ln 0.999) = 2302 iterations
    assert LF.iterations_to_floor(opts) == math.ceil(math.log(0.1) / math.log(0.999)) == 2302
    assert LF.iterations_to_floor(LF.TrainOptions(lr_decay=1.0)) == 0
    for bad in (
        {"task": "forecast"},
        {"extrap_loss": "some"},
        {"observed": 0.0},
        {"lr_decay": 1.5},
        {"batch_size": 0},
        {"method": "euler"},
        {"solver": "rk45"},
        {"rtol": 0.0},
    ):
        with pytest.raises(ConfigError):
            LF.TrainOptions(**bad)  # type: ignore[arg-type]


def test_epoch_fn_decays_the_lr_per_iteration_and_logs_steps() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 8, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.35, 8, dtype=torch.float64)
    opts = LF.TrainOptions(batch_size=4, lr=1e-2, lr_decay=0.5, lr_min_factor=0.1, n_samples=2)
    opt = torch.optim.Adamax(model.parameters(), lr=opts.lr)
    test = (x[:3], *task_masks(3, 8, 0.5, seed=1))
    fn = LF.make_epoch_fn(model, opt, x, t, opts, gen, epochs=2, eval_every=2, test=test)
    rec0 = fn(0)
    # 3 iterations: lr 1e-2 * 0.5^3, not yet at the floor 1e-3
    assert rec0["lr_end"] == pytest.approx(1e-2 * 0.5**3)
    # totals over the epoch's 3 iterations, means per iteration beside them
    assert rec0["iterations"] == 3
    assert rec0["steps_accepted_per_iter"] == pytest.approx(rec0["steps_accepted"] / 3)
    assert rec0["nfe_forward_per_iter"] == pytest.approx(rec0["nfe_forward"] / 3)
    assert rec0["steps_accepted_per_iter"] >= 1
    assert rec0["steps_accepted_max"] >= rec0["steps_accepted_per_iter"]
    # dopri5 takes 6 evaluations per step after the first step's 7 (FSAL) per solve
    assert rec0["nfe_forward"] >= 6 * (rec0["steps_accepted"] + rec0["steps_rejected"])
    assert "test_mse" not in rec0
    rec1 = fn(1)
    assert rec1["lr_end"] == pytest.approx(1e-3)  # the floor
    assert math.isfinite(rec1["test_mse"])


def test_target_likelihood_skips_unobserved_unscored_points_and_equals_plain_when_all() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.35, 8, dtype=torch.float64)
    obs, target = task_masks(4, 8, 0.5, "extrapolation", seed=0)  # 2 of the first 4 observed
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    torch.manual_seed(1)
    base = model.elbo(x, obs, t, kl_coef=0.2, n_samples=2, target=target)
    hidden = ~obs & ~target  # neither seen by the encoder nor scored
    assert bool(hidden.any())
    y = torch.where(hidden.unsqueeze(-1), x + 5.0, x)
    torch.manual_seed(1)
    same = model.elbo(y, obs, t, kl_coef=0.2, n_samples=2, target=target)
    assert float(same.loss.detach()) == pytest.approx(float(base.loss.detach()), rel=1e-12)
    # ... while without a target they count
    torch.manual_seed(1)
    plain_x = model.elbo(x, obs, t, kl_coef=0.2, n_samples=2)
    torch.manual_seed(1)
    plain_y = model.elbo(y, obs, t, kl_coef=0.2, n_samples=2)
    assert float(plain_y.loss.detach()) != pytest.approx(float(plain_x.loss.detach()))
    # every point a target: the plain likelihood
    torch.manual_seed(1)
    all_t = model.elbo(x, obs, t, kl_coef=0.2, n_samples=2, target=torch.ones_like(target))
    assert float(all_t.loss.detach()) == pytest.approx(float(plain_x.loss.detach()), rel=1e-12)
    assert all_t.mse == pytest.approx(plain_x.mse, rel=1e-12)


def test_target_mse_covers_only_the_scored_points() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.35, 8, dtype=torch.float64)
    obs, target = task_masks(4, 8, 1.0, "extrapolation", seed=0)
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    # the encoder sees only the first half: changing the scored second half moves the loss
    torch.manual_seed(1)
    base = model.elbo(x, obs, t, kl_coef=0.0, n_samples=1, target=target)
    y = x.clone()
    y[:, 4:] += 1.0  # scored points change: the loss changes
    torch.manual_seed(1)
    moved = model.elbo(y, obs, t, kl_coef=0.0, n_samples=1, target=target)
    assert float(moved.loss.detach()) != pytest.approx(float(base.loss.detach()))
    # the mse is over scored points only
    torch.manual_seed(1)
    x_hat, _, _ = model.reconstruct(x, obs, t, n_samples=1)
    expected = float(((x_hat[0].detach() - x) ** 2)[:, 4:].mean())
    assert base.mse == pytest.approx(expected, rel=1e-9)


def test_inline_encoder_euler_equals_odeint() -> None:
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.35, 8, dtype=torch.float64)
    obs, _ = task_masks(4, 8, 0.5, seed=0)
    s1, s2 = physid.SolveStats(), physid.SolveStats()
    m1, sd1 = model.encoder(x, obs, t, stats=s1)  # naive euler: inline
    m2, sd2 = model.encoder(x, obs, t, method="aca", stats=s2)  # through odeint
    torch.testing.assert_close(m1, m2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sd1, sd2, rtol=1e-12, atol=1e-14)
    assert s1.nfe_forward == s2.nfe_forward == 7


def test_snapshot_epochs_and_files(tmp_path) -> None:
    assert LF.snapshot_epochs(100, 10) == [-1, 9, 19, 29, 39, 49, 59, 69, 79, 89, 99]
    assert LF.snapshot_epochs(3, 10) == [-1, 0, 1, 2]
    assert LF.snapshot_epochs(5, 0) == []
    torch.manual_seed(0)
    model = LatentODE(TINY).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 6, 3, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 0.25, 6, dtype=torch.float64)
    opts = LF.TrainOptions(batch_size=4, n_samples=1)
    opt = torch.optim.Adamax(model.parameters(), lr=opts.lr)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fn = LF.make_epoch_fn(
        model,
        opt,
        x,
        t,
        opts,
        gen,
        epochs=2,
        eval_every=1,
        snapshot_dir=tmp_path,
        snapshot_epochs=[-1, 1],
    )
    fn(0)
    fn(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.pt", "initial.pt"]
    first = torch.load(tmp_path / "initial.pt", weights_only=False)
    last = torch.load(tmp_path / "epoch_0001.pt", weights_only=False)
    for k, v in initial.items():
        torch.testing.assert_close(first["model"][k], v)
    torch.testing.assert_close(last["model"]["decoder.weight"], model.decoder.weight.detach())
    assert not torch.equal(first["model"]["decoder.weight"], last["model"]["decoder.weight"])


def test_load_initial_state_from_a_snapshot(tmp_path) -> None:
    from physid._io import save_torch

    torch.manual_seed(0)
    a = LatentODE(TINY)
    torch.manual_seed(1)
    b = LatentODE(TINY)
    save_torch(tmp_path / "epoch_0003.pt", {"epoch": 3, "model": a.state_dict()})
    assert LF.load_initial_state(b, tmp_path / "epoch_0003.pt") == 3
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    with pytest.raises(physid.DataError):
        LF.load_initial_state(b, tmp_path / "missing.pt")
    other = LatentODE(LatentODEConfig(input_dim=4, latent_dim=2, rec_dim=3, gru_units=4, units=5))
    with pytest.raises(physid.DataError):
        LF.load_initial_state(other, tmp_path / "epoch_0003.pt")


def test_training_extras_average_over_iterations() -> None:
    history = [
        {
            "iterations": 2,
            "nfe_forward": 40,
            "nfe_backward": 0,
            "steps_accepted": 6,
            "steps_rejected": 2,
            "steps_accepted_per_iter": 3.0,
            "steps_rejected_per_iter": 1.0,
            "lr_end": 0.5,
            "seconds": 1.0,
        },
        {
            "iterations": 1,
            "nfe_forward": 26,
            "nfe_backward": 0,
            "steps_accepted": 4,
            "steps_rejected": 0,
            "steps_accepted_per_iter": 4.0,
            "steps_rejected_per_iter": 0.0,
            "lr_end": 0.25,
            "seconds": 3.0,
        },
    ]
    ex = LF.training_extras(history)
    assert ex["iterations"] == 3
    assert ex["nfe_forward_per_iter"] == pytest.approx(66 / 3)
    assert ex["steps_accepted_per_iter"] == pytest.approx(10 / 3)
    assert ex["steps_rejected_per_iter"] == pytest.approx(2 / 3)
    assert ex["steps_accepted_last_epoch"] == 4.0 and ex["lr_final"] == 0.25
    assert ex["seconds_per_epoch"] == pytest.approx(2.0)
    assert LF.training_extras([])["nfe_forward_per_iter"] is None
