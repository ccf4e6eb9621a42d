"""One static HTML page of everything under a folder: runs, sweeps, benchmarks, control.

:func:`build_report` walks a folder and gathers:

- **results**: every markdown file outside run directories (``physid bench gradients``'s
  ``gradients.md``, the scripts' ``table5.md``, ``table4.md``, ``seminorm.md``, ...), rendered
  with its tables and the images it names, followed by the other figures of its folder and its
  JSON twin (collapsed);
- **sweeps**: every ``sweep.json`` / ``aggregate.json`` (``physid sweep``): the mean ± std table,
  the jobs that did not finish and why, the aggregate plots;
- **control**: every ``control.json`` (``physid control``), with its state plot;
- **runs**: every run directory (``config.json`` + ``summary.json``), one table per system, with
  links to (or embedded) run plots;
- **other**: figures and JSON tables in folders none of the above covers.

Figures are embedded as base64 data (the page is one self-contained file), except run plots,
which are linked relative to the page unless ``embed_run_plots``. No JavaScript, no network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from physid._io import load_json, write_text_atomic
from physid.errors import DataError

__all__ = ["build_report", "markdown_to_html"]

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
_RUN_FILES = {"config.json", "summary.json", "status.json", "job.json", "evaluation.json"}
_SWEEP_FILES = {"sweep.json", "aggregate.json", "aggregate.md"}
_MAX_JSON_CHARS = 60_000
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
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.failed,td.interrupted{color:#b00020;font-weight:600}
td.done{color:#1b7a1b}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.8em;color:#555}
code,pre{background:#f3f3f3;font-size:.85em}
pre{padding:.6em;overflow-x:auto}
nav ul{columns:2}
.path{color:#666;font-size:.85em}
.scroll{overflow-x:auto}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _fmt(value: Any) -> str:
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
            return "[" + ", ".join(_fmt(v) for v in value) + "]"
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in list(value.items())[:6]) + "}"
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], classes: Any = None) -> str:
    """An HTML table; cells are escaped unless they are ``("raw", html)`` tuples."""
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{_esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for value in row:
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "raw":
                out.append(f"<td>{value[1]}</td>")
                continue
            cls = ""
            if _is_num(value):
                cls = ' class="num"'
            elif isinstance(value, str) and value in ("done", "failed", "interrupted"):
                cls = f' class="{value}"'
            out.append(f"<td{cls}>{_esc(_fmt(value))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


class _Page:
    """Builds the page; knows where it will be written (for relative links)."""

    def __init__(self, root: Path, out: Path, embed_run_plots: bool):
        self.root = root
        self.out = out
        self.embed_run_plots = embed_run_plots
        self.used_images: set[Path] = set()
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def href(self, path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), self.out.parent.resolve())).as_posix()

    def image(self, path: Path, caption: str | None = None, *, embed: bool = True) -> str:
        path = path.resolve()
        self.used_images.add(path)
        mime = _IMAGE_TYPES.get(path.suffix.lower())
        if mime is None or not path.is_file():
            return ""
        if embed:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            src = f"data:{mime};base64,{data}"
        else:
            src = _esc(self.href(path))
        cap = caption if caption is not None else self.rel(path)
        return (
            f'<figure><img src="{src}" alt="{_esc(cap)}" loading="lazy">'
            f"<figcaption>{_esc(cap)}</figcaption></figure>"
        )

    def add(self, title: str, body: str) -> None:
        anchor = _anchor(title)
        taken = {a for a, _, _ in self.sections}
        base, i = anchor, 2
        while anchor in taken:
            anchor, i = f"{base}-{i}", i + 1
        self.sections.append((anchor, title, body))


# ---- markdown ---------------------------------------------------------------------------------

_INLINE_CODE = re.compile(r"`([^`]+)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?!\w)")


def _inline(text: str, page: _Page | None, base: Path | None) -> str:
    codes: list[str] = []

    def keep_code(m: re.Match[str]) -> str:
        codes.append(f"<code>{_esc(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep_code, text)
    images: list[str] = []

    def keep_image(m: re.Match[str]) -> str:
        alt, src = m.group(1), m.group(2)
        if page is not None and base is not None and "://" not in src:
            images.append(page.image(base / src, alt or src))
        else:
            images.append(f'<img src="{_esc(src)}" alt="{_esc(alt)}">')
        return f"\x01{len(images) - 1}\x01"

    text = _IMAGE.sub(keep_image, text)
    text = _esc(text)

    def link(m: re.Match[str]) -> str:
        label, target = m.group(1), html.unescape(m.group(2))
        if page is not None and base is not None and "://" not in target:
            target = page.href(base / target)
        return f'<a href="{_esc(target)}">{label}</a>'

    text = _LINK.sub(link, text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    text = re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)
    return re.sub("\x01(\\d+)\x01", lambda m: images[int(m.group(1))], text)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells = re.split(r"(?<!\\)\|", line)
    return [c.strip().replace("\\|", "|") for c in cells]


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def markdown_to_html(
    text: str, *, page: _Page | None = None, base: Path | None = None, shift: int = 1
) -> str:
    """A small markdown subset as HTML: headings, pipe tables, lists, fenced code, images
    (embedded when ``page`` and the markdown file's folder ``base`` are given), links, inline
    code, bold and italics. Headings are shifted down by ``shift`` levels."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para), page, base)}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append(f"<pre>{_esc(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush()
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{_inline(heading.group(2), page, base)}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            flush()
            head = _split_row(stripped)
            aligns = [
                "right" if c.strip().endswith(":") and not c.strip().startswith(":") else ""
                for c in _split_row(lines[i + 1])
            ]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append(_split_row(lines[j]))
                j += 1
            cells = ['<div class="scroll"><table><thead><tr>']
            cells += [f"<th>{_inline(h, page, base)}</th>" for h in head]
            cells.append("</tr></thead><tbody>")
            for row in rows:
                cells.append("<tr>")
                for k, c in enumerate(row):
                    right = (k < len(aligns) and aligns[k] == "right") or re.fullmatch(
                        r"[-+]?[\d.]+(e[-+]?\d+)?( ± [\d.e+-]+)?%?", c
                    )
                    cls = ' class="num"' if right else ""
                    cells.append(f"<td{cls}>{_inline(c, page, base)}</td>")
                cells.append("</tr>")
            cells.append("</tbody></table></div>")
            out.append("".join(cells))
            i = j
            continue
        if re.match(r"^\s*[-*+]\s+", line):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*+]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*+]\s+", "", lines[i]))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t, page, base)}</li>" for t in items))
            out.append("</ul>")
            continue
        if not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


