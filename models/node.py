"""Neural ODE with physics-aware ("augmented") inputs, the ACA paper's three-body NODE.

Zhuang et al. 2020, Section 4.4 / Eq. 33-34: the kinematics dr/dt = K2 v are known; the
acceleration is a small MLP of the positions, their pairwise differences and the differences
divided by the first three powers of the distance (45 inputs -> 100 tanh -> 9, 5,509
parameters), scaled by K1.

:class:`PairwiseNODE` (physid's ``node-pair``, not in the paper) keeps the paper's augmented
direction features but adds the structure of interacting point masses: the acceleration of a
body is a sum of central pair forces, each a learned function of the pair's distance and of
which bodies they are.
"""

from __future__ import annotations

from typing import Any

import torch
from physid.envs.three_body import K1, K2, STATE_DIM
from torch import nn

from physid.errors import ConfigError

__all__ = ["AUG_DIM", "augmented_features", "AugmentedNODE", "NODE_SCALINGS", "PairwiseNODE"]

#: ``none``: the paper's network; ``inputs``: each block of 9 augmented inputs divided by its RMS
#: over the training positions; ``inputs+outputs``: also the MLP's output multiplied by the RMS of
#: the acceleration (over K1) estimated by finite differences of the training velocities. The
#: scales are fixed buffers (saved with the model), not parameters: 5,509 parameters either way.
NODE_SCALINGS = ("none", "inputs", "inputs+outputs")

AUG_DIM = 45
_PAIRS = ([0, 0, 1], [1, 2, 2])  # (1,2), (1,3), (2,3)


def augmented_features(r: torch.Tensor) -> torch.Tensor:
    """The 45 augmented inputs of positions ``(..., 9)`` = ``[r1, r2, r3]``.

    Returns ``(..., 45)``: ``[r1, r2, r3; d12, d13, d23; d/|d|, d/|d|^2, d/|d|^3]`` with
    ``d_ij = r_i - r_j`` (each block 9 numbers, pairs in the order 12, 13, 23).
    """
    if r.shape[-1] != 9:
        raise ConfigError(f"augmented_features takes positions (..., 9), got shape {r.shape}.")
    bodies = r.reshape(*r.shape[:-1], 3, 3)
    d = bodies[..., _PAIRS[0], :] - bodies[..., _PAIRS[1], :]  # (..., 3 pairs, 3)
    norm = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    flat = [x.flatten(-2) for x in (d, d / norm, d / norm**2, d / norm**3)]
    return torch.cat([r, *flat], dim=-1)


