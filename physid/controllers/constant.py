"""Constant step size: every step is accepted and the size never changes (fixed-step solvers)."""

from __future__ import annotations

from physid.controllers.base import AbstractController, Scalar

__all__ = ["ConstantController"]


class ConstantController(AbstractController):
    """Always accept, never change ``h``."""

    adaptive = False

    def reset(self, error_order: int | None) -> None:
        return None

    def decide(self, ratio: Scalar) -> tuple[bool, Scalar]:
        return True, 1.0