# ---- gathering --------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    try:
        return load_json(path)
    except DataError:
        return None


def _walk(root: Path, skip: Path) -> tuple[list[Path], list[Path]]:
    """(folders, files) under root, sorted, hidden folders left out."""
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


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        (folder / "summary.json").is_file() or (folder / "metrics.jsonl").is_file()
    )


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _json_block(path: Path, data: Any, page: _Page) -> str:
    """A JSON file as a table when it is a list of flat records or a flat mapping; the raw
    text (collapsed) otherwise."""
    body = ""
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        keys = list(dict.fromkeys(k for r in data for k in r))[:14]
        body = _table(keys, ([r.get(k) for k in keys] for r in data[:200]))
    elif isinstance(data, dict):
        if 0 < len(data) <= 60:
            body = _table(["key", "value"], ([k, v] for k, v in data.items()))
    text = json.dumps(data, indent=1)
    if len(text) > _MAX_JSON_CHARS:
        text = text[:_MAX_JSON_CHARS] + "\n… (truncated)"
    return (
        body
        + f"<details><summary>{_esc(page.rel(path))} (raw JSON)</summary>"
        + f"<pre>{_esc(text)}</pre></details>"
    )


def _results_section(md: Path, page: _Page) -> None:
    folder = md.parent
    body = [f'<p class="path">{_esc(page.rel(md))}</p>']
    body.append(markdown_to_html(md.read_text(encoding="utf-8"), page=page, base=folder, shift=2))
    twin = md.with_suffix(".json")
    figures = [
        p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in _IMAGE_TYPES and p.resolve() not in page.used_images
    ]
    body += [page.image(p) for p in figures]
    if twin.is_file():
        data = _load(twin)
        if data is not None:
            text = json.dumps(data, indent=1)
            if len(text) > _MAX_JSON_CHARS:
                text = text[:_MAX_JSON_CHARS] + "\n… (truncated)"
            body.append(
                f"<details><summary>{_esc(page.rel(twin))} (raw JSON)</summary>"
                f"<pre>{_esc(text)}</pre></details>"
            )
    page.add(f"{page.rel(md)}", "\n".join(body))


