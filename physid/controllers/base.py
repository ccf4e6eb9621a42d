"""The step-size controller interface.

A controller only decides: given the error ratio of a trial step it says accept or reject and by
which factor to multiply the step size. It never touches the state. The ratio is a Python float
(graph-free methods) or a 0-d tensor (``naive``, whose step-size arithmetic stays in the graph);
a controller must handle both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["AbstractController", "Scalar", "clip"]

Scalar = float | Tensor


def clip(x: Scalar, lo: float, hi: float) -> Scalar:
    """``min(max(x, lo), hi)`` for a float or a tensor (in the graph)."""
    if isinstance(x, Tensor):
        return torch.clamp(x, lo, hi)
    return min(max(x, lo), hi)


class AbstractController(ABC):
    """Accept/reject decisions and step-size factors.

    Attributes:
        adaptive: whether the controller uses error estimates (``False`` for a constant step).
        min_factor: the factor applied after a non-finite error estimate.
    """

    adaptive: bool = True
    min_factor: float = 0.2

    @abstractmethod
    def reset(self, error_order: int | None) -> None:
        """Start a new solve; ``error_order`` is the order of the method's embedded estimate."""

    @abstractmethod
    def decide(self, ratio: Scalar) -> tuple[bool, Scalar]:
        """Given the error ratio of a trial step, ``(accept, factor for the next step size)``."""
