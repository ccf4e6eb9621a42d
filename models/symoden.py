"""Symplectic ODE-Net (Zhong et al. 2020) for systems with angle coordinates.

The model learns a controlled Hamiltonian system

    H(q, p) = ½ pᵀ M⁻¹(q) p + V(q),     dq/dt = ∂H/∂p,     dp/dt = -∂H/∂q + g(q) u,

with three networks of the embedded angles ``(cos q, sin q)``: a Cholesky factor ``L`` giving the
positive-definite inverse mass matrix ``M⁻¹ = L Lᵀ + 0.1 I``, the potential ``V`` and the input
matrix ``g``. Angles live on the circle, so the model works in ``(r, s) = (cos q, sin q)``:

    dr/dt = -s ∘ dq/dt,   ds/dt = r ∘ dq/dt,   ∂H/∂q = r ∘ ∂H/∂s - s ∘ ∂H/∂r,

all derivatives of ``H`` taken by autograd in ``(cos q, sin q, p)`` coordinates. As in SymODEN's
reference code the state integrated is ``[cos q, sin q, dq/dt, u]`` (the observed channels): the
momentum ``p = M(q) dq/dt`` is formed inside each evaluation and

    d²q/dt² = M⁻¹ dp/dt + (dM⁻¹/dt) p,

where ``dM⁻¹/dt`` is a Jacobian-vector product of the Cholesky network. The control is carried in
the state with ``du/dt = 0``. This is the model of the seminorm paper's Hamiltonian experiment
(Kidger et al. 2021, Table 3), which uses softplus activations and 509,108 parameters for the
fully-actuated acrobot (the ``paper`` preset).

The networks are ordinary modules passed to :class:`SymODEN`; replacing them by the true M⁻¹,
V and g of a system makes the model's vector field the true one (a test of the structure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from physid.errors import ConfigError

__all__ = [
    "SymODENConfig",
    "PRESETS",
    "mlp",
    "CholeskyInverseMass",
    "PotentialNet",
    "InputMatrixNet",
    "SymODEN",
    "build_symoden",
]

_ACTIVATIONS = {"softplus": nn.Softplus, "tanh": nn.Tanh}


@dataclasses.dataclass(frozen=True)
class SymODENConfig:
    """Sizes of SymODEN's three networks.

    Attributes:
        n_angles: number of angle coordinates q (2 for the acrobot). The control has as many
            entries (a fully-actuated system).
        mass_hidden: hidden widths of the Cholesky network (2n → ... → n(n+1)/2).
        potential_hidden: hidden widths of the potential network (2n → ... → 1).
        input_hidden: hidden widths of the input-matrix network (2n → ... → n·n).
        activation: ``"softplus"`` (the seminorm paper) or ``"tanh"`` (the original SymODEN).
        min_eigenvalue: the ``ε`` in ``M⁻¹ = L Lᵀ + ε I`` (0.1 in SymODEN).
    """

    n_angles: int = 2
    mass_hidden: tuple[int, ...] = (64, 64)
    potential_hidden: tuple[int, ...] = (64, 64)
    input_hidden: tuple[int, ...] = (64, 64)
    activation: str = "softplus"
    min_eigenvalue: float = 0.1

    def __post_init__(self) -> None:
        if self.n_angles < 1:
            raise ConfigError(f"n_angles must be >= 1, got {self.n_angles}.")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}."
            )
        if not self.min_eigenvalue > 0:
            raise ConfigError(f"min_eigenvalue must be > 0, got {self.min_eigenvalue}.")
        for name in ("mass_hidden", "potential_hidden", "input_hidden"):
            widths = tuple(int(w) for w in getattr(self, name))
            if not widths or min(widths) < 1:
                raise ConfigError(f"{name} needs at least one positive width, got {widths}.")
            object.__setattr__(self, name, widths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return dataclasses.asdict(self)


PRESETS: dict[str, SymODENConfig] = {
    # The seminorm paper / SymODEN acrobot: 324,003 + 92,101 + 93,004 = 509,108 parameters.
    "paper": SymODENConfig(
        mass_hidden=(400, 400, 400), potential_hidden=(300, 300), input_hidden=(300, 300)
    ),
    # Small enough to train in minutes on two CPU cores.
    "default": SymODENConfig(),
}


def mlp(
    n_in: int, hidden: Sequence[int], n_out: int, activation: str = "softplus"
) -> nn.Sequential:
    """A fully-connected network ``n_in → hidden... → n_out`` with the given activation."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class CholeskyInverseMass(nn.Module):
    """``M⁻¹(q) = L(q) L(q)ᵀ + ε I`` from a network of ``(cos q, sin q)``.

    The network outputs the n diagonal entries of the lower-triangular ``L`` and its
    n(n-1)/2 entries below the diagonal. Call: ``(..., 2n)`` → ``(..., n, n)``.
    """

    def __init__(self, n: int, hidden: Sequence[int], activation: str, min_eigenvalue: float):
        super().__init__()
        self.n = n
        self.min_eigenvalue = float(min_eigenvalue)
        self.net = mlp(2 * n, hidden, n * (n + 1) // 2, activation)
        rows, cols = torch.tril_indices(n, n, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        out = self.net(embedded)
        n = self.n
        diag = torch.diag_embed(out[..., :n])
        lower = torch.zeros_like(diag)
        lower[..., self._rows, self._cols] = out[..., n:]
        chol = diag + lower
        eye = torch.eye(n, dtype=out.dtype, device=out.device)
        return chol @ chol.transpose(-1, -2) + self.min_eigenvalue * eye


class PotentialNet(nn.Module):
    """Potential energy ``V`` from ``(cos q, sin q)``: ``(..., 2n)`` → ``(...)``."""

    def __init__(self, n: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp(2 * n, hidden, 1, activation)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.net(embedded).squeeze(-1)


class InputMatrixNet(nn.Module):
    """Input matrix ``g(q)`` from ``(cos q, sin q)``: ``(..., 2n)`` → ``(..., n, n)``."""

    def __init__(self, n: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.n = n
        self.net = mlp(2 * n, hidden, n * n, activation)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.net(embedded).unflatten(-1, (self.n, self.n))


def _solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``matrix⁻¹ rhs`` for ``(..., n, n)`` and ``(..., n)``; closed form for n = 1, 2."""
    n = matrix.shape[-1]
    if n == 1:
        return rhs / matrix[..., 0, :]
    if n == 2:
        a, b, c, d = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 1, 0], matrix[..., 1, 1]
        det = a * d - b * c
        return torch.stack(
            [(d * rhs[..., 0] - b * rhs[..., 1]) / det, (a * rhs[..., 1] - c * rhs[..., 0]) / det],
            -1,
        )
    return torch.linalg.solve(matrix, rhs.unsqueeze(-1)).squeeze(-1)


class SymODEN(nn.Module):
    """Symplectic ODE-Net vector field ``f(t, x)`` on ``x = [cos q, sin q, dq/dt, u]``.

    Args:
        inverse_mass: module ``(..., 2n) → (..., n, n)``, symmetric positive definite.
        potential: module ``(..., 2n) → (...)``.
        input_matrix: module ``(..., 2n) → (..., n, n)``.
        n_angles: n.

    ``forward(t, x)`` takes ``x (..., 4n)`` ordered ``[cos q (n), sin q (n), dq (n), u (n)]`` and
    returns ``dx/dt`` of the same shape. It works inside ``physid.odeint`` with every gradient
    method: when autograd is on, the derivatives of ``H`` are taken with ``create_graph=True`` so
    that the gradient methods can differentiate through them; under ``torch.no_grad`` (the
    adjoint and ACA forward passes) autograd is switched on inside for those derivatives and the
    result is returned detached.
    """

    def __init__(
        self, inverse_mass: nn.Module, potential: nn.Module, input_matrix: nn.Module, n_angles: int
    ):
        super().__init__()
        self.inverse_mass = inverse_mass
        self.potential = potential
        self.input_matrix = input_matrix
        self.n = int(n_angles)

    @property
    def state_dim(self) -> int:
        """Channels of the state x: 4n."""
        return 4 * self.n

    def hamiltonian(self, embedded: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``H = ½ pᵀ M⁻¹ p + V`` at ``embedded (..., 2n)``, ``p (..., n)`` → ``(...)``."""
        minv = self.inverse_mass(embedded)
        kinetic = 0.5 * torch.einsum("...i,...ij,...j->...", p, minv, p)
        return kinetic + self.potential(embedded)

    def momentum(self, embedded: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
        """``p = M(q) dq/dt``: ``(..., 2n), (..., n)`` → ``(..., n)``."""
        return _solve_spd(self.inverse_mass(embedded), dq)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        if x.shape[-1] != 4 * n:
            raise ConfigError(
                f"SymODEN with {n} angles takes states of {4 * n} channels "
                f"[cos q, sin q, dq, u], got shape {tuple(x.shape)}."
            )
        # Under no_grad (the adjoint's and ACA's forward passes) the derivatives of H need autograd
        # but no graph of their own: the result is detached so that no graph outlives the call.
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            embedded, dq, u = x[..., : 2 * n], x[..., 2 * n : 3 * n], x[..., 3 * n :]
            p = self.momentum(embedded, dq)
            # (cos q, sin q, p) as one node, so that autograd gives the partial derivatives of H.
            z = torch.cat([embedded, p], -1)
            emb_z, p_z = z[..., : 2 * n], z[..., 2 * n :]
            minv = self.inverse_mass(emb_z)
            kinetic = 0.5 * torch.einsum("...i,...ij,...j->...", p_z, minv, p_z)
            ham = kinetic + self.potential(emb_z)
            (dham,) = torch.autograd.grad(ham.sum(), z, create_graph=keep_graph, retain_graph=True)
            dh_dcos, dh_dsin, dh_dp = dham[..., :n], dham[..., n : 2 * n], dham[..., 2 * n :]
            cos_q, sin_q = emb_z[..., :n], emb_z[..., n:]
            dq_model = dh_dp  # = M⁻¹ p
            dcos, dsin = -sin_q * dq_model, cos_q * dq_model
            # ∂H/∂q = cos q ∘ ∂H/∂sin - sin q ∘ ∂H/∂cos.
            force = sin_q * dh_dcos - cos_q * dh_dsin
            force = force + torch.einsum("...ij,...j->...i", self.input_matrix(emb_z), u)
            # (dM⁻¹/dt) p with p held fixed: the Jacobian of (M⁻¹(r, s) p) along (dr, ds), by
            # the double-backward trick (J v = d/dw [Jᵀ w · v]).
            minv_p = torch.einsum("...ij,...j->...i", minv, p_z)
            dummy = torch.zeros_like(minv_p, requires_grad=True)
            (jt_dummy,) = torch.autograd.grad(
                minv_p, emb_z, dummy, create_graph=True, allow_unused=True
            )
            ddq = torch.einsum("...ij,...j->...i", minv, force)
            if jt_dummy is not None:  # None: M⁻¹ does not depend on q
                (dminv_p,) = torch.autograd.grad(
                    jt_dummy, dummy, torch.cat([dcos, dsin], -1), create_graph=keep_graph
                )
                ddq = ddq + dminv_p
            out = torch.cat([dcos, dsin, ddq, torch.zeros_like(u)], -1)
        return out if keep_graph else out.detach()


def build_symoden(config: SymODENConfig | str = "default") -> SymODEN:
    """A :class:`SymODEN` with networks sized by ``config`` (a :class:`SymODENConfig` or a preset
    name from :data:`PRESETS`)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"Unknown SymODEN preset {config!r}; choose from {sorted(PRESETS)}.")
        config = PRESETS[config]
    n, act = config.n_angles, config.activation
    return SymODEN(
        CholeskyInverseMass(n, config.mass_hidden, act, config.min_eigenvalue),
        PotentialNet(n, config.potential_hidden, act),
        InputMatrixNet(n, config.input_hidden, act),
        n_angles=n,
    )
