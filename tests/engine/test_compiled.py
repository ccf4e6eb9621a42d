"""The compiled fast path (``odeint(compile=True)``) against the eager reference.

Both paths run the same step loop; the compiled one computes each attempt (and ``aca``'s step
replay) in Inductor kernels. In float64 they must take the same accepted and rejected steps,
evaluate ``func`` as often, and agree on values and gradients to round-off — for every gradient
method and for FSAL, non-FSAL and fixed-step solvers. Compilation is cached: new values do not
recompile. Whatever cannot compile falls back to the eager path with exactly one warning that
names the cause.

The first run on a machine compiles (a few minutes for this module on 2 cores); Inductor's
on-disk cache makes later runs fast.
"""

from __future__ import annotations

import gc
import math
import warnings
import weakref

import pytest
import torch
from torch import nn

import physid
import physid.compiled
from physid.compiled import CompileFallbackWarning, compile_stats

F64 = torch.float64
# forward sensitivities have no compiled form: they fall back (test_forward_falls_back_eagerly)
METHODS = [m for m in physid.GRADIENT_METHODS if m != "forward"]


class Field(nn.Module):
    """A small nonlinear field whose solves reject steps (the controller is exercised)."""

    def __init__(self, dtype: torch.dtype = F64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(2, 8, generator=g, dtype=dtype))
        self.w2 = nn.Parameter(0.5 * torch.randn(8, 2, generator=g, dtype=dtype))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rot = torch.stack([y[..., 1], -4.0 * y[..., 0]], -1)
        return rot + torch.tanh(y @ self.w1) @ self.w2 * torch.cos(t)


