"""Solve statistics: the cost of a solve is part of physid's API, not a debugging aid."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["SolveStats"]


@dataclass
class SolveStats:
    """Function evaluations and steps, filled in place by :func:`physid.odeint`.

    Counts accumulate over every solve (and its backward pass) that shares the object; call
    :meth:`reset` between measurements. ``naive`` has no backward function evaluations: autograd
    replays the recorded graph instead.

    Attributes:
        nfe_forward: evaluations of ``func`` in the forward solve (initial-step trial included).
        nfe_backward: evaluations of ``func`` (or of its vector-Jacobian product) in the backward
            pass.
        steps_accepted / steps_rejected: steps of the forward solve.
        backward_steps_accepted / backward_steps_rejected: steps of the backward pass (the
            adjoint's reverse solve; ``aca``'s replayed steps, never rejected).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    backward_steps_accepted: int = 0
    backward_steps_rejected: int = 0

    def reset(self) -> None:
        """Set every count back to zero."""
        for name in self.as_dict():
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
