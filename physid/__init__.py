"""physid: identify physical systems with differentiable ODE solvers.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from physid.controllers import (
    AbstractController,
    AbstractNorm,
    BlockNorm,
    ConstantController,
    IController,
    PIController,
    RMSNorm,
    SemiNorm,
)
from physid.errors import (
    ConfigError,
    DataError,
    MissingDependencyError,
    PhysicsError,
    PhysidError,
    SolverError,
    SolverStatus,
    TrainingError,
)
from physid.gradients import (
    ADJOINT,
    SEMINORM,
    AbstractGradientMethod,
    ACAMethod,
    AdjointMethod,
    ForwardSensitivityMethod,
    NaiveMethod,
)
from physid.jacobian import ODEJacobian, odeint_jacobian
from physid.lstsq import LMOptions, LMResult, LMState, levenberg_marquardt
from physid.odeint import BATCH_MODES, GRADIENT_METHODS, SOLVER_NAMES, SUPPORTED_DTYPES, odeint
from physid.shooting import ShootingResiduals
from physid.solvers import ButcherTableau
from physid.stats import SampleCounts, SolveStats

try:
    from importlib.metadata import version as _version

    __version__ = _version("physid")
except Exception:  # pragma: no cover - not installed
    __version__ = "0.1.0"

__all__ = [
    "odeint",
    "odeint_jacobian",
    "ODEJacobian",
    "levenberg_marquardt",
    "LMOptions",
    "LMResult",
    "LMState",
    "ShootingResiduals",
    "SolveStats",
    "SampleCounts",
    "SolverError",
    "SolverStatus",
    "PhysidError",
    "ConfigError",
    "DataError",
    "PhysicsError",
    "MissingDependencyError",
    "TrainingError",
    "GRADIENT_METHODS",
    "SOLVER_NAMES",
    "SUPPORTED_DTYPES",
    "BATCH_MODES",
    "AbstractGradientMethod",
    "NaiveMethod",
    "AdjointMethod",
    "ACAMethod",
    "ForwardSensitivityMethod",
    "ADJOINT",
    "SEMINORM",
    "AbstractController",
    "ConstantController",
    "IController",
    "PIController",
    "AbstractNorm",
    "RMSNorm",
    "BlockNorm",
    "SemiNorm",
    "ButcherTableau",
    "__version__",
]
