"""The diffrax peer solves the same problems as physid: same loss and gradient at tight tolerance.

JAX runs in a subprocess (``physid.bench_jax``); the tests skip when JAX, diffrax or equinox is
not installed (the ``bench-jax`` extra).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import physid
from physid.bench_jax import peer_available, run_peer

pytestmark = pytest.mark.skipif(not peer_available(), reason="needs the bench-jax extra")

F64 = torch.float64


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_nbody_peer_matches_physid_three_body() -> None:
    from physid.envs.three_body import K1, K2, ThreeBodyParams, default_initial_state, simulate
    from physid.models.known_form import KnownFormThreeBody

    t_np = np.linspace(0.0, 0.3, 40)
    truth = torch.tensor(simulate(ThreeBodyParams(), default_initial_state(), t_np))
    t = torch.tensor(t_np)
    weights = 0.01**t
    model = KnownFormThreeBody(torch.tensor([1.0, 1.05, 0.95]))
    ys = physid.odeint(model, truth[0], t, method="aca", rtol=1e-11, atol=1e-11)
    loss = (weights * (ys[:, :9] - truth[:, :9]).pow(2).sum(-1)).mean()
    (grad,) = torch.autograd.grad(loss, model.masses)
    arrays = {
        "y0": truth[0].numpy(),
        "t": t_np,
        "truth": truth.numpy(),
        "weights": weights.numpy(),
        "masses": model.masses.detach().numpy(),
        "k1": K1,
        "k2": K2,
        "rtol": 1e-11,
        "atol": 1e-11,
    }
    rep = run_peer("nbody", arrays, adjoints=["RecursiveCheckpointAdjoint"], repeats=1)
    row = rep["adjoints"]["RecursiveCheckpointAdjoint"]
    assert abs(row["loss"] - float(loss)) <= 1e-8 * abs(float(loss))
    assert _rel(np.array(row["grads"][0]), grad.numpy()) < 1e-7
    assert row["compile_seconds"] > 0 and row["seconds"] > 0
    assert row["steps_accepted"] > 0
    assert rep["field_seconds"] > 0


@pytest.mark.slow
def test_mlp_peer_matches_physid_neural_ode_with_both_adjoints() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    net = net.double()
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(8, 2, generator=g, dtype=F64)
    target = torch.randn(5, 8, 2, generator=g, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    ys = physid.odeint(
        lambda t, y: net(y),
        y0,
        t,
        method="aca",
        rtol=1e-11,
        atol=1e-11,
        params=list(net.parameters()),
    )
    loss = (ys - target).pow(2).mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    w = [p.detach().numpy() for p in net.parameters()]
    arrays = dict(zip(("w1", "b1", "w2", "b2", "w3", "b3"), w, strict=True))
    arrays.update(y0=y0.numpy(), t=t.numpy(), target=target.numpy(), rtol=1e-11, atol=1e-11)
    rep = run_peer("mlp", arrays, repeats=1)
    want = np.concatenate([gr.reshape(-1).numpy() for gr in grads])
    for name, row in rep["adjoints"].items():
        got = np.concatenate([np.asarray(x).reshape(-1) for x in row["grads"]])
        assert abs(row["loss"] - float(loss)) <= 1e-8 * abs(float(loss)), name
        assert _rel(got, want) < 1e-6, name
