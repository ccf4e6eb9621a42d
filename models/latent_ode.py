"""Latent ODE with an ODE-RNN encoder (Rubanova et al. 2019; Chen et al. 2018, section 5).

A variational auto-encoder for irregularly-sampled time series:

- **Encoder** (recognition network): an ODE-RNN run *backwards* in time over the observed points.
  Its hidden state is a pair ``(h, s)`` (a mean and a spread, ``rec_dim`` each). At an observed
  point a GRU-style update mixes the observation (``x * mask`` and the mask itself) into ``(h, s)``;
  between points ``h`` follows a hidden ODE ``dh/dt = f_rec(h)`` (an MLP), integrated with
  :func:`physid.odeint` (one Euler step per interval by default); ``s`` is carried unchanged. At
  ``t_0`` an MLP maps ``(h, s)`` to the mean and ``|std|`` of ``q(z0)``.
- **Generative model**: ``z0 ~ q(z0)`` (several samples), ``dz/dt = f(z)`` an MLP solved with
  :func:`physid.odeint` and the *selected gradient method* (naive, adjoint, seminorm, ACA), and a
  linear decoder ``x(t) = W z(t) + b``.
- **Loss**: ``-logsumexp_k [ log p(x | z0_k) - beta * KL(q(z0) || N(0, I)) ]`` over the ``K``
  samples, where the log-likelihood is Gaussian with a fixed observation std, averaged over the
  time points, the features and the trajectories, and the KL is averaged over latent dimensions
  and trajectories — exactly the latent_ode repository's scaling, which the ACA paper reused.
  ``beta`` is annealed by the caller (:func:`kl_coefficient`).

Shapes: ``x`` is ``(batch, time, features)``, ``mask`` ``(batch, time)`` bool, ``t`` ``(time,)``
increasing; samples come first: ``(samples, batch, time, features)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from physid.errors import ConfigError

__all__ = [
    "LatentODEConfig",
    "PRESET_SIZES",
    "mlp",
    "ODEFunc",
    "GRUUpdate",
    "ODERNNEncoder",
    "LatentODE",
    "ELBOTerms",
    "kl_coefficient",
]


@dataclass(frozen=True)
class LatentODEConfig:
    """Sizes and fixed constants of a latent ODE.

    Attributes:
        input_dim: features per time point (14 for the hopper).
        latent_dim: size of ``z`` (the paper: 15).
        rec_dim: size of the encoder's hidden state ``h`` (and of ``s``) (the paper: 30).
        gru_units: hidden units of the GRU update nets (the paper: 100).
        units: hidden units of both ODE nets (the paper: 300).
        gen_layers: hidden ``units -> units`` layers of the generative ODE net (the paper: 3).
        rec_layers: the same for the encoder's hidden ODE net (the paper: 3).
        z0_units: hidden units of the ``(h, s) -> q(z0)`` net (the paper: 100).
        obs_std: fixed observation noise of the Gaussian likelihood (the paper: 1e-3).
        init_std: weights start ~ N(0, init_std), biases 0 (the paper: 0.1).
    """

    input_dim: int = 14
    latent_dim: int = 15
    rec_dim: int = 30
    gru_units: int = 100
    units: int = 300
    gen_layers: int = 3
    rec_layers: int = 3
    z0_units: int = 100
    obs_std: float = 1e-3
    init_std: float = 0.1


#: Network sizes of the two presets (the training budget lives in the experiment's FitConfig).
PRESET_SIZES: dict[str, LatentODEConfig] = {
    "paper": LatentODEConfig(),
    "default": LatentODEConfig(
        latent_dim=15,
        rec_dim=30,
        gru_units=50,
        units=100,
        gen_layers=2,
        rec_layers=1,
        z0_units=50,
    ),
    "tiny": LatentODEConfig(
        latent_dim=4, rec_dim=6, gru_units=8, units=16, gen_layers=1, rec_layers=1, z0_units=8
    ),
}


def mlp(n_in: int, n_out: int, n_layers: int, n_units: int, init_std: float = 0.1) -> nn.Sequential:
    """``Linear(n_in, n_units)``, then ``n_layers`` × (tanh, ``Linear(n_units, n_units)``), then
    tanh, ``Linear(n_units, n_out)``; weights ~ N(0, init_std), biases 0 (latent_ode's
    ``create_net``)."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_units)]
    for _ in range(n_layers):
        layers += [nn.Tanh(), nn.Linear(n_units, n_units)]
    layers += [nn.Tanh(), nn.Linear(n_units, n_out)]
    net = nn.Sequential(*layers)
    _init(net, init_std)
    return net


