"""The aggregate's figures: per (system, model), the headline metric and the NFE vs gradient
method, bars with ± std over seeds (one bar per value of the other axes)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from physid.app.sweep.aggregate import DISPLAY_METRICS
from physid.app.sweep.jobs import name_part

__all__ = ["plot_aggregate"]

_NFE = ("nfe_forward", "nfe_backward")


def plot_aggregate(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write ``out_dir/plots/<system>-<model>-<metric>.png`` (the first of
    :data:`~physid.app.sweep.aggregate.DISPLAY_METRICS` present) and ``...-nfe.png``; returns
    the paths written."""
    by_sm: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in result["cells"]:
        key = (str(c["cell"].get("system")), str(c["cell"].get("model")))
        by_sm.setdefault(key, []).append(c)
    extra_axes = [a for a in result["axes"] if a not in ("system", "model", "method")]
    written: list[Path] = []
    for (system, model), cells in by_sm.items():
        present = {k for c in cells for k in c["metrics"]}
        main = next((m for m in DISPLAY_METRICS if m in present), None)
        nfe = [k for k in _NFE if k in present]
        for kind, keys in (("metric", [main] if main else []), ("nfe", nfe)):
            if keys:
                written.append(
                    _bars(cells, keys, extra_axes, out_dir / "plots", system, model, kind)
                )
    return written


def _label(cell: Mapping[str, Any], extra_axes: list[str]) -> str:
    return ", ".join(f"{a}={cell['cell'].get(a)}" for a in extra_axes)


def _bars(
    cells: list[Mapping[str, Any]],
    keys: list[str],
    extra_axes: list[str],
    folder: Path,
    system: str,
    model: str,
    kind: str,
) -> Path:
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(str(c["cell"].get("method")) for c in cells))
    series = list(dict.fromkeys(_label(c, extra_axes) for c in cells))
    by_key = {(str(c["cell"].get("method")), _label(c, extra_axes)): c for c in cells}
    bars = [(k, s) for k in keys for s in series]
    fig = Figure(figsize=(max(4.0, 1.2 * len(methods) * max(1, len(bars) / 2)), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / len(bars)
    all_values: list[float] = []
    for i, (k, s) in enumerate(bars):
        means, errs = [], []
        for m in methods:
            cell = by_key.get((m, s))
            st = None if cell is None else cell["metrics"].get(k)
            means.append(math.nan if st is None else st["mean"])
            errs.append(0.0 if st is None or st.get("std") is None else st["std"])
        all_values += [v for v in means if math.isfinite(v)]
        label = k if not s else (f"{k} ({s})" if len(keys) > 1 else s)
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(methods))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_xlabel("gradient method")
    positive = [v for v in all_values if v > 0]
    if positive and len(positive) == len(all_values) and max(positive) > 20 * min(positive):
        ax.set_yscale("log")
    what = keys[0] if kind == "metric" else "NFE"
    ax.set_ylabel(keys[0] if kind == "metric" else "function evaluations")
    ax.set_title(f"{system} {model}: {what} vs method", fontsize=10)
    if len(bars) > 1:
        ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    suffix = keys[0] if kind == "metric" else "nfe"
    path = folder / f"{name_part(system)}-{name_part(model)}-{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
