"""Error norms for step-size control.

A norm maps the scaled error estimate ``err / (atol + rtol * max(|y0|, |y1|))`` (flat) to one
number; a step is accepted when it is at most 1.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["AbstractNorm", "RMSNorm", "SemiNorm"]


class AbstractNorm(ABC):
    """A norm over a flat tensor of scaled errors."""

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """The norm of ``x`` ``(n,)`` as a 0-d tensor."""


class RMSNorm(AbstractNorm):
    """Root mean square over every channel (Hairer's norm)."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))

    def __repr__(self) -> str:
        return "RMSNorm()"


class SemiNorm(AbstractNorm):
    """RMS over the first ``keep`` channels only: the adjoint seminorm (Kidger et al. 2021).

    In the adjoint's backward solve the augmented state is ``[y, a_y, a_theta]``; the parameter
    channels ``a_theta`` are an integral (nothing downstream depends on them), so their local error
    need not limit the step. ``keep = 2 * y.numel()`` leaves them out.
    """

    def __init__(self, keep: int):
        self.keep = keep

    def __call__(self, x: Tensor) -> Tensor:
        x = x[: self.keep]
        return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))

    def __repr__(self) -> str:
        return f"SemiNorm(keep={self.keep})"
