"""Model-free baselines for irregularly-sampled time series: what a fitted model must beat.

Every baseline sees what the model's encoder sees — the values at the observed points of each
trajectory — and predicts every time point of the trajectory. The error is measured exactly as
the model's test error: squared error over the *target* points (all points for interpolation,
the points after the observed part for extrapolation), averaged over target points and features,
in whatever units the inputs are in (pass the normalised data to compare with a normalised MSE).

Interpolation (Rubanova et al. 2019, "reconstruct all points from a subset"):

- :func:`observed_mean`: per trajectory and feature, the mean of the observed values, constant in
  time.
- :func:`linear_interpolation`: piecewise-linear through the observed points, held constant
  before the first and after the last observed point.
- ``least_squares_line``: the least-squares straight line in time through the observed points
  (:func:`linear_extrapolation` with ``fit="least_squares"``), evaluated at every point: the best
  a model whose latent flow stays near-constant (``z(t) ≈ z0 + t f(z0)``, a linear decoder) can do.

Extrapolation (Rubanova et al. 2019, "observe the first part, predict the rest"):

- :func:`last_value`: the last observed value, held constant.
- :func:`linear_extrapolation`: a straight line continued past the observed part, either through
  the last two observed points (``fit="last_two"``) or the least-squares line through all observed
  points of the trajectory (``fit="least_squares"``). With a single observed point both fall back
  to the last value.

Shapes: ``x`` is ``(batch, time, features)``, ``t`` ``(time,)`` strictly increasing, masks
``(batch, time)`` bool. Every function is vectorised over the batch; none needs autograd.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from physid.errors import ConfigError

__all__ = [
    "INTERPOLATION_BASELINES",
    "EXTRAPOLATION_BASELINES",
    "observed_mean",
    "linear_interpolation",
    "last_value",
    "linear_extrapolation",
    "masked_mse",
    "baseline_predictions",
    "baseline_mse",
]

#: Baselines reported for the interpolation task, by name.
INTERPOLATION_BASELINES = ("observed_mean", "least_squares_line", "linear_interpolation")
#: Baselines reported for the extrapolation task, by name.
EXTRAPOLATION_BASELINES = (
    "observed_mean",
    "last_value",
    "linear_extrapolation_last_two",
    "linear_extrapolation_least_squares",
)


def _check(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if x.ndim != 3:
        raise ConfigError(f"x must be (batch, time, features), got shape {tuple(x.shape)}.")
    if t.ndim != 1 or t.shape[0] != x.shape[1]:
        raise ConfigError(f"t must be ({x.shape[1]},) to match x, got {tuple(t.shape)}.")
    if mask.shape != x.shape[:2]:
        raise ConfigError(f"mask must be {tuple(x.shape[:2])}, got {tuple(mask.shape)}.")
    mask = mask.to(device=x.device, dtype=torch.bool)
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        row = int(torch.nonzero(empty)[0, 0])
        raise ConfigError(f"trajectory {row} has no observed point; a baseline needs at least one.")
    return mask


def observed_mean(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The per-trajectory mean of the observed values, constant in time.

    Returns:
        ``(batch, time, features)``.
    """
    mask = _check(x, t, mask)
    m = mask.to(x.dtype).unsqueeze(-1)
    mean = (x * m).sum(dim=1) / m.sum(dim=1)  # (B, D)
    return mean.unsqueeze(1).expand_as(x).clone()


