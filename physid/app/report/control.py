"""The control section: every ``control.json`` (``physid control``) in one table, with the
state plot of each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from physid.app.report.page import Page, is_num, table
from physid.app.report.results import load

__all__ = ["control_section"]

_HIDDEN = ("files", "final_state", "initial_state", "criterion")


def control_section(files: Sequence[Path], page: Page) -> None:
    """One table of the control records (their scalar entries), then their plots."""
    records = [(p, r) for p in files if isinstance(r := load(p), dict)]
    if not records:
        return
    keys: list[str] = []
    for _, r in records:
        for k, v in r.items():
            if k not in keys and k not in _HIDDEN:
                if is_num(v) or isinstance(v, bool | str | dict):
                    keys.append(k)
    keys = keys[:12]
    rows = ([page.rel(p), *(r.get(k) for k in keys)] for p, r in records)
    body = [table(["control.json", *keys], rows)]
    for p, r in records:
        files_entry = r.get("files")
        plot = files_entry.get("plot") if isinstance(files_entry, dict) else None
        candidates = [p.parent / plot] if plot else []
        candidates += sorted(p.parent.glob("*.png"))
        for c in dict.fromkeys(candidates):
            if c.is_file() and c.resolve() not in page.used_images:
                body.append(page.image(c))
    page.add("control", "\n".join(body))
