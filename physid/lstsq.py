"""Levenberg-Marquardt least squares, with checkpointable state and an uncertainty report.

Minimises ``cost(x) = ||r(x)||²`` for a residual function that returns its Jacobian too
(``fun(x) -> (r (m,), J (m, p))``; for an ODE model, :func:`physid.odeint_jacobian` or
:class:`physid.shooting.ShootingResiduals` give both from one solve). Nothing here knows ODEs.

The algorithm is the trust-region Levenberg-Marquardt method of MINPACK's ``lmder`` (Moré 1978,
*The Levenberg-Marquardt algorithm: implementation and theory*): each step solves
``min ||r + J p||²`` subject to ``||D p|| <= Δ``, with ``D`` the running maximum of the Jacobian's
column norms (so the iteration does not depend on the units of the parameters). Inside the trust
region the step is the Gauss-Newton step (``λ = 0``, hence quadratic convergence on
zero-residual problems); otherwise ``λ > 0`` is found such that ``||D p(λ)|| = Δ``. The radius
follows the gain ratio ``ρ`` (actual over predicted reduction): halved below ``ρ = 1/4``, set to
``2 ||D p||`` above ``3/4``. Each Jacobian is factored once (an eigendecomposition of the scaled
normal matrix ``D⁻¹JᵀJD⁻¹``, ``O(m p²)``), after which any ``λ`` costs ``O(p²)``.

Bounds are a reparameterisation: a parameter with a finite ``lower`` bound is
``x = lower + exp(u)`` and the iteration runs in ``u`` (so masses stay positive). The report at
the solution (:class:`LMResult`) holds the singular values of ``J`` (with respect to ``x``: an
identifiability check — near-zero ones mean combinations the data do not fix) and the standard
errors ``sqrt(diag(s² (JᵀJ)⁻¹))`` with ``s² = cost / (m - p)`` the residual variance (the
linearised covariance of nonlinear regression; Seber & Wild 1989, ch. 2).

A fit can be interrupted and resumed: ``callback`` sees every iteration with the
:class:`LMState` (JSON-ready), and ``levenberg_marquardt(..., state=saved)`` continues from it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from physid.errors import ConfigError, PhysicsError, SolverError, TrainingError

__all__ = [
    "ResidualFunction",
    "LMOptions",
    "LMState",
    "LMIteration",
    "LMResult",
    "levenberg_marquardt",
    "uncertainty",
]

ResidualFunction = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``fun(x (p,)) -> (r (m,), J (m, p))`` with ``J = ∂r/∂x``."""


@dataclasses.dataclass(frozen=True)
class LMOptions:
    """Stopping rules and trust region of :func:`levenberg_marquardt` (MINPACK's names).

    Attributes:
        max_iterations: the most trial steps (accepted or rejected; each costs one evaluation).
        ftol: stop when the relative reduction of the cost, actual and predicted, is at most
            ``ftol`` (the residuals are as small as they will get).
        xtol: stop when the trust region or the step shrank below ``xtol (||D z|| + xtol)``, with
            ``z = u`` for a free parameter and ``z = 1`` for a bounded one (whose step in
            ``u = log(x - lower)`` is already relative).
        gtol: stop when every column of ``J`` makes a cosine ``<= gtol`` with ``r`` (first-order
            optimality).
        factor: the initial trust radius is ``factor ||D z||`` (MINPACK's 100).
        accept: the least gain ratio of an accepted step (MINPACK's 1e-4).
    """

    max_iterations: int = 50
    ftol: float = 1e-8
    xtol: float = 1e-8
    gtol: float = 1e-10
    factor: float = 100.0
    accept: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.max_iterations, int) or self.max_iterations < 0:
            raise ConfigError(f"max_iterations must be >= 0, got {self.max_iterations}.")
        for name in ("ftol", "xtol", "gtol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {value}.")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ConfigError(f"factor must be positive, got {self.factor}.")
        if not 0 <= self.accept < 0.25:
            raise ConfigError(f"accept must lie in [0, 0.25), got {self.accept}.")


