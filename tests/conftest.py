"""Shared test set-up: fixed seeds, float64 helpers, a headless matplotlib."""

from __future__ import annotations

import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch

SEED = 1234


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Every test starts from the same RNG states (torch, numpy, random)."""
    random.seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002 (code under test may use the global RNG)
    torch.manual_seed(SEED)


@pytest.fixture
def float64():
    """Run the test with torch's default dtype set to float64 (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch.float64
    finally:
        torch.set_default_dtype(old)


def assert_close(actual, expected, *, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Compare tensors or arrays in float64 with tight default tolerances."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


class _NewtonCoefficients(torch.nn.Module):
    """Stands in for PairwiseNODE's MLP: c = (0, 0, m_j), Newton's law in its terms."""

    def __init__(self, masses: tuple[float, float, float]) -> None:
        super().__init__()
        self.masses = torch.tensor(masses, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = x[..., 5:8] @ self.masses  # one-hot of the source body j
        return torch.stack([torch.zeros_like(c3), torch.zeros_like(c3), c3], dim=-1)


@pytest.fixture
def newton_coefficients() -> type[torch.nn.Module]:
    """A stand-in for :class:`models.node.PairwiseNODE`'s MLP that gives Newton's law."""
    return _NewtonCoefficients
