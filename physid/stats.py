"""Solve statistics: the cost of a solve is part of physid's API, not a debugging aid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from physid.errors import ConfigError

__all__ = ["SolveStats", "SampleCounts"]


@dataclass
class SolveStats:
    """Function evaluations and steps, filled in place by :func:`physid.odeint`.

    Counts accumulate over every solve (and its backward pass) that shares the object; call
    :meth:`reset` between measurements. ``naive`` has no backward function evaluations: autograd
    replays the recorded graph instead.

    With ``batch="independent"`` (every sample of the batch its own step sizes) the counts keep
    their meaning for the batch as a whole: ``nfe_*`` count calls of ``func`` (each one evaluates
    every sample, as in a shared solve), ``steps_*`` are totals over the samples of the steps
    each sample took. :attr:`per_sample` says what each sample cost on its own.

    Attributes:
        nfe_forward: evaluations of ``func`` in the forward solve (initial-step trial included).
        nfe_backward: evaluations of ``func`` (or of its vector-Jacobian product) in the backward
            pass.
        steps_accepted / steps_rejected: steps of the forward solve.
        backward_steps_accepted / backward_steps_rejected: steps of the backward pass (the
            adjoint's reverse solve; ``aca``'s replayed steps, never rejected).
        per_sample: the counts of each sample of the solves with ``batch="independent"``
            (:class:`SampleCounts`); ``None`` until such a solve fills it. Not part of
            :meth:`as_dict`.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    backward_steps_accepted: int = 0
    backward_steps_rejected: int = 0
    per_sample: SampleCounts | None = field(default=None, compare=False)

    def reset(self) -> None:
        """Set every count back to zero (and forget the per-sample counts)."""
        for name in self.as_dict():
            setattr(self, name, 0)
        self.per_sample = None

    def as_dict(self) -> dict[str, int]:
        """The totals (every field but :attr:`per_sample`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_sample"}

    def sample_counts(self, batch: int) -> SampleCounts:
        """The per-sample counts of a batch of ``batch`` samples, created at zero on first use.

        Raises:
            ConfigError: the object already holds the counts of a batch of another size.
        """
        if self.per_sample is None:
            self.per_sample = SampleCounts.zeros(batch)
        elif self.per_sample.batch != batch:
            raise ConfigError(
                f"this SolveStats holds per-sample counts of {self.per_sample.batch} samples and "
                f"cannot add those of {batch}; call stats.reset() or pass a new SolveStats."
            )
        return self.per_sample


@dataclass
class SampleCounts:
    """The cost of each sample of ``batch="independent"`` solves: lists, sample ``b`` at ``[b]``.

    The names are those of :class:`SolveStats`, counted for one sample alone: ``nfe_forward[b]``
    is the number of evaluations of ``func`` that sample ``b``'s own steps needed (what a solve of
    that sample alone with the shared loop evaluates: its first derivative, its initial-step
    trial and the stages of its attempted steps); ``steps_accepted[b]`` its accepted steps, and so
    on. Counts accumulate elementwise over solves, like the totals.
    """

    nfe_forward: list[int]
    nfe_backward: list[int]
    steps_accepted: list[int]
    steps_rejected: list[int]
    backward_steps_accepted: list[int]
    backward_steps_rejected: list[int]

    @classmethod
    def zeros(cls, batch: int) -> SampleCounts:
        """Every count zero, for ``batch`` samples."""
        return cls(*([0] * batch for _ in fields(cls)))

    @property
    def batch(self) -> int:
        """The number of samples."""
        return len(self.nfe_forward)

    def add(self, name: str, counts: Sequence[int]) -> None:
        """Add ``counts`` (one per sample) to the list ``name``."""
        current: list[int] = getattr(self, name)
        setattr(self, name, [a + int(b) for a, b in zip(current, counts, strict=True)])

    def as_dict(self) -> dict[str, list[int]]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}
