"""Butcher tableaus, one file per family, and the Runge-Kutta steppers.

:data:`SOLVERS` is the one registry of solver names (``rk2`` and ``midpoint`` are one tableau):
``physid.SOLVER_NAMES`` lists its keys.
"""

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


def get_tableau(solver: str | ButcherTableau) -> ButcherTableau:
    """The tableau registered under ``solver``, or ``solver`` itself if it is a tableau.

    Raises:
        ConfigError: an unknown name (the message names the choices), or neither kind.
    """
    if isinstance(solver, ButcherTableau):
        return solver
    if not isinstance(solver, str):
        raise ConfigError(
            f"solver must be a name ({', '.join(SOLVERS)}) or a ButcherTableau, "
            f"got {type(solver).__name__}."
        )
    try:
        return SOLVERS[solver]
    except KeyError:
        raise ConfigError(
            f"unknown solver {solver!r}; choose one of {', '.join(sorted(SOLVERS))}."
        ) from None
