"""The two tasks of latent ODEs on irregularly-sampled time series (Rubanova et al. 2019, section
4), their masks, and scoring the model beside model-free baselines.

- **interpolation**: the encoder sees ``int(T s)`` random points of each window; every one of the
  ``T`` points is scored.
- **extrapolation**: the encoder sees ``int(T_obs s)`` random points of the *first* part of each
  window (``T_obs = round(T * split)``, the first half by default); only the points after it are
  scored. (The reference code's hopper branch observes the first third of the full 200-step
  trajectory instead of half of a window, and starts its latent solve at the first *predicted*
  time rather than at the first observed time; physid solves from the window's start, where the
  encoder's ``z0`` lives.)

The baselines (:mod:`physid.baselines`) are scored on the same points, the same masks and the
same (normalised) data, so that ``model / baseline`` ratios are meaningful.

Shapes: ``x`` ``(batch, time, features)``, ``t`` ``(time,)``, masks ``(batch, time)`` bool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from physid.models.latent_ode import LatentODE

from physid.baselines import baseline_mse, baseline_predictions, masked_mse
from physid.data import subsample_mask
from physid.errors import ConfigError

__all__ = [
    "TASKS",
    "check_task",
    "observed_span",
    "task_masks",
    "model_predictions",
    "model_mse",
    "score",
]

TASKS = ("interpolation", "extrapolation")


def check_task(task: str, split: float = 0.5) -> None:
    """Raise :class:`ConfigError` for an unknown task or a split outside (0, 1)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose {' or '.join(TASKS)}.")
    if not 0.0 < split < 1.0:
        raise ConfigError(f"the extrapolation split must be in (0, 1), got {split}.")


def observed_span(n_times: int, task: str, split: float = 0.5) -> int:
    """How many leading points of a window the encoder may see: all of them for interpolation,
    ``round(n_times * split)`` (at least 1, at most ``n_times - 1``) for extrapolation."""
    check_task(task, split)
    if task == "interpolation":
        return n_times
    if n_times < 2:
        raise ConfigError("extrapolation needs windows of at least 2 points.")
    return min(max(1, round(n_times * split)), n_times - 1)


def task_masks(
    n: int,
    n_times: int,
    observed: float,
    task: str = "interpolation",
    *,
    split: float = 0.5,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The observed and the scored points of ``n`` windows.

    Args:
        n, n_times: the batch and the window length.
        observed: the fraction ``s`` of the *observable* span kept (``int(span * s)`` points per
            window, at least 1, drawn by :func:`physid.data.subsample_mask`).
        task: ``"interpolation"`` or ``"extrapolation"``.
        split: for extrapolation, the observable fraction of the window (0.5: first half).
        generator, seed: the random source (see :func:`physid.data.subsample_mask`).
        device: device of the masks.

    Returns:
        ``(observed_mask, target_mask)``, each ``(n, n_times)`` bool. For interpolation the
        target is every point; for extrapolation it is every point after the observable span.
    """
    span = observed_span(n_times, task, split)
    part = subsample_mask(n, span, observed, generator=generator, seed=seed)
    obs = torch.zeros(n, n_times, dtype=torch.bool, device=part.device)
    obs[:, :span] = part
    target = torch.ones(n, n_times, dtype=torch.bool, device=part.device)
    target[:, :span] = task == "interpolation"
    if device is not None:
        obs, target = obs.to(device), target.to(device)
    return obs, target


def model_predictions(
    model: LatentODE,
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    posterior_mean: bool = False,
    batch_size: int = 500,
    **decode_kwargs: Any,
) -> torch.Tensor:
    """The model's reconstruction of every point, from the observed points only.

    Args:
        x, t, mask: data, times, observed points (unobserved values are never read).
        n_samples: z0 samples (ignored with ``posterior_mean``).
        posterior_mean: decode the mean of ``q(z0)`` instead of samples (one "sample").
        batch_size: windows per chunk (memory only).
        **decode_kwargs: :meth:`LatentODE.decode` options (method, solver, tolerances, stats).

    Returns:
        ``(samples, batch, time, features)`` (``samples`` = 1 with ``posterior_mean``).
    """
    outs = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for a in range(0, x.shape[0], batch_size):
                xb, mb = x[a : a + batch_size], mask[a : a + batch_size]
                if posterior_mean:
                    mean, _ = model.encoder(xb, mb, t)
                    outs.append(model.decode(mean.unsqueeze(0), t, **decode_kwargs))
                else:
                    x_hat, _, _ = model.reconstruct(
                        xb, mb, t, n_samples=n_samples, generator=generator, **decode_kwargs
                    )
                    outs.append(x_hat)
    finally:
        model.train(was_training)
    return torch.cat(outs, dim=1)


def model_mse(
    model: LatentODE,
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor | None = None,
    **kwargs: Any,
) -> float:
    """The model's MSE over the target points (all if None), averaged over samples, points and
    features (:func:`physid.baselines.masked_mse`); ``kwargs`` as :func:`model_predictions`."""
    return masked_mse(model_predictions(model, x, t, mask, **kwargs), x, target)


def score(
    model_mse_value: float,
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor | None,
    task: str,
) -> dict[str, Any]:
    """The model's MSE beside every baseline of the task, on the same points.

    Returns:
        ``{"task", "model", "baselines": {name: mse}, "ratio_to": {name: model / baseline},
        "beats": [names of baselines with a larger MSE]}``.
    """
    check_task(task)
    base = dict(baseline_mse(x, t, mask, target, task))
    ratio = {k: (model_mse_value / v if v > 0 else float("inf")) for k, v in base.items()}
    return {
        "task": task,
        "model": model_mse_value,
        "baselines": base,
        "ratio_to": ratio,
        "beats": sorted(k for k, v in base.items() if model_mse_value < v),
    }


def baseline_curves(
    x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, task: str
) -> Mapping[str, torch.Tensor]:
    """The baselines' predictions (for plots), by name, each ``(batch, time, features)``."""
    return baseline_predictions(x, t, mask, task)
