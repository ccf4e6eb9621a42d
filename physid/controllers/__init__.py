"""Step-size control: controllers (constant, I, PI), error norms, the initial step."""

from __future__ import annotations

from physid.controllers.base import AbstractController
from physid.controllers.constant import ConstantController
from physid.controllers.initial_step import initial_step
from physid.controllers.norms import AbstractNorm, BlockNorm, RMSNorm, SemiNorm
from physid.controllers.pi import IController, PIController

__all__ = [
    "AbstractController",
    "ConstantController",
    "IController",
    "PIController",
    "AbstractNorm",
    "RMSNorm",
    "BlockNorm",
    "SemiNorm",
    "initial_step",
]
