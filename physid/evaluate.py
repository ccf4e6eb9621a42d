"""Generic extrapolation metrics and plots (no physical system is known here).

Arrays follow the data convention ``(trajectories, time, state)`` unless a ``time_dim`` says
otherwise; torch tensors and numpy arrays are both accepted. Plots are drawn with matplotlib's
object API (no pyplot, no display needed) and written as PNG files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from physid._io import read_jsonl
from physid.errors import ConfigError

__all__ = [
    "save_figure",
    "squared_error_over_time",
    "mse_over_time",
    "mse",
    "plot_error_vs_time",
    "plot_loss_curve",
    "plot_trajectories",
]

Array = np.ndarray | torch.Tensor


def _np(x: Array | Sequence[float]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def squared_error_over_time(
    pred: Array,
    target: Array,
    *,
    mask: Array | None = None,
    time_dim: int = -2,
    state_reduction: Literal["mean", "sum"] = "mean",
) -> np.ndarray:
    """Squared error at each time, averaged over every other axis but the state.

    Args:
        pred: predictions, e.g. ``(trajectories, time, state)``.
        target: the truth, same shape.
        mask: optional observed points, broadcastable to ``pred`` (``(trajectories, time)`` is
            expanded over the state); unobserved points are left out of the averages.
        time_dim: the time axis (``-2`` for ``(..., time, state)``; use ``0`` for odeint's
            ``(time, batch, state)``).
        state_reduction: ``"mean"`` (MSE per coordinate) or ``"sum"`` (squared distance, e.g.
            the three-body metric Σ over 9 position coordinates).

    Returns:
        ``(time,)`` float64; ``nan`` where nothing is observed.

    Raises:
        ConfigError: shapes do not match.
    """
    p, y = _np(pred), _np(target)
    if p.shape != y.shape:
        raise ConfigError(f"prediction shape {p.shape} differs from target shape {y.shape}.")
    if p.ndim < 2:
        raise ConfigError(f"need at least (time, state) arrays, got shape {p.shape}.")
    td = time_dim % p.ndim
    if td == p.ndim - 1:
        raise ConfigError("time_dim cannot be the last (state) axis.")
    err = (p - y) ** 2
    if mask is None:
        w = np.ones_like(err)
    else:
        m = _np(mask)
        if m.ndim == p.ndim - 1:
            m = m[..., None]
        try:
            w = np.broadcast_to(m, err.shape).astype(np.float64)
        except ValueError as exc:
            raise ConfigError(f"mask shape {m.shape} does not fit {p.shape}.") from exc
        err = np.where(w > 0, err, 0.0)
    err = np.moveaxis(err, td, 0).reshape(p.shape[td], -1, p.shape[-1])
    w = np.moveaxis(w, td, 0).reshape(p.shape[td], -1, p.shape[-1])
    per_state = err.sum(axis=1)
    count = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_per_state = per_state / count  # (time, state)
        if state_reduction == "mean":
            out = per_state.sum(axis=1) / count.sum(axis=1)
        elif state_reduction == "sum":
            out = np.nansum(mean_per_state, axis=1)
            out[count.sum(axis=1) == 0] = np.nan
        else:
            raise ConfigError(f"state_reduction must be 'mean' or 'sum', not {state_reduction!r}.")
    return out


def mse_over_time(
    pred: Array, target: Array, *, mask: Array | None = None, time_dim: int = -2
) -> np.ndarray:
    """Mean squared error per coordinate at each time: ``(time,)`` (see
    :func:`squared_error_over_time` with ``state_reduction="mean"``)."""
    return squared_error_over_time(pred, target, mask=mask, time_dim=time_dim)


def mse(pred: Array, target: Array, *, mask: Array | None = None) -> float:
    """Mean squared error over every (observed) number."""
    p, y = _np(pred), _np(target)
    if p.shape != y.shape:
        raise ConfigError(f"prediction shape {p.shape} differs from target shape {y.shape}.")
    err = (p - y) ** 2
    if mask is None:
        return float(err.mean())
    m = _np(mask)
    if m.ndim == p.ndim - 1:
        m = m[..., None]
    w = np.broadcast_to(m, err.shape)
    total = float(w.sum())
    return float((err * w).sum() / total) if total > 0 else math.nan


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically (format from the suffix, PNG without one; the
    parent folder is created)."""
    from physid._io import atomic_write

    out = Path(path)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    return out


