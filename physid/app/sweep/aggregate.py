"""Mean ± std over seeds, per grid cell, of every number in the runs' summaries.

Runs are found with :meth:`physid.runs.RunDir.find` and read as
:class:`~physid.runs.RunSummary`; the grid cell of a sweep's run comes from its ``job.json``
(every axis), of any other run from its summary (system, model, method).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import load_json, save_json, write_text_atomic
from physid.app.sweep.jobs import Job
from physid.app.sweep.status import read_status
from physid.errors import ConfigError, DataError
from physid.runs import RunDir, RunSummary

__all__ = ["DISPLAY_METRICS", "aggregate", "format_aggregate", "format_stats"]

DISPLAY_METRICS = (
    "test_mse",
    "test_mse_interp",
    "test_mse_extrap",
    "train_mse",
    "seconds",
    "nfe_forward",
    "nfe_backward",
    "epochs_completed",
)
"""Summary numbers shown in the aggregate's markdown table, in this order, when present (the
JSON holds every number): the :class:`~physid.runs.RunSummary`'s fixed keys, and the test error
inside and beyond the training window (``test_mse_interp``, ``test_mse_extrap``: the split the
ACA paper's Tables 4 and 5 discuss)."""


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _stats(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "n": n,
        "values": list(values),
    }


def _cell_of(run: RunDir, summary: RunSummary) -> tuple[dict[str, Any], int]:
    """The grid cell and seed of a run: from ``job.json`` (a sweep's run), else from its
    summary (system, model, method)."""
    job_file = run / "job.json"
    if job_file.is_file():
        with contextlib.suppress(DataError):
            job = Job.from_dict(load_json(job_file))
            return dict(job.cell), job.seed
    cell = {"system": summary.system, "model": summary.model, "method": summary.method}
    return cell, summary.seed


def _counted(run: RunDir) -> RunSummary | None:
    """The summary of a run that counts: finished (not interrupted), and ``done`` if a sweep
    ran it."""
    status = read_status(run.path)
    if status is not None and status.get("state") != "done":
        return None
    if not run.is_finished():
        return None
    try:
        return run.read_summary()
    except DataError:
        return None


def aggregate(
    root: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    plots: bool = True,
    runs: Sequence[str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """Mean ± std over seeds, per grid cell, of every number in the runs' ``summary.json``.

    A run counts when its summary is final (not ``interrupted``) and, if a sweep ran it, its
    ``status.json`` says ``done``. The standard deviation is the sample one (n - 1); ``None``
    for a single seed. Writes ``aggregate.json``, ``aggregate.md`` and
    ``plots/<system>-<model>-*.png`` (the first of :data:`DISPLAY_METRICS` vs method, and NFE
    vs method) into ``out``.

    Args:
        root: a sweep's output directory (its runs are under ``root/runs``), or any folder
            holding run directories.
        out: where to write (default ``root``).
        metrics: the columns of the markdown table (default: :data:`DISPLAY_METRICS` present).
        plots: write the plots.
        runs: only these run directories (default: every one under ``root``).

    Returns:
        ``{"cells": [{"cell", "n", "seeds", "runs", "metrics": {key: {"mean", "std", ...}}}],
        "axes", "metrics"}``.

    Raises:
        DataError: no finished run under ``root``.
        ConfigError: a requested metric is in no run's summary.
    """
    root_dir = Path(root)
    out_dir = Path(out) if out is not None else root_dir
    search = root_dir / "runs" if (root_dir / "runs").is_dir() else root_dir
    candidates = RunDir.find(search) if runs is None else [RunDir(r) for r in runs]
    groups: dict[str, dict[str, Any]] = {}
    for run in candidates:
        summary = _counted(run)
        if summary is None:
            continue
        cell, seed = _cell_of(run, summary)
        key = repr(sorted(cell.items(), key=lambda kv: kv[0]))
        group = groups.setdefault(key, {"cell": cell, "seeds": [], "runs": [], "values": {}})
        group["seeds"].append(seed)
        group["runs"].append(os.path.relpath(run.path, out_dir))
        for name, value in summary.to_dict().items():
            if name == "seed" or name in cell or not _is_number(value):
                continue
            group["values"].setdefault(name, []).append(float(value))
    if not groups:
        raise DataError(f"no finished run directory (config.json + summary.json) under {root}.")
    axes: list[str] = []
    for group in groups.values():
        for k in group["cell"]:
            if k not in axes:
                axes.append(k)
    cells = [
        {
            "cell": group["cell"],
            "n": len(group["runs"]),
            "seeds": group["seeds"],
            "runs": group["runs"],
            "metrics": {k: _stats(v) for k, v in sorted(group["values"].items())},
        }
        for group in groups.values()
    ]
    cells.sort(key=lambda c: [str(c["cell"].get(a, "")) for a in axes])
    present = {k for c in cells for k in c["metrics"]}
    if metrics:
        missing = [m for m in metrics if m not in present]
        if missing:
            have = ", ".join(sorted(present))
            raise ConfigError(f"no run's summary.json has {missing[0]!r} (they have: {have}).")
    shown = [m for m in (metrics or DISPLAY_METRICS) if m in present]
    result: dict[str, Any] = {
        "format": "physid.aggregate/1",
        "axes": axes,
        "metrics": shown,
        "std": "sample standard deviation over seeds (n - 1); null for one seed",
        "cells": cells,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        from physid.app.sweep.plots import plot_aggregate

        written = plot_aggregate(result, out_dir)
        result["plots"] = [os.path.relpath(p, out_dir) for p in written]
    save_json(out_dir / "aggregate.json", result)
    write_text_atomic(out_dir / "aggregate.md", format_aggregate(result) + "\n")
    return result


def _sig(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits, without an exponent between 1e-3 and 1e6."""
    if x == 0 or not math.isfinite(x) or not 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}"
    rounded = round(x, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{rounded:.{max(digits, 7)}g}"


def format_stats(stats: Mapping[str, Any] | None) -> str:
    """``mean ± std`` (4 and 2 significant digits), the mean alone for one seed."""
    if not stats:
        return "—"
    mean, std = stats["mean"], stats.get("std")
    return _sig(mean, 4) if std is None else f"{_sig(mean, 4)} ± {_sig(std, 2)}"


def format_aggregate(result: Mapping[str, Any]) -> str:
    """The aggregate as a markdown table: one row per cell, ``mean ± std`` per metric."""
    axes = list(result["axes"])
    metrics = list(result["metrics"])
    head = [*axes, "n", *metrics]
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * len(axes) + ["---:"] * (1 + len(metrics))) + " |",
    ]
    for c in result["cells"]:
        row = [str(c["cell"].get(a, "")) for a in axes] + [str(c["n"])]
        row += [format_stats(c["metrics"].get(m)) for m in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
