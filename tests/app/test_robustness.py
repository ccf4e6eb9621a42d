"""Hostile input, failed writes, untrusted files (issue 13): one sentence, exit code 1, nothing
written, nothing run.

Every case drives the real command line (typer's CliRunner on the app) against a tiny fitted
run, and checks: the exit code, exactly one line on stderr starting ``Error:``, no traceback,
and that no file was created or changed where it should not be.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from physid.app.cli import app

TINY = ["--rtol", "1e-4", "--atol", "1e-4", "--no-progress", "--threads", "1", "--no-compile"]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _fails_in_one_line(args: Sequence[str], code: int = 1) -> str:
    res = CliRunner().invoke(app, list(args))
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny finished three-body run and a small data set."""
    root = tmp_path_factory.mktemp("hostile")
    runner = CliRunner()
    data = root / "tb.npz"
    res = runner.invoke(
        app, ["simulate", "three-body", "--out", str(data), "--n-train", "50", "--n-test", "100"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "fit",
            "three-body",
            "--method",
            "aca",
            "--epochs",
            "1",
            "--data",
            str(data),
            "--runs-dir",
            str(root / "runs"),
            "--no-plots",
            *TINY,
        ],
    )
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def run(workspace: Path) -> Path:
    return workspace / "runs" / "three-body-ode-aca-0"


# ---- failed writes ------------------------------------------------------------------------------