def plot_error_vs_time(
    t: Array | Sequence[float],
    errors: Mapping[str, Array | Sequence[float]],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "squared error",
    title: str | None = None,
    logy: bool = True,
    train_end: float | None = None,
) -> Path:
    """Plot one error curve per label against time.

    Args:
        t: ``(time,)`` times.
        errors: label → ``(time,)`` errors (e.g. from :func:`mse_over_time`).
        path: the image file to write (PNG by suffix).
        ylabel: the y-axis label.
        title: the figure title.
        logy: logarithmic y axis (when every value is positive).
        train_end: draw a vertical line where the training interval ends.

    Returns:
        the path written.
    """
    tt = _np(t)
    fig = _figure()
    ax = fig.add_subplot()
    positive = True
    for label, e in errors.items():
        ee = _np(e)
        if ee.shape != tt.shape:
            raise ConfigError(f"error curve {label!r} has shape {ee.shape}, times {tt.shape}.")
        positive = positive and bool(np.all(ee[np.isfinite(ee)] > 0))
        ax.plot(tt, ee, label=label)
    if logy and positive and errors:
        ax.set_yscale("log")
    if train_end is not None:
        ax.axvline(train_end, color="grey", linestyle="--", linewidth=1, label="end of training")
    ax.set_xlabel("t")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if errors:
        ax.legend()
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_loss_curve(
    metrics: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    keys: Sequence[str] | None = None,
    title: str | None = None,
    xlabel: str = "epoch",
) -> Path:
    """Plot metrics against epoch from a ``metrics.jsonl`` file (or its records).

    Args:
        metrics: the path of ``metrics.jsonl``, a run directory holding one, or the records.
        path: the image file to write.
        keys: the metrics to draw; by default every numeric one except ``epoch``,
            ``seconds`` and ``lr`` (NFE counts go on a second panel when present).
        title: the figure title.
        xlabel: what one record is (``"epoch"``; a least-squares fit's records are iterations).

    Returns:
        the path written.
    """
    if isinstance(metrics, str | os.PathLike):
        src = Path(metrics)
        records = read_jsonl(src / "metrics.jsonl" if src.is_dir() else src)
    else:
        records = [dict(r) for r in metrics]
    skip = {"epoch", "seconds", "lr"}
    if keys is None:
        seen: dict[str, None] = {}
        for r in records:
            for k, v in r.items():
                if k not in skip and isinstance(v, int | float) and not isinstance(v, bool):
                    seen[k] = None
        keys = list(seen)
    nfe_keys = [k for k in keys if "nfe" in k.lower()]
    loss_keys = [k for k in keys if k not in nfe_keys]
    panels = [ks for ks in (loss_keys, nfe_keys) if ks]
    fig = _figure(7.0, 3.2 * max(1, len(panels)))
    axes = [fig.add_subplot(len(panels) or 1, 1, i + 1) for i in range(max(1, len(panels)))]
    for ax, ks in zip(axes, panels, strict=False):
        positive = True
        for k in ks:
            xs = [r["epoch"] for r in records if isinstance(r.get(k), int | float)]
            ys = [float(r[k]) for r in records if isinstance(r.get(k), int | float)]
            if ys:
                positive = positive and all(v > 0 for v in ys)
                ax.plot(xs, ys, label=k, marker="." if len(ys) < 50 else None)
        if positive and ks is loss_keys:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.legend()
        ax.grid(True, alpha=0.3)
    if title:
        axes[0].set_title(title)
    return save_figure(fig, path)


def plot_trajectories(
    t: Array | Sequence[float],
    truth: Array,
    path: str | os.PathLike[str],
    *,
    pred: Array | None = None,
    labels: Sequence[str] | None = None,
    trajectory: int = 0,
    max_states: int = 12,
    observed: Array | None = None,
    train_end: float | None = None,
    title: str | None = None,
) -> Path:
    """Plot each state coordinate of one trajectory against time: truth, and prediction.

    Args:
        t: ``(time,)`` times.
        truth: ``(time, state)`` or ``(trajectories, time, state)``.
        path: the image file to write.
        pred: a prediction of the same shape as ``truth`` (dashed).
        labels: a name per state coordinate.
        trajectory: which trajectory to draw when the arrays have a trajectory axis.
        max_states: draw at most this many coordinates (the first ones).
        observed: ``(time,)`` or ``(trajectories, time)`` mask; observed points are marked.
        train_end: draw a vertical line where the training interval ends.
        title: the figure title.

    Returns:
        the path written.
    """
    tt = _np(t)
    y = _np(truth)
    p = None if pred is None else _np(pred)
    m = None if observed is None else _np(observed) > 0
    if y.ndim == 3:
        y = y[trajectory]
        p = None if p is None else p[trajectory]
        if m is not None and m.ndim == 2:
            m = m[trajectory]
    if y.ndim != 2 or y.shape[0] != tt.shape[0]:
        raise ConfigError(f"truth must be (time, state) with time = {tt.shape[0]}, got {y.shape}.")
    if p is not None and p.shape != y.shape:
        raise ConfigError(f"prediction shape {p.shape} differs from truth shape {y.shape}.")
    n = min(y.shape[1], max_states)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.0 * cols, 2.4 * rows)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(tt, y[:, i], color="black", linewidth=1.2, label="truth")
        if p is not None:
            ax.plot(tt, p[:, i], color="tab:red", linestyle="--", linewidth=1.2, label="model")
        if m is not None:
            ax.plot(tt[m], y[m, i], "o", color="tab:blue", markersize=3, label="observed")
        if train_end is not None:
            ax.axvline(train_end, color="grey", linestyle=":", linewidth=1)
        ax.set_title(labels[i] if labels is not None and i < len(labels) else f"state {i}")
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
