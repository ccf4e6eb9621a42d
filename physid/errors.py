"""The exceptions physid raises. Every one derives from :class:`PhysidError`.

The CLI catches :class:`PhysidError`, prints its message as one line and exits with code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum

__all__ = [
    "PhysidError",
    "ConfigError",
    "DataError",
    "PhysicsError",
    "MissingDependencyError",
    "TrainingError",
    "SolverStatus",
    "SolverError",
    "FitInterrupted",
]


class PhysidError(Exception):
    """Base class of every error physid raises on purpose."""


class ConfigError(PhysidError, ValueError):
    """An option or argument has an invalid value."""


class DataError(PhysidError, ValueError):
    """A data set, run directory or checkpoint is missing, malformed or inconsistent."""


class PhysicsError(PhysidError, RuntimeError):
    """A simulator diverged or produced a non-physical state."""


class MissingDependencyError(PhysidError, ImportError):
    """An optional backend is not installed; the message names the package to install."""


class TrainingError(PhysidError, RuntimeError):
    """A fit cannot continue (for example the loss stayed non-finite)."""


class SolverStatus(enum.IntEnum):
    """How an ODE solve ended.

    ``STEP_SIZE_UNDERFLOW``: the step shrank below a few units in the last place of ``t`` (in
    ``t``'s dtype). ``NON_FINITE``: the state or its derivative became NaN or inf.
    ``NON_FINITE_STEP_SIZE``: the step size itself became NaN or inf (an overflowing error norm
    in the initial-step guess, or a controller's factor).
    """

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    STEP_SIZE_UNDERFLOW = 2
    NON_FINITE = 3
    NON_FINITE_STEP_SIZE = 4


class SolverError(PhysidError, RuntimeError):
    """An ODE solve failed.

    Attributes:
        status: the :class:`SolverStatus` the solve ended with.
        t: the time reached when it failed.
        step_size: the last step size tried.
        sample: in a solve with ``batch="independent"``, the index of the sample that failed
            (the lowest one when several failed at once); ``None`` otherwise.
    """

    def __init__(
        self,
        status: SolverStatus,
        message: str,
        *,
        t: float,
        step_size: float,
        sample: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.t = t
        self.step_size = step_size
        self.sample = sample


class FitInterrupted(PhysidError):
    """A fit was stopped (Ctrl-C, SIGTERM) after saving its last finished epoch.

    Running the same fit again resumes it. The command line exits with :attr:`exit_code` (130,
    the shell's code for an interrupt).

    Attributes:
        run: the run directory that holds the checkpoint.
    """

    exit_code = 130

    def __init__(self, message: str, *, run: object = None):
        super().__init__(message)
        self.run = run