def _aggregate_table(agg: Mapping[str, Any]) -> str:
    from physid.sweep import format_stats

    axes = list(agg.get("axes", []))
    metrics = list(agg.get("metrics", []))
    rows = []
    for c in agg.get("cells", []):
        row: list[Any] = [c["cell"].get(a) for a in axes] + [c.get("n")]
        row += [("raw", _esc(format_stats(c.get("metrics", {}).get(m)))) for m in metrics]
        rows.append(row)
    return _table([*axes, "n", *metrics], rows)


def _sweep_section(folder: Path, page: _Page) -> None:
    sweep = _load(folder / "sweep.json")
    agg = _load(folder / "aggregate.json")
    body = [f'<p class="path">{_esc(page.rel(folder))}</p>']
    if isinstance(sweep, dict):
        counts = sweep.get("counts", {})
        jobs = sweep.get("jobs", [])
        body.append(
            f"<p>{len(jobs)} jobs ({_esc(sweep.get('backend', '?'))}): "
            + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in counts.items() if v)
            + f"; sweep state: {_esc(sweep.get('state', '?'))}, updated "
            f"{_esc(sweep.get('updated', '?'))}.</p>"
        )
        unfinished = [j for j in jobs if j.get("state") != "done"]
        if unfinished:
            body.append("<h4>Jobs that did not finish</h4>")
            body.append(
                _table(
                    ["job", "state", "error"],
                    ([j.get("name"), j.get("state"), j.get("error")] for j in unfinished),
                )
            )
    if isinstance(agg, dict) and agg.get("cells"):
        body.append("<h4>Mean ± std over seeds</h4>")
        body.append(_aggregate_table(agg))
        body.append(f'<p class="path">{_esc(agg.get("std", ""))}</p>')
        for rel in agg.get("plots", []):
            body.append(page.image(folder / rel))
    for p in sorted((folder / "plots").glob("*")) if (folder / "plots").is_dir() else []:
        if p.resolve() not in page.used_images and p.suffix.lower() in _IMAGE_TYPES:
            body.append(page.image(p))
    rel = page.rel(folder)
    page.add(f"sweep {folder.name if rel == '.' else rel}", "\n".join(body))


def _control_section(files: Sequence[Path], page: _Page) -> None:
    records = [(p, _load(p)) for p in files]
    records = [(p, r) for p, r in records if isinstance(r, dict)]
    if not records:
        return
    keys: list[str] = []
    for _, r in records:
        for k, v in r.items():
            if k not in keys and k not in ("files", "final_state", "initial_state", "criterion"):
                if _is_num(v) or isinstance(v, bool | str) or isinstance(v, dict):
                    keys.append(k)
    keys = keys[:12]
    body = [
        _table(
            ["control.json", *keys], ([page.rel(p), *(r.get(k) for k in keys)] for p, r in records)
        )
    ]
    for p, r in records:
        plot = (r.get("files") or {}).get("plot") if isinstance(r.get("files"), dict) else None
        candidates = [p.parent / plot] if plot else []
        candidates += sorted(p.parent.glob("*.png"))
        for c in dict.fromkeys(candidates):
            if c.is_file() and c.resolve() not in page.used_images:
                body.append(page.image(c))
    page.add("control", "\n".join(body))


