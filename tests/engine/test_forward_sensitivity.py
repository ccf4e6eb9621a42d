"""Forward sensitivities: the exact Fréchet derivative of expm on linear systems, the same
gradients and steps as ``aca``, NFE relations, error control on the sensitivities."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import physid
from physid.errors import ConfigError
from physid.gradients.forward import ForwardSensitivityMethod

F64 = torch.float64
TANGENTS = ("reverse", "forward")


class LinearFamily(nn.Module):
    """``y' = A(θ) y`` with ``A(θ) = A0 + Σ_i θ_i B_i``."""

    def __init__(self, A0: torch.Tensor, B: torch.Tensor, theta: torch.Tensor):
        super().__init__()
        self.register_buffer("A0", A0)
        self.register_buffer("B", B)
        self.theta = nn.Parameter(theta.clone())

    def matrix(self) -> torch.Tensor:
        return self.A0 + torch.einsum("i,ijk->jk", self.theta, self.B)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix().T


def _linear_family() -> tuple[LinearFamily, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    n, p = 4, 3
    A0 = 0.6 * torch.randn(n, n, generator=g, dtype=F64) - 0.4 * torch.eye(n, dtype=F64)
    B = torch.randn(p, n, n, generator=g, dtype=F64)
    theta = 0.3 * torch.randn(p, generator=g, dtype=F64)
    y0 = torch.randn(n, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.9, 1.4, 2.0], dtype=F64)
    return LinearFamily(A0, B, theta), y0, t


