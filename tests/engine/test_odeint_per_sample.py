"""``batch="independent"``: every sample its own step sizes, as if solved alone.

Each sample of an independent solve is compared with the same sample solved alone by the shared
loop (float64): the same accepted and rejected steps, the same function evaluations, the same
values and, for every gradient method, the same gradients (a parameter shared by the samples
receives the sum of the single solves' gradients).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import physid
from physid.controllers import IController
from physid.errors import ConfigError, SolverError, SolverStatus
from physid.gradients import AbstractGradientMethod
from physid.gradients._loop import Tolerances
from physid.gradients._per_sample import SampleTrace, forward_solve_per_sample
from physid.gradients.base import Problem
from physid.solvers import get_tableau

F64 = torch.float64
# forward sensitivities have no per-sample solve (test_forward_refuses_independent_batches)
METHODS = [m for m in physid.GRADIENT_METHODS if m != "forward"]


class Damped(nn.Module):
    """``y' = -k_b y + w sin(flip(y)) + 0.1 cos(3t)``: a per-sample rate ``k`` (one row each),
    a shared coupling ``w`` and a time-dependent forcing; ``rows`` picks the samples solved."""

    def __init__(self, k: list[float], w: float = 0.7):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))
        self.w = nn.Parameter(torch.tensor(w, dtype=F64))
        self.rows: slice | list[int] = slice(None)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        k = self.k[self.rows].reshape(-1, 1)
        forcing = 0.1 * torch.cos(3 * t).reshape(-1, 1)  # t: (B,) independent, 0-d shared
        return -k * y + self.w * torch.sin(y.flip(-1)) + forcing


K_MIXED = [1.0, 6.0, 25.0]
Y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [1.0, 1.0]], dtype=F64)
T = torch.tensor([0.0, 0.05, 0.3, 0.31, 0.8, 1.0], dtype=F64)


def _solve(f: Damped, y0: Tensor, t: Tensor, w: Tensor, method: str, batch: str, **kw):  # type: ignore[no-untyped-def]
    y0v = y0.clone().requires_grad_(True)
    tv = t.clone().requires_grad_(True)
    stats = physid.SolveStats()
    ys = physid.odeint(f, y0v, tv, method=method, batch=batch, stats=stats, **kw)
    grads = torch.autograd.grad((w * ys).sum(), (y0v, f.k, f.w, tv))
    return ys.detach(), grads, stats


@pytest.mark.parametrize("method", METHODS)
def test_every_sample_equals_its_own_solve(method: str) -> None:
    f = Damped(K_MIXED)
    w = torch.randn(len(T), 3, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    tol = {"rtol": 1e-7, "atol": 1e-7}
    ys, (gy, gk, gw, gt), st = _solve(f, Y0, T, w, method, "independent", **tol)
    per = st.per_sample
    assert per is not None and per.batch == 3
    sum_gk, sum_gw, sum_gt = torch.zeros_like(gk), torch.zeros_like(gw), torch.zeros_like(gt)
    for b in range(3):
        f.rows = [b]
        yb, (gyb, gkb, gwb, gtb), sb = _solve(
            f, Y0[b : b + 1], T, w[:, b : b + 1], method, "shared", **tol
        )
        # the same steps, evaluations and values
        assert per.steps_accepted[b] == sb.steps_accepted
        assert per.steps_rejected[b] == sb.steps_rejected
        assert per.nfe_forward[b] == sb.nfe_forward
        assert per.nfe_backward[b] == sb.nfe_backward
        assert per.backward_steps_accepted[b] == sb.backward_steps_accepted
        assert per.backward_steps_rejected[b] == sb.backward_steps_rejected
        torch.testing.assert_close(ys[:, b], yb[:, 0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(gy[b], gyb[0], rtol=1e-10, atol=1e-12)
        sum_gk += gkb
        sum_gw += gwb
        sum_gt += gtb
    f.rows = slice(None)
    torch.testing.assert_close(gk, sum_gk, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, sum_gw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gt, sum_gt, rtol=1e-10, atol=1e-12)
    # the totals are the sums over the samples; the batched evaluations are fewer
    assert st.steps_accepted == sum(per.steps_accepted)
    assert st.steps_rejected == sum(per.steps_rejected)
    assert st.nfe_forward == max(per.nfe_forward)


@pytest.mark.parametrize(
    "kw",
    [
        {"solver": "bosh3", "rtol": 1e-6, "atol": 1e-6},
        {"solver": "heun_euler", "rtol": 1e-5, "atol": 1e-5},
        {"solver": "rk4", "step_size": 0.01},
        {"controller": "pi", "rtol": 1e-7, "atol": 1e-7},
        {"first_step": 1e-3, "rtol": 1e-7, "atol": 1e-7},
    ],
    ids=["bosh3", "heun_euler-no-fsal", "rk4-fixed", "pi", "first_step"],
)
@pytest.mark.parametrize("method", ["naive", "aca"])
def test_solvers_and_controllers_match_single_solves(method: str, kw: dict) -> None:
    f = Damped(K_MIXED)
    w = torch.randn(len(T), 3, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    ys, (gy, gk, _, _), st = _solve(f, Y0, T, w, method, "independent", **kw)
    assert st.per_sample is not None
    sum_gk = torch.zeros_like(gk)
    for b in range(3):
        f.rows = [b]
        yb, (gyb, gkb, _, _), sb = _solve(
            f, Y0[b : b + 1], T, w[:, b : b + 1], method, "shared", **kw
        )
        assert st.per_sample.steps_accepted[b] == sb.steps_accepted
        assert st.per_sample.nfe_forward[b] == sb.nfe_forward
        assert st.per_sample.nfe_backward[b] == sb.nfe_backward
        torch.testing.assert_close(ys[:, b], yb[:, 0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(gy[b], gyb[0], rtol=1e-10, atol=1e-12)
        sum_gk += gkb
    torch.testing.assert_close(gk, sum_gk, rtol=1e-10, atol=1e-12)


def test_nfe_relations_of_a_dopri5_solve() -> None:
    f = Damped(K_MIXED)
    st = physid.SolveStats()
    with torch.no_grad():
        physid.odeint(f, Y0, T, rtol=1e-7, atol=1e-7, batch="independent", stats=st)
    per = st.per_sample
    assert per is not None
    attempts = [a + r for a, r in zip(per.steps_accepted, per.steps_rejected, strict=True)]
    # each sample: f0, Hairer's trial, 6 evaluations per attempted step (FSAL)
    assert per.nfe_forward == [2 + 6 * a for a in attempts]
    # one batched call per stage while any sample runs
    assert st.nfe_forward == 2 + 6 * max(attempts)


def test_aca_backward_evaluations_per_sample() -> None:
    f = Damped(K_MIXED)
    st = physid.SolveStats()
    ys = physid.odeint(f, Y0, T, rtol=1e-7, atol=1e-7, batch="independent", stats=st)
    ys.sum().backward()
    per = st.per_sample
    assert per is not None
    assert per.backward_steps_accepted == per.steps_accepted
    # 6 evaluations per replayed dopri5 step (its 7th, FSAL stage is borrowed from the sample's
    # next step), plus that stage of a sample's final step when output times lie inside it
    for b in range(3):
        assert per.nfe_backward[b] - 6 * per.steps_accepted[b] in (0, 1)
    # replayed in rounds (round r: every sample's r-th step from its last): the batch pays the
    # replays of the sample with the most steps, plus the 7th stage in round 0
    assert st.nfe_backward - 6 * max(per.steps_accepted) in (0, 1)


def test_mixed_stiffness_takes_different_steps_and_saves_steps() -> None:
    ks = np.logspace(0, 3, 6)
    y0 = torch.ones(len(ks), 1, dtype=F64)
    kt = torch.tensor(ks, dtype=F64).unsqueeze(1)
    t = torch.linspace(0, 1, 11, dtype=F64)
    si, ss = physid.SolveStats(), physid.SolveStats()
    with torch.no_grad():
        yi = physid.odeint(lambda t, y: -kt * y, y0, t, batch="independent", stats=si)
        ysh = physid.odeint(lambda t, y: -kt * y, y0, t, batch="shared", stats=ss)
    per = si.per_sample
    assert per is not None
    acc = per.steps_accepted
    assert all(a < b for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[-1] > 10 * acc[0]
    # shared: every sample takes about the stiffest one's steps (its error, diluted in the RMS
    # over every sample, lets the shared step be a little longer than its own)
    assert ss.steps_accepted > max(acc[-2], 0.9 * acc[-1])
    assert sum(acc) < 0.5 * len(ks) * ss.steps_accepted
    # and both are accurate: y = exp(-k t)
    exact = torch.exp(-kt.T * t[:, None]).unsqueeze(-1)
    assert float((yi - exact).abs().max()) < 1e-5
    assert float((ysh - exact).abs().max()) < 1e-5


def test_finished_samples_do_not_move() -> None:
    seen: list[tuple[Tensor, Tensor]] = []
    k = torch.tensor([[1.0], [300.0]], dtype=F64)

    def f(t: Tensor, y: Tensor) -> Tensor:
        seen.append((t.clone(), y.clone()))
        return -k * y

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    st = physid.SolveStats()
    with torch.no_grad():
        ys = physid.odeint(f, torch.ones(2, 1, dtype=F64), t, batch="independent", stats=st)
    per = st.per_sample
    assert per is not None and per.steps_accepted[0] < per.steps_accepted[1]
    # sample 0 finishes first: from then on func sees it at t = 1 and its final state
    done = [i for i, (tt, _) in enumerate(seen) if float(tt[0]) == 1.0]
    assert len(done) > 20
    first = done[0]
    assert all(float(seen[i][0][0]) == 1.0 for i in range(first, len(seen)))
    assert all(torch.equal(seen[i][1][0], ys[-1, 0]) for i in range(first + 6, len(seen)))
    assert abs(float(ys[-1, 0, 0]) - math.exp(-1.0)) < 1e-6


def test_same_steps_as_the_loop_with_a_custom_controller() -> None:
    """The vectorised I-controller decisions equal the controller's own, sample by sample."""

    class MyI(IController):  # a subclass: decided sample by sample, by its own decide()
        pass

    f = Damped(K_MIXED)
    trace_vec, trace_loop = SampleTrace(), SampleTrace()
    for make, trace in ((IController, trace_vec), (MyI, trace_loop)):
        problem = Problem(
            func=f,
            y0=Y0,
            t=T,
            tableau=get_tableau("dopri5"),
            make_controller=make,
            tol=Tolerances(1e-7, 1e-7, 10_000, None, None),
            params=(),
            stats=physid.SolveStats(),
        )
        with torch.no_grad():
            forward_solve_per_sample(problem, graph=False, trace=trace)
    assert len(trace_vec.ts) == len(trace_loop.ts)
    for a, b in zip(trace_vec.accepted, trace_loop.accepted, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(np.stack(trace_vec.hs), np.stack(trace_loop.hs))


def test_sample_shape_and_one_sample() -> None:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 3, dtype=F64, generator=g) - 2 * torch.eye(3, dtype=F64)
    y0 = torch.randn(4, 2, 3, dtype=F64, generator=g)  # batch 4, sample shape (2, 3)
    scale = torch.tensor([1.0, 3.0, 10.0, 0.3], dtype=F64).view(4, 1, 1)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return scale * torch.einsum("bij,nbj->nbi", A, y)

    t = torch.linspace(0, 1, 7, dtype=F64)
    with torch.no_grad():
        ys = physid.odeint(f, y0, t, batch="independent", rtol=1e-9, atol=1e-9)
    assert ys.shape == (7, 4, 2, 3)
    exact = torch.stack(
        [
            torch.einsum("bij,nbj->nbi", torch.linalg.matrix_exp(A * s * tk), y0[i : i + 1])[0]
            for tk in t
            for i, s in enumerate(scale.flatten())
        ]
    ).view(7, 4, 2, 3)
    torch.testing.assert_close(ys, exact, rtol=1e-7, atol=1e-8)
    # a batch of one is the shared solve
    s1, s2 = physid.SolveStats(), physid.SolveStats()
    with torch.no_grad():
        a = physid.odeint(lambda t, y: -y, y0[:1], t, batch="independent", stats=s1)
        b = physid.odeint(lambda t, y: -y, y0[:1], t, batch="shared", stats=s2)
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    assert s1.as_dict() == s2.as_dict()


