from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from physid.app import registry
from physid.app.cli import app
from physid.errors import ConfigError

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("physid ")


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("simulate", "fit", "evaluate", "render", "control", "bench", "sweep"):
        assert name in result.output


@pytest.mark.parametrize("group", ["simulate", "fit", "control", "bench", "sweep"])
def test_group_help(group: str) -> None:
    result = runner.invoke(app, [group, "--help"])
    assert result.exit_code == 0, result.output


def test_evaluate_missing_run_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "does not exist" in _one_error_line(result)


def test_evaluate_dir_without_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no config.json" in _one_error_line(result)


def test_evaluate_unknown_system(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"system": "pendulum-on-mars"}))
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1
    assert "knows no system 'pendulum-on-mars'" in _one_error_line(result)


def test_render_dataset_without_system(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, t=np.arange(3.0), y=np.zeros((1, 3, 2)))
    result = runner.invoke(app, ["render", str(p), "-o", str(tmp_path / "v.mp4")])
    assert result.exit_code == 1
    assert "does not name a system" in _one_error_line(result)


def test_usage_errors_are_one_line() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 1
    assert "No such command" in _one_error_line(result)
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1
    assert "Missing argument" in _one_error_line(result)


def test_the_registry_rejects_unknown_names() -> None:
    for name in ("../etc", "no-such-system", "", "Three-Body"):
        with pytest.raises(ConfigError, match="knows no system"):
            registry.get(name)
    assert registry.names() == ("three-body", "acrobot", "hopper", "mujoco")
    assert registry.names(control=True) == ("acrobot",)


def test_python_dash_m() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "physid", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0 and out.stdout.startswith("physid ")
