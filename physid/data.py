"""Trajectory data sets on disk: one ``.npz`` file per data set, splits, irregular subsampling.

A data set holds

- ``t``: output times, ``(time,)`` shared by every trajectory or ``(trajectories, time)``,
  strictly increasing along time;
- ``y``: states, ``(trajectories, time, state)``;
- ``u`` (optional): controls, ``(trajectories, time, control)``;
- ``mask`` (optional): observed points, boolean ``(trajectories, time)`` or
  ``(trajectories, time, state)``;
- ``metadata``: a JSON record stored as a string inside the file: simulator id and
  parameters, seed, tolerances, the physid version, and whatever else the writer adds.

Writes are atomic (temporary file, then rename); reads validate and raise :class:`DataError`
naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from physid._io import atomic_write, package_version, to_jsonable
from physid.errors import ConfigError, DataError

__all__ = [
    "TrajectoryDataset",
    "make_metadata",
    "save_dataset",
    "load_dataset",
    "split_indices",
    "subsample_mask",
    "windows",
]

_ARRAYS = ("t", "y", "u", "mask")
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def make_metadata(
    *,
    simulator: str,
    params: Any = None,
    seed: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the metadata record of a data set.

    Args:
        simulator: the simulator's registered id (e.g. ``"physid/ThreeBody-v0"``).
        params: the simulator's physical constants (a dataclass or a mapping).
        seed: the seed the data were drawn with.
        rtol: relative tolerance of the ground-truth integrator.
        atol: absolute tolerance of the ground-truth integrator.
        **extra: anything else worth keeping (e.g. ``system="three-body"``, ``integrator``).

    Returns:
        a JSON-ready dict; ``physid_version`` is filled in.
    """
    record: dict[str, Any] = {
        "simulator": simulator,
        "params": to_jsonable(params),
        "seed": seed,
        "rtol": rtol,
        "atol": atol,
        "physid_version": package_version(),
    }
    record.update(to_jsonable(extra))
    return record


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryDataset:
    """Trajectories on a time grid, with optional controls and observation mask.

    Attributes:
        t: ``(time,)`` or ``(trajectories, time)`` float64 times, strictly increasing.
        y: ``(trajectories, time, state)`` float64 states.
        u: ``(trajectories, time, control)`` float64 controls, or ``None``.
        mask: ``(trajectories, time)`` or ``(trajectories, time, state)`` booleans, ``True``
            where a point is observed, or ``None`` (everything observed).
        metadata: the JSON metadata record (see :func:`make_metadata`).

    Raises:
        DataError: on construction, if the arrays are inconsistent (see :meth:`validate`).
    """

    t: np.ndarray
    y: np.ndarray
    u: np.ndarray | None = None
    mask: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", _as_float_array(self.t, "t"))
        object.__setattr__(self, "y", _as_float_array(self.y, "y"))
        if self.u is not None:
            object.__setattr__(self, "u", _as_float_array(self.u, "u"))
        if self.mask is not None:
            object.__setattr__(self, "mask", _as_bool_array(self.mask))
        if not isinstance(self.metadata, Mapping):
            raise DataError(f"metadata must be a JSON object, not {type(self.metadata).__name__}.")
        object.__setattr__(self, "metadata", dict(self.metadata))
        self.validate()

    @property
    def n_trajectories(self) -> int:
        """Number of trajectories."""
        return int(self.y.shape[0])

    @property
    def n_times(self) -> int:
        """Number of time points per trajectory."""
        return int(self.y.shape[1])

    @property
    def state_dim(self) -> int:
        """Size of the state."""
        return int(self.y.shape[2])

    def __len__(self) -> int:
        return self.n_trajectories

    def validate(self, source: str = "data set") -> None:
        """Check shapes, dtypes and finiteness.

        Raises:
            DataError: naming the first problem found.
        """
        y, t = self.y, self.t
        if y.ndim != 3:
            raise DataError(
                f"{source}: y must have shape (trajectories, time, state), got shape {y.shape}."
            )
        n, T, _ = y.shape
        if n == 0 or T == 0:
            raise DataError(f"{source}: y is empty (shape {y.shape}).")
        if t.shape not in ((T,), (n, T)):
            raise DataError(
                f"{source}: t must have shape ({T},) or ({n}, {T}) to match y {y.shape}, "
                f"got {t.shape}."
            )
        if not np.all(np.isfinite(t)):
            raise DataError(f"{source}: t contains non-finite values.")
        if T > 1 and not np.all(np.diff(t, axis=-1) > 0):
            raise DataError(f"{source}: t must be strictly increasing along time.")
        if self.u is not None:
            u = self.u
            if u.ndim != 3 or u.shape[:2] != (n, T):
                raise DataError(
                    f"{source}: u must have shape ({n}, {T}, control) to match y {y.shape}, "
                    f"got {u.shape}."
                )
            if not np.all(np.isfinite(u)):
                raise DataError(f"{source}: u contains non-finite values.")
        observed: np.ndarray | None = None
        if self.mask is not None:
            m = self.mask
            if m.shape == (n, T):
                observed = np.broadcast_to(m[:, :, None], y.shape)
            elif m.shape == y.shape:
                observed = m
            else:
                raise DataError(
                    f"{source}: mask must have shape ({n}, {T}) or {y.shape} to match y, "
                    f"got {m.shape}."
                )
        finite = np.isfinite(y)
        bad = ~finite if observed is None else (~finite & observed)
        if np.any(bad):
            where = np.argwhere(bad)[0]
            raise DataError(
                f"{source}: y contains {int(bad.sum())} non-finite observed value(s), "
                f"the first at trajectory {where[0]}, time index {where[1]}, state {where[2]}."
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this data set to ``path`` (see :func:`save_dataset`)."""
        return save_dataset(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrajectoryDataset:
        """Read a data set from ``path`` (see :func:`load_dataset`)."""
        return load_dataset(path)

    def subset(self, index: np.ndarray | Sequence[int]) -> TrajectoryDataset:
        """The trajectories ``index`` (e.g. one part of :func:`split_indices`)."""
        idx = np.asarray(index, dtype=np.int64)
        return TrajectoryDataset(
            t=self.t[idx] if self.t.ndim == 2 else self.t,
            y=self.y[idx],
            u=None if self.u is None else self.u[idx],
            mask=None if self.mask is None else self.mask[idx],
            metadata=self.metadata,
        )

    def tensors(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
    ) -> dict[str, torch.Tensor]:
        """The arrays as tensors on ``device``: ``t`` and ``y`` (and ``u``, ``mask`` if set).

        Floating arrays take ``dtype``; ``mask`` stays boolean.
        """
        out = {
            "t": torch.as_tensor(self.t, dtype=dtype, device=device),
            "y": torch.as_tensor(self.y, dtype=dtype, device=device),
        }
        if self.u is not None:
            out["u"] = torch.as_tensor(self.u, dtype=dtype, device=device)
        if self.mask is not None:
            out["mask"] = torch.as_tensor(self.mask, dtype=torch.bool, device=device)
        return out


def _as_float_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{name} cannot be read as an array ({exc}).") from exc
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _as_bool_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf" or not np.all((arr == 0) | (arr == 1)):
            raise DataError(f"mask must be boolean (or 0/1), got dtype {arr.dtype}.")
        arr = arr.astype(np.bool_)
    return np.ascontiguousarray(arr)


def save_dataset(path: str | os.PathLike[str], dataset: TrajectoryDataset) -> Path:
    """Write ``dataset`` to ``path`` as a compressed ``.npz``, atomically.

    The path is used as given (give it a ``.npz`` suffix); parent folders are created.

    Returns:
        the path written.
    """
    p = Path(path)
    arrays: dict[str, np.ndarray] = {"t": dataset.t, "y": dataset.y}
    if dataset.u is not None:
        arrays["u"] = dataset.u
    if dataset.mask is not None:
        arrays["mask"] = dataset.mask
    meta = json.dumps(to_jsonable(dataset.metadata), allow_nan=False, sort_keys=True)
    arrays["metadata"] = np.array(meta)
    with atomic_write(p, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    return p


def load_dataset(path: str | os.PathLike[str]) -> TrajectoryDataset:
    """Read and validate a data set written by :func:`save_dataset`.

    Raises:
        DataError: the file is missing, is not an ``.npz`` data set, lacks ``t`` or ``y``,
            has inconsistent shapes or non-finite values, or its metadata is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data set {p} does not exist.")
    if not p.is_file():
        raise DataError(f"data set {p} is not a file.")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p} is not an .npz data set (not a zip archive).")
    try:
        with np.load(p, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [k for k in ("t", "y") if k not in names]
            if missing:
                raise DataError(
                    f"{p} is not a physid data set: it lacks the array(s) {', '.join(missing)} "
                    f"(it has {', '.join(sorted(names)) or 'none'})."
                )
            arrays = {k: npz[k] for k in _ARRAYS if k in names}
            meta_raw = npz["metadata"] if "metadata" in names else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read data set {p} ({type(exc).__name__}: {exc}).") from exc

    metadata: dict[str, Any] = {}
    if meta_raw is not None:
        try:
            metadata = json.loads(str(meta_raw.item()))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{p}: metadata is not valid JSON ({exc}).") from exc
        if not isinstance(metadata, dict):
            raise DataError(f"{p}: metadata must be a JSON object.")

    try:
        ds = TrajectoryDataset(
            t=arrays["t"],
            y=arrays["y"],
            u=arrays.get("u"),
            mask=arrays.get("mask"),
            metadata=metadata,
        )
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from exc
    return ds


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    seed: int | None = 0,
    shuffle: bool = True,
) -> tuple[np.ndarray, ...]:
    """Split ``range(n)`` into disjoint parts, deterministically.

    Part sizes are ``round(n * f)`` for every fraction but the last, which takes the rest.

    Args:
        n: number of items.
        fractions: one fraction per part, each in ``[0, 1]``, summing to 1.
        seed: seed of the permutation (the same seed gives the same split).
        shuffle: ``False`` keeps the order (e.g. "first 80% train, last 20% test").

    Returns:
        one sorted ``int64`` index array per part.

    Raises:
        ConfigError: the fractions are negative or do not sum to 1, or ``n`` is negative.
    """
    if n < 0:
        raise ConfigError(f"cannot split {n} items.")
    fr = [float(f) for f in fractions]
    if not fr or any(f < 0 or not math.isfinite(f) for f in fr):
        raise ConfigError(f"split fractions must be non-negative numbers, got {list(fractions)}.")
    if abs(sum(fr) - 1.0) > 1e-9:
        raise ConfigError(f"split fractions must sum to 1, got {sum(fr):g} from {fr}.")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    sizes = [int(round(n * f)) for f in fr[:-1]]
    if sum(sizes) > n:
        sizes[-1] -= sum(sizes) - n
    sizes.append(n - sum(sizes))
    parts = []
    start = 0
    for size in sizes:
        parts.append(np.sort(order[start : start + size]).astype(np.int64))
        start += size
    return tuple(parts)