@dataclasses.dataclass
class LMState:
    """Where a fit stands: enough to resume it (``to_dict``/``from_dict`` are JSON-ready).

    Attributes:
        u: the internal coordinates (``x`` where unbounded, ``log(x - lower)`` where bounded).
        radius: the trust radius ``Δ`` (``None`` before the first step).
        diag: Moré's scaling ``D`` (the running maximum of the column norms of ``J``).
        iteration: trial steps taken; accepted: those accepted.
        evaluations: calls of the residual function.
        cost: the cost at ``u``.
        seconds: time spent so far (summed over resumed sessions).
    """

    u: list[float]
    radius: float | None
    diag: list[float]
    iteration: int = 0
    accepted: int = 0
    evaluations: int = 0
    cost: float = math.inf
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LMState:
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = {"u", "radius", "diag"} - set(raw)
        if missing:
            raise ConfigError(f"an LM state needs {sorted(missing)}.")
        return cls(**{k: v for k, v in raw.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class LMIteration:
    """One trial step.

    Attributes:
        iteration: its number (from 1).
        accepted: whether the step was taken.
        cost: the cost after the iteration (the trial's if accepted, else the unchanged one).
        trial_cost: the cost at the trial point (``inf`` if it could not be evaluated).
        lam: the damping ``λ`` of the step (0: the Gauss-Newton step).
        radius: the trust radius the step was computed for.
        rho: the gain ratio (actual / predicted reduction).
        step_norm: ``||D p||``.
        gradient_cosine: the largest cosine between a column of ``J`` and ``r`` before the step.
        x: the parameters after the iteration.
        evaluations: residual evaluations so far.
        seconds: time so far.
        note: why the trial failed, if it did.
    """

    iteration: int
    accepted: bool
    cost: float
    trial_cost: float
    lam: float
    radius: float
    rho: float
    step_norm: float
    gradient_cosine: float
    x: list[float]
    evaluations: int
    seconds: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LMResult:
    """The outcome of :func:`levenberg_marquardt`.

    Attributes:
        x: ``(p,)`` the parameters found.
        cost: ``||r(x)||²``.
        status: ``"gtol"``, ``"ftol"``, ``"xtol"``, ``"zero_cost"`` (converged),
            ``"max_iterations"`` or ``"stopped"``
            (the callback asked).
        success: whether a convergence test was met.
        message: the status in words.
        residuals: ``(m,)`` at ``x``; jacobian: ``(m, p)`` with respect to ``x``.
        singular_values: ``(p,)`` of ``jacobian``, descending.
        singular_vectors: ``(p, p)``: row ``i`` is the parameter direction of singular value
            ``i`` (``Vᵀ``); the rows of the smallest ones are the least identifiable combinations.
        rank: the numerical rank of ``jacobian`` (singular values above
            ``max(m, p) · eps · σ_max``).
        residual_variance: ``cost / (m - p)`` (``nan`` when ``m <= p``).
        covariance: ``(p, p)`` ``s² (JᵀJ)⁺`` (pseudo-inverse on the numerical rank).
        std_errors: ``(p,)`` the square roots of its diagonal.
        history: every iteration of this call (a resumed fit lists only its own).
        state: the final :class:`LMState` (to continue with a larger budget).
    """

    x: Tensor
    cost: float
    status: str
    success: bool
    message: str
    residuals: Tensor
    jacobian: Tensor
    singular_values: Tensor
    singular_vectors: Tensor
    rank: int
    residual_variance: float
    covariance: Tensor
    std_errors: Tensor
    history: list[LMIteration]
    state: LMState

    @property
    def iterations(self) -> int:
        return self.state.iteration

    @property
    def evaluations(self) -> int:
        return self.state.evaluations

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no residuals or Jacobian)."""
        return {
            "x": self.x.tolist(),
            "cost": self.cost,
            "status": self.status,
            "success": self.success,
            "message": self.message,
            "iterations": self.iterations,
            "accepted": self.state.accepted,
            "evaluations": self.evaluations,
            "seconds": self.state.seconds,
            "n_residuals": int(self.residuals.numel()),
            "singular_values": self.singular_values.tolist(),
            "singular_vectors": self.singular_vectors.tolist(),
            "rank": self.rank,
            "residual_variance": self.residual_variance,
            "std_errors": self.std_errors.tolist(),
            "covariance": self.covariance.tolist(),
        }


_MESSAGES = {
    "gtol": "the gradient is orthogonal to the residuals to within gtol",
    "ftol": "the relative reduction of the cost fell below ftol",
    "xtol": "the relative step fell below xtol",
    "zero_cost": "the residuals are zero",
    "max_iterations": "the iteration budget ran out before convergence",
    "stopped": "the callback stopped the fit",
}
_CONVERGED = ("gtol", "ftol", "xtol", "zero_cost")


class _Transform:
    """``x = lower + exp(u)`` where ``lower`` is finite, ``x = u`` elsewhere."""

    def __init__(self, lower: Tensor):
        self.lower = lower
        self.bounded = torch.isfinite(lower)

    def to_x(self, u: Tensor) -> Tensor:
        return torch.where(self.bounded, self.lower.nan_to_num(0.0) + torch.exp(u), u)

    def to_u(self, x: Tensor) -> Tensor:
        if bool((x[self.bounded] <= self.lower[self.bounded]).any()):
            raise ConfigError("the initial parameters must lie strictly above their lower bounds.")
        return torch.where(self.bounded, torch.log(x - self.lower.nan_to_num(0.0)), x)

    def dx_du(self, u: Tensor) -> Tensor:
        return torch.where(self.bounded, torch.exp(u), torch.ones_like(u))


def _trust_region_step(mu: Tensor, c: Tensor, zero: Tensor, radius: float) -> tuple[float, Tensor]:
    """``(λ, coef)`` with ``p_scaled = -V coef`` the minimiser of ``||r + J p||²`` over
    ``||D p|| <= radius``, in the eigenbasis ``V`` of ``A = D⁻¹JᵀJD⁻¹`` (eigenvalues ``mu``,
    ``c = Vᵀ D⁻¹Jᵀr``): ``coef = c / (mu + λ)``.

    ``λ = 0`` (the Gauss-Newton step, minimum-norm on the null space) when it fits in the region,
    else the root of ``||coef(λ)|| = radius``, found by Newton's method on ``1/||coef(λ)||``,
    which is nearly linear in ``λ`` (Moré 1978, Section 5), safeguarded by bisection.
    """
    safe_mu = torch.where(zero, torch.ones_like(mu), mu)
    gn = torch.where(zero, torch.zeros_like(c), c / safe_mu)
    if float(torch.linalg.vector_norm(gn)) <= 1.1 * radius:
        return 0.0, gn

    def norm(lam: float) -> float:
        return float(torch.linalg.vector_norm(c / (mu + lam)))

    lo, hi = 0.0, float(torch.linalg.vector_norm(c)) / radius  # ||coef(hi)|| <= radius
    lam = 0.5 * hi if not bool(zero.any()) else hi * 1e-3
    for _ in range(100):
        if not lo < lam < hi:
            lam = 0.5 * (lo + hi)
        phi = norm(lam)
        if abs(phi - radius) <= 0.1 * radius:
            break
        if phi > radius:
            lo = lam
        else:
            hi = lam
        # Newton on psi(λ) = 1/||coef|| - 1/radius: psi' = Σ c²/(mu+λ)³ / ||coef||³.
        d = float((c * c / (mu + lam) ** 3).sum()) / phi**3
        lam = lam - (1.0 / phi - 1.0 / radius) / d if d > 0 else 0.5 * (lo + hi)
    return lam, c / (mu + lam)


def uncertainty(
    residuals: Tensor, jacobian: Tensor
) -> tuple[Tensor, Tensor, int, float, Tensor, Tensor]:
    """The identifiability and uncertainty report of a least-squares solution.

    Args:
        residuals: ``(m,)``; jacobian: ``(m, p)``.

    Returns:
        ``(singular_values (p,), singular_vectors (p, p) = Vᵀ, rank, residual_variance,
        covariance (p, p), std_errors (p,))``; see :class:`LMResult`.
    """
    m, p = jacobian.shape
    # every parameter direction, also when there are fewer residuals than parameters
    _, s, vh = torch.linalg.svd(jacobian, full_matrices=m < p)
    if s.numel() < p:
        s = torch.cat([s, s.new_zeros(p - s.numel())])
    if p == 0:
        empty = jacobian.new_zeros((0, 0))
        return s, vh, 0, math.nan, empty, jacobian.new_zeros(0)
    cutoff = max(m, p) * torch.finfo(jacobian.dtype).eps * float(s[0])
    rank = int((s > cutoff).sum())
    cost = float(residuals.pow(2).sum())
    variance = cost / (m - p) if m > p else math.nan
    inv_s2 = torch.where(s > cutoff, 1.0 / s.clamp_min(1e-300) ** 2, torch.zeros_like(s))
    cov = variance * (vh.T * inv_s2) @ vh
    # A direction the data do not fix has an unbounded standard error, not a zero one.
    spread = (vh[rank:] ** 2).sum(0) if rank < p else torch.zeros_like(s)
    std = torch.where(
        spread > 1e-12, torch.full_like(s, math.inf), cov.diagonal().clamp_min(0).sqrt()
    )
    return s, vh, rank, variance, cov, std


def levenberg_marquardt(
    fun: ResidualFunction,
    x0: Tensor | Sequence[float],
    *,
    lower: Tensor | Sequence[float] | float | None = None,
    options: LMOptions | None = None,
    state: LMState | dict[str, Any] | None = None,
    callback: Callable[[LMIteration, LMState], bool | None] | None = None,
) -> LMResult:
    """Minimise ``||r(x)||²`` by trust-region Levenberg-Marquardt (Moré 1978, MINPACK ``lmder``).

    Args:
        fun: ``x (p,) -> (r (m,), J (m, p))``. A trial point where ``fun`` raises a
            :class:`~physid.errors.SolverError` or :class:`~physid.errors.PhysicsError`, or
            returns non-finite values, is rejected (the trust region shrinks), so a wild step
            cannot end the fit; the starting point must evaluate.
        x0: ``(p,)`` the starting point (float64 recommended).
        lower: lower bounds, one per parameter or one for all (``-inf``: none); a bounded
            parameter is ``lower + exp(u)`` inside the iteration, so it never reaches its bound.
        options: stopping rules and trust region (:class:`LMOptions`).
        state: a saved :class:`LMState` (or its dict) to resume from; ``x0`` then only sets the
            dtype and device.
        callback: called after every iteration with the record and the state; returning
            ``True`` stops the fit (status ``"stopped"``).

    Returns:
        the :class:`LMResult`, with the uncertainty report at the final point.

    Raises:
        ConfigError: bad arguments, or ``fun`` returned the wrong shapes.
        SolverError: ``fun`` failed at the starting point.
        TrainingError: ``fun`` returned non-finite values at the starting point.
    """
    opts = options or LMOptions()
    x0 = torch.as_tensor(x0)
    if not x0.is_floating_point():
        x0 = x0.to(torch.get_default_dtype())
    x0 = x0.detach().reshape(-1).clone()
    p = x0.numel()
    low = torch.full_like(x0, -math.inf) if lower is None else torch.as_tensor(lower).to(x0)
    low = low.expand(p).clone() if low.numel() == 1 else low.reshape(-1)
    if low.numel() != p or bool(torch.isnan(low).any()):
        raise ConfigError(f"lower needs one bound per parameter ({p}), got {low.numel()}.")
    tr = _Transform(low)
    start = time.perf_counter()

    if isinstance(state, dict):
        state = LMState.from_dict(state)
    if state is not None:
        if len(state.u) != p or len(state.diag) != p:
            raise ConfigError(f"the saved state has {len(state.u)} parameters, not {p}.")
        st = dataclasses.replace(state)
        u = torch.tensor(st.u, dtype=x0.dtype, device=x0.device)
    else:
        u = tr.to_u(x0)
        st = LMState(u=u.tolist(), radius=None, diag=[0.0] * p)
    base_seconds = st.seconds

    def evaluate(uu: Tensor) -> tuple[Tensor, Tensor]:
        x = tr.to_x(uu)
        r, jac = fun(x)
        st.evaluations += 1
        r = r.detach().reshape(-1).to(x0)
        jac = jac.detach().to(x0)
        if jac.ndim != 2 or jac.shape != (r.numel(), p):
            raise ConfigError(
                f"fun must return r (m,) and J (m, {p}); got {tuple(r.shape)} and "
                f"{tuple(jac.shape)}."
            )
        return r, jac * tr.dx_du(uu)  # the chain rule into u

    r, J = evaluate(u)
    if not (bool(torch.isfinite(r).all()) and bool(torch.isfinite(J).all())):
        raise TrainingError(
            "the residuals or the Jacobian are not finite at the starting point; start elsewhere."
        )
    cost = float(r @ r)
    st.cost = cost
    history: list[LMIteration] = []
    status = ""

    while True:
        if cost == 0.0:
            status = "zero_cost"
            break
        col = torch.linalg.vector_norm(J, dim=0)
        diag = torch.maximum(torch.tensor(st.diag, dtype=x0.dtype, device=x0.device), col)
        diag = torch.where(diag > 0, diag, torch.ones_like(diag))
        st.diag = diag.tolist()
        rnorm = math.sqrt(cost)
        cosine = float((J.T @ r).abs().div(col.clamp_min(1e-300) * rnorm).max()) if p else 0.0
        if cosine <= opts.gtol:
            status = "gtol"
            break
        if st.iteration >= opts.max_iterations:
            status = "max_iterations"
            break
        # The scaled normal matrix once per Jacobian; every λ after that costs O(p²).
        Js = J / diag
        mu, V = torch.linalg.eigh(Js.T @ Js)
        mu = mu.clamp_min(0.0)
        c = V.T @ (Js.T @ r)
        zero = mu <= p * torch.finfo(mu.dtype).eps * float(mu.max())
        # Relative size: a log-parameter's step is already relative, so it is measured against
        # 1; a free parameter's against its size (MINPACK: ||D p|| against ||D x||).
        size = torch.where(tr.bounded, torch.ones_like(u), u)
        size_norm = float(torch.linalg.vector_norm(diag * size))
        if st.radius is None:
            st.radius = opts.factor * size_norm if size_norm > 0 else opts.factor
        # Try steps until one is accepted (or the budget ends); each trial is one iteration.
        while True:
            radius = st.radius
            lam, coef = _trust_region_step(mu, c, zero, radius)
            step_scaled = -(V @ coef)
            step = step_scaled / diag
            # Predicted reduction -(2 gᵀp + pᵀAp) in the eigenbasis, without cancellation.
            predicted = -float((2.0 * c * (-coef) + mu * coef * coef).sum())
            step_norm = float(torch.linalg.vector_norm(step_scaled))
            # A step or a predicted gain below the tolerances is not worth an evaluation
            # (MINPACK stops on a trust region below xtol the same way).
            if step_norm <= opts.xtol * (size_norm + opts.xtol):
                status = "xtol"
                break
            if predicted <= opts.ftol * cost:
                status = "ftol"
                break
            u_try = u + step
            note = ""
            try:
                r_try, J_try = evaluate(u_try)
                trial_cost = float(r_try @ r_try)
                finite = math.isfinite(trial_cost) and bool(torch.isfinite(J_try).all())
                if not finite:
                    note = "non-finite residuals or Jacobian"
            except (SolverError, PhysicsError) as err:
                finite, trial_cost, note = False, math.inf, f"{type(err).__name__}: {err}"
            st.iteration += 1
            rho = (cost - trial_cost) / predicted if finite and predicted > 0 else -math.inf
            accepted = finite and rho > opts.accept
            # Moré's radius update (MINPACK): shrink on a poor model, expand on a good one.
            if rho < 0.25:
                st.radius = 0.5 * min(radius, step_norm) if finite else 0.25 * step_norm
            elif rho >= 0.75 or lam == 0.0:
                st.radius = max(radius, 2.0 * step_norm)
            old_cost = cost
            if accepted:
                u, r, J, cost = u_try, r_try, J_try, trial_cost
                st.accepted += 1
            st.u, st.cost = u.tolist(), cost
            st.seconds = base_seconds + time.perf_counter() - start
            record = LMIteration(
                iteration=st.iteration,
                accepted=accepted,
                cost=cost,
                trial_cost=trial_cost,
                lam=lam,
                radius=radius,
                rho=rho,
                step_norm=step_norm,
                gradient_cosine=cosine,
                x=tr.to_x(u).tolist(),
                evaluations=st.evaluations,
                seconds=st.seconds,
                note=note,
            )
            history.append(record)
            if callback is not None and callback(record, dataclasses.replace(st)):
                status = "stopped"
                break
            if accepted and (
                abs(old_cost - cost) <= opts.ftol * old_cost and predicted <= opts.ftol * old_cost
            ):
                status = "ftol"
                break
            if st.radius <= opts.xtol * (size_norm + opts.xtol):
                status = "xtol"
                break
            if accepted:
                break
            if st.iteration >= opts.max_iterations:
                status = "max_iterations"
                break
        if status:
            break

    st.seconds = base_seconds + time.perf_counter() - start
    x = tr.to_x(u)
    J_x = J / tr.dx_du(u)
    s_all, vh, rank, variance, cov, std = uncertainty(r, J_x)
    return LMResult(
        x=x,
        cost=cost,
        status=status,
        success=status in _CONVERGED,
        message=_MESSAGES[status],
        residuals=r,
        jacobian=J_x,
        singular_values=s_all,
        singular_vectors=vh,
        rank=rank,
        residual_variance=variance,
        covariance=cov,
        std_errors=std,
        history=history,
        state=st,
    )
