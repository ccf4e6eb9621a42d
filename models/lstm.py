"""LSTM sequence baselines of the ACA paper's three-body experiment (Table 5: LSTM, LSTM-aug).

The paper gives no code, only the protocol: trained on windows of 20 consecutive points, rolled
out autoregressively from the first 10 points. physid's version reads positions on a uniform
grid; at step k it sees ``x_k`` (the 9 positions, or their 45 augmented features) and predicts
the increment ``r_{k+1} - r_k``. Inputs and increments are standardised with statistics of the
training data (inputs by mean and standard deviation, increments by their root mean square;
buffers set by :meth:`LSTMBaseline.fit_normalisation`).
"""

from __future__ import annotations

import torch
from physid.models.node import AUG_DIM, augmented_features
from torch import nn

from physid.errors import ConfigError

__all__ = ["LSTMBaseline"]


class LSTMBaseline(nn.Module):
    """Next-step LSTM on the three bodies' positions.

    Args:
        aug: feed the 45 augmented features (``models.node.augmented_features``) instead of the
            9 positions.
        hidden: LSTM hidden size.
        num_layers: stacked LSTM layers.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        aug: bool = False,
        hidden: int = 64,
        num_layers: int = 1,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.aug = aug
        n_in = AUG_DIM if aug else 9
        self.lstm = nn.LSTM(n_in, hidden, num_layers=num_layers, batch_first=True, dtype=dtype)
        self.head = nn.Linear(hidden, 9, dtype=dtype)
        self.register_buffer("in_mean", torch.zeros(n_in, dtype=dtype))
        self.register_buffer("in_std", torch.ones(n_in, dtype=dtype))
        self.register_buffer("step_scale", torch.ones(9, dtype=dtype))

    def _features(self, r: torch.Tensor) -> torch.Tensor:
        return augmented_features(r) if self.aug else r

    @torch.no_grad()
    def fit_normalisation(self, positions: torch.Tensor) -> None:
        """Set the input and increment scales from training positions ``(..., T, 9)``."""
        r = positions.to(self.in_mean.dtype)
        x = self._features(r).reshape(-1, self.in_mean.shape[0])
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-8))
        steps = (r[..., 1:, :] - r[..., :-1, :]).reshape(-1, 9)
        self.step_scale.copy_(steps.pow(2).mean(0).sqrt().clamp_min(1e-8))

    def _step(
        self, r: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = (self._features(r) - self.in_mean) / self.in_std
        h, state = self.lstm(x, state)
        return r + self.head(h) * self.step_scale, state

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """One-step predictions with teacher forcing.

        Args:
            positions: ``(batch, L, 9)``.

        Returns:
            ``(batch, L, 9)``: entry k is the prediction of ``positions[:, k + 1]``.
        """
        if positions.ndim != 3 or positions.shape[-1] != 9:
            raise ConfigError(f"LSTMBaseline takes positions (batch, L, 9), got {positions.shape}.")
        pred, _ = self._step(positions.to(self.in_mean.dtype), None)
        return pred

    @torch.no_grad()
    def rollout(self, first_points: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Autoregressive rollout.

        Args:
            first_points: ``(k, 9)`` or ``(batch, k, 9)`` observed positions (the paper feeds 10).
            n_steps: number of further points to predict.

        Returns:
            ``(..., k + n_steps, 9)``: the given points followed by the predictions.
        """
        squeeze = first_points.ndim == 2
        r = first_points[None] if squeeze else first_points
        if r.ndim != 3 or r.shape[-1] != 9 or r.shape[1] < 1:
            raise ConfigError(f"rollout takes (k, 9) or (batch, k, 9), got {first_points.shape}.")
        r = r.to(self.in_mean.dtype)
        pred, state = self._step(r, None)
        out = [r]
        nxt = pred[:, -1:]
        for _ in range(n_steps):
            out.append(nxt)
            nxt, state = self._step(nxt, state)
        traj = torch.cat(out, dim=1)
        return traj[0] if squeeze else traj
