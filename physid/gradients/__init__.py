"""The four gradient methods, one file each (``seminorm`` is the adjoint with another norm)."""

from __future__ import annotations

from physid.errors import ConfigError
from physid.gradients.aca import ACAMethod
from physid.gradients.adjoint import ADJOINT, SEMINORM, AdjointMethod
from physid.gradients.base import AbstractGradientMethod, Problem
from physid.gradients.naive import NaiveMethod

__all__ = [
    "METHODS",
    "get_method",
    "AbstractGradientMethod",
    "Problem",
    "ACAMethod",
    "AdjointMethod",
    "NaiveMethod",
]

METHODS: dict[str, AbstractGradientMethod] = {
    "naive": NaiveMethod(),
    "adjoint": ADJOINT,
    "seminorm": SEMINORM,
    "aca": ACAMethod(),
}


def get_method(name: str) -> AbstractGradientMethod:
    """The gradient method registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown gradient method {name!r}; choose one of {', '.join(METHODS)}."
        ) from None
