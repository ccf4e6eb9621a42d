"""Gathering a folder into one page: which files are results, sweeps, control records and
runs, and what is left over."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from physid._io import package_version, write_text_atomic
from physid.app.report.control import control_section
from physid.app.report.page import IMAGE_TYPES, Page
from physid.app.report.results import other_section, results_section
from physid.app.report.runs import run_sections
from physid.app.report.sweeps import SWEEP_FILES, is_sweep, sweep_section
from physid.errors import DataError
from physid.runs import RunDir

__all__ = ["build_report"]

_RUN_FILES = {"config.json", "summary.json", "status.json", "job.json", "evaluation.json"}


def _walk(root: Path, skip: Path) -> tuple[list[Path], list[Path]]:
    """(folders, files) under root, sorted, hidden ones left out, ``skip`` (the page) too."""
    folders, files = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        folders.append(here)
        for name in sorted(filenames):
            p = here / name
            if p.resolve() != skip and not name.startswith("."):
                files.append(p)
    return folders, files


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def build_report(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    title: str = "physid report",
    embed_run_plots: bool = False,
) -> Path:
    """Write one HTML page of every run, sweep, benchmark and control result under ``root``.

    Args:
        root: the folder to gather from.
        out: the page (default ``root/report.html``).
        title: the page's title.
        embed_run_plots: embed every run's plots (default: link them, relative to the page).

    Returns:
        the page's path.

    Raises:
        DataError: ``root`` is not a folder, or holds nothing to report.
    """
    root_dir = Path(root).resolve()
    if not root_dir.is_dir():
        raise DataError(f"{root} is not a folder.")
    page_path = Path(out).resolve() if out is not None else root_dir / "report.html"
    page = Page(root_dir, page_path, embed_run_plots)
    folders, files = _walk(root_dir, page_path)
    runs = RunDir.find(root_dir)
    run_paths = [r.path for r in runs]
    sweeps = [f for f in folders if is_sweep(f)]
    controls = [p for p in files if p.name == "control.json"]
    outside = [p for p in files if not _inside(p.parent, run_paths)]

    markdowns = [
        p
        for p in outside
        if p.suffix.lower() == ".md"
        and not (p.name in SWEEP_FILES and p.parent in sweeps)
        and p.name.lower() != "readme.md"
    ]
    for md in markdowns:
        results_section(md, page)
    for folder in sweeps:
        sweep_section(folder, page)
    control_section(controls, page)
    if runs:
        run_sections(runs, page)

    # Whatever is left outside runs: figures and JSON, per folder.
    covered_json = {md.with_suffix(".json") for md in markdowns} | set(controls)
    leftovers: dict[Path, list[Path]] = {}
    for p in outside:
        if p.parent in sweeps and (p.name in SWEEP_FILES or p.parent.name == "plots"):
            continue
        if p.suffix.lower() in IMAGE_TYPES and p.resolve() not in page.used_images:
            leftovers.setdefault(p.parent, []).append(p)
        elif p.suffix.lower() == ".json" and p not in covered_json and p.name not in _RUN_FILES:
            leftovers.setdefault(p.parent, []).append(p)
    for folder, items in sorted(leftovers.items()):
        if not (_inside(folder, sweeps) and folder.name == "plots"):
            other_section(folder, items, page)

    if not page.sections:
        raise DataError(
            f"nothing to report under {root}: no run directory, sweep, markdown table, "
            "control.json or figure."
        )
    document = page.document(title, f"{root_dir} — physid {package_version()}")
    write_text_atomic(page_path, document)
    return page_path
