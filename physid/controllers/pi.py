"""I and PI step-size controllers (Hairer, Norsett & Wanner I, II.4; Gustafsson 1991).

With ``k = error_order + 1`` and error ratios ``r_n`` (this step) and ``r_{n-1}`` (the last
accepted step), the next step size is ``h * clip(safety * r_n^(-beta1) * r_{n-1}^(beta2),
min_factor, max_factor)``. ``beta2 = 0`` is the classical integral (I) controller; the PI
controller's defaults ``beta1 = 0.7/k, beta2 = 0.4/k`` damp the oscillation of step sizes on
mildly stiff problems. After a rejection the factor is capped at 1.
"""

from __future__ import annotations

import math

from torch import Tensor

from physid.controllers.base import AbstractController, Scalar, clip
from physid.errors import ConfigError

__all__ = ["PIController", "IController"]


class PIController(AbstractController):
    """Proportional-integral step-size control.

    Args:
        beta1: the integral gain, in units of ``1/k`` (default 0.7).
        beta2: the proportional gain, in units of ``1/k`` (default 0.4; 0 gives the I controller).
        safety: the safety factor (0.9).
        min_factor: the smallest factor (0.2); also the shrink after a non-finite estimate.
        max_factor: the largest factor (10).
    """

    def __init__(
        self,
        beta1: float = 0.7,
        beta2: float = 0.4,
        safety: float = 0.9,
        min_factor: float = 0.2,
        max_factor: float = 10.0,
    ):
        if not 0 < safety <= 1:
            raise ConfigError(f"the safety factor must lie in (0, 1], got {safety}.")
        if not 0 < min_factor < 1 < max_factor:
            raise ConfigError(
                f"need 0 < min_factor < 1 < max_factor, got {min_factor} and {max_factor}."
            )
        self.beta1_units, self.beta2_units = beta1, beta2
        self.safety, self.min_factor, self.max_factor = safety, min_factor, max_factor
        self.beta1 = self.beta2 = 0.0
        self._prev: Scalar = 1.0

    def reset(self, error_order: int | None) -> None:
        if error_order is None:
            raise ConfigError("an adaptive controller needs a solver with an error estimate.")
        k = error_order + 1
        self.beta1, self.beta2 = self.beta1_units / k, self.beta2_units / k
        self._prev = 1.0

    def decide(self, ratio: Scalar) -> tuple[bool, Scalar]:
        r = float(ratio.detach()) if isinstance(ratio, Tensor) else float(ratio)
        accept = r <= 1.0
        if r == 0.0:
            factor: Scalar = self.max_factor
        else:
            factor = self.safety * ratio ** (-self.beta1)
            if self.beta2:
                factor = factor * self._prev**self.beta2
            factor = clip(factor, self.min_factor, self.max_factor)
        if accept:
            # floor the remembered ratio so a tiny error does not dominate the next factor
            self._prev = clip(ratio, 1e-4, math.inf) if isinstance(ratio, Tensor) else max(r, 1e-4)
        else:
            factor = clip(factor, self.min_factor, 1.0)
        return accept, factor

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(beta1={self.beta1_units}, beta2={self.beta2_units}, "
            f"safety={self.safety}, min_factor={self.min_factor}, max_factor={self.max_factor})"
        )


class IController(PIController):
    """The integral controller: ``factor = safety * r^(-1/k)`` (torchdiffeq's and scipy's)."""

    def __init__(self, safety: float = 0.9, min_factor: float = 0.2, max_factor: float = 10.0):
        super().__init__(1.0, 0.0, safety, min_factor, max_factor)
