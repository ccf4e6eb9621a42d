"""Bogacki-Shampine 3(2): an FSAL pair (Bogacki & Shampine 1989), cubic Hermite dense output."""

from __future__ import annotations

from physid.solvers.tableau import ButcherTableau, hermite_dense

__all__ = ["BOSH3"]

_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
_B_HAT = (7 / 24, 1 / 4, 1 / 3, 1 / 8)

BOSH3 = ButcherTableau(
    name="bosh3",
    order=3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), _B[:3]),
    b=_B,
    b_err=tuple(x - y for x, y in zip(_B, _B_HAT, strict=True)),
    error_order=2,
    dense=hermite_dense(_B),
    dense_order=3,
)
