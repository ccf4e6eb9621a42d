"""The four gradient methods, one file each (``seminorm`` is the adjoint with another norm).

:data:`METHODS` is the one registry of method names: ``physid.GRADIENT_METHODS`` lists its keys.
"""

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
    "ADJOINT",
    "SEMINORM",
]

METHODS: dict[str, AbstractGradientMethod] = {
    m.name: m for m in (NaiveMethod(), ADJOINT, SEMINORM, ACAMethod())
}


def get_method(method: str | AbstractGradientMethod) -> AbstractGradientMethod:
    """The gradient method registered under ``method``, or ``method`` itself if it is one.

    Raises:
        ConfigError: an unknown name, or neither a name nor a method.
    """
    if isinstance(method, AbstractGradientMethod):
        return method
    if not isinstance(method, str):
        raise ConfigError(
            f"method must be a name ({', '.join(METHODS)}) or a gradient method such as "
            f"physid.AdjointMethod(...), got {type(method).__name__}."
        )
    try:
        return METHODS[method]
    except KeyError:
        raise ConfigError(
            f"unknown gradient method {method!r}; choose one of {', '.join(METHODS)}."
        ) from None