def test_float32_and_tensor_tolerances() -> None:
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float32)
    k = torch.tensor([[1.0], [20.0]], dtype=torch.float32)
    t = torch.linspace(0, 1, 5)
    atol = torch.tensor([1e-6, 1e-5])  # one per channel of a sample
    with torch.no_grad():
        ys = physid.odeint(lambda t, y: -k * y, y0, t, batch="independent", rtol=1e-5, atol=atol)
    assert ys.dtype == torch.float32
    exact = y0 * torch.exp(-k * t.view(-1, 1, 1))
    torch.testing.assert_close(ys, exact, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="atol"):
        physid.odeint(lambda t, y: -y, y0, t, batch="independent", atol=torch.ones(3) * 1e-6)


def test_a_failing_sample_is_named() -> None:
    bad = torch.tensor([False, False, True, False])

    def f(t: Tensor, y: Tensor) -> Tensor:
        blow = bad.unsqueeze(1) & (t.unsqueeze(1) > 0.5)
        return torch.where(blow, torch.full_like(y, math.nan), -y)

    with pytest.raises(SolverError) as info:
        physid.odeint(f, torch.ones(4, 2, dtype=F64), T, batch="independent")
    assert info.value.status is SolverStatus.NON_FINITE
    assert info.value.sample == 2
    assert "sample 2" in str(info.value)
    assert 0.45 < info.value.t <= 0.5

    k = torch.tensor([[1.0], [1e5]], dtype=F64)
    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: -k * (y - torch.cos(t).unsqueeze(1)),
            torch.zeros(2, 1, dtype=F64),
            torch.tensor([0.0, 10.0], dtype=F64),
            max_steps=100,
            batch="independent",
        )
    assert info.value.status is SolverStatus.MAX_STEPS_REACHED
    assert info.value.sample == 1

    with pytest.raises(SolverError) as info:
        physid.odeint(
            lambda t, y: y / torch.tensor([[1.0], [0.0]], dtype=F64),
            torch.ones(2, 1, dtype=F64),
            T,
            batch="independent",
            method="naive",
        )
    assert info.value.status is SolverStatus.NON_FINITE and info.value.sample == 1


