"""Known-form models: the true equations of a system with its physical constants unknown.

``KnownFormThreeBody`` is the ACA paper's "ODE" model of the three-body system (Zhuang et al.
2020, Section 4.4): Newton's equations with the three masses as the only learnable parameters.
It calls the simulator's own :func:`envs.three_body.dynamics`, so a perfect fit recovers the data
generator exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from physid.envs.three_body import dynamics
from torch import nn

from physid.errors import ConfigError

__all__ = ["KnownFormThreeBody"]


class KnownFormThreeBody(nn.Module):
    """Three-body gravity with learnable masses.

    Args:
        masses: initial masses ``(3,)``; default ``1 + 0.2 (U - 0.5)``, i.e. uniform in
            [0.9, 1.1] as in the paper's code, drawn from ``generator``.
        generator: torch generator for the random initialisation (``None``: the global one).
        dtype: dtype of the masses.

    ``forward(t, y)`` takes states ``(..., 18)`` and returns their time derivative.
    """

    def __init__(
        self,
        masses: Sequence[float] | torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if masses is None:
            init = 1.0 + 0.2 * (torch.rand(3, generator=generator, dtype=dtype) - 0.5)
        else:
            init = torch.as_tensor(masses, dtype=dtype).clone()
            if init.shape != (3,):
                raise ConfigError(f"KnownFormThreeBody needs 3 masses, got shape {init.shape}.")
        self.masses = nn.Parameter(init)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dynamics(t, y, self.masses)
