"""physid.baselines: hand-computed answers for every baseline and the masked MSE."""

from __future__ import annotations

import pytest
import torch

from physid import baselines as B
from physid.errors import ConfigError

T = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)


def _x(*rows: list[float]) -> torch.Tensor:
    """``(batch, 5, 1)`` from per-row values."""
    return torch.tensor(rows, dtype=torch.float64).unsqueeze(-1)


def _m(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_observed_mean() -> None:
    x = _x([1, 100, 3, 100, 5], [2, 2, 2, 2, 8])
    mask = _m([1, 0, 1, 0, 1], [0, 0, 0, 0, 1])
    pred = B.observed_mean(x, T, mask)
    torch.testing.assert_close(pred[0, :, 0], torch.full((5,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(pred[1, :, 0], torch.full((5,), 8.0, dtype=torch.float64))


def test_linear_interpolation_with_constant_extension() -> None:
    # observed at t=1 (value 2) and t=3 (value 6): line 2 + 2 (t - 1) between, constant outside
    x = _x([-9, 2, -9, 6, -9])
    mask = _m([0, 1, 0, 1, 0])
    pred = B.linear_interpolation(x, T, mask)[0, :, 0]
    torch.testing.assert_close(pred, torch.tensor([2.0, 2.0, 4.0, 6.0, 6.0], dtype=torch.float64))


def test_linear_interpolation_irregular_times_and_several_features() -> None:
    t = torch.tensor([0.0, 0.5, 2.0, 2.5], dtype=torch.float64)
    x = torch.tensor([[[0.0, 10.0], [7.0, 7.0], [8.0, 7.0], [2.0, 0.0]]], dtype=torch.float64)
    mask = _m([1, 0, 0, 1])
    pred = B.linear_interpolation(x, t, mask)[0]
    # weights t/2.5: 0, 0.2, 0.8, 1 -> feature 0 from 0 to 2, feature 1 from 10 to 0
    expected = torch.tensor([[0.0, 10.0], [0.4, 8.0], [1.6, 2.0], [2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(pred, expected)


def test_interpolation_is_exact_at_observed_points_and_with_one_point_constant() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 3, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=gen) < 0.5
    mask[:, 2] = True
    pred = B.linear_interpolation(x, T, mask)
    torch.testing.assert_close(pred[mask], x[mask])
    one = _m([0, 0, 1, 0, 0])
    pred1 = B.linear_interpolation(x[:1], T, one)
    torch.testing.assert_close(pred1[0], x[0, 2].expand(5, 3))


def test_last_value() -> None:
    x = _x([1, 4, 9, 16, 25], [3, 1, 4, 1, 5])
    mask = _m([1, 1, 1, 0, 0], [1, 0, 0, 0, 0])
    pred = B.last_value(x, T, mask)[:, :, 0]
    torch.testing.assert_close(pred[0], torch.full((5,), 9.0, dtype=torch.float64))
    torch.testing.assert_close(pred[1], torch.full((5,), 3.0, dtype=torch.float64))


def test_linear_extrapolation_last_two() -> None:
    # last two observed: (t=1, 4) and (t=2, 9): slope 5 -> at t=3: 14, t=4: 19, t=0: -1
    x = _x([1, 4, 9, 16, 25])
    mask = _m([1, 1, 1, 0, 0])
    pred = B.linear_extrapolation(x, T, mask, fit="last_two")[0, :, 0]
    torch.testing.assert_close(
        pred, torch.tensor([-1.0, 4.0, 9.0, 14.0, 19.0], dtype=torch.float64)
    )


def test_linear_extrapolation_least_squares() -> None:
    # points (0, 1), (1, 4), (2, 9): least-squares line 2/3 + 4 t -> at t=3: 12 2/3, t=4: 16 2/3
    x = _x([1, 4, 9, 16, 25])
    mask = _m([1, 1, 1, 0, 0])
    pred = B.linear_extrapolation(x, T, mask, fit="least_squares")[0, :, 0]
    expected = torch.tensor([2 / 3 + 4 * k for k in range(5)], dtype=torch.float64)
    torch.testing.assert_close(pred, expected)


@pytest.mark.parametrize("fit", ["last_two", "least_squares"])
def test_linear_extrapolation_with_one_point_is_the_last_value(fit: str) -> None:
    x = _x([1, 4, 9, 16, 25])
    mask = _m([0, 1, 0, 0, 0])
    pred = B.linear_extrapolation(x, T, mask, fit=fit)
    torch.testing.assert_close(pred, B.last_value(x, T, mask))


@pytest.mark.parametrize("fit", ["last_two", "least_squares"])
def test_linear_extrapolation_is_exact_on_lines(fit: str) -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 1, 2, generator=gen), torch.randn(4, 1, 2, generator=gen)
    x = (a + b * T.view(1, -1, 1)).double()
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4, dtype=torch.bool)
    torch.testing.assert_close(B.linear_extrapolation(x, T, mask, fit=fit), x)


def test_masked_mse() -> None:
    x = _x([0, 0, 0, 0, 0])
    pred = _x([1, 2, 3, 4, 5])
    assert B.masked_mse(pred, x) == pytest.approx((1 + 4 + 9 + 16 + 25) / 5)
    target = _m([0, 0, 0, 1, 1])
    assert B.masked_mse(pred, x, target) == pytest.approx((16 + 25) / 2)
    # a leading sample axis is averaged as well
    samples = torch.stack([pred, 3 * pred])
    assert B.masked_mse(samples, x, target) == pytest.approx((16 + 25 + 9 * (16 + 25)) / 4)


def test_baseline_mse_by_task() -> None:
    x = _x([1, 4, 9, 16, 25])
    mask = _m([1, 1, 1, 0, 0])
    target = _m([0, 0, 0, 1, 1])
    interp = B.baseline_mse(x, T, mask)
    assert set(interp) == set(B.INTERPOLATION_BASELINES)
    # observed mean 14/3 over all 5 points
    m = 14 / 3
    expected_mean = sum((v - m) ** 2 for v in (1, 4, 9, 16, 25)) / 5
    assert interp["observed_mean"] == pytest.approx(expected_mean)
    # linear interpolation holds 9 after t=2: errors 7 and 16 on the last two points
    assert interp["linear_interpolation"] == pytest.approx((49 + 256) / 5)
    # the least-squares line 2/3 + 4t through the observed points, scored on all five
    line = [2 / 3 + 4 * k for k in range(5)]
    expected_line = sum((v - p) ** 2 for v, p in zip((1, 4, 9, 16, 25), line, strict=True)) / 5
    assert interp["least_squares_line"] == pytest.approx(expected_line)
    extrap = B.baseline_mse(x, T, mask, target, task="extrapolation")
    assert set(extrap) == set(B.EXTRAPOLATION_BASELINES)
    assert extrap["last_value"] == pytest.approx((49 + 256) / 2)
    assert extrap["linear_extrapolation_last_two"] == pytest.approx((4 + 36) / 2)
    ls = (16 - (2 / 3 + 12)) ** 2 + (25 - (2 / 3 + 16)) ** 2
    assert extrap["linear_extrapolation_least_squares"] == pytest.approx(ls / 2)


def test_errors() -> None:
    x = _x([1, 2, 3, 4, 5])
    with pytest.raises(ConfigError, match="no observed point"):
        B.observed_mean(x, T, _m([0, 0, 0, 0, 0]))
    with pytest.raises(ConfigError):
        B.linear_interpolation(x, T[:4], _m([1, 0, 0, 0, 0]))
    with pytest.raises(ConfigError):
        B.linear_extrapolation(x, T, _m([1, 0, 0, 0, 0]), fit="quadratic")
    with pytest.raises(ConfigError):
        B.baseline_mse(x, T, _m([1, 0, 0, 0, 0]), task="forecast")
    with pytest.raises(ConfigError):
        B.masked_mse(x, x, _m([0, 0, 0, 0, 0]))
