from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from physid.errors import ConfigError
from physid.evaluate import (
    mse,
    mse_over_time,
    plot_error_vs_time,
    plot_loss_curve,
    plot_trajectories,
    squared_error_over_time,
)


def test_mse_over_time_values() -> None:
    target = np.zeros((2, 3, 2))
    pred = np.zeros((2, 3, 2))
    pred[:, 1, :] = 1.0  # error 1 everywhere at t1
    pred[0, 2, 0] = 2.0  # error 4 in one of four numbers at t2
    np.testing.assert_allclose(mse_over_time(pred, target), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        squared_error_over_time(pred, target, state_reduction="sum"), [0.0, 2.0, 2.0]
    )
    # odeint's (time, batch, state) layout
    np.testing.assert_allclose(
        mse_over_time(np.moveaxis(pred, 1, 0), np.moveaxis(target, 1, 0), time_dim=0),
        [0.0, 1.0, 1.0],
    )
    assert mse(torch.as_tensor(pred), target) == pytest.approx((4 * 1 + 4) / 12)


def test_mask_leaves_points_out() -> None:
    target = np.zeros((2, 2, 1))
    pred = np.array([[[1.0], [3.0]], [[5.0], [0.0]]])
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_allclose(mse_over_time(pred, target, mask=mask), [1.0, 0.0])
    assert mse(pred, target, mask=mask) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        mse_over_time(pred, target[:, :1])


def test_plots_are_written(tmp_path: Path) -> None:
    t = np.linspace(0, 1, 20)
    y = np.stack([np.sin(t), np.cos(t)], axis=-1)[None]
    p1 = plot_error_vs_time(
        t, {"aca": t + 0.1, "adjoint": 2 * t + 0.1}, tmp_path / "e.png", train_end=0.5
    )
    p2 = plot_trajectories(
        t,
        y,
        tmp_path / "traj.png",
        pred=y + 0.01,
        labels=["x", "v"],
        observed=np.arange(20) % 3 == 0,
    )
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(
            json.dumps(
                {
                    "epoch": e,
                    "loss": 1.0 / (e + 1),
                    "nfe_forward": 10 + e,
                    "seconds": 0.1,
                    "lr": 0.1,
                }
            )
            + "\n"
            for e in range(5)
        )
    )
    p3 = plot_loss_curve(tmp_path, tmp_path / "plots" / "loss.png")
    for p in (p1, p2, p3):
        assert p.read_bytes()[:4] == b"\x89PNG"