def test_config_errors() -> None:
    y0 = torch.ones(3, 2, dtype=F64)
    with pytest.raises(ConfigError, match="batch"):
        physid.odeint(lambda t, y: -y, y0, T, batch="per-sample")
    with pytest.raises(ConfigError, match="leading dimension"):
        physid.odeint(lambda t, y: -y, torch.tensor(1.0, dtype=F64), T, batch="independent")

    class Other(AbstractGradientMethod):
        name = "other"

        def solve(self, problem: Problem) -> Tensor:
            raise NotImplementedError

    with pytest.raises(ConfigError, match="naive, adjoint, seminorm and aca"):
        physid.odeint(lambda t, y: -y, y0, T, method=Other(), batch="independent")
    stats = physid.SolveStats()
    physid.odeint(lambda t, y: -y, y0, T, batch="independent", stats=stats)
    with pytest.raises(ConfigError, match="reset"):
        physid.odeint(lambda t, y: -y, y0[:2], T, batch="independent", stats=stats)
    stats.reset()
    assert stats.per_sample is None and stats.nfe_forward == 0


def test_single_output_time() -> None:
    y0 = torch.ones(3, 2, dtype=F64, requires_grad=True)
    for method in METHODS:
        ys = physid.odeint(lambda t, y: -y, y0, T[:1], method=method, batch="independent")
        assert ys.shape == (1, 3, 2)
        (g,) = torch.autograd.grad(ys.sum(), y0)
        assert torch.equal(g, torch.ones_like(y0))


