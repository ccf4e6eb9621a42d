"""The three-body experiment of the ACA paper (Zhuang et al. 2020, Table 5), end to end.

Data: the true system simulated on the training grid (1000 points on [0, 1]) and the test grid
(2000 points on [0, 2], half a training step off the training grid, t[0] = 0). Metric: mean over test
times of the squared position error summed over the 9 coordinates.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.three_body import (
    ThreeBodyParams,
    default_initial_state,
    simulate as simulate_truth,
    eval_times,
    train_times,
)

__all__ = ["ThreeBodyData", "make_data", "position_mse"]


@dataclasses.dataclass(frozen=True)
class ThreeBodyData:
    """Ground truth on the training and test grids.

    Attributes:
        params: the true system.
        t_train: ``(1000,)``; y_train: ``(1000, 18)``.
        t_test: ``(2000,)``; y_test: ``(2000, 18)``.
    """

    params: ThreeBodyParams
    t_train: np.ndarray
    y_train: np.ndarray
    t_test: np.ndarray
    y_test: np.ndarray

    @property
    def y0(self) -> np.ndarray:
        return self.y_train[0]


def make_data(
    params: ThreeBodyParams | None = None,
    y0: np.ndarray | None = None,
    *,
    n_train: int = 1000,
    n_test: int = 2000,
    t_train_end: float = 1.0,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> ThreeBodyData:
    """Simulate the true system on the training and test grids (default: the paper's system)."""
    params = params if params is not None else ThreeBodyParams()
    y0 = default_initial_state() if y0 is None else np.asarray(y0, dtype=np.float64)
    t_train = train_times(n_train, t_train_end)
    t_test = eval_times(n_test, n_train, t_train_end)
    return ThreeBodyData(
        params=params,
        t_train=t_train,
        y_train=simulate_truth(params, y0, t_train, rtol=rtol, atol=atol),
        t_test=t_test,
        y_test=simulate_truth(params, y0, t_test, rtol=rtol, atol=atol),
    )


def position_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over time of the squared position error summed over the 9 coordinates.

    Args:
        pred, truth: ``(T, 18)`` states or ``(T, 9)`` positions.
    """
    pred = np.asarray(pred)[..., :9]
    truth = np.asarray(truth)[..., :9]
    return float(np.mean(np.sum((pred - truth) ** 2, axis=-1)))
