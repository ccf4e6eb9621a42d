"""Video output shared by every system: frames in, an MP4 out, written atomically.

Each system draws its own frames (matplotlib for the three-body problem, a 2-D drawing for the
acrobot, ``mujoco.Renderer`` for the hopper); this module only encodes them, so a video is never
left half-written and a missing encoder is reported in one sentence.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from physid._io import atomic_path
from physid.errors import ConfigError, MissingDependencyError

__all__ = ["write_video"]


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    macro_block_size: int = 1,
) -> Path:
    """Encode ``frames`` (``(H, W, 3)`` uint8 RGB, all the same size) as an MP4 at ``fps``.

    Frames are consumed one at a time, so a generator keeps memory flat. The file appears at
    ``path`` only once the whole video is written.

    Raises:
        ConfigError: ``fps`` is not positive, there are no frames, or a frame is not RGB.
        MissingDependencyError: imageio or its ffmpeg plugin is missing.
    """
    if not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps}.")
    try:
        import imageio.v2 as imageio
    except ImportError as exc:  # pragma: no cover - imageio is a dependency
        raise MissingDependencyError(
            "writing MP4 needs imageio: pip install 'imageio[ffmpeg]'."
        ) from exc
    dest = Path(path)
    count = 0
    with atomic_path(dest) as tmp:
        try:
            writer = imageio.get_writer(tmp, fps=fps, macro_block_size=macro_block_size)
        except (ImportError, RuntimeError, ValueError) as exc:
            raise MissingDependencyError(
                f"writing {dest.name} needs ffmpeg: pip install 'imageio[ffmpeg]' ({exc})."
            ) from exc
        with writer:
            for frame in frames:
                arr = np.asarray(frame)
                if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                    raise ConfigError(
                        f"a video frame is (H, W, 3) uint8 RGB, got {arr.dtype} {arr.shape}."
                    )
                writer.append_data(np.ascontiguousarray(arr))
                count += 1
        if count == 0:
            raise ConfigError(f"no frames to write to {dest}.")
    return dest