@pytest.mark.parametrize("method", ["naive", "aca"])
def test_a_rejected_non_finite_trial_leaves_gradients_finite(method: str) -> None:
    # the log is NaN below y = -0.5: the stiff sample's first trial (first_step 0.5)
    # overshoots there and is rejected; its NaN must not reach any gradient
    k = torch.tensor([[0.5], [50.0]], dtype=F64, requires_grad=True)
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    st = physid.SolveStats()
    ys = physid.odeint(
        lambda t, y: -k * y + 1e-3 * torch.log(y + 0.5),
        y0,
        t,
        method=method,
        batch="independent",
        first_step=0.5,
        stats=st,
    )
    (g,) = torch.autograd.grad(ys.sum(), k)
    assert st.per_sample is not None and st.per_sample.steps_rejected[1] > 0
    for b in range(2):
        kb = k[b : b + 1]
        yb = physid.odeint(
            lambda t, y, kb=kb: -kb * y + 1e-3 * torch.log(y + 0.5),
            y0[b : b + 1],
            t,
            method=method,
            first_step=0.5,
            params=[k],
        )
        (gb,) = torch.autograd.grad(yb.sum(), k)
        torch.testing.assert_close(g[b], gb[b], rtol=1e-10, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_equals_cpu(method: str) -> None:
    w = torch.randn(len(T), 3, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    results = []
    for device in ("cpu", "cuda"):
        f = Damped(K_MIXED).to(device)
        ys, grads, st = _solve(f, Y0.to(device), T.to(device), w.to(device), method, "independent")
        results.append((ys.cpu(), [g.cpu() for g in grads], st))
    (ya, ga, sa), (yb, gb, sb) = results
    assert sa.per_sample == sb.per_sample
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-10)


def test_forward_refuses_independent_batches() -> None:
    """Forward sensitivities have no per-sample solve: a ConfigError naming the methods that do."""
    with pytest.raises(ConfigError, match="'forward' cannot solve with batch='independent'"):
        physid.odeint(Damped(K_MIXED), Y0, T, method="forward", batch="independent")