def test_unwritable_outputs_are_one_sentence(workspace: Path, run: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a folder")
    before = _snapshot(workspace)
    data = str(workspace / "tb.npz")
    cases = [
        ["render", str(run), "-o", "/proc/out.mp4"],
        ["render", str(run), "-o", str(a_file / "child.mp4")],
        ["render", data, "-o", "/proc/data.mp4"],
        ["simulate", "three-body", "--out", "/proc/x.npz", "--n-train", "10", "--n-test", "20"],
        ["fit", "three-body", "--epochs", "1", "--runs-dir", "/proc/x", "--data", data, *TINY],
        ["fit", "three-body", "--epochs", "1", "--runs-dir", str(a_file), "--data", data, *TINY],
    ]
    for args in cases:
        line = _fails_in_one_line(args)
        assert "/proc" in line or str(a_file) in line, line
    assert _snapshot(workspace) == before
    assert a_file.read_text() == "not a folder"


def test_a_video_must_be_an_mp4(run: Path, tmp_path: Path) -> None:
    line = _fails_in_one_line(["render", str(run), "-o", str(tmp_path / "out.txt")])
    assert ".mp4" in line and "ffmpeg" not in line
    assert not (tmp_path / "out.txt").exists()


# ---- run names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute-run", ".", "..", "a/b", ".hidden"])
def test_run_names_stay_inside_the_runs_dir(name: str, workspace: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    line = _fails_in_one_line(
        ["fit", "three-body", "--epochs", "1", "--runs-dir", str(runs), "--run-name", name, *TINY]
    )
    assert "run name" in line
    assert not runs.exists() and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/absolute-run").exists()


# ---- untrusted checkpoints ----------------------------------------------------------------------


class _Payload:
    """Unpickling this writes a marker file: proof that loading ran code."""

    marker = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _plant(run_dir: Path, marker: Path) -> None:
    import torch

    _Payload.marker = str(marker)
    torch.save(
        {"format": "physid.training/1", "last": _Payload(), "best": None}, run_dir / "model.pt"
    )


def test_a_crafted_checkpoint_runs_nothing(workspace: Path, tmp_path: Path) -> None:
    import shutil

    planted = tmp_path / "runs" / "three-body-ode-aca-0"
    shutil.copytree(workspace / "runs" / "three-body-ode-aca-0", planted)
    marker = tmp_path / "pwned"
    _plant(planted, marker)
    # the payload is real: an unsafe load would run it
    import torch

    torch.load(planted / "model.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    data = str(workspace / "tb.npz")
    for args in (
        ["evaluate", str(planted)],
        ["render", str(planted), "-o", str(tmp_path / "v.mp4")],
        [
            "fit",
            "three-body",
            "--method",
            "aca",
            "--epochs",
            "2",
            "--data",
            data,
            "--runs-dir",
            str(planted.parent),
            *TINY,
        ],
    ):
        line = _fails_in_one_line(args)
        assert "--fresh" in line and "model.pt" in line
        assert not marker.exists()


def test_a_truncated_checkpoint_suggests_fresh(workspace: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "runs" / "three-body-ode-aca-0"
    shutil.copytree(workspace / "runs" / "three-body-ode-aca-0", copy)
    blob = (copy / "model.pt").read_bytes()
    (copy / "model.pt").write_bytes(blob[: len(blob) // 2])
    assert "--fresh" in _fails_in_one_line(["evaluate", str(copy)])


# ---- malformed run files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(rtol="abc"),
        lambda c: c.update(epochs=True),
        lambda c: c.update(surprise=1),
        lambda c: c.pop("system"),
        lambda c: c.update(system="no-such-system"),
    ],
)
def test_a_tampered_config_is_one_sentence(edit, workspace: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(workspace / "runs" / "three-body-ode-aca-0", copy)
    cfg = json.loads((copy / "config.json").read_text())
    edit(cfg)
    (copy / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(copy)
    _fails_in_one_line(["evaluate", str(copy)])
    assert _snapshot(copy) == before


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "/no/such/run"],
        ["render", "/no/such/run"],
        ["fit", "three-body", "--epochs", "0"],
        ["fit", "three-body", "--solver", "euler"],
        ["fit", "three-body", "--method", "magic"],
        ["fit", "three-body", "--rtol", "-1"],
        ["fit", "three-body", "--device", "tpu"],
        ["fit", "three-body", "--threads", "0"],
        ["fit", "three-body", "--data", "/no/such.npz"],
        ["fit", "no-such-system"],
        ["simulate", "three-body", "--n-trajectories", "2"],
    ],
)
def test_bad_options_leave_nothing_behind(args: list[str], tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        _fails_in_one_line(args)
        assert list(tmp_path.iterdir()) == []
    finally:
        os.chdir(cwd)


def test_pickle_payload_helper_is_not_importable_by_weights_only(tmp_path: Path) -> None:
    # the weights-only loader refuses unknown globals outright (the guard every load relies on)
    from physid._io import load_torch
    from physid.errors import DataError

    marker = tmp_path / "m"
    _Payload.marker = str(marker)
    (tmp_path / "x.pt").write_bytes(pickle.dumps({"a": _Payload()}))
    with pytest.raises(DataError):
        load_torch(tmp_path / "x.pt")
    assert not marker.exists()


@pytest.mark.parametrize("out", ["/", ""])
def test_a_sweep_never_writes_to_a_root(out: str, tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(f'out = "{out}"\n[grid]\nsystems = ["three-body"]\nseeds = [0]\n')
    line = _fails_in_one_line(["sweep", "run", str(grid), "--dry-run"])
    assert "root" in line or "empty" in line
    plain = tmp_path / "plain.toml"
    plain.write_text('[grid]\nsystems = ["three-body"]\nseeds = [0]\n')
    for args in (["--out", str(grid)], ["--out", "/"], ["--out", "/", "--dry-run"]):
        line = _fails_in_one_line(["sweep", "run", str(plain), *args])
        assert "root" in line or "is a file" in line


def test_every_command_rejects_hostile_input(workspace: Path, run: Path, tmp_path: Path) -> None:
    """One table over every command: missing, empty, truncated and wrong-type files, unwritable
    targets, unknown names — one sentence, exit code 1, nothing written."""
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    blob = (workspace / "tb.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 3])
    text = tmp_path / "grid.toml"
    text.write_text("this is = = not toml")
    emptygrid = tmp_path / "empty.toml"
    emptygrid.write_text("")
    before = _snapshot(workspace)
    listing = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        ["simulate", "hopper", "--n-trajectories", "1"],
        ["simulate", "acrobot", "--n-per-control", "0"],
        ["fit", "hopper", "--observed", "2"],
        ["fit", "acrobot", "--preset", "huge"],
        ["fit", "three-body", "--data", str(empty), "--runs-dir", str(tmp_path / "r")],
        ["fit", "three-body", "--data", str(truncated), "--runs-dir", str(tmp_path / "r")],
        ["fit", "acrobot", "--data", str(workspace / "tb.npz"), "--runs-dir", str(tmp_path / "r")],
        ["render", str(empty)],
        ["render", str(truncated)],
        ["evaluate", str(workspace / "tb.npz")],
        ["control", "acrobot", "--run", "/no/such/run"],
        ["control", "acrobot", "--run", str(run)],
        ["control", "acrobot", "--oracle", "--out", "/proc/ctrl", "--steps", "2", "--no-video"],
        ["control", "three-body"],
        ["sweep", "run", str(tmp_path / "missing.toml")],
        ["sweep", "run", str(text)],
        ["sweep", "run", str(emptygrid)],
        ["sweep", "aggregate", str(tmp_path / "missing")],
        ["report", str(tmp_path / "missing")],
        ["report", str(workspace / "runs"), "-o", "/proc/x.html"],
        ["bench", "gradients", "-p", "nonsense", "-o", str(tmp_path / "b")],
    ]
    for args in cases:
        _fails_in_one_line(args)
    assert _snapshot(workspace) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
