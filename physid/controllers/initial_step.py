"""Hairer's initial step-size selection (Hairer, Norsett & Wanner I, II.4, p. 169)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from physid.controllers.norms import AbstractNorm

__all__ = ["initial_step"]


def initial_step(
    f: Callable[[Tensor, Tensor], Tensor],
    t0: Tensor | float,
    y0: Tensor,
    f0: Tensor,
    direction: float,
    order: int,
    rtol: float | Tensor,
    atol: float | Tensor,
    norm: AbstractNorm | Callable[[Tensor], Tensor],
) -> Tensor:
    """A first step size (positive, a 0-d tensor) from one extra evaluation of ``f``.

    ``d0 = ||y0||``, ``d1 = ||f0||`` in the scaled norm; an explicit Euler trial of size
    ``h0 = 0.01 d0/d1`` estimates the second derivative ``d2``; then
    ``h = min(100 h0, (0.01 / max(d1, d2))^(1/(order+1)))``. Whether this stays in the autograd
    graph is the caller's choice (``naive`` keeps it; the others call it under ``no_grad``).

    Args:
        f: flat dynamics ``f(t, y)``.
        y0, f0: flat state and derivative at ``t0``.
        direction: +1 or -1, the direction of integration.
        order: the order of the method.
        norm: the scaled norm; batched rows ``(B, n)`` work with a norm that reduces each row
            (``t0`` a number or ``(B,)``, the result ``(B,)``: each sample its own step).
    """
    scale = atol + torch.abs(y0) * rtol
    d0 = norm(y0 / scale)
    d1 = norm(f0 / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    dh = direction * h0
    y1 = y0 + dh.unsqueeze(-1) * f0
    f1 = f(t0 + dh, y1)
    d2 = norm((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / (order + 1)),
    )
    return torch.minimum(100 * h0, h1)
