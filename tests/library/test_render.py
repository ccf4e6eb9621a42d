"""physid.render.write_video: frames round-trip, atomic replacement, one-sentence errors."""

from __future__ import annotations

import numpy as np
import pytest

from physid.errors import ConfigError
from physid.render import write_video


def _frames(n: int, h: int = 32, w: int = 48) -> list[np.ndarray]:
    frames = []
    for k in range(n):
        f = np.zeros((h, w, 3), dtype=np.uint8)
        f[:, : (k + 1) * w // n] = (255, 128, 0)  # a bar that grows frame by frame
        frames.append(f)
    return frames


def test_round_trip_frame_count_size_and_content(tmp_path):
    import imageio.v2 as imageio

    out = write_video(tmp_path / "v.mp4", iter(_frames(12)), fps=10)
    with imageio.get_reader(out) as reader:
        got = [np.asarray(f) for f in reader]
    assert len(got) == 12
    assert got[0].shape == (32, 48, 3)
    # Lossy codec: the growing bar is still visible (first column lit, last column dark early).
    assert got[0][:, 0, 0].mean() > 200 and got[0][:, -1, 0].mean() < 50
    assert got[-1][:, -1, 0].mean() > 200
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_failure_mid_video_keeps_the_old_file(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old video")

    def broken():
        yield from _frames(3)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(out, broken(), fps=10)
    assert out.read_bytes() == b"old video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


@pytest.mark.parametrize(
    "frames, fps, match",
    [
        ([], 10, "no frames"),
        ([np.zeros((8, 8), dtype=np.uint8)], 10, "uint8 RGB"),
        ([np.zeros((8, 8, 3), dtype=np.float32)], 10, "uint8 RGB"),
        (_frames(2), 0, "fps must be positive"),
    ],
)
def test_bad_input_is_a_config_error_and_writes_nothing(tmp_path, frames, fps, match):
    with pytest.raises(ConfigError, match=match):
        write_video(tmp_path / "v.mp4", frames, fps=fps)
    assert list(tmp_path.iterdir()) == []