def _run_sections(runs: Sequence[Path], page: _Page) -> None:
    from physid.sweep import DISPLAY_METRICS

    by_system: dict[str, list[tuple[Path, dict[str, Any], dict[str, Any], dict[str, Any]]]] = {}
    for run in runs:
        cfg = _load(run / "config.json")
        summary = _load(run / "summary.json") if (run / "summary.json").is_file() else {}
        status = _load(run / "status.json") if (run / "status.json").is_file() else {}
        cfg = cfg if isinstance(cfg, dict) else {}
        summary = summary if isinstance(summary, dict) else {}
        status = status if isinstance(status, dict) else {}
        system = str(cfg.get("system") or summary.get("system") or "?")
        by_system.setdefault(system, []).append((run, cfg, summary, status))
    for system, items in sorted(by_system.items()):
        present = {k for _, _, s, _ in items for k, v in s.items() if _is_num(v)}
        metrics = [m for m in DISPLAY_METRICS if m in present][:8]
        head = ["run", "model", "method", "seed", "state", "epochs", *metrics, "plots"]
        rows = []
        for run, cfg, summary, status in items:
            plots = sorted((run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
            if page.embed_run_plots and plots:
                inner = "".join(page.image(p, p.name) for p in plots)
                cell = ("raw", f"<details><summary>{len(plots)} plots</summary>{inner}</details>")
            else:
                links = " ".join(
                    f'<a href="{_esc(page.href(p))}">{_esc(p.stem)}</a>' for p in plots
                )
                cell = ("raw", links)
            state = status.get("state") or ("done" if summary else "no summary")
            rows.append(
                [
                    page.rel(run),
                    cfg.get("model", summary.get("model")),
                    cfg.get("method", summary.get("method")),
                    cfg.get("seed", summary.get("seed")),
                    state,
                    summary.get("epochs_completed"),
                    *(summary.get(m) for m in metrics),
                    cell,
                ]
            )
        errors = [(page.rel(r), st.get("error")) for r, _, _, st in items if st.get("error")]
        body = _table(head, rows)
        if errors:
            body += "<h4>Errors</h4>" + _table(["run", "error"], errors)
        page.add(f"runs: {system}", body)


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
    page = _Page(root_dir, page_path, embed_run_plots)
    folders, files = _walk(root_dir, page_path)
    runs = [f for f in folders if _is_run(f)]
    sweeps = [
        f for f in folders if any((f / n).is_file() for n in ("sweep.json", "aggregate.json"))
    ]
    controls = [p for p in files if p.name == "control.json"]
    outside = [p for p in files if not _inside(p.parent, runs)]

    markdowns = [
        p
        for p in outside
        if p.suffix.lower() == ".md"
        and not (p.name in _SWEEP_FILES and p.parent in sweeps)
        and p.name.lower() != "readme.md"
    ]
    for md in markdowns:
        _results_section(md, page)
    for folder in sweeps:
        _sweep_section(folder, page)
    _control_section(controls, page)
    if runs:
        _run_sections(runs, page)

    # Whatever is left outside runs: figures and JSON, per folder.
    covered_json = {md.with_suffix(".json") for md in markdowns} | set(controls)
    leftovers: dict[Path, list[Path]] = {}
    for p in outside:
        if p.parent in sweeps and (p.name in _SWEEP_FILES or p.parent.name == "plots"):
            continue
        if p.suffix.lower() in _IMAGE_TYPES and p.resolve() not in page.used_images:
            leftovers.setdefault(p.parent, []).append(p)
        elif p.suffix.lower() == ".json" and p not in covered_json and p.name not in _RUN_FILES:
            leftovers.setdefault(p.parent, []).append(p)
    for folder, items in sorted(leftovers.items()):
        if _inside(folder, sweeps) and folder.name == "plots":
            continue
        body = [f'<p class="path">{_esc(page.rel(folder))}</p>']
        for p in items:
            if p.suffix.lower() == ".json":
                data = _load(p)
                if data is not None:
                    body.append(f"<h4>{_esc(p.name)}</h4>" + _json_block(p, data, page))
            else:
                body.append(page.image(p))
        page.add(f"other: {page.rel(folder)}", "\n".join(body))

    if not page.sections:
        raise DataError(
            f"nothing to report under {root}: no run directory, sweep, markdown table, "
            "control.json or figure."
        )
    nav = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t, _ in page.sections)
    sections = "".join(
        f'<section id="{a}"><h2>{_esc(t)}</h2>\n{body}\n</section>\n'
        for a, t, body in page.sections
    )
    from physid._io import package_version

    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f'<p class="path">{_esc(root_dir)} — physid {_esc(package_version())}</p>'
        f"<nav><h2>Contents</h2><ul>{nav}</ul></nav>\n{sections}</body></html>\n"
    )
    write_text_atomic(page_path, document)
    return page_path
