from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from physid.data import (
    TrajectoryDataset,
    load_dataset,
    make_metadata,
    save_dataset,
    split_indices,
    subsample_mask,
    windows,
)
from physid.errors import ConfigError, DataError


def _dataset(n: int = 4, T: int = 6, d: int = 3, **kw) -> TrajectoryDataset:
    rng = np.random.default_rng(0)
    return TrajectoryDataset(
        t=np.linspace(0.0, 1.0, T),
        y=rng.normal(size=(n, T, d)),
        metadata=make_metadata(simulator="test/Toy-v0", params={"k": 1.5}, seed=7, rtol=1e-10),
        **kw,
    )


def test_round_trip(tmp_path: Path) -> None:
    ds = _dataset(u=np.ones((4, 6, 2)), mask=np.ones((4, 6), dtype=bool))
    path = save_dataset(tmp_path / "d" / "toy.npz", ds)
    back = load_dataset(path)
    np.testing.assert_array_equal(back.t, ds.t)
    np.testing.assert_array_equal(back.y, ds.y)
    np.testing.assert_array_equal(back.u, ds.u)
    np.testing.assert_array_equal(back.mask, ds.mask)
    assert back.metadata["simulator"] == "test/Toy-v0"
    assert back.metadata["params"] == {"k": 1.5}
    assert back.metadata["seed"] == 7
    assert "physid_version" in back.metadata
    assert back.tensors()["y"].dtype == torch.float64
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["toy.npz"]


def test_load_rejects_wrong_file_type(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset(p)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")


def test_load_names_missing_array(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, t=np.arange(3.0))
    with pytest.raises(DataError, match="lacks the array\\(s\\) y"):
        load_dataset(p)


def test_load_names_shape_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, t=np.arange(5.0), y=np.zeros((2, 4, 3)))
    with pytest.raises(DataError, match="t must have shape"):
        load_dataset(p)
    np.savez(p, t=np.arange(4.0), y=np.zeros((2, 4, 3)), u=np.zeros((2, 3, 1)))
    with pytest.raises(DataError, match="u must have shape"):
        load_dataset(p)
    np.savez(p, t=np.arange(4.0), y=np.zeros((2, 4)))
    with pytest.raises(DataError, match="y must have shape"):
        load_dataset(p)


def test_load_rejects_non_finite_and_unsorted(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    y = np.zeros((2, 4, 3))
    y[1, 2, 0] = np.nan
    np.savez(p, t=np.arange(4.0), y=y)
    with pytest.raises(DataError, match="non-finite.*trajectory 1, time index 2"):
        load_dataset(p)
    # a NaN where the mask says "not observed" is allowed
    mask = np.ones((2, 4), dtype=bool)
    mask[1, 2] = False
    np.savez(p, t=np.arange(4.0), y=y, mask=mask)
    assert load_dataset(p).n_trajectories == 2
    np.savez(p, t=np.array([0.0, 1.0, 1.0, 2.0]), y=np.zeros((2, 4, 3)))
    with pytest.raises(DataError, match="strictly increasing"):
        load_dataset(p)


def test_load_rejects_bad_metadata(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, t=np.arange(4.0), y=np.zeros((2, 4, 3)), metadata=np.array("{oops"))
    with pytest.raises(DataError, match="metadata is not valid JSON"):
        load_dataset(p)


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    p = save_dataset(tmp_path / "x.npz", _dataset())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        load_dataset(p)


def test_split_indices_deterministic_and_disjoint() -> None:
    a = split_indices(100, (0.7, 0.15, 0.15), seed=3)
    b = split_indices(100, (0.7, 0.15, 0.15), seed=3)
    c = split_indices(100, (0.7, 0.15, 0.15), seed=4)
    assert [len(x) for x in a] == [70, 15, 15]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    train, test = split_indices(10, (0.8, 0.2), shuffle=False)
    np.testing.assert_array_equal(train, np.arange(8))
    np.testing.assert_array_equal(test, np.arange(8, 10))
    with pytest.raises(ConfigError, match="sum to 1"):
        split_indices(10, (0.5, 0.4))


@pytest.mark.parametrize("fraction, k", [(0.1, 10), (0.2, 20), (0.5, 50), (0.001, 1), (1.0, 100)])
def test_subsample_mask_counts(fraction: float, k: int) -> None:
    m = subsample_mask(7, 100, fraction, seed=0)
    assert m.dtype == torch.bool and m.shape == (7, 100)
    assert torch.all(m.sum(dim=1) == k)


def test_subsample_mask_reproducible_and_varied() -> None:
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    a, b = subsample_mask(4, 50, 0.2, generator=g1), subsample_mask(4, 50, 0.2, generator=g2)
    assert torch.equal(a, b)
    assert not torch.equal(a, subsample_mask(4, 50, 0.2, generator=g1))  # state advanced
    assert not torch.equal(a[0], a[1])  # drawn per trajectory
    with pytest.raises(ConfigError):
        subsample_mask(4, 50, 0.0)


def test_windows_numpy_and_torch_agree() -> None:
    y = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    w = windows(y, 3)
    assert w.shape == (2 * 3, 3, 3)
    np.testing.assert_array_equal(w[0], y[0, 0:3])
    np.testing.assert_array_equal(w[2], y[0, 2:5])
    np.testing.assert_array_equal(w[3], y[1, 0:3])
    wt = windows(torch.as_tensor(y), 3)
    np.testing.assert_array_equal(wt.numpy(), w)
    ws = windows(y, 2, stride=2)
    assert ws.shape == (4, 2, 3)
    np.testing.assert_array_equal(ws[1], y[0, 2:4])
    np.testing.assert_array_equal(windows(torch.as_tensor(y), 2, stride=2).numpy(), ws)
    with pytest.raises(ConfigError):
        windows(y, 6)
