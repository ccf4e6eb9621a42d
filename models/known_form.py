"""Known-form models: the true equations of a system with its physical constants unknown.

``KnownFormThreeBody`` is the ACA paper's "ODE" model of the three-body system (Zhuang et al.
2020, Section 4.4): Newton's equations with the three masses as the only learnable parameters.
It calls the simulator's own :func:`physid.envs.three_body.dynamics`, so a perfect fit recovers
the data generator exactly.

``KnownFormAcrobot`` is the fully-actuated acrobot's manipulator equations with its constants
unknown, through :func:`physid.envs.acrobot.dynamics`: either the seven physical constants (of which
motion determines only five combinations, :func:`physid.envs.acrobot.base_parameters`) or those five
base parameters themselves. It also gives the energy-shaping controller of
:mod:`physid.control` its potential, inverse mass matrix and input matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from physid.envs import acrobot
from physid.envs.three_body import dynamics
from torch import nn

from physid.errors import ConfigError

__all__ = ["KnownFormThreeBody", "KnownFormAcrobot"]


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


class KnownFormAcrobot(nn.Module):
    """The acrobot's equations of motion with unknown constants.

    Args:
        params: the initial constants: an :class:`physid.envs.acrobot.AcrobotParams`, or a
            sequence of the 7 :data:`~physid.envs.acrobot.PHYSICAL_PARAMETERS`
            (``parameterization="physical"``) or of the 5
            :data:`~physid.envs.acrobot.BASE_PARAMETERS` (``"base"``).
        parameterization: ``"physical"``: the learnable parameter ``constants`` holds
            ``m1, m2, l1, lc1, lc2, i1, i2`` (gravity and ``l2`` fixed; motion fixes only five
            combinations of the seven); ``"base"``: it holds ``a1 .. a5``, all identifiable.
        gravity: the (known) gravitational acceleration.
        control: constant joint torques ``(..., 2)`` broadcast against the states (each
            trajectory of a batch may have its own); ``None``: unactuated. See :meth:`set_control`.
        dtype: dtype of the parameters.

    ``forward(t, y)`` takes states ``(..., 4)`` ``[q1, q2, dq1, dq2]``.
    """

    def __init__(
        self,
        params: acrobot.AcrobotParams | Sequence[float] | torch.Tensor | None = None,
        *,
        parameterization: str = "physical",
        gravity: float = 9.8,
        control: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if parameterization not in ("physical", "base"):
            raise ConfigError(
                f"parameterization must be 'physical' or 'base', got {parameterization!r}."
            )
        self.parameterization = parameterization
        self.gravity = float(gravity)
        names = (
            acrobot.PHYSICAL_PARAMETERS
            if parameterization == "physical"
            else acrobot.BASE_PARAMETERS
        )
        if params is None:
            params = acrobot.AcrobotParams(gravity=self.gravity)
        if isinstance(params, acrobot.AcrobotParams):
            if parameterization == "physical":
                init = torch.tensor([getattr(params, n) for n in names], dtype=dtype)
            else:
                init = acrobot.base_parameters(params).to(dtype)
        else:
            init = torch.as_tensor(params, dtype=dtype).clone()
        if init.shape != (len(names),):
            raise ConfigError(
                f"KnownFormAcrobot({parameterization}) needs {len(names)} constants {names}, got "
                f"shape {tuple(init.shape)}."
            )
        self.names = names
        self.constants = nn.Parameter(init)
        self.control: torch.Tensor | None
        self.register_buffer("control", None)
        self.set_control(control)

    def set_control(self, control: torch.Tensor | None) -> None:
        """Set the constant torques ``(..., 2)`` (``None``: none)."""
        if control is not None and control.shape[-1] != acrobot.CONTROL_DIM:
            raise ConfigError(f"control must be (..., 2), got shape {tuple(control.shape)}.")
        self.control = None if control is None else control.detach().to(self.constants.dtype)

    def base(self) -> torch.Tensor:
        """``(5,)`` the base parameters ``a1 .. a5`` (differentiable)."""
        if self.parameterization == "base":
            return self.constants
        return acrobot.base_parameters(self.constants, self.gravity)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return acrobot.dynamics(t, y, self.base(), self.control)

    def potential(self, q: torch.Tensor) -> torch.Tensor:
        """``V(q)``, ``q (..., 2)`` -> ``(...)``."""
        return acrobot.potential(q, self.base())

    def mass_matrix(self, q: torch.Tensor) -> torch.Tensor:
        """``M(q)``, ``(..., 2, 2)``."""
        return acrobot.mass_matrix(q, self.base())

    def inverse_mass(self, q: torch.Tensor) -> torch.Tensor:
        """``M(q)⁻¹``, ``(..., 2, 2)``."""
        return torch.linalg.inv(self.mass_matrix(q))

    def input_matrix(self, q: torch.Tensor) -> torch.Tensor:
        """``g(q)``: the identity (a known torque per joint), ``(..., 2, 2)``."""
        return acrobot.input_matrix(q, self.base())
