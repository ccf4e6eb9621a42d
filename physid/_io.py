"""Atomic file writes and checked reads: JSON and torch checkpoints.

Every write goes to a temporary file in the destination's directory, is flushed and fsync'ed,
then renamed over the destination with :func:`os.replace`, so a reader never sees a half-written
file and an interrupted write leaves the old file intact.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from physid.errors import DataError

__all__ = [
    "atomic_write",
    "atomic_path",
    "write_bytes_atomic",
    "write_text_atomic",
    "save_json",
    "load_json",
    "append_jsonl",
    "read_jsonl",
    "save_torch",
    "load_torch",
    "to_jsonable",
    "package_version",
]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success, rename it over ``path``.

    Args:
        path: the destination file. Its parent directory is created if missing.
        mode: ``"wb"`` (bytes) or ``"w"`` (UTF-8 text).

    Yields:
        the open temporary file. If the body raises, the temporary file is removed and the
        destination is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    os.chmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        encoding = None if "b" in mode else "utf-8"
        with open(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` with the same name, for writers that take a file name
    (video encoders); on success it is renamed over ``path``, on failure removed.

    The temporary file lives in a private hidden directory next to ``path`` (same file system,
    so the rename is atomic) and keeps the name, since such writers choose their format from
    the suffix; the whole directory is removed afterwards, which also catches anything an
    external encoder process writes late after a failure.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp = tmp_dir / dest.name
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _fsync_dir(dest.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Handles dataclasses, paths, enums, numpy and torch scalars and arrays, tuples and sets.
    Non-finite floats become ``None`` so the output is strict JSON.
    """
    import dataclasses
    import enum

    import numpy as np

    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.generic | np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in JSON")


def save_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (converted by :func:`to_jsonable`)."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, sort_keys=False)
    write_text_atomic(path, text + "\n")


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file.

    Raises:
        DataError: the file is missing, unreadable or not valid JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist or is not a file.")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {p}: {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{p} is not valid JSON (line {exc.lineno}: {exc.msg}).") from exc


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON record as a line to ``path`` and flush it to disk.

    Appends are not atomic by rename (the file grows), but each line is written with a single
    ``write`` and fsync'ed; :func:`read_jsonl` ignores a torn last line.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_jsonable(record), allow_nan=False) + "\n"
    with open(p, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a torn (unparsable) last line is dropped.

    Raises:
        DataError: the file is missing, or a line other than the last is not valid JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist or is not a file.")
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    records: list[dict[str, Any]] = []
    for i, ln in enumerate(lines):
        try:
            records.append(json.loads(ln))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise DataError(f"{p} line {i + 1} is not valid JSON ({exc.msg}).") from exc
    return records


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """Save ``obj`` with :func:`torch.save` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_torch(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device | Callable[..., Any] | None = "cpu",
    weights_only: bool = True,
) -> Any:
    """Load a file written by :func:`save_torch`.

    Args:
        path: the file.
        map_location: where tensors are loaded (default CPU; move them afterwards).
        weights_only: passed to :func:`torch.load`. ``True`` (the default) refuses pickled
            objects other than tensors, numbers, strings and containers of them, so a crafted
            file cannot run code; physid's checkpoints hold nothing else.

    Raises:
        DataError: the file is missing or is not a readable torch file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist or is not a file.")
    try:
        return torch.load(p, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # torch raises many types for a corrupt file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"{p} is not a readable torch checkpoint ({type(exc).__name__}: {first})."
        ) from exc


def package_version() -> str:
    """The installed physid version (``physid.__version__`` when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("physid")
    except metadata.PackageNotFoundError:
        import physid

        return str(getattr(physid, "__version__", "0+unknown"))
