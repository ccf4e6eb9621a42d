"""Single and multiple shooting residuals: the Jacobian against finite differences, and multiple
shooting finding a frequency that single shooting from a far start cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from physid.errors import ConfigError
from physid.lstsq import LMOptions, levenberg_marquardt
from physid.shooting import ShootingResiduals, segment_bounds

F64 = torch.float64


class Oscillator(nn.Module):
    """y' = ω (y1, -y0): y = (sin ωt, cos ωt) from (0, 1)."""

    def __init__(self, omega: float):
        super().__init__()
        self.omega = nn.Parameter(torch.tensor(omega, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.omega * y[1], -self.omega * y[0]])


def _data(t_end: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(0.0, t_end, n, dtype=F64)
    return t, torch.stack([torch.sin(2 * t), torch.cos(2 * t)], -1)


def test_segment_bounds() -> None:
    assert segment_bounds(11, 1) == [0, 10]
    assert segment_bounds(11, 5) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(ConfigError):
        segment_bounds(3, 3)


@pytest.mark.parametrize("known_y0", [True, False])
def test_the_jacobian_matches_finite_differences(known_y0: bool) -> None:
    t, data = _data(2.0, 21)
    observe = torch.tensor([[1.0, 0.0]], dtype=F64)  # only the first component is seen
    weights = torch.linspace(1.0, 0.5, 21, dtype=F64)
    f = Oscillator(1.7)
    res = ShootingResiduals(
        f,
        t,
        data[:, :1],
        observe=observe,
        weights=weights,
        y0=data[0] if known_y0 else None,
        segments=2,
        continuity_weight=4.0,
        rtol=1e-12,
        atol=1e-12,
    )
    starts = data[res.bounds[(1 if known_y0 else 0) : -1]] + 0.05
    x = res.pack(torch.tensor([1.7], dtype=F64), starts)
    assert x.numel() == res.n_unknowns == 1 + res.n_states * 2
    r, J = res(x)
    assert r.shape == (res.n_residuals,) == (21 + 1 * 2,) and J.shape == (r.numel(), x.numel())
    fd = torch.empty_like(J)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = 1e-6
        fd[:, i] = (res(x + e)[0] - res(x - e)[0]) / 2e-6
    torch.testing.assert_close(J, fd, rtol=1e-6, atol=1e-7)
    # the continuity residuals are the last rows: sqrt(c) (end of segment j - start of j + 1)
    theta, states = res.unpack(x)
    assert float(theta) == pytest.approx(1.7)
    assert states.shape == (res.n_states, 2)


def test_a_looser_jacobian_leaves_the_residuals_as_they_were() -> None:
    """jacobian_tol: the residuals from a plain solve at rtol (the same steps as the sensitivity
    solve's at rtol, so the same numbers), the Jacobian from a looser sensitivity solve."""
    t, data = _data(3.0, 31)
    f = Oscillator(1.9)
    common = {"y0": data[0], "segments": 2, "rtol": 1e-9, "atol": 1e-9}
    exact = ShootingResiduals(f, t, data, **common)
    loose = ShootingResiduals(f, t, data, jacobian_tol=1e-4, **common)
    x = exact.pack(torch.tensor([1.9], dtype=F64), data[exact.bounds[1:-1]])
    r1, J1 = exact(x)
    r2, J2 = loose(x)
    torch.testing.assert_close(r2, r1, rtol=0, atol=1e-13)
    assert 0 < float((J2 - J1).norm() / J1.norm()) < 1e-3
    with pytest.raises(ConfigError, match="jacobian_tol"):
        ShootingResiduals(f, t, data, jacobian_tol=0.0)


def test_multiple_shooting_finds_the_frequency_single_shooting_misses() -> None:
    """Ten periods of sin(2t) from ω = 1.2: the single-shooting cost over ω is a washboard and
    Levenberg-Marquardt stalls in a local minimum; with 20 segments started from the data each
    segment is short and the problem nearly linear."""
    t, data = _data(20.0, 201)
    results = {}
    for segments in (1, 20):
        f = Oscillator(1.2)
        res = ShootingResiduals(f, t, data, y0=data[0], segments=segments, rtol=1e-7, atol=1e-7)
        starts = data[res.bounds[1:-1]] if segments > 1 else None
        x0 = res.pack(torch.tensor([1.2], dtype=F64), starts)
        fit = levenberg_marquardt(
            res, x0, lower=res.lower_bounds(0.0), options=LMOptions(max_iterations=15)
        )
        results[segments] = (float(fit.x[0]), fit)
    omega_single, single = results[1]
    omega_multi, multi = results[20]
    assert abs(omega_single - 2.0) > 0.3 and single.cost > 1.0
    assert multi.success and abs(omega_multi - 2.0) < 1e-6


def test_bad_arguments_are_config_errors() -> None:
    t, data = _data(1.0, 11)
    f = Oscillator(2.0)
    with pytest.raises(ConfigError, match="data"):
        ShootingResiduals(f, t, data[:5])
    with pytest.raises(ConfigError, match="observe"):
        ShootingResiduals(f, t, data, observe=torch.eye(3, dtype=F64))
    with pytest.raises(ConfigError, match="bounds"):
        ShootingResiduals(f, t, data, segments=[0, 5, 5, 10])
    with pytest.raises(ConfigError, match="params"):
        ShootingResiduals(lambda t, y: y, t, data)
    res = ShootingResiduals(f, t, data, y0=data[0], segments=2)
    with pytest.raises(ConfigError, match="states"):
        res.pack(torch.tensor([2.0], dtype=F64))
