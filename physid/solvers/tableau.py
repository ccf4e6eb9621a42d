"""Butcher tableaus as validated, frozen data.

A tableau is stored in float64 (numpy) and cast once per solve to the state's dtype and device
(:meth:`ButcherTableau.cast`). It checks its own consistency on construction, so a typo in a
coefficient fails at import time rather than as a silently wrong order of convergence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from physid.errors import ConfigError

__all__ = ["ButcherTableau", "CastTableau", "hermite_dense"]

_TOL = 1e-14


def _as_lower(a: tuple[tuple[float, ...], ...], s: int) -> np.ndarray:
    out = np.zeros((s, s))
    for i, row in enumerate(a):
        if len(row) != i:
            raise ConfigError(f"Butcher tableau row {i} must have {i} entries, got {len(row)}.")
        out[i, :i] = row
    return out


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method.

    Attributes:
        name: the solver's name.
        order: the order of the propagated solution (``b``).
        c: stage times, shape ``(s,)``.
        a: the strictly lower-triangular coefficients, row ``i`` with ``i`` entries.
        b: weights of the propagated solution, shape ``(s,)``.
        b_err: ``b - b_hat``, weights of the local error estimate (``None`` for fixed-step
            methods), shape ``(s,)``.
        error_order: the order of the embedded solution ``b_hat`` (``None`` for fixed-step).
        dense: dense-output polynomials, shape ``(s, d)``: the solution at ``t + theta*h`` is
            ``y + h * sum_i k_i * sum_p dense[i, p] * theta**(p+1)``.
        dense_order: the order of the dense output.
        fsal: derived — the last stage is evaluated at ``(t + h, y_next)`` (first same as last).
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    dense: tuple[tuple[float, ...], ...]
    dense_order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        A = _as_lower(self.a, s)
        c, b = np.asarray(self.c), np.asarray(self.b)
        if len(self.a) != s or len(self.b) != s or len(self.dense) != s:
            raise ConfigError(f"tableau {self.name}: c, a, b and dense must all have {s} stages.")
        if np.max(np.abs(A.sum(axis=1) - c)) > _TOL:
            raise ConfigError(f"tableau {self.name}: row sums of a differ from c.")
        if abs(b.sum() - 1.0) > _TOL:
            raise ConfigError(f"tableau {self.name}: the weights b do not sum to 1.")
        if (self.b_err is None) != (self.error_order is None):
            raise ConfigError(f"tableau {self.name}: give both b_err and error_order, or neither.")
        if self.b_err is not None:
            if len(self.b_err) != s or abs(sum(self.b_err)) > _TOL:
                raise ConfigError(f"tableau {self.name}: the error weights must sum to 0.")
        P = np.asarray(self.dense)
        if np.max(np.abs(P.sum(axis=1) - b)) > 1e-12:
            raise ConfigError(f"tableau {self.name}: the dense output at theta=1 differs from b.")
        col = P.sum(axis=0)
        if abs(col[0] - 1.0) > 1e-12 or np.any(np.abs(col[1:]) > 1e-12):
            raise ConfigError(f"tableau {self.name}: the dense weights must sum to theta.")
        fsal = bool(s > 1 and abs(c[-1] - 1.0) < _TOL and np.max(np.abs(A[-1] - b)) < _TOL)
        object.__setattr__(self, "fsal", fsal)

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def a_matrix(self) -> np.ndarray:
        return _as_lower(self.a, self.stages)

    def dense_weights(self, theta: np.ndarray) -> np.ndarray:
        """Stage weights of the dense output at fractions ``theta`` of a step.

        Args:
            theta: shape ``(m,)``, in ``[0, 1]``.

        Returns:
            shape ``(m, s)``: ``y(t + theta*h) = y + h * weights @ K``.
        """
        P = np.asarray(self.dense)
        powers = np.power.outer(np.asarray(theta, dtype=np.float64), np.arange(1, P.shape[1] + 1))
        return powers @ P.T

    def cast(self, dtype: torch.dtype, device: torch.device) -> CastTableau:
        """The tableau's coefficients as tensors of ``dtype`` on ``device``."""

        def tt(x: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype, device=device)

        return CastTableau(
            tableau=self,
            a=tt(self.a_matrix),
            b=tt(self.b),
            b_err=tt(self.b_err) if self.b_err is not None else None,
            dense=tt(self.dense),
        )


@dataclass(frozen=True)
class CastTableau:
    """A tableau's coefficients as tensors of one dtype and device (see ``ButcherTableau.cast``)."""

    tableau: ButcherTableau
    a: torch.Tensor
    b: torch.Tensor
    b_err: torch.Tensor | None
    dense: torch.Tensor


def hermite_dense(b: tuple[float, ...], fsal: bool = True) -> tuple[tuple[float, ...], ...]:
    """Cubic Hermite dense output for an FSAL method (third order).

    Interpolates ``y0, y1`` and the slopes ``k_1 = f(t, y0)`` and ``k_s = f(t + h, y1)``.
    In stage weights: ``b_i(theta) = (3 theta^2 - 2 theta^3) b_i + (theta - 2 theta^2 + theta^3)
    [i = 1] + (theta^3 - theta^2) [i = s]``.
    """
    if not fsal:
        raise ConfigError(
            "Hermite dense output needs the slope at the step's end (an FSAL method)."
        )
    s = len(b)
    rows = []
    for i, bi in enumerate(b):
        p = np.array([0.0, 3.0 * bi, -2.0 * bi])
        if i == 0:
            p += np.array([1.0, -2.0, 1.0])
        if i == s - 1:
            p += np.array([0.0, -1.0, 1.0])
        rows.append(tuple(float(x) for x in p))
    return tuple(rows)
