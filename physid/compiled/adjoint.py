"""The continuous adjoint's backward solve on the fast path (``adjoint`` and ``seminorm``; the
eager one is :mod:`physid.gradients.adjoint`, Chen et al. 2018, Algorithm 1).

The augmented state ``z = [y, a_y, a_theta]`` is integrated backwards by the same loop, interval
by interval, with a compiled arithmetic whose attempt kernel evaluates every stage of the
augmented field ``[f, -a_y^T df/dy, -a_y^T df/dtheta]`` — the user's field and its
vector-Jacobian product, inlined — and the backward error norm (the block norm, or the seminorm
that leaves ``a_theta`` out, Kidger et al. 2021). The controller stays on the host, as eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from physid.compiled import CompiledSolve
from physid.compiled._build import CompileUnavailable
from physid.compiled.arith import CompiledArithmetic
from physid.controllers.norms import AbstractNorm
from physid.gradients._loop import Tolerances

__all__ = ["AdjointBackward"]


class AdjointBackward:
    """The compiled backward solve of the continuous adjoint for one solve.

    Args:
        cs: the compiled pieces of the solve.
        params: the tensors ``a_theta`` covers, in order (those that need gradients).
        norm: the backward error norm over ``z``.
        tol: the tolerances.

    Raises:
        CompileUnavailable: ``func`` reads a tensor that requires grad and is not a leaf (its
            gradient would have to pass through that tensor's graph inside every step, which the
            kernels do not record), or a kernel failed to build.
    """

    def __init__(
        self, cs: CompiledSolve, params: Sequence[torch.Tensor], norm: AbstractNorm, tol: Tolerances
    ):
        for x in cs.cap.originals:
            if x.requires_grad and not x.is_leaf:
                raise CompileUnavailable(
                    "the adjoint's compiled backward needs the tensors func reads to be leaves "
                    "(func closes over a tensor computed from a parameter)"
                )
        self.positions = cs.grad_positions(params)
        self.sizes = [p.numel() for p in params]
        ks = cs.kernels
        z0 = torch.zeros(2 * ks.n + sum(self.sizes), dtype=ks.dtype, device=ks.device)
        kernels = cs.adjoint_kernels(self.positions, self.sizes, z0)
        self.arith: CompiledArithmetic = cs.arithmetic([0.0, 1.0], tol, norm, kernels, z0)

    def matches(self, sizes: Sequence[int]) -> bool:
        """Whether the backward pass differentiates the parameters this was built for."""
        return list(sizes) == self.sizes

    def arithmetic(self, times: list[float]) -> Any:
        """The compiled arithmetic, aimed at one backward interval."""
        self.arith.retarget(times)
        return self.arith
