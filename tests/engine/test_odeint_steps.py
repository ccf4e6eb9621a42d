"""The accepted steps, pinned: a refactor of the step loop must take exactly the same steps.

The expected values were recorded (CPU, float64) before the loop's two arithmetics became two
implementations of one interface; the graph-free and the in-graph arithmetic are pinned
separately, because their step-size arithmetic rounds differently (a float ``h`` with ``addmv``
against a tensor ``h`` in the graph). A compiled or otherwise rewritten loop must reproduce them
bit for bit: the digest covers every accepted ``(t, h)``, as ``float.hex``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from physid.controllers import IController, PIController
from physid.gradients._loop import Tolerances, Trace
from physid.gradients.base import Problem, forward_solve
from physid.solvers import get_tableau
from physid.stats import SolveStats

F64 = torch.float64


def _f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # a forced, damped pendulum: rejections early on, many steps, output times inside steps
    return torch.stack([y[1], -torch.sin(y[0]) - 20.0 * (y[1] - torch.cos(3 * t))])


def _record(controller: type, graph: bool) -> tuple[int, int, int, str, list[str], list[str]]:
    stats, trace = SolveStats(), Trace()
    problem = Problem(
        func=_f,
        y0=torch.tensor([1.0, 0.0], dtype=F64),
        t=torch.tensor([0.0, 0.7, 0.75, 3.0], dtype=F64),
        tableau=get_tableau("dopri5"),
        make_controller=controller,
        tol=Tolerances(1e-3, 1e-6, 10_000, None, None),
        params=(),
        stats=stats,
    )
    ys = forward_solve(problem, graph=graph, trace=trace)
    steps = " ".join(f"{t.hex()},{h.hex()}" for t, h in zip(trace.ts, trace.hs, strict=True))
    digest = hashlib.sha256(steps.encode()).hexdigest()[:16]
    return (
        stats.nfe_forward,
        stats.steps_accepted,
        stats.steps_rejected,
        digest,
        [h.hex() for h in trace.hs[:3]],
        [v.hex() for v in ys[-1].tolist()],
    )


# (nfe, accepted, rejected, digest of all (t, h), first three h, y(3.0))
EXPECTED = {
    (IController, False): (
        242,
        37,
        3,
        "c333f659c6c6a7b4",
        ["0x1.b56a3cc42af29p-15", "0x1.116265fa9ad7ap-11", "0x1.55baff79418d8p-8"],
        ["0x1.0ebc2794ebbbfp+0", "-0x1.bfd53a907a30dp-1"],
    ),
    (IController, True): (
        242,
        37,
        3,
        "0d5cc3660aa8643c",
        ["0x1.b56a3cc42af29p-15", "0x1.116265fa9ad7ap-11", "0x1.55baff79418d8p-8"],
        ["0x1.0ebc2794ebbc1p+0", "-0x1.bfd53a907a323p-1"],
    ),
    (PIController, False): (
        302,
        50,
        0,
        "6aa187b1f8533e89",
        ["0x1.b56a3cc42af29p-15", "0x1.116265fa9ad7ap-11", "0x1.a47f24e04b504p-9"],
        ["0x1.0ebd20556276ep+0", "-0x1.bffbfc93f4f5dp-1"],
    ),
    (PIController, True): (
        302,
        50,
        0,
        "9e264f4bd8a8efa5",
        ["0x1.b56a3cc42af29p-15", "0x1.116265fa9ad7ap-11", "0x1.a47f24e04b521p-9"],
        ["0x1.0ebd20556276bp+0", "-0x1.bffbfc93f4fa3p-1"],
    ),
}


@pytest.mark.parametrize(("controller", "graph"), list(EXPECTED))
def test_accepted_steps_are_pinned(controller: type, graph: bool) -> None:
    assert _record(controller, graph) == EXPECTED[(controller, graph)]


def test_the_two_arithmetics_take_the_same_step_sequence_to_rounding() -> None:
    for controller in (IController, PIController):
        free, in_graph = _record(controller, False), _record(controller, True)
        assert free[:3] == in_graph[:3]
        assert free[4][:2] == in_graph[4][:2]  # identical until tensor rounding enters
