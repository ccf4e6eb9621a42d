"""Residuals and Jacobians of a trajectory fit by single or multiple shooting.

Single shooting integrates the model once from the initial state over the whole window; the
residuals are the (weighted) differences from the observations. On a long or chaotic window this
is a badly conditioned, multi-modal problem: a small change of a parameter early on moves the
late trajectory far, and a fit from a poor start falls into a local minimum. *Multiple shooting*
(Bock & Plitt 1984; the DiffEqFlux ``multiple_shoot`` of SciML) splits the window into segments,
each integrated from its own initial state ``s_j``, an extra unknown started from the data; the
residuals are the observation misfits of every segment plus *continuity residuals*
``sqrt(c) (y_j(t_end of j) - s_{j+1})`` that tie the segments together. Each segment is short, so
the problem is nearly linear far from the optimum, and at a solution of a noise-free problem all
residuals vanish at the true parameters. (Here continuity is a weighted penalty solved by
Levenberg-Marquardt, not Bock's equality-constrained Gauss-Newton; a large ``c`` approaches it.)

:class:`ShootingResiduals` is the residual function ``x -> (r, J)`` of :mod:`physid.lstsq`, with
``x = [θ, s_0 (if the initial state is unknown), s_1, ..., s_{K-1}]`` and the Jacobian from one
forward-sensitivity solve per segment (:func:`physid.odeint_jacobian`). ``segments=1`` is single
shooting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from physid.errors import ConfigError
from physid.jacobian import odeint_jacobian
from physid.stats import SolveStats

__all__ = ["ShootingResiduals", "segment_bounds"]


def segment_bounds(n_times: int, segments: int) -> list[int]:
    """Indices ``b_0 = 0 < b_1 < ... < b_K = n_times - 1`` splitting ``n_times`` points into
    ``segments`` segments of (nearly) equal length; segment ``j`` spans ``t[b_j] .. t[b_{j+1}]``.

    Raises:
        ConfigError: fewer than one segment or segments shorter than one interval.
    """
    if not isinstance(segments, int) or segments < 1:
        raise ConfigError(f"segments must be a positive integer, got {segments}.")
    if n_times - 1 < segments:
        raise ConfigError(f"{n_times} times cannot make {segments} segments.")
    return [round(j * (n_times - 1) / segments) for j in range(segments + 1)]


class ShootingResiduals:
    """``x -> (r, J)`` for fitting ``y' = func(t, y)`` to observations ``H y(t_k) ≈ d_k``.

    The residual vector is ``[data; continuity]``: ``sqrt(w_k) (H y(t_k) - d_k)`` for every time
    ``k`` (``(T, k_obs)`` entries, flattened row by row; a segment predicts its times from its
    start up to, not including, the next segment's start, the last segment through the end), then
    ``sqrt(c) (y_j(t_{b_{j+1}}) - s_{j+1})`` for ``j = 0 .. K-2`` (``(K-1, n)`` entries).

    Calling the object writes ``θ`` into ``params`` (in place, without grad) before solving: it
    owns those tensors while a fit runs, as an optimiser does.

    Args:
        func: the dynamics ``func(t, y)`` with ``y`` of shape ``(n,)``.
        params: the tensors to identify (default: the parameters of ``func``, an ``nn.Module``).
        t: ``(T,)`` strictly increasing observation times.
        data: ``(T, k_obs)`` observations.
        observe: ``(k_obs, n)`` the linear observation ``H`` (default: the identity, ``k_obs = n``).
        weights: ``(T,)`` or ``(T, k_obs)`` non-negative weights ``w`` (default: ones).
        y0: ``(n,)`` the known initial state; ``None`` makes ``s_0`` an unknown too.
        segments: the number of segments ``K`` (1: single shooting), or the boundary indices
            ``b_0 = 0 < ... < b_K = T - 1``.
        continuity_weight: ``c``, the weight of the continuity residuals.
        solver, rtol, atol, max_steps, errcon, tangents: of each segment's
            :func:`physid.odeint_jacobian`.
        jacobian_tol: solve the sensitivities at this looser ``rtol = atol`` and the residuals
            by a plain solve at ``rtol``/``atol`` (an inexact Gauss-Newton Jacobian: the
            iteration still converges to the solution of the accurate residuals, at a linear
            rate set by the Jacobian's error, and a plain solve costs a fraction of a sensitivity
            solve). ``None``: both from the one sensitivity solve at ``rtol``/``atol``.
        stats: accumulates the solves' counts.
    """

    def __init__(
        self,
        func: Callable[[Tensor, Tensor], Tensor],
        t: Tensor,
        data: Tensor,
        *,
        params: Sequence[Tensor] | None = None,
        observe: Tensor | None = None,
        weights: Tensor | None = None,
        y0: Tensor | None = None,
        segments: int | Sequence[int] = 1,
        continuity_weight: float = 1.0,
        solver: str = "dopri5",
        rtol: float = 1e-8,
        atol: float = 1e-8,
        max_steps: int = 100_000,
        errcon: bool = False,
        tangents: str = "auto",
        jacobian_tol: float | None = None,
        stats: SolveStats | None = None,
    ):
        if params is None:
            if not isinstance(func, nn.Module):
                raise ConfigError("give params when func is not an nn.Module.")
            params = [p for p in func.parameters() if p.requires_grad]
        self.func = func
        self.params = list(params)
        if t.ndim != 1 or len(t) < 2 or not bool((torch.diff(t) > 0).all()):
            raise ConfigError("t must be a strictly increasing 1-D tensor of at least 2 times.")
        self.t = t.detach()
        self.dtype = t.dtype
        if data.ndim != 2 or data.shape[0] != len(t):
            raise ConfigError(f"data must be (T, k) with T = {len(t)}, got {tuple(data.shape)}.")
        self.data = data.detach().to(self.dtype)
        k_obs = data.shape[1]
        if observe is None:
            self.n = k_obs
            self.H = torch.eye(k_obs, dtype=self.dtype, device=t.device)
        else:
            if observe.ndim != 2 or observe.shape[0] != k_obs:
                raise ConfigError(
                    f"observe must be (k_obs, n) with k_obs = {k_obs}, got {tuple(observe.shape)}."
                )
            self.n = observe.shape[1]
            self.H = observe.detach().to(self.dtype)
        if y0 is not None and y0.shape != (self.n,):
            raise ConfigError(f"y0 must have shape ({self.n},), got {tuple(y0.shape)}.")
        self.y0 = None if y0 is None else y0.detach().to(self.dtype)
        w = torch.ones(len(t), dtype=self.dtype) if weights is None else weights.detach()
        w = w.to(dtype=self.dtype, device=t.device)
        if w.ndim == 1:
            w = w[:, None].expand(len(t), k_obs)
        if w.shape != (len(t), k_obs) or bool((w < 0).any()):
            raise ConfigError("weights must be non-negative, (T,) or (T, k_obs).")
        self.sqrt_w = w.sqrt()
        if isinstance(segments, int):
            self.bounds = segment_bounds(len(t), segments)
        else:
            self.bounds = [int(b) for b in segments]
            ok = (
                len(self.bounds) >= 2
                and self.bounds[0] == 0
                and self.bounds[-1] == len(t) - 1
                and all(a < b for a, b in zip(self.bounds, self.bounds[1:], strict=False))
            )
            if not ok:
                raise ConfigError("segment bounds must rise strictly from 0 to T - 1.")
        if not (math.isfinite(continuity_weight) and continuity_weight > 0):
            raise ConfigError(f"continuity_weight must be positive, got {continuity_weight}.")
        self.sqrt_c = math.sqrt(continuity_weight)
        self.solve_options = {
            "solver": solver,
            "rtol": rtol,
            "atol": atol,
            "max_steps": max_steps,
            "errcon": errcon,
            "tangents": tangents,
        }
        if jacobian_tol is not None and not (math.isfinite(jacobian_tol) and jacobian_tol > 0):
            raise ConfigError(f"jacobian_tol must be positive, got {jacobian_tol}.")
        self.jacobian_tol = jacobian_tol
        self.stats = stats if stats is not None else SolveStats()
        self.n_params = sum(p.numel() for p in self.params)

    # ---- the unknowns ------------------------------------------------------------------------

    @property
    def segments(self) -> int:
        return len(self.bounds) - 1

    @property
    def n_states(self) -> int:
        """How many segment initial states are unknown (``K`` or ``K - 1``)."""
        return self.segments - (0 if self.y0 is None else 1)

    @property
    def n_unknowns(self) -> int:
        return self.n_params + self.n_states * self.n

    @property
    def n_residuals(self) -> int:
        return self.data.numel() + (self.segments - 1) * self.n

    @property
    def state_times(self) -> Tensor:
        """``(n_states,)`` the times of the unknown segment initial states."""
        first = 0 if self.y0 is None else 1
        return self.t[self.bounds[first:-1]]

    def pack(self, theta: Tensor | Sequence[Tensor], states: Tensor | None = None) -> Tensor:
        """``x`` from the parameters (flat or a list like ``params``) and the unknown segment
        states ``(n_states, n)``."""
        if isinstance(theta, Tensor):
            flat = theta.detach().reshape(-1).to(self.dtype)
        else:
            flat = torch.cat([th.detach().reshape(-1).to(self.dtype) for th in theta])
        if flat.numel() != self.n_params:
            raise ConfigError(f"theta has {flat.numel()} entries, not {self.n_params}.")
        if self.n_states == 0:
            return flat
        if states is None or tuple(states.shape) != (self.n_states, self.n):
            raise ConfigError(f"states must be ({self.n_states}, {self.n}).")
        return torch.cat([flat, states.detach().reshape(-1).to(self.dtype)])

    def unpack(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(theta (n_params,), states (n_states, n))`` from ``x``."""
        if x.numel() != self.n_unknowns:
            raise ConfigError(f"x has {x.numel()} entries, not {self.n_unknowns}.")
        return x[: self.n_params], x[self.n_params :].reshape(self.n_states, self.n)

    def lower_bounds(self, params_lower: Tensor | Sequence[float] | float) -> Tensor:
        """Bounds for :func:`~physid.lstsq.levenberg_marquardt`: the given ones on the parameters,
        none on the states."""
        low = torch.as_tensor(params_lower, dtype=self.dtype).reshape(-1)
        if low.numel() == 1:
            low = low.expand(self.n_params)
        if low.numel() != self.n_params:
            raise ConfigError(f"give one lower bound or {self.n_params}.")
        free = torch.full((self.n_states * self.n,), -math.inf, dtype=self.dtype)
        low = low.to(free.device)
        return torch.cat([low, free])

    def set_params(self, theta: Tensor) -> None:
        """Write the flat ``theta`` into ``params`` (in place)."""
        with torch.no_grad():
            for p, chunk in zip(
                self.params, theta.split([p.numel() for p in self.params]), strict=True
            ):
                p.copy_(chunk.view_as(p))

    # ---- evaluation --------------------------------------------------------------------------

    def _segment_start(self, j: int, states: Tensor) -> Tensor:
        if self.y0 is not None:
            return self.y0 if j == 0 else states[j - 1]
        return states[j]

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(r (n_residuals,), J (n_residuals, n_unknowns))`` at ``x``."""
        theta, states = self.unpack(x.detach().to(self.dtype))
        self.set_params(theta)
        T, k_obs = self.data.shape
        n, P = self.n, self.n_params
        K = self.segments
        dev = self.t.device
        r = torch.empty(self.n_residuals, dtype=self.dtype, device=dev)
        J = torch.zeros(self.n_residuals, self.n_unknowns, dtype=self.dtype, device=dev)
        first_state = 0 if self.y0 is None else 1
        cont_row = T * k_obs
        for j in range(K):
            a, b = self.bounds[j], self.bounds[j + 1]
            start = self._segment_start(j, states)
            unknown_start = j >= first_state
            options = dict(self.solve_options)
            if self.jacobian_tol is not None:
                options["rtol"] = options["atol"] = self.jacobian_tol
            sol = odeint_jacobian(
                self.func,
                start,
                self.t[a : b + 1],
                params=self.params,
                wrt_y0=unknown_start,
                stats=self.stats,
                **options,  # type: ignore[arg-type]
            )
            ys = sol.ys if self.jacobian_tol is None else self._solve(start, self.t[a : b + 1])
            last = b + 1 if j == K - 1 else b  # the data this segment fits: [a, last)
            m = last - a
            sw = self.sqrt_w[a:last]  # (m, k_obs)
            pred = ys[:m] @ self.H.T  # (m, k_obs)
            rows = slice(a * k_obs, last * k_obs)
            r[rows] = (sw * (pred - self.data[a:last])).reshape(-1)
            # d(H y)/dθ: (m, k_obs, P)
            J[rows, :P] = (
                sw[..., None] * torch.einsum("on,mnp->mop", self.H, sol.dparams[:m])
            ).reshape(m * k_obs, P)
            col = P + (j - first_state) * n
            if unknown_start and sol.dy0 is not None:
                J[rows, col : col + n] = (
                    sw[..., None] * torch.einsum("on,mnj->moj", self.H, sol.dy0[:m])
                ).reshape(m * k_obs, n)
            if j < K - 1:
                crow = slice(cont_row + j * n, cont_row + (j + 1) * n)
                r[crow] = self.sqrt_c * (ys[-1] - states[j + 1 - first_state])
                J[crow, :P] = self.sqrt_c * sol.dparams[-1]
                if unknown_start and sol.dy0 is not None:
                    J[crow, col : col + n] = self.sqrt_c * sol.dy0[-1]
                nxt = P + (j + 1 - first_state) * n
                J[crow, nxt : nxt + n] -= self.sqrt_c * torch.eye(n, dtype=self.dtype, device=dev)
        return r, J

    def _solve(self, start: Tensor, t: Tensor) -> Tensor:
        """A plain solve at the residuals' tolerances (no sensitivities)."""
        from physid.odeint import odeint

        opts = {k: self.solve_options[k] for k in ("solver", "rtol", "atol", "max_steps")}
        with torch.no_grad():
            return odeint(self.func, start, t, method="aca", stats=self.stats, **opts)  # type: ignore[arg-type]

    def predict(self, theta: Tensor, y0: Tensor | None = None) -> Tensor:
        """``(T, n)``: one solve over the whole window from ``y0`` (default the known initial
        state) with the parameters ``theta`` — the single-shooting prediction."""
        start = y0 if y0 is not None else self.y0
        if start is None:
            raise ConfigError("predict needs y0 when the initial state is an unknown.")
        self.set_params(theta.detach().to(self.dtype))
        return self._solve(start.to(self.dtype), self.t)