def _problem(dtype: torch.dtype = F64) -> tuple[Field, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(4, 2, generator=g, dtype=dtype)
    t = torch.linspace(0.0, 3.0, 13, dtype=dtype)
    w = torch.randn(13, 4, 2, generator=g, dtype=dtype)
    return Field(dtype), y0, t, w


def _run(method: object, solver: str, compile: bool, **kw: object):  # type: ignore[no-untyped-def]
    f, y0, t, w = _problem()
    y0 = y0.clone().requires_grad_(True)
    st = physid.SolveStats()
    opts = {"rtol": 1e-7, "atol": 1e-7} if "step_size" not in kw else {}
    ys = physid.odeint(
        f, y0, t, method=method, solver=solver, stats=st, compile=compile, **opts, **kw
    )
    grads = torch.autograd.grad((w * ys).sum(), [y0, *f.parameters()])
    return ys.detach(), grads, st


def _assert_same(method: object, solver: str, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        ys_c, g_c, st_c = _run(method, solver, True, **kw)
    ys_e, g_e, st_e = _run(method, solver, False, **kw)
    assert st_c == st_e, f"{method}/{solver}: steps or evaluations differ"
    torch.testing.assert_close(ys_c, ys_e, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_c, g_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_compiled_takes_the_same_steps_and_gives_the_same_gradients(method: str) -> None:
    _assert_same(method, "dopri5")
    _, _, st = _run(method, "dopri5", False)
    assert st.steps_rejected > 0  # the comparison covered rejected steps


@pytest.mark.parametrize(
    ("method", "solver", "kw"),
    [
        ("aca", "bosh3", {}),
        ("aca", "heun_euler", {}),  # not FSAL: the replay evaluates every stage
        ("adjoint", "bosh3", {}),
        ("aca", "rk4", {"step_size": 0.05}),
        ("naive", "rk4", {"step_size": 0.05}),
    ],
)
def test_compiled_matches_eager_on_other_solvers(method: str, solver: str, kw: dict) -> None:
    _assert_same(method, solver, **kw)


def test_a_composed_adjoint_with_pi_controllers_matches_eager() -> None:
    method = physid.AdjointMethod(physid.SemiNorm, backward_controller=physid.PIController)
    _assert_same(method, "dopri5", controller="pi")  # type: ignore[arg-type]


def test_compiled_solve_fails_like_the_eager_one() -> None:
    f, y0, t, _ = _problem()
    errors = []
    for compile in (False, True):
        with pytest.raises(physid.SolverError) as info:
            physid.odeint(f, y0, t, rtol=1e-9, atol=1e-9, max_steps=7, compile=compile)
        errors.append(info.value)
    assert errors[0].status == errors[1].status == physid.SolverStatus.MAX_STEPS_REACHED
    assert str(errors[0]) == str(errors[1])


def test_float32_compiled_agrees_with_eager_to_single_precision() -> None:
    f, y0, t, w = _problem(torch.float32)
    out = {}
    for compile in (False, True):
        ys = physid.odeint(f, y0, t, rtol=1e-5, atol=1e-6, compile=compile)
        out[compile] = (ys.detach(), torch.autograd.grad((w * ys).sum(), list(f.parameters())))
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(out[True][1], out[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_new_values_do_not_recompile() -> None:
    f, y0, t, w = _problem()
    physid.odeint(f, y0, t, rtol=1e-7, atol=1e-7, compile=True).sum().backward()
    before = compile_stats()
    with torch.no_grad():
        for p in f.parameters():
            p.mul_(1.1)  # an optimiser step
    for y_start, times, tol in [
        (y0 + 0.3, t, 1e-7),
        (y0, torch.linspace(0.5, 2.0, 7, dtype=F64), 1e-7),  # other times, another count
        (y0, t, 1e-5),  # other tolerances
    ]:
        ys = physid.odeint(f, y_start, times, rtol=tol, atol=tol, compile=True)
        torch.autograd.grad(ys.sum(), list(f.parameters()))
    after = compile_stats()
    assert (after.captures, after.kernels) == (before.captures, before.kernels)


def test_a_new_instance_reuses_the_kernels_and_is_not_kept_alive() -> None:
    f, y0, t, _ = _problem()
    physid.odeint(f, y0, t, compile=True)
    before = compile_stats()
    other = Field()
    with torch.no_grad():
        other.w2.mul_(-1.0)
    ys = physid.odeint(other, y0, t, compile=True)
    torch.testing.assert_close(ys, physid.odeint(other, y0, t), rtol=1e-12, atol=1e-12)
    after = compile_stats()
    assert (after.captures, after.kernels) == (before.captures, before.kernels)
    ref = weakref.ref(other)
    del other, ys
    gc.collect()
    assert ref() is None


def test_a_new_shape_recompiles() -> None:
    f, y0, t, _ = _problem()
    physid.odeint(f, y0, t, compile=True)
    before = compile_stats()
    physid.odeint(f, torch.cat([y0, y0]), t, compile=True)
    after = compile_stats()
    assert after.captures == before.captures + 1
    assert after.kernels > before.kernels


@pytest.fixture
def fresh() -> object:
    """Forget compiled graphs, failures and warnings around a fallback test."""
    torch._dynamo.reset()
    physid.compiled.reset()
    yield
    torch._dynamo.reset()
    physid.compiled.reset()


def _fallback_warnings(func, y0, t, calls: int = 2, **kw):  # type: ignore[no-untyped-def]
    """Solve ``calls`` times with compile=True; return the fallback warnings and the last
    result, checked against the eager solve."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(calls):
            ys = physid.odeint(func, y0, t, rtol=1e-8, atol=1e-8, compile=True, **kw)
    eager = physid.odeint(func, y0, t, rtol=1e-8, atol=1e-8, **kw)
    torch.testing.assert_close(ys, eager, rtol=0, atol=0)
    return [w for w in caught if issubclass(w.category, CompileFallbackWarning)]


Y0 = torch.tensor([1.0, 0.5], dtype=F64)
T = torch.tensor([0.0, 0.5, 1.0], dtype=F64)


@pytest.mark.usefixtures("fresh")
def test_a_graph_break_falls_back_with_one_warning() -> None:
    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()
        return -y

    caught = _fallback_warnings(func, Y0, T)
    assert len(caught) == 1
    assert "TorchDynamo could not capture func" in str(caught[0].message)


@pytest.mark.usefixtures("fresh")
def test_a_data_dependent_branch_falls_back_with_one_warning() -> None:
    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.sum() > 0:
            return -y
        return y

    caught = _fallback_warnings(func, Y0, T)
    assert len(caught) == 1
    assert "TorchDynamo could not capture func" in str(caught[0].message)


@pytest.mark.usefixtures("fresh")
def test_no_working_cpp_compiler_falls_back_with_one_warning() -> None:
    import torch._inductor.config as inductor_config

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -0.5 * y + torch.sin(y)

    patch = {"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}
    with inductor_config.patch(patch):
        caught = _fallback_warnings(func, Y0, T)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "Inductor could not compile" in message and "C++ compiler" in message


@pytest.mark.usefixtures("fresh")
def test_a_compiler_failure_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.compile_fx

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated compiler crash")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx_inner", broken)

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -0.25 * y * y

    caught = _fallback_warnings(func, Y0, T)
    assert len(caught) == 1
    assert "simulated compiler crash" in str(caught[0].message)


@pytest.mark.usefixtures("fresh")
def test_an_op_without_a_compiled_form_falls_back_with_one_warning() -> None:
    @torch.library.custom_op("physid_test::opaque_decay", mutates_args=())
    def opaque_decay(y: torch.Tensor) -> torch.Tensor:  # no fake kernel: cannot be traced
        return -y.clone()

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return opaque_decay(y)

    caught = _fallback_warnings(func, Y0, T)
    assert len(caught) == 1
    assert "could not" in str(caught[0].message)


@pytest.mark.usefixtures("fresh")
def test_gradients_to_t_fall_back_with_one_warning() -> None:
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    t = T.clone().requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = physid.odeint(lambda t, y: -k * y, Y0, t, compile=True)
        (g_t,) = torch.autograd.grad(ys.sum(), t)
    ours = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(ours) == 1 and "with respect to t" in str(ours[0].message)
    assert torch.isfinite(g_t).all()


@pytest.mark.usefixtures("fresh")
def test_independent_batches_fall_back_with_one_warning() -> None:
    _, y0, t, _ = _problem()

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y * (1.0 + y.abs())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = physid.odeint(f, y0, t, batch="independent", compile=True)
    ours = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(ours) == 1 and "batch='independent'" in str(ours[0].message)
    torch.testing.assert_close(ys, physid.odeint(f, y0, t, batch="independent"), rtol=0, atol=0)


@pytest.mark.usefixtures("fresh")
def test_a_dispatch_mode_falls_back_without_being_remembered() -> None:
    """Under a TorchDispatchMode (physid.bench's memory counter) TorchDynamo cannot trace:
    that solve runs eagerly with one warning, and the same function compiles afterwards (the
    failure is the context's, not the function's)."""
    from physid.bench import TensorMemory

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -0.3 * y + 0.1 * torch.sin(y)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TensorMemory():
            ys_mode = physid.odeint(func, Y0, T, compile=True)
    ours = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(ours) == 1 and "TorchDispatchMode" in str(ours[0].message)
    before = compile_stats().captures
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        ys = physid.odeint(func, Y0, T, compile=True)
    assert compile_stats().captures == before + 1
    torch.testing.assert_close(ys, ys_mode, rtol=1e-12, atol=1e-12)


def _decay_grad_k(k: float, y0: torch.Tensor, t: torch.Tensor) -> float:
    return float((y0.sum() * (-t) * torch.exp(-k * t)).sum())


def test_a_captured_non_leaf_passes_its_gradient_on_in_compiled_aca() -> None:
    log_k = torch.tensor(math.log(0.7), dtype=F64, requires_grad=True)
    k = torch.exp(log_k)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        ys = physid.odeint(lambda t, y: -k * y, Y0, T, rtol=1e-11, atol=1e-12, compile=True)
        (g,) = torch.autograd.grad(ys.sum(), log_k)
    assert float(g) == pytest.approx(0.7 * _decay_grad_k(0.7, Y0, T), rel=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["aca", "adjoint", "naive"])
def test_cuda_compiled_matches_eager(method: str) -> None:
    """On CUDA the kernels replay as CUDA graphs (not run here: no GPU was available)."""
    f, y0, t, w = _problem()
    f, y0, t, w = f.cuda(), y0.cuda(), t.cuda(), w.cuda()
    out = {}
    for compile in (False, True):
        st = physid.SolveStats()
        ys = physid.odeint(f, y0, t, method=method, rtol=1e-7, atol=1e-7, stats=st, compile=compile)
        out[compile] = (ys.detach(), torch.autograd.grad((w * ys).sum(), list(f.parameters())), st)
    assert out[True][2] == out[False][2]
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(out[True][1], out[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_forward_falls_back_eagerly_with_the_same_numbers() -> None:
    """``method="forward"`` has no compiled form: one warning naming it, then the eager solve."""
    physid.compiled._WARNED.clear()
    with pytest.warns(CompileFallbackWarning, match="'forward' has no compiled form"):
        ys_c, g_c, st_c = _run("forward", "dopri5", True)
    ys_e, g_e, st_e = _run("forward", "dopri5", False)
    assert st_c == st_e
    torch.testing.assert_close(ys_c, ys_e, rtol=0, atol=0)
    for a, b in zip(g_c, g_e, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