def _frechet(A: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """``L(A, E)``, the Fréchet derivative of expm at ``A`` along ``E``: the upper-right block of
    ``expm([[A, E], [0, A]])`` (Higham, *Functions of Matrices*, Thm 3.6)."""
    n = A.shape[0]
    big = torch.zeros(2 * n, 2 * n, dtype=A.dtype)
    big[:n, :n] = A
    big[n:, n:] = A
    big[:n, n:] = E
    return torch.linalg.matrix_exp(big)[:n, n:]


@pytest.mark.parametrize("tangents", TANGENTS)
def test_sensitivities_of_a_linear_system_are_the_frechet_derivative_of_expm(
    tangents: str,
) -> None:
    f, y0, t = _linear_family()
    A = f.matrix().detach()
    jac = physid.odeint_jacobian(f, y0, t, wrt_y0=True, rtol=1e-12, atol=1e-12, tangents=tangents)
    assert jac.dparams.shape == (len(t), 4, 3) and jac.dy0 is not None
    assert jac.dy0.shape == (len(t), 4, 4)
    for k, tk in enumerate(t.tolist()):
        expm = torch.linalg.matrix_exp(A * tk)
        torch.testing.assert_close(jac.ys[k], expm @ y0, rtol=1e-10, atol=1e-11)
        torch.testing.assert_close(jac.dy0[k], expm, rtol=1e-10, atol=1e-11)
        for i in range(3):
            want = _frechet(A * tk, f.B[i] * tk) @ y0
            torch.testing.assert_close(jac.dparams[k, :, i], want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("tangents", TANGENTS)
def test_forward_method_gradients_match_the_matrix_exponential(tangents: str) -> None:
    """Reverse-mode gradients of a loss through method=forward: to θ, y0 and t."""
    f, y0, t = _linear_family()
    w = torch.randn(len(t), 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    theta = f.theta.detach().clone().requires_grad_(True)
    y0r, tr = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    A = f.A0 + torch.einsum("i,ijk->jk", theta, f.B)
    ys = torch.stack([torch.linalg.matrix_exp(A * (tk - tr[0])) @ y0r for tk in tr])
    want = torch.autograd.grad((w * ys).sum(), (theta, y0r, tr))

    y0v, tv = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    method = ForwardSensitivityMethod(tangents=tangents)
    ys = physid.odeint(f, y0v, tv, method=method, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((w * ys).sum(), (f.theta, y0v, tv))
    for g, e, name in zip(got, want, ("theta", "y0", "t"), strict=True):
        rel = float((g - e).norm() / e.norm())
        assert rel < 1e-9, f"d/d{name}: relative error {rel:.2e}"


def test_the_two_tangent_computations_agree() -> None:
    f, y0, t = _linear_family()
    a = physid.odeint_jacobian(f, y0, t, wrt_y0=True, rtol=1e-8, tangents="reverse")
    b = physid.odeint_jacobian(f, y0, t, wrt_y0=True, rtol=1e-8, tangents="forward")
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=1e-14)
    torch.testing.assert_close(a.dparams, b.dparams, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(a.dy0, b.dy0, rtol=1e-12, atol=1e-13)


def _three_body_model(masses: tuple[float, float, float]):  # type: ignore[no-untyped-def]
    from physid.envs.three_body import default_initial_state
    from physid.models.known_form import KnownFormThreeBody

    y0 = torch.as_tensor(default_initial_state())
    t = torch.linspace(0.0, 0.6, 61, dtype=F64)
    return KnownFormThreeBody(masses), y0, t


def test_forward_equals_aca_on_the_three_body_model_with_the_same_steps() -> None:
    """Both differentiate the same discrete solve with the step sizes held fixed: the gradients
    agree to round-off, and so do the forward NFE and the steps (odeint probed func once for
    captured tensors; forward cannot reuse that evaluation and counts it)."""
    results = {}
    for method in ("aca", "forward"):
        model, y0, t = _three_body_model((1.1 * 1.001, 1.1, 0.9))
        stats = physid.SolveStats()
        ys = physid.odeint(model, y0, t, method=method, rtol=1e-8, atol=1e-8, stats=stats)
        loss = (0.01**t * ys[:, :9].pow(2).sum(-1)).mean()
        (grad,) = torch.autograd.grad(loss, model.masses)
        results[method] = (ys.detach(), grad, stats)
    (ys_a, g_a, s_a), (ys_f, g_f, s_f) = results["aca"], results["forward"]
    torch.testing.assert_close(ys_f, ys_a, rtol=0, atol=1e-13)
    assert float((g_f - g_a).norm() / g_a.norm()) < 1e-10
    assert s_f.steps_accepted == s_a.steps_accepted
    assert s_f.steps_rejected == s_a.steps_rejected
    assert s_f.nfe_forward == s_a.nfe_forward + 1
    assert s_f.nfe_backward == 0 and s_a.nfe_backward > 0


def test_jacobian_nfe_equals_a_plain_solve_without_error_control() -> None:
    model, y0, t = _three_body_model((1.1, 1.1, 0.9))
    plain, sens = physid.SolveStats(), physid.SolveStats()
    with torch.no_grad():
        physid.odeint(model, y0, t, rtol=1e-7, atol=1e-7, stats=plain)
    physid.odeint_jacobian(model, y0, t, rtol=1e-7, atol=1e-7, stats=sens)
    assert sens.as_dict() == plain.as_dict()


def test_error_control_on_the_sensitivities_buys_their_accuracy() -> None:
    """y'' = -ω² y over ten periods: ∂y/∂ω = -t ω sin(ωt)-like grows with t while y does not,
    so steps sized for y leave the sensitivity less accurate; errcon sizes them for both (the
    same rtol then gives a sensitivity 2.5-3x more accurate for 25-30% more steps)."""

    class Oscillator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.omega = nn.Parameter(torch.tensor(2.0, dtype=F64))

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.stack([self.omega * y[1], -self.omega * y[0]])

    f = Oscillator()
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    t = torch.linspace(0.0, 10 * math.pi, 50, dtype=F64)
    # y = (sin ωt, cos ωt): ∂y/∂ω = t (cos ωt, -sin ωt)
    exact = torch.stack([t * torch.cos(2 * t), -t * torch.sin(2 * t)], -1)
    errors, steps = {}, {}
    for errcon in (False, True):
        stats = physid.SolveStats()
        jac = physid.odeint_jacobian(f, y0, t, rtol=1e-6, atol=1e-6, errcon=errcon, stats=stats)
        errors[errcon] = float((jac.dparams[..., 0] - exact).abs().max())
        steps[errcon] = stats.steps_accepted
    assert steps[True] > steps[False]
    assert errors[True] < 0.5 * errors[False]  # measured 0.33-0.40 from rtol 1e-4 to 1e-8


def test_closure_parameters_need_no_module() -> None:
    """dz/dt = k z: ∂z(T)/∂k = T z0 e^{kT}, with k captured by a closure."""
    k = torch.tensor(0.4, dtype=F64, requires_grad=True)
    z0 = torch.tensor([1.3], dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.5], dtype=F64)
    jac = physid.odeint_jacobian(lambda t, z: k * z, z0, t, params=[k], rtol=1e-12, atol=1e-12)
    want = (t * 1.3 * torch.exp(0.4 * t))[:, None]
    torch.testing.assert_close(jac.dparams[..., 0], want, rtol=1e-9, atol=1e-12)


def test_batched_states_and_several_parameter_tensors() -> None:
    """Output layout: ``(T, *shape, P)`` with the parameters flattened in order."""
    a = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
    b = torch.tensor(0.2, dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]], dtype=F64)  # (3, 2)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    jac = physid.odeint_jacobian(
        lambda t, y: a * y + b, y0, t, params=[a, b], wrt_y0=True, rtol=1e-12, atol=1e-12
    )
    assert jac.dparams.shape == (3, 3, 2, 3) and jac.dy0 is not None
    assert jac.dy0.shape == (3, 3, 2, 3, 2)
    # y_ij(t) = (y0_ij + b/a_j) e^{a_j t} - b/a_j
    for k, tk in enumerate(t.tolist()):
        e = torch.exp(a.detach() * tk)
        d_a = (y0 * tk * e) + b.detach() * (1 - e + a.detach() * tk * e) / a.detach() ** 2
        d_b = (e - 1) / a.detach()
        torch.testing.assert_close(jac.dparams[k, :, 0, 0], d_a[:, 0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(jac.dparams[k, :, 1, 0], torch.zeros(3, dtype=F64))
        torch.testing.assert_close(jac.dparams[k, :, 1, 1], d_a[:, 1], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(jac.dparams[k, :, 0, 2], d_b[0].expand(3), rtol=1e-9, atol=0)
        eye = torch.diag_embed(e.expand(3, 2)).reshape(3, 2, 2)
        for i in range(3):
            torch.testing.assert_close(jac.dy0[k, i, :, i, :], eye[i], rtol=1e-9, atol=1e-12)
            others = [j for j in range(3) if j != i]
            assert float(jac.dy0[k, i][:, others].abs().max()) == 0.0


def test_invalid_options_are_config_errors() -> None:
    f, y0, t = _linear_family()
    with pytest.raises(ConfigError, match="tangents"):
        physid.odeint_jacobian(f, y0, t, tangents="sideways")
    with pytest.raises(ConfigError, match="sens_atol"):
        physid.odeint_jacobian(f, y0, t, errcon=True, sens_atol=-1.0)
    with pytest.raises(ConfigError, match="nn.Module"):
        k = torch.tensor(0.3, dtype=F64, requires_grad=True)
        physid.odeint_jacobian(lambda t, y: -k * y, y0, t, params=[k], tangents="forward")
    with pytest.raises(ConfigError, match="requires_grad"):
        k = torch.tensor(0.3, dtype=F64)
        physid.odeint_jacobian(lambda t, y: -k * y, y0, t, params=[k])
    with pytest.raises(ConfigError, match="tangents"):
        ForwardSensitivityMethod(tangents="up")


def test_too_many_tangents_are_refused_with_a_pointer_to_aca(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import physid.gradients.forward as fwd

    monkeypatch.setattr(fwd, "MAX_SENSITIVITY_BYTES", 1000)
    f, y0, t = _linear_family()
    with pytest.raises(ConfigError, match="aca"):
        physid.odeint(f, y0, t, method="forward").sum().backward()
