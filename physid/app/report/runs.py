"""Run sections: one table per system of every run directory (:meth:`physid.runs.RunDir.find`),
its :class:`~physid.runs.RunSummary` numbers and its plots (linked, or embedded on request)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from physid.app.report.page import Page, esc, table
from physid.app.report.results import load
from physid.errors import DataError
from physid.runs import SUMMARY_KEYS, RunDir, RunSummary

__all__ = ["COLUMNS", "run_sections"]

COLUMNS = tuple(
    k
    for k in SUMMARY_KEYS
    if k not in ("system", "model", "method", "seed", "epochs_completed", "interrupted")
)
"""The summary numbers of the run tables: the RunSummary's fixed numbers (test_mse, train_mse,
seconds, nfe_forward, nfe_backward); epochs have their own column."""


def _summary(run: RunDir) -> tuple[RunSummary | None, str]:
    """The run's summary and its state as the table shows it (without a sweep's status)."""
    if not run.has_summary():
        return None, "no summary"
    try:
        summary = run.read_summary()
    except DataError:
        return None, "unreadable summary"
    return summary, "interrupted" if summary.interrupted else "done"


def _plots_cell(run: RunDir, page: Page) -> tuple[str, str]:
    plots = sorted(run.plots.glob("*.png")) if run.plots.is_dir() else []
    if page.embed_run_plots and plots:
        inner = "".join(page.image(p, p.name) for p in plots)
        return ("raw", f"<details><summary>{len(plots)} plots</summary>{inner}</details>")
    links = " ".join(f'<a href="{esc(page.href(p))}">{esc(p.stem)}</a>' for p in plots)
    return ("raw", links)


def run_sections(runs: Sequence[RunDir], page: Page) -> None:
    """One section per system: model, method, seed, state (a sweep's ``status.json`` wins),
    epochs, the summary numbers and the plots; then the errors a sweep recorded."""
    by_system: dict[str, list[tuple[RunDir, dict[str, Any], RunSummary | None, str, Any]]] = {}
    for run in runs:
        try:
            config = run.read_config()
        except DataError:
            continue
        summary, state = _summary(run)
        status = load(run / "status.json") if (run / "status.json").is_file() else None
        status = status if isinstance(status, dict) else {}
        state = status.get("state") or state
        by_system.setdefault(str(config["system"]), []).append(
            (run, config, summary, state, status.get("error"))
        )
    for system, items in sorted(by_system.items()):
        head = ["run", "model", "method", "seed", "state", "epochs", *COLUMNS, "plots"]
        rows = []
        for run, config, summary, state, _ in items:
            numbers = summary.to_dict() if summary is not None else {}
            rows.append(
                [
                    page.rel(run.path),
                    config.get("model", numbers.get("model")),
                    config.get("method", numbers.get("method")),
                    config.get("seed", numbers.get("seed")),
                    state,
                    numbers.get("epochs_completed"),
                    *(numbers.get(k) for k in COLUMNS),
                    _plots_cell(run, page),
                ]
            )
        errors = [(page.rel(run.path), error) for run, _, _, _, error in items if error]
        body = table(head, rows)
        if errors:
            body += "<h4>Errors</h4>" + table(["run", "error"], errors)
        page.add(f"runs: {system}", body)