def _init(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            nn.init.zeros_(m.bias)


class ODEFunc(nn.Module):
    """Autonomous dynamics ``dy/dt = net(y)`` in physid's ``func(t, y)`` convention."""

    def __init__(self, dim: int, n_layers: int, n_units: int, init_std: float = 0.1) -> None:
        super().__init__()
        self.net = mlp(dim, dim, n_layers, n_units, init_std)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class GRUUpdate(nn.Module):
    """The ODE-RNN's observation update of ``(h, s)`` (latent_ode's ``GRU_unit``).

    ``u = σ(U[h, s, x])``, ``r = σ(R[h, s, x])``, ``(h̃, s̃) = N[h r, s r, x]``;
    ``h' = (1 - u) h̃ + u h``, ``s' = |(1 - u) |s̃| + u s|``; rows with no observation keep
    ``(h, s)``.
    """

    def __init__(self, rec_dim: int, input_dim: int, n_units: int, init_std: float = 0.1) -> None:
        super().__init__()
        n_in = 2 * rec_dim + input_dim
        self.update_gate = nn.Sequential(
            nn.Linear(n_in, n_units), nn.Tanh(), nn.Linear(n_units, rec_dim), nn.Sigmoid()
        )
        self.reset_gate = nn.Sequential(
            nn.Linear(n_in, n_units), nn.Tanh(), nn.Linear(n_units, rec_dim), nn.Sigmoid()
        )
        self.new_state = nn.Sequential(
            nn.Linear(n_in, n_units), nn.Tanh(), nn.Linear(n_units, 2 * rec_dim)
        )
        _init(self, init_std)

    def forward(
        self, h: torch.Tensor, s: torch.Tensor, x: torch.Tensor, observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update.

        Args:
            h, s: ``(batch, rec_dim)``.
            x: ``(batch, 2 * features)`` the masked observation and its mask.
            observed: ``(batch, 1)`` float, 1 where the row has an observation.
        """
        hsx = torch.cat([h, s, x], dim=-1)
        u = self.update_gate(hsx)
        r = self.reset_gate(hsx)
        h_new, s_new = self.new_state(torch.cat([h * r, s * r, x], dim=-1)).chunk(2, dim=-1)
        h_new = (1 - u) * h_new + u * h
        s_new = (1 - u) * s_new.abs() + u * s
        h = observed * h_new + (1 - observed) * h
        s = observed * s_new + (1 - observed) * s
        return h, s.abs()


class ODERNNEncoder(nn.Module):
    """ODE-RNN run backwards over the observations; returns the mean and std of ``q(z0)``."""

    def __init__(self, cfg: LatentODEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ode = ODEFunc(cfg.rec_dim, cfg.rec_layers, cfg.units, cfg.init_std)
        self.gru = GRUUpdate(cfg.rec_dim, 2 * cfg.input_dim, cfg.gru_units, cfg.init_std)
        self.to_z0 = nn.Sequential(
            nn.Linear(2 * cfg.rec_dim, cfg.z0_units),
            nn.Tanh(),
            nn.Linear(cfg.z0_units, 2 * cfg.latent_dim),
        )
        _init(self.to_z0, cfg.init_std)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        *,
        method: str = "naive",
        solver: str = "euler",
        step_size: float | None = None,
        stats: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode.

        Args:
            x: ``(batch, time, features)``; values at unobserved points are ignored.
            mask: ``(batch, time)`` bool, True where observed.
            t: ``(time,)`` increasing.
            method, solver: the hidden ODE's :func:`physid.odeint` settings between points.
            step_size: fixed step for fixed-step solvers; default: one step per interval.
            stats: a ``physid.SolveStats`` accumulating the encoder's evaluations, or None.

        Returns:
            ``(mean, std)`` of ``q(z0)``, each ``(batch, latent_dim)``; ``std > 0``.
        """
        import physid

        batch, n_times, _ = x.shape
        m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        inputs = torch.cat([x * m, m.expand_as(x)], dim=-1)  # (B, T, 2D)
        h = x.new_zeros(batch, self.cfg.rec_dim)
        s = x.new_zeros(batch, self.cfg.rec_dim)
        any_obs = mask.any(dim=0)  # (T,)
        # One naive Euler step per interval is what odeint would do; taking it inline saves
        # odeint's per-call overhead (99 calls per batch for the hopper), same numbers.
        inline_euler = method == "naive" and solver == "euler" and step_size is None
        for i in range(n_times - 1, -1, -1):
            if i < n_times - 1 and inline_euler:
                h = h + (t[i] - t[i + 1]) * self.ode(t[i + 1], h)
                if stats is not None:
                    stats.nfe_forward += 1
                    stats.steps_accepted += 1
            elif i < n_times - 1:
                span = t[[i + 1, i]]  # backwards: (t_{i+1}, t_i)
                kwargs: dict[str, Any] = {}
                if solver in _FIXED_STEP:
                    kwargs["step_size"] = (
                        step_size if step_size is not None else float(t[i + 1] - t[i])
                    )
                h = physid.odeint(
                    self.ode, h, span, method=method, solver=solver, stats=stats, **kwargs
                )[-1]
            if bool(any_obs[i]):
                h, s = self.gru(h, s, inputs[:, i], m[:, i])
        mean, std = self.to_z0(torch.cat([h, s], dim=-1)).chunk(2, dim=-1)
        return mean, std.abs().clamp_min(1e-8)


_FIXED_STEP = frozenset({"euler", "rk2", "midpoint", "rk4", "rk38"})


@dataclass(frozen=True)
class ELBOTerms:
    """What one ELBO evaluation produced (all scalars detached except ``loss``).

    Attributes:
        loss: ``-logsumexp_k(loglik_k - beta * kl)`` (differentiable).
        loglik: mean over samples of the per-sample log-likelihood.
        kl: the KL term (mean over trajectories and latent dimensions).
        mse: squared error of the reconstructions, mean over samples and all points.
    """

    loss: torch.Tensor
    loglik: float
    kl: float
    mse: float


class LatentODE(nn.Module):
    """The latent ODE VAE (module docstring). Build with a :class:`LatentODEConfig`."""

    def __init__(self, cfg: LatentODEConfig = LatentODEConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ODERNNEncoder(cfg)
        self.dynamics = ODEFunc(cfg.latent_dim, cfg.gen_layers, cfg.units, cfg.init_std)
        self.decoder = nn.Linear(cfg.latent_dim, cfg.input_dim)
        _init(self.decoder, cfg.init_std)

    def sample_z0(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(n_samples, batch, latent)`` reparameterised samples of ``q(z0)``; ``eps`` (same
        shape) fixes the standard-normal draws (cast to ``mean``'s dtype), e.g. to compare
        gradients across dtypes."""
        if eps is not None:
            if eps.shape != (n_samples, *mean.shape):
                raise ConfigError(
                    f"eps must have shape {(n_samples, *mean.shape)}, got {tuple(eps.shape)}."
                )
            return mean.unsqueeze(0) + std.unsqueeze(0) * eps.to(mean)
        eps = torch.randn(
            (n_samples, *mean.shape),
            generator=generator,
            dtype=mean.dtype,
            device="cpu" if generator is not None else mean.device,
        ).to(mean.device)
        return mean.unsqueeze(0) + std.unsqueeze(0) * eps

    def decode(
        self,
        z0: torch.Tensor,
        t: torch.Tensor,
        *,
        method: str = "aca",
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        stats: Any = None,
        **odeint_kwargs: Any,
    ) -> torch.Tensor:
        """Solve the latent ODE from ``z0`` (any leading shape ``(..., latent)``) over ``t`` and
        decode.

        Returns:
            ``(..., time, features)``.
        """
        import physid

        zs = physid.odeint(
            self.dynamics,
            z0,
            t,
            method=method,
            solver=solver,
            rtol=rtol,
            atol=atol,
            stats=stats,
            **odeint_kwargs,
        )  # (time, ..., latent)
        return self.decoder(zs.movedim(0, -2))

    def reconstruct(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        *,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        eps: torch.Tensor | None = None,
        **decode_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the observed points and decode every time in ``t``.

        Returns:
            ``(x_hat, mean, std)``: ``(n_samples, batch, time, features)`` and ``q(z0)``.
        """
        mean, std = self.encoder(x, mask, t, **(encoder_kwargs or {}))
        z0 = self.sample_z0(mean, std, n_samples, generator, eps)
        return self.decode(z0, t, **decode_kwargs), mean, std

    def elbo(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        *,
        kl_coef: float,
        n_samples: int = 3,
        generator: torch.Generator | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        target: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        **decode_kwargs: Any,
    ) -> ELBOTerms:
        """The training loss on a batch (module docstring): reconstruct *all* points of ``x``
        (or the ``target`` points) from the points ``mask`` keeps.

        Args:
            x: ``(batch, time, features)`` normalised data.
            mask: ``(batch, time)`` bool, the observed points fed to the encoder.
            t: ``(time,)``.
            kl_coef: the annealed KL weight ``beta``.
            n_samples: ``K``, samples of ``z0``.
            target: ``(batch, time)`` bool, the points the likelihood (and ``mse``) is averaged
                over; None: every point. The reference's extrapolation mode scores only the
                points to predict.
            eps: ``(n_samples, batch, latent)`` fixed standard-normal draws for ``z0``.
        """
        x_hat, mean, std = self.reconstruct(
            x,
            mask,
            t,
            n_samples=n_samples,
            generator=generator,
            encoder_kwargs=encoder_kwargs,
            eps=eps,
            **decode_kwargs,
        )
        sq = (x_hat - x.unsqueeze(0)) ** 2  # (K, B, T, D)
        var = self.cfg.obs_std**2
        log_density = -0.5 * sq / var - math.log(self.cfg.obs_std) - 0.5 * math.log(2 * math.pi)
        if target is None:
            loglik = log_density.mean(dim=(1, 2, 3))  # (K,)
            mse = float(sq.detach().mean())
        else:
            w = target.to(sq.dtype).unsqueeze(-1).expand_as(x)  # (B, T, D)
            n_points = w.sum().clamp_min(1.0)
            loglik = (log_density * w).sum(dim=(1, 2, 3)) / n_points
            mse = float((sq.detach() * w).sum() / (n_points * sq.shape[0]))
        kl = _kl_standard_normal(mean, std).mean()
        loss = -torch.logsumexp(loglik - kl_coef * kl, dim=0)
        return ELBOTerms(
            loss=loss,
            loglik=float(loglik.detach().mean()),
            kl=float(kl.detach()),
            mse=mse,
        )


def _kl_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean, std²) || N(0, 1))."""
    return 0.5 * (mean**2 + std**2 - 1.0) - torch.log(std)


def kl_coefficient(epoch: int, wait: int = 10, rate: float = 0.99) -> float:
    """KL annealing: 0 for the first ``wait`` epochs, then ``1 - rate**(epoch - wait)`` (epochs
    counted from 0).

    The defaults (10, 0.99) are the latent_ode repository's ``run_models.py`` since mid-2019 (the
    version that builds the model with ``create_LatentODE_model``) and the protocol physid follows
    (PROTOCOLS.md). Its earlier version (with ``create_ODEVAE_model``) waited 50 epochs and used
    0.993 — pass those to compare.
    """
    if epoch < wait:
        return 0.0
    return 1.0 - rate ** (epoch - wait)