class AugmentedNODE(nn.Module):
    """dr/dt = K2 v; dv/dt = K1 * MLP(augmented_features(r)).

    Args:
        hidden: width of the hidden tanh layer (100 in the paper).
        dtype: parameter dtype.

    The weights use PyTorch's default initialisation (seed with ``torch.manual_seed``).

    ``forward(t, y)`` takes states ``(..., 18)`` and returns their time derivative.
    """

    def __init__(
        self,
        hidden: int = 100,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(AUG_DIM, hidden, dtype=dtype), nn.Tanh(), nn.Linear(hidden, 9, dtype=dtype)
        )
        self.register_buffer("input_scale", torch.ones(AUG_DIM, dtype=dtype))
        self.register_buffer("output_scale", torch.ones((), dtype=dtype))

    @torch.no_grad()
    def set_scaling(self, scaling: str, t: torch.Tensor, y: torch.Tensor) -> None:
        """Condition the network on training states ``y (T, 18)`` at times ``t (T,)``.

        See :data:`NODE_SCALINGS`. The input scale of a block is 1 / RMS of that block of
        :func:`augmented_features` over the trajectory; the output scale is the RMS of
        ``dv/dt / K1`` by central differences. The paper's network is ``scaling="none"``.
        """
        if scaling not in NODE_SCALINGS:
            raise ConfigError(
                f"scaling must be one of {', '.join(NODE_SCALINGS)}, got {scaling!r}."
            )
        self.input_scale.fill_(1.0)
        self.output_scale.fill_(1.0)
        if scaling == "none":
            return
        feats = augmented_features(y[..., :9].to(self.input_scale))
        rms = feats.reshape(-1, AUG_DIM // 9, 9).pow(2).mean(dim=(0, 2)).sqrt()
        self.input_scale.copy_((1.0 / rms.clamp_min(1e-12)).repeat_interleave(9))
        if scaling == "inputs+outputs":
            v = y[..., 9:].to(self.input_scale)
            tt = t.to(self.input_scale)
            accel = (v[2:] - v[:-2]) / (tt[2:] - tt[:-2]).unsqueeze(-1) / K1
            self.output_scale.fill_(float(accel.pow(2).mean().sqrt()))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # Checkpoints written before the scales existed are the paper's network (scales 1).
        for name in ("input_scale", "output_scale"):
            if prefix + name not in state_dict:
                state_dict[prefix + name] = torch.ones_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.shape[-1] != STATE_DIM:
            raise ConfigError(f"AugmentedNODE takes states (..., 18), got shape {y.shape}.")
        feats = augmented_features(y[..., :9]) * self.input_scale
        accel = (K1 * self.output_scale) * self.net(feats)
        return torch.cat([K2 * y[..., 9:], accel], dim=-1)


class PairwiseNODE(nn.Module):
    """dr/dt = K2 v; dv_i/dt = K1 * sum_{j != i} sum_k c_k(|d_ij|, i, j) d_ij / |d_ij|^k.

    ``d_ij = r_j - r_i`` and ``k = 1, 2, 3``: the paper's augmented direction features, one
    pair at a time. The coefficients ``c`` come from one MLP shared by the six ordered pairs;
    its inputs are ``|d_ij|``, ``1/|d_ij|`` and one-hot codes of ``i`` and ``j`` (8 inputs ->
    ``hidden`` tanh -> 3; 1,203 parameters at ``hidden=100``). What it knows: forces between
    pairs superpose and are central (along ``d_ij``), so the field is translation and rotation
    equivariant; what it learns: how each pair's force depends on distance (Newton's law is
    ``c = (0, 0, m_j)``, which nothing in the model singles out).

    The output layer starts at zero (free flight), so the first solves are benign; with the
    default initialisation the random force law sends the bodies apart and training can
    settle in a local minimum.

    Args:
        hidden: width of the hidden tanh layer.
        dtype: parameter dtype.
    """

    def __init__(self, hidden: int = 100, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, hidden, dtype=dtype), nn.Tanh(), nn.Linear(hidden, 3, dtype=dtype)
        )
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        i, j = zip(*[(i, j) for i in range(3) for j in range(3) if i != j], strict=True)
        eye = torch.eye(3, dtype=dtype)
        self.register_buffer("i", torch.tensor(i), persistent=False)
        self.register_buffer("j", torch.tensor(j), persistent=False)
        self.register_buffer(
            "pair_codes", torch.cat([eye[list(i)], eye[list(j)]], -1), persistent=False
        )

    def coefficients(self, distance: torch.Tensor) -> torch.Tensor:
        """``c_k`` of the six ordered pairs at distances ``(..., 6, 1)``: ``(..., 6, 3)``.

        Pairs in the order (1,2), (1,3), (2,1), (2,3), (3,1), (3,2) (force on the first).
        """
        codes = self.pair_codes.expand(*distance.shape[:-1], 6)
        return self.net(torch.cat([distance, 1.0 / distance, codes], dim=-1))

    def force_magnitude(self, distance: torch.Tensor) -> torch.Tensor:
        """The pair force along ``d_ij / |d_ij|`` (per K1), ``c1 + c2/r + c3/r^2``, at
        distances ``(..., 6, 1)``: ``(..., 6, 1)``. Newton's law is ``m_j / r^2``."""
        c = self.coefficients(distance)
        return c[..., 0:1] + c[..., 1:2] / distance + c[..., 2:3] / distance**2

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.shape[-1] != STATE_DIM:
            raise ConfigError(f"PairwiseNODE takes states (..., 18), got shape {y.shape}.")
        r = y[..., :9].reshape(*y.shape[:-1], 3, 3)
        d = r[..., self.j, :] - r[..., self.i, :]  # (..., 6, 3)
        dist = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        force = self.force_magnitude(dist) * (d / dist)
        accel = torch.zeros_like(r).index_add_(-2, self.i, force)
        return torch.cat([K2 * y[..., 9:], K1 * accel.flatten(-2)], dim=-1)
