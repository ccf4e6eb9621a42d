"""Result sections: markdown tables (``physid bench``'s ``gradients.md``, the scripts'
``table5.md``...) with the figures of their folder and their JSON twin, and the figures and
JSON tables no other section covers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from physid._io import load_json
from physid.app.report.markdown import markdown_to_html
from physid.app.report.page import Page, esc, table
from physid.errors import DataError

__all__ = ["load", "raw_json", "json_block", "results_section", "other_section"]

_MAX_JSON_CHARS = 60_000


def load(path: Path) -> Any:
    """A JSON file's content, ``None`` if it is missing or malformed."""
    try:
        return load_json(path)
    except DataError:
        return None


def raw_json(path: Path, data: Any, page: Page) -> str:
    """A JSON document, collapsed (truncated past 60k characters)."""
    text = json.dumps(data, indent=1)
    if len(text) > _MAX_JSON_CHARS:
        text = text[:_MAX_JSON_CHARS] + "\n… (truncated)"
    return (
        f"<details><summary>{esc(page.rel(path))} (raw JSON)</summary>"
        f"<pre>{esc(text)}</pre></details>"
    )


def json_block(path: Path, data: Any, page: Page) -> str:
    """A JSON file as a table when it is a list of flat records or a small mapping, followed by
    its raw text (collapsed)."""
    body = ""
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        keys = list(dict.fromkeys(k for r in data for k in r))[:14]
        body = table(keys, ([r.get(k) for k in keys] for r in data[:200]))
    elif isinstance(data, dict) and 0 < len(data) <= 60:
        body = table(["key", "value"], ([k, v] for k, v in data.items()))
    return body + raw_json(path, data, page)


def results_section(md: Path, page: Page) -> None:
    """A markdown file (its images embedded), the other figures of its folder, and its JSON
    twin (``table5.md`` → ``table5.json``)."""
    folder = md.parent
    body = [f'<p class="path">{esc(page.rel(md))}</p>']
    body.append(markdown_to_html(md.read_text(encoding="utf-8"), page=page, base=folder, shift=2))
    body += [page.image(p) for p in page.unused_images(sorted(folder.iterdir()))]
    twin = md.with_suffix(".json")
    if twin.is_file():
        data = load(twin)
        if data is not None:
            body.append(raw_json(twin, data, page))
    page.add(page.rel(md), "\n".join(body))


def other_section(folder: Path, items: Sequence[Path], page: Page) -> None:
    """Figures and JSON files of a folder that no other section showed."""
    body = [f'<p class="path">{esc(page.rel(folder))}</p>']
    for p in items:
        if p.suffix.lower() == ".json":
            data = load(p)
            if data is not None:
                body.append(f"<h4>{esc(p.name)}</h4>" + json_block(p, data, page))
        else:
            body.append(page.image(p))
    page.add(f"other: {page.rel(folder)}", "\n".join(body))