def _neighbours(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every point, the index of the closest observed point at or before it (``-1`` if none)
    and at or after it (``T`` if none); ``(batch, time)`` long each."""
    n_times = mask.shape[1]
    idx = torch.arange(n_times, device=mask.device).expand_as(mask)
    before = torch.where(mask, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    after_rev = torch.where(mask, idx, torch.full_like(idx, n_times)).flip(1).cummin(dim=1).values
    return before, after_rev.flip(1)


def linear_interpolation(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of the observed points in time; constant extension before
    the first and after the last observed point. Exact at observed points.

    Returns:
        ``(batch, time, features)``.
    """
    mask = _check(x, t, mask)
    n_times = x.shape[1]
    before, after = _neighbours(mask)
    # outside the observed range: both neighbours are the nearest observed point
    lo = torch.where(before < 0, after, before)
    hi = torch.where(after >= n_times, lo, after)
    tt = t.to(x.dtype)
    t_lo, t_hi = tt[lo], tt[hi]  # (B, T)
    span = t_hi - t_lo
    w = torch.where(span > 0, (tt.unsqueeze(0) - t_lo) / torch.where(span > 0, span, 1), 0)
    x_lo = torch.gather(x, 1, lo.unsqueeze(-1).expand_as(x))
    x_hi = torch.gather(x, 1, hi.unsqueeze(-1).expand_as(x))
    return x_lo + w.unsqueeze(-1) * (x_hi - x_lo)


def _last_two(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the last and the second-to-last observed point per row (the second equals the
    first where a row has one observed point); ``(batch,)`` long each."""
    n_times = mask.shape[1]
    idx = torch.arange(n_times, device=mask.device).expand_as(mask)
    scored = torch.where(mask, idx, torch.full_like(idx, -1))
    top = scored.topk(2, dim=1).values  # (B, 2) descending
    last = top[:, 0]
    prev = torch.where(top[:, 1] >= 0, top[:, 1], last)
    return last, prev


def last_value(x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last observed value of each trajectory, held constant over every time point.

    Returns:
        ``(batch, time, features)``.
    """
    mask = _check(x, t, mask)
    last, _ = _last_two(mask)
    value = x[torch.arange(x.shape[0], device=x.device), last]  # (B, D)
    return value.unsqueeze(1).expand_as(x).clone()


def linear_extrapolation(
    x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, *, fit: str = "last_two"
) -> torch.Tensor:
    """A straight line in time per trajectory and feature, evaluated at every time point.

    Args:
        x, t, mask: the data, times and observed points.
        fit: ``"last_two"``: the line through the last two observed points;
            ``"least_squares"``: the least-squares line through all observed points. A trajectory
            with one observed point gets the constant line through it.

    Returns:
        ``(batch, time, features)``.
    """
    mask = _check(x, t, mask)
    tt = t.to(x.dtype)
    rows = torch.arange(x.shape[0], device=x.device)
    if fit == "last_two":
        last, prev = _last_two(mask)
        x1, x0 = x[rows, last], x[rows, prev]  # (B, D)
        t1, t0 = tt[last], tt[prev]  # (B,)
        dt = t1 - t0
        slope = torch.where(
            (dt > 0).unsqueeze(-1), (x1 - x0) / torch.where(dt > 0, dt, 1).unsqueeze(-1), 0
        )
        return x1.unsqueeze(1) + slope.unsqueeze(1) * (tt.view(1, -1, 1) - t1.view(-1, 1, 1))
    if fit == "least_squares":
        m = mask.to(x.dtype)  # (B, T)
        n = m.sum(dim=1)  # (B,)
        t_mean = (m * tt).sum(dim=1) / n  # (B,)
        dtm = (tt.unsqueeze(0) - t_mean.unsqueeze(1)) * m  # (B, T), 0 where unobserved
        x_mean = (x * m.unsqueeze(-1)).sum(dim=1) / n.unsqueeze(-1)  # (B, D)
        sxx = (dtm**2).sum(dim=1)  # (B,)
        sxy = (dtm.unsqueeze(-1) * x).sum(dim=1)  # (B, D)
        slope = torch.where(
            (sxx > 0).unsqueeze(-1), sxy / torch.where(sxx > 0, sxx, 1).unsqueeze(-1), 0
        )
        centred = tt.view(1, -1, 1) - t_mean.view(-1, 1, 1)
        return x_mean.unsqueeze(1) + slope.unsqueeze(1) * centred
    raise ConfigError(f"unknown fit {fit!r}; choose 'last_two' or 'least_squares'.")


def masked_mse(pred: torch.Tensor, x: torch.Tensor, target: torch.Tensor | None = None) -> float:
    """Mean squared error over the target points and every feature.

    Args:
        pred: ``(..., batch, time, features)`` (leading sample axes are averaged too).
        x: ``(batch, time, features)``.
        target: ``(batch, time)`` bool, the points scored; None scores every point.
    """
    sq = (pred - x) ** 2
    if target is None:
        return float(sq.mean())
    w = target.to(sq.dtype).unsqueeze(-1).expand_as(x)
    total = float((sq * w).sum())
    count = float(w.sum()) * (sq.numel() // x.numel())
    if count == 0:
        raise ConfigError("no target point to score.")
    return total / count


def baseline_predictions(
    x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, task: str = "interpolation"
) -> dict[str, torch.Tensor]:
    """Every baseline of the task (:data:`INTERPOLATION_BASELINES` or
    :data:`EXTRAPOLATION_BASELINES`), by name, each ``(batch, time, features)``."""
    makers = {
        "observed_mean": lambda: observed_mean(x, t, mask),
        "linear_interpolation": lambda: linear_interpolation(x, t, mask),
        "least_squares_line": lambda: linear_extrapolation(x, t, mask, fit="least_squares"),
        "last_value": lambda: last_value(x, t, mask),
        "linear_extrapolation_last_two": lambda: linear_extrapolation(x, t, mask, fit="last_two"),
        "linear_extrapolation_least_squares": lambda: linear_extrapolation(
            x, t, mask, fit="least_squares"
        ),
    }
    names: tuple[str, ...]
    if task == "interpolation":
        names = INTERPOLATION_BASELINES
    elif task == "extrapolation":
        names = EXTRAPOLATION_BASELINES
    else:
        raise ConfigError(f"unknown task {task!r}; choose 'interpolation' or 'extrapolation'.")
    return {name: makers[name]() for name in names}


def baseline_mse(
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor | None = None,
    task: str = "interpolation",
) -> Mapping[str, float]:
    """The MSE of every baseline of the task over the target points (see :func:`masked_mse`).

    Args:
        x: ``(batch, time, features)``; mask: ``(batch, time)`` observed points;
        target: ``(batch, time)`` scored points (None: all).
        task: ``"interpolation"`` or ``"extrapolation"``.

    Returns:
        ``{name: mse}``.
    """
    with torch.no_grad():
        preds = baseline_predictions(x, t, mask, task)
        return {name: masked_mse(p, x, target) for name, p in preds.items()}
