"""Markdown → HTML with markdown-it-py (CommonMark plus GitHub pipe tables; raw HTML escaped).

On top of markdown-it-py's own rendering, for a markdown file shown in a report:

- headings move down by ``shift`` levels (the file's ``#`` sits under the page's section title);
- relative links point to the same file from the page (relative to the page, not to the
  markdown file); absolute URLs and ``#anchors`` are kept;
- relative images are embedded (:meth:`physid.app.report.page.Page.image`), as figures with
  their alt text as caption; a paragraph holding only images is not wrapped in ``<p>``;
- tables scroll sideways, and right-aligned or numeric cells get ``class="num"``.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from physid.app.report.page import Page

__all__ = ["markdown_to_html"]

_NUMBER = re.compile(r"[-+]?[\d.]+(e[-+]?\d+)?( ± [\d.e+-]+)?%?")


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("table_open", lambda *_: '<div class="scroll"><table>\n')
    md.add_render_rule("table_close", lambda *_: "</table></div>\n")
    md.add_render_rule("image", _render_image)
    return md


def _render_image(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    token = tokens[idx]
    page, base = env.get("page"), env.get("base")
    path = _local(token.attrGet("src"))
    if page is None or base is None or path is None:
        return str(self.image(tokens, idx, options, env))
    alt = self.renderInlineAsText(token.children or [], options, env)
    return str(page.image(base / path, alt or path))


def _local(target: Any) -> str | None:
    """The file path of a relative link target (decoded), ``None`` for URLs and anchors."""
    if not isinstance(target, str) or not target:
        return None
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    return urllib.parse.unquote(parts.path)


def _relink(token: Token, page: Page, base: Path) -> None:
    href = token.attrGet("href")
    path = _local(href)
    if path is None:
        return
    fragment = urllib.parse.urlsplit(str(href)).fragment
    target = urllib.parse.quote(page.href(base / path))
    token.attrSet("href", target + (f"#{fragment}" if fragment else ""))


def _align(token: Token, content: str) -> None:
    style = token.attrGet("style")
    if style is not None:
        token.attrs.pop("style", None)
    right = style == "text-align:right"
    if right or (token.type == "td_open" and _NUMBER.fullmatch(content.strip())):
        token.attrSet("class", "num")


def _only_images(inline: Token) -> bool:
    children = inline.children or []
    return (
        bool(children)
        and all(
            c.type == "image"
            or c.type == "softbreak"
            or (c.type == "text" and not c.content.strip())
            for c in children
        )
        and any(c.type == "image" for c in children)
    )


def markdown_to_html(
    text: str, *, page: Page | None = None, base: Path | None = None, shift: int = 1
) -> str:
    """Markdown as HTML (CommonMark and pipe tables, by markdown-it-py).

    Args:
        text: the markdown.
        page: the page it is shown on; with ``base``, relative images are embedded and
            relative links rewritten to be relative to the page.
        base: the folder of the markdown file (what its relative paths are relative to).
        shift: headings move down by this many levels (``#`` becomes ``<h2>`` with 1).
    """
    md = _parser()
    env: dict[str, Any] = {"page": page, "base": base}
    tokens = md.parse(text, env)
    for i, token in enumerate(tokens):
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1:]) + shift)}"
        elif token.type in ("th_open", "td_open"):
            _align(token, tokens[i + 1].content if i + 1 < len(tokens) else "")
        elif token.type == "paragraph_open" and i + 2 < len(tokens):
            if _only_images(tokens[i + 1]):
                token.hidden = tokens[i + 2].hidden = True
        elif token.type == "inline" and page is not None and base is not None:
            for child in token.children or []:
                if child.type == "link_open":
                    _relink(child, page, base)
    return str(md.renderer.render(tokens, md.options, env))
