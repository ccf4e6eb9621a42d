"""The layering of the package (DESIGN.md): engine <- generic library <- systems <- the app.

Nothing in the engine or the generic library imports a system (``physid.envs``,
``physid.models``); nothing imports the CLI; ``import physid`` pulls in no system; and
``envs``/``models`` are installed inside the physid namespace only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "physid" / "app"


def _imports(path: Path) -> list[str]:
    """Every module a file imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _is_system(name: str) -> bool:
    return name.split(".")[:2] in (["physid", "envs"], ["physid", "models"]) or name.split(".")[
        0
    ] in ("envs", "models")


def _is_cli(name: str) -> bool:
    return name in ("physid.app.cli", "physid.app.cli.app", "physid.cli") or name.startswith(
        "physid.app.cli."
    )


def test_engine_and_library_import_no_system() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _py_files(ROOT / "physid")
        if APP not in path.parents
        for name in _imports(path)
        if _is_system(name)
    ]
    assert offenders == []


def test_nothing_imports_the_cli() -> None:
    allowed = {ROOT / "physid" / "__main__.py"}
    files = [
        *_py_files(ROOT / "physid"),
        *_py_files(ROOT / "envs"),
        *_py_files(ROOT / "models"),
        *_py_files(ROOT / "scripts"),
    ]
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        if path not in allowed and path != APP / "cli.py"
        for name in _imports(path)
        if _is_cli(name)
    ]
    assert offenders == []


def test_systems_and_scripts_use_the_physid_namespace() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in ("physid", "envs", "models", "scripts", "tests")
        for path in _py_files(ROOT / folder)
        for name in _imports(path)
        if name.split(".")[0] in ("envs", "models")
    ]
    assert offenders == []


def _fresh_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    return out.stdout.strip()


def test_import_physid_pulls_in_no_system_and_no_app() -> None:
    loaded = _fresh_python(
        "import sys, physid; print(' '.join(sorted(m for m in sys.modules "
        "if m.startswith(('physid.envs', 'physid.models', 'physid.app', 'mujoco', 'gymnasium')))))"
    )
    assert loaded == ""


def test_envs_and_models_are_not_top_level_packages() -> None:
    # from a neutral folder, only the physid namespace is importable
    found = _fresh_python(
        "import importlib.util as u; "
        "print(u.find_spec('envs') is None, u.find_spec('models') is None, "
        "u.find_spec('physid.envs') is not None, u.find_spec('physid.models') is not None)"
    )
    assert found == "True True True True"


def test_every_package_folder_is_installed() -> None:
    import tomllib

    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    mapping = {
        "physid": ROOT / "physid",
        "physid.envs": ROOT / "envs",
        "physid.models": ROOT / "models",
    }
    found = set()
    for prefix, folder in mapping.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            if "__pycache__" in rel:
                continue
            found.add(".".join((prefix, *rel)))
    # a folder mapped by package-dir is declared under its physid name
    assert found == declared, (sorted(found - declared), sorted(declared - found))


@pytest.mark.parametrize("command", [["--help"], ["fit", "--help"], ["simulate", "--help"]])
def test_help_does_not_import_systems(command: list[str]) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom physid.app.cli import app\n"
        f"r = CliRunner().invoke(app, {command!r})\nassert r.exit_code == 0, r.output\n"
        "print(' '.join(sorted(m for m in sys.modules\n"
        "    if m.startswith(('physid.models', 'mujoco')))))"
    )
    loaded = _fresh_python(code)
    # the fit/simulate group help lists each system's title from the registry; listing is lazy
    assert "mujoco" not in loaded.split()
