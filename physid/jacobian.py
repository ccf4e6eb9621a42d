"""``odeint_jacobian``: a solve and its sensitivities to the parameters (and ``y0``), at once.

The forward-sensitivity solve of :mod:`physid.gradients.forward` as a public function: where
:func:`physid.odeint` returns states that reverse-mode autograd differentiates, this returns the
states together with the full Jacobians ``∂y(t_k)/∂θ`` and ``∂y(t_k)/∂y0`` at every output time —
what a least-squares fitter (:mod:`physid.lstsq`), an identifiability analysis (the singular
values of the Jacobian) or an uncertainty estimate needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from physid.controllers import AbstractController
from physid.errors import ConfigError
from physid.gradients.forward import solve_sensitivities
from physid.odeint import _build_problem
from physid.solvers import ButcherTableau
from physid.stats import SolveStats

__all__ = ["ODEJacobian", "odeint_jacobian"]


class ODEJacobian(NamedTuple):
    """What :func:`odeint_jacobian` returns (detached tensors).

    Attributes:
        ys: ``(T, *shape)`` the states at the output times.
        dparams: ``(T, *shape, P)``: ``∂y(t_k)/∂θ_j``, the parameters flattened and concatenated
            in the order of ``params`` (``P`` entries in all).
        dy0: ``(T, *shape, *shape)``: ``∂y(t_k)/∂y0`` when ``wrt_y0``, else ``None``.
    """

    ys: Tensor
    dparams: Tensor
    dy0: Tensor | None


def odeint_jacobian(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    params: Sequence[Tensor] | None = None,
    wrt_y0: bool = False,
    solver: str | ButcherTableau = "dopri5",
    rtol: float | Tensor = 1e-6,
    atol: float | Tensor = 1e-8,
    max_steps: int = 10_000,
    first_step: float | None = None,
    step_size: float | None = None,
    stats: SolveStats | None = None,
    controller: str | Callable[[], AbstractController] = "i",
    errcon: bool = False,
    sens_atol: float | None = None,
    tangents: str = "auto",
) -> ODEJacobian:
    """Solve ``dy/dt = func(t, y)`` with its forward sensitivities.

    The state is augmented with one tangent per parameter entry (and per entry of ``y0`` with
    ``wrt_y0``) and the whole is integrated by the adaptive loop of :func:`physid.odeint`
    (internal differentiation: the sensitivities are the exact derivatives of the discrete
    solution with the step sizes held fixed; see :mod:`physid.gradients.forward`). Cost: each
    function evaluation also evaluates the tangents' right-hand sides, in one batched call; the
    number of evaluations and steps equals that of a plain solve unless ``errcon``.

    Args:
        func, y0, t, solver, rtol, atol, max_steps, first_step, step_size, stats, controller:
            as in :func:`physid.odeint`.
        params: the parameters to differentiate with respect to (default: the parameters of
            ``func`` when it is an ``nn.Module``). A closure's parameters must require grad.
        wrt_y0: also return ``∂y/∂y0`` (``y0.numel()`` more tangents).
        errcon: include the sensitivities in the error norm (CVODES ``errconS``): steps are then
            chosen so that the sensitivities too meet the tolerances.
        sens_atol: the sensitivities' absolute tolerance under ``errcon`` (default ``atol``).
        tangents: how the tangents' right-hand sides are computed: ``"auto"``, ``"forward"``
            (``torch.func.jvp`` over a vmap) or ``"reverse"`` (Jacobian rows by one batched
            reverse pass); see :mod:`physid.gradients.forward`.

    Returns:
        an :class:`ODEJacobian` ``(ys, dparams, dy0)``.

    Raises:
        ConfigError: invalid arguments.
        SolverError: the solve failed.
    """
    if params is None:
        params = list(func.parameters()) if isinstance(func, nn.Module) else []
    ps = list(params)
    if not all(isinstance(p, Tensor) and p.is_floating_point() for p in ps):
        raise ConfigError("params must be floating-point tensors.")
    if not isinstance(y0, Tensor) or not isinstance(t, Tensor):
        raise ConfigError("y0 and t must be tensors.")
    with torch.no_grad():
        problem, _ = _build_problem(
            func,
            y0.detach(),
            t.detach(),
            solver=solver,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            first_step=first_step,
            step_size=step_size,
            params=ps,
            stats=stats,
            controller=controller,
            grad_method=None,
        )
    sens = solve_sensitivities(
        problem, wrt_y0=wrt_y0, errcon=errcon, sens_atol=sens_atol, tangents=tangents
    )
    dparams = sens.d_params
    if dparams is None:
        dparams = sens.ys.new_zeros((*sens.ys.shape, 0))
    return ODEJacobian(sens.ys, dparams, sens.d_y0)
