"""Sweep sections (``physid sweep``): the jobs that did not finish and why, the mean ± std table
(the sweep's own ``aggregate.md``), and the aggregate's plots. Read from the sweep's files
(``sweep.json``, ``aggregate.json``, ``aggregate.md``), not from its code."""

from __future__ import annotations

from pathlib import Path

from physid.app.report.markdown import markdown_to_html
from physid.app.report.page import Page, esc, table
from physid.app.report.results import load, raw_json

__all__ = ["SWEEP_FILES", "is_sweep", "sweep_section"]

SWEEP_FILES = {"sweep.json", "aggregate.json", "aggregate.md"}


def is_sweep(folder: Path) -> bool:
    """A folder a sweep (or ``physid sweep aggregate``) wrote into."""
    return any((folder / n).is_file() for n in ("sweep.json", "aggregate.json"))


def sweep_section(folder: Path, page: Page) -> None:
    """One sweep's section."""
    sweep = load(folder / "sweep.json")
    agg = load(folder / "aggregate.json")
    body = [f'<p class="path">{esc(page.rel(folder))}</p>']
    if isinstance(sweep, dict):
        counts = sweep.get("counts", {})
        jobs = sweep.get("jobs", [])
        body.append(
            f"<p>{len(jobs)} jobs ({esc(sweep.get('backend', '?'))}): "
            + ", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items() if v)
            + f"; sweep state: {esc(sweep.get('state', '?'))}, updated "
            f"{esc(sweep.get('updated', '?'))}.</p>"
        )
        unfinished = [j for j in jobs if j.get("state") != "done"]
        if unfinished:
            body.append("<h4>Jobs that did not finish</h4>")
            body.append(
                table(
                    ["job", "state", "error"],
                    ([j.get("name"), j.get("state"), j.get("error")] for j in unfinished),
                )
            )
    if isinstance(agg, dict) and agg.get("cells"):
        body.append("<h4>Mean ± std over seeds</h4>")
        md = folder / "aggregate.md"
        if md.is_file():
            body.append(markdown_to_html(md.read_text(encoding="utf-8"), page=page, base=folder))
        else:
            body.append(raw_json(folder / "aggregate.json", agg, page))
        body.append(f'<p class="path">{esc(agg.get("std", ""))}</p>')
        for rel in agg.get("plots", []):
            body.append(page.image(folder / rel))
    plots = folder / "plots"
    if plots.is_dir():
        body += [page.image(p) for p in page.unused_images(sorted(plots.glob("*")))]
    rel = page.rel(folder)
    page.add(f"sweep {folder.name if rel == '.' else rel}", "\n".join(body))