def subsample_mask(
    n_trajectories: int,
    n_times: int,
    fraction: float,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Choose observed points at random: exactly ``k = max(1, int(n_times * fraction))`` per
    trajectory, drawn independently for each trajectory, without replacement.

    Args:
        n_trajectories: rows of the mask.
        n_times: columns of the mask.
        fraction: share of points kept, in ``(0, 1]`` (Rubanova et al. use 0.1, 0.2, 0.5).
        generator: the random source (its state advances); takes precedence over ``seed``.
        seed: seed for a fresh generator when ``generator`` is not given. With neither, the
            global torch RNG is used.
        device: device of the returned mask (default: the generator's device, else CPU).

    Returns:
        a boolean ``(n_trajectories, n_times)`` tensor, ``True`` where observed.

    Raises:
        ConfigError: ``fraction`` is outside ``(0, 1]`` or a size is not positive.
    """
    if not (0.0 < fraction <= 1.0):
        raise ConfigError(f"the observed fraction must be in (0, 1], got {fraction}.")
    if n_trajectories < 0 or n_times <= 0:
        raise ConfigError(
            f"cannot subsample a ({n_trajectories}, {n_times}) grid: sizes must be positive."
        )
    k = max(1, int(n_times * fraction))
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(n_trajectories, n_times, generator=generator, device=gen_device)
    chosen = scores.argsort(dim=1)[:, :k]
    mask = torch.zeros(n_trajectories, n_times, dtype=torch.bool, device=gen_device)
    mask.scatter_(1, chosen, True)
    return mask if device is None else mask.to(device)


def windows(y: ArrayT, length: int, *, stride: int = 1) -> ArrayT:
    """Cut trajectories into windows of ``length`` consecutive points.

    Args:
        y: ``(trajectories, time, ...)`` array or tensor (use ``t[None, :]`` for shared times).
        length: points per window, ``1 <= length <= time``.
        stride: distance between window starts.

    Returns:
        ``(trajectories * n_windows, length, ...)``, trajectory-major (all windows of the first
        trajectory, then the second, ...), with ``n_windows = (time - length) // stride + 1``.
        Same type as ``y``; a copy, not a view.

    Raises:
        ConfigError: ``length`` or ``stride`` is out of range, or ``y`` has fewer than 2 axes.
    """
    if y.ndim < 2:
        raise ConfigError(f"windows needs (trajectories, time, ...), got shape {tuple(y.shape)}.")
    T = int(y.shape[1])
    if not (1 <= length <= T):
        raise ConfigError(f"window length must be in [1, {T}], got {length}.")
    if stride < 1:
        raise ConfigError(f"window stride must be >= 1, got {stride}.")
    n = int(y.shape[0])
    rest = tuple(y.shape[2:])
    if isinstance(y, torch.Tensor):
        w = y.unfold(1, length, stride)  # (n, n_windows, *rest, length)
        w = w.movedim(-1, 2)  # (n, n_windows, length, *rest)
        return w.reshape(-1, length, *rest).clone()
    arr = np.asarray(y)
    w = np.lib.stride_tricks.sliding_window_view(arr, length, axis=1)[:, ::stride]
    w = np.moveaxis(w, -1, 2)
    return np.ascontiguousarray(w).reshape(n * w.shape[1], length, *rest)
