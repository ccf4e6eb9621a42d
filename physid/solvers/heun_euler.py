"""Heun's method with an embedded forward Euler error estimate: an adaptive 2(1) pair."""

from __future__ import annotations

from physid.solvers.tableau import ButcherTableau

__all__ = ["HEUN_EULER"]

HEUN_EULER = ButcherTableau(
    name="heun_euler",
    order=2,
    c=(0.0, 1.0),
    a=((), (1.0,)),
    b=(0.5, 0.5),
    b_err=(0.5 - 1.0, 0.5 - 0.0),
    error_order=1,
    # b_1(theta) = theta - theta^2/2, b_2(theta) = theta^2/2: second-order continuous extension.
    dense=((1.0, -0.5), (0.0, 0.5)),
    dense_order=2,
)
