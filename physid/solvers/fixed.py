"""Fixed-step explicit Runge-Kutta methods: forward Euler, the midpoint rule (RK2), classical RK4.

Each carries a continuous extension (dense output) of its own order, so output times between
grid points are interpolated instead of cutting steps.
"""

from __future__ import annotations

from physid.solvers.tableau import ButcherTableau

__all__ = ["EULER", "MIDPOINT", "RK4"]

EULER = ButcherTableau(
    name="euler",
    order=1,
    c=(0.0,),
    a=((),),
    b=(1.0,),
    dense=((1.0,),),
    dense_order=1,
)

# b_1(theta) = theta - theta^2, b_2(theta) = theta^2: second-order continuous extension.
MIDPOINT = ButcherTableau(
    name="rk2",
    order=2,
    c=(0.0, 0.5),
    a=((), (0.5,)),
    b=(0.0, 1.0),
    dense=((1.0, -1.0), (0.0, 1.0)),
    dense_order=2,
)

# The classical RK4 with its third-order continuous extension (Hairer, Norsett & Wanner I, II.6).
RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    dense=(
        (1.0, -1.5, 2 / 3),
        (0.0, 1.0, -2 / 3),
        (0.0, 1.0, -2 / 3),
        (0.0, -0.5, 2 / 3),
    ),
    dense_order=3,
)
