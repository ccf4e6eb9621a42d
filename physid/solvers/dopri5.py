"""Dormand-Prince 5(4) (Dormand & Prince 1980) with Shampine's fourth-order dense output.

The dense output is the one of Hairer's DOPRI5 code: with ``s = theta`` and ``s1 = 1 - theta``,
``y(s) = y0 + s R2 + s s1 R3 + s^2 s1 R4 + s^2 s1^2 R5`` where ``R2 = y1 - y0``,
``R3 = h k1 - R2``, ``R4 = R2 - h k7 - R3`` and ``R5 = h sum_i d_i k_i``. It is linear in the
stages, so it is stored as one polynomial in ``theta`` per stage.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial as npoly

from physid.solvers.tableau import ButcherTableau

__all__ = ["DOPRI5"]

_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_D = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)


def _dense_polynomials() -> tuple[tuple[float, ...], ...]:
    s = np.array([0.0, 1.0])  # theta
    s1 = np.array([1.0, -1.0])  # 1 - theta
    t1 = s
    t2 = npoly.polymul(s, s1)
    t3 = npoly.polymul(npoly.polymul(s, s), s1)
    t4 = npoly.polymul(t3, s1)
    rows = []
    for i, (bi, di) in enumerate(zip(_B, _D, strict=True)):
        delta1 = 1.0 if i == 0 else 0.0
        delta7 = 1.0 if i == 6 else 0.0
        p = npoly.polyadd(
            npoly.polyadd(bi * t1, (delta1 - bi) * t2),
            npoly.polyadd((2 * bi - delta1 - delta7) * t3, di * t4),
        )
        p = np.pad(p, (0, 5 - len(p)))
        rows.append(tuple(float(x) for x in p[1:]))  # no constant term
    return tuple(rows)


DOPRI5 = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=_A,
    b=_B,
    b_err=tuple(x - y for x, y in zip(_B, _B_HAT, strict=True)),
    error_order=4,
    dense=_dense_polynomials(),
    dense_order=4,
)
