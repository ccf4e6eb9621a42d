"""The page builder: sections, figures (embedded or linked relative to the page), HTML tables,
and the final self-contained document (no JavaScript, no network)."""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Page", "IMAGE_TYPES", "esc", "table", "is_num"]

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1150px;padding:0 1em;color:#1d1d1f;background:#fff;line-height:1.45}
h1{border-bottom:3px solid #3465a4;padding-bottom:.2em}
h2{border-bottom:1px solid #ccc;margin-top:2em;padding-bottom:.15em}
h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em}
th,td{border:1px solid #c8c8c8;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#e8eef7}
tr:nth-child(even) td{background:#f7f7f7}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.failed,td.interrupted{color:#b00020;font-weight:600}
td.done{color:#1b7a1b}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.8em;color:#555}
code,pre{background:#f3f3f3;font-size:.85em}
pre{padding:.6em;overflow-x:auto}
pre code{background:none;font-size:1em}
nav ul{columns:2}
.path{color:#666;font-size:.85em}
.scroll{overflow-x:auto}
"""
_STATES = ("done", "failed", "interrupted")


def esc(text: Any) -> str:
    """``text`` escaped for HTML text and attributes."""
    return html.escape(str(text), quote=True)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def fmt(value: Any) -> str:
    """A JSON value as a short cell text (4 significant digits, ``—`` for none)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        if len(value) <= 6 and all(isinstance(v, int | float | str) for v in value):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in list(value.items())[:6]) + "}"
    return str(value)


def is_num(value: Any) -> bool:
    """A number that is not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; cells are escaped unless they are ``("raw", html)`` tuples. Numbers are
    right-aligned, job states coloured."""
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for value in row:
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "raw":
                out.append(f"<td>{value[1]}</td>")
                continue
            cls = ""
            if is_num(value):
                cls = ' class="num"'
            elif isinstance(value, str) and value in _STATES:
                cls = f' class="{value}"'
            out.append(f"<td{cls}>{esc(fmt(value))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class Page:
    """One HTML page being built; knows where it will be written (for relative links).

    Args:
        root: the folder the page reports on (paths are shown relative to it).
        out: where the page will be written.
        embed_run_plots: embed run plots instead of linking them.
    """

    def __init__(self, root: Path, out: Path, embed_run_plots: bool):
        self.root = root
        self.out = out
        self.embed_run_plots = embed_run_plots
        self.used_images: set[Path] = set()
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)

    def rel(self, path: Path) -> str:
        """``path`` relative to the reported folder (for display)."""
        return os.path.relpath(path, self.root)

    def href(self, path: Path) -> str:
        """``path`` relative to the page (for links)."""
        return Path(os.path.relpath(path.resolve(), self.out.parent.resolve())).as_posix()

    def image(self, path: Path, caption: str | None = None, *, embed: bool = True) -> str:
        """A figure: the image embedded as base64 data (or linked relative to the page) with a
        caption; empty if ``path`` is not an image file. Marks the image as used."""
        path = path.resolve()
        self.used_images.add(path)
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None or not path.is_file():
            return ""
        if embed:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            src = f"data:{mime};base64,{data}"
        else:
            src = esc(self.href(path))
        cap = caption if caption is not None else self.rel(path)
        return (
            f'<figure><img src="{src}" alt="{esc(cap)}" loading="lazy">'
            f"<figcaption>{esc(cap)}</figcaption></figure>"
        )

    def unused_images(self, paths: Iterable[Path]) -> list[Path]:
        """The image files among ``paths`` not shown yet."""
        return [
            p
            for p in paths
            if p.suffix.lower() in IMAGE_TYPES and p.resolve() not in self.used_images
        ]

    def add(self, title: str, body: str) -> None:
        """Append a section (its anchor made unique)."""
        anchor = _anchor(title)
        taken = {a for a, _, _ in self.sections}
        base, i = anchor, 2
        while anchor in taken:
            anchor, i = f"{base}-{i}", i + 1
        self.sections.append((anchor, title, body))

    def document(self, title: str, subtitle: str) -> str:
        """The whole page: title, contents, sections."""
        nav = "".join(f'<li><a href="#{a}">{esc(t)}</a></li>' for a, t, _ in self.sections)
        sections = "".join(
            f'<section id="{a}"><h2>{esc(t)}</h2>\n{body}\n</section>\n'
            for a, t, body in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>"
            f'<p class="path">{esc(subtitle)}</p>'
            f"<nav><h2>Contents</h2><ul>{nav}</ul></nav>\n{sections}</body></html>\n"
        )
