"""Error norms for step-size control.

A norm maps the scaled error estimate ``err / (atol + rtol * max(|y0|, |y1|))`` (flat) to one
number; a step is accepted when it is at most 1.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["AbstractNorm", "RMSNorm", "BlockNorm", "SemiNorm"]


class AbstractNorm(ABC):
    """A norm over a flat tensor of scaled errors."""

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """The norm of ``x`` ``(n,)`` as a 0-d tensor."""

    @classmethod
    def for_adjoint(cls, n_state: int, n_params: int) -> AbstractNorm:
        """This norm laid over the adjoint's augmented state ``[y, a_y, a_theta]``.

        :class:`~physid.AdjointMethod` builds its backward norm with it once the channel counts
        are known; a norm that needs no layout is built without arguments.

        Args:
            n_state: channels of ``y`` (and of ``a_y``).
            n_params: channels of ``a_theta``.
        """
        return cls()


class RMSNorm(AbstractNorm):
    """Root mean square over every channel (Hairer's norm)."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))

    def __repr__(self) -> str:
        return "RMSNorm()"


class BlockNorm(AbstractNorm):
    """The largest RMS over consecutive blocks of channels.

    The adjoint's augmented state ``[y, a_y, a_theta]`` mixes quantities of unrelated scales; one
    RMS over everything lets the largest block (often ``a_theta``, with one channel per parameter)
    drown the others. Taking each block's RMS and the maximum weighs them equally — the norm of
    torchdiffeq's adjoint, the baseline of Kidger et al. 2021.

    Args:
        sizes: the block sizes, in order; channels after the last block are ignored.
    """

    def __init__(self, sizes: list[int]):
        self.bounds = []
        start = 0
        for size in sizes:
            if size > 0:
                self.bounds.append((start, start + size))
            start += size

    def __call__(self, x: Tensor) -> Tensor:
        parts = [torch.linalg.vector_norm(x[a:b]) / math.sqrt(b - a) for a, b in self.bounds]
        if not parts:  # every block empty (an empty batch): nothing to control
            return x.new_zeros(())
        return parts[0] if len(parts) == 1 else torch.stack(parts).max()

    @classmethod
    def for_adjoint(cls, n_state: int, n_params: int) -> AbstractNorm:
        """Blocks ``[y, a_y, a_theta]``: every channel counts (the ``adjoint`` method's norm)."""
        return cls([n_state, n_state, n_params])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bounds={self.bounds})"


class SemiNorm(BlockNorm):
    """The adjoint seminorm (Kidger et al. 2021): :class:`BlockNorm` over ``[y, a_y]`` only.

    In the adjoint's backward solve the parameter channels ``a_theta`` are an integral — nothing
    downstream depends on their local error — so they are left out of step-size control.

    Args:
        n_state: the number of channels of ``y`` (and of ``a_y``).
    """

    def __init__(self, n_state: int):
        super().__init__([n_state, n_state])

    @classmethod
    def for_adjoint(cls, n_state: int, n_params: int) -> AbstractNorm:
        """Blocks ``[y, a_y]``, ``a_theta`` left out (the ``seminorm`` method's norm)."""
        return cls(n_state)
