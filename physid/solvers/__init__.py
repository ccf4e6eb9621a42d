"""Butcher tableaus, one file per family, and the Runge-Kutta steppers."""

from __future__ import annotations

from physid.errors import ConfigError
from physid.solvers.bosh3 import BOSH3
from physid.solvers.dopri5 import DOPRI5
from physid.solvers.fixed import EULER, MIDPOINT, RK4
from physid.solvers.heun_euler import HEUN_EULER
from physid.solvers.tableau import ButcherTableau

__all__ = ["SOLVERS", "get_tableau", "ButcherTableau"]

SOLVERS: dict[str, ButcherTableau] = {
    "euler": EULER,
    "rk2": MIDPOINT,
    "midpoint": MIDPOINT,
    "rk4": RK4,
    "heun_euler": HEUN_EULER,
    "bosh3": BOSH3,
    "dopri5": DOPRI5,
}


def get_tableau(name: str) -> ButcherTableau:
    """The tableau registered under ``name``; :class:`ConfigError` naming the choices otherwise."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown solver {name!r}; choose one of {', '.join(sorted(SOLVERS))}."
        ) from None
