"""physid report: one static HTML page of runs, sweeps, benchmarks and control results, checked
as HTML and, when Debian's chromium is installed, as a screenshot from a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from physid.app import sweep
from physid.app.cli import app
from physid.app.report import build_report, markdown_to_html
from physid.errors import DataError
from physid.runs import RunSummary

runner = CliRunner()


class _Tables(HTMLParser):
    """Collects every table as a list of rows of cell texts, and every img src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _png(path: Path, colour: str = "tab:blue") -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0, 1, 4], color=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    return path


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def results(tmp_path) -> Path:
    """A folder like a user's after benchmarks, the table scripts, a sweep and a control run."""
    root = tmp_path / "results"
    bench = root / "bench_results"
    (bench).mkdir(parents=True)
    (bench / "gradients.md").write_text(
        "**toy** — dz/dt = k z\n\n"
        "| candidate | T | NFE bwd | grad rel. err |\n|---|---|---|---|\n"
        "| physid aca | 1 | 24 | 3.92e-06 |\n| physid adjoint | 1 | 32 | 2.12e-06 |\n\n"
        "![the ACA paper's Figure 6 toy](toy_error_vs_T.png)\n"
    )
    _json(bench / "gradients.json", {"toy": [{"candidate": "physid aca", "T": 1}]})
    _png(bench / "toy_error_vs_T.png")
    _png(bench / "memory_vs_steps.png", "tab:red")
    table5 = root / "bench_results" / "table5"
    table5.mkdir()
    (table5 / "table5.md").write_text(
        "# Table 5\n\n| model | test MSE (ours) | paper |\n|---|---:|---:|\n"
        "| ode-aca | 0.0007 ± 0.0001 | 0.0007 ± 0.0005 |\n"
    )
    _json(bench / "three_body" / "gradient_vs_tol.json", [{"rtol": 1e-5, "err": 1.75}])
    _png(bench / "three_body" / "gradient_vs_tol.png")

    # a sweep: two methods x two seeds of fake runs, aggregated
    sw = root / "sweeps" / "table5"
    for method, mses in (("aca", [0.5, 0.7]), ("naive", [2.0, 4.0])):
        for seed, mse in enumerate(mses):
            run = sw / "runs" / f"three-body-ode-{method}-{seed}"
            cfg = {"system": "three-body", "model": "ode", "method": method, "seed": seed}
            _json(run / "config.json", cfg)
            _json(run / "summary.json", {**cfg, "test_mse": mse, "nfe_forward": 10 + seed})
            _json(run / "status.json", {"state": "done", "error": None})
            _png(run / "plots" / "loss.png")
    bad = sw / "runs" / "three-body-ode-adjoint-0"
    _json(bad / "config.json", {"system": "three-body", "model": "ode", "method": "adjoint"})
    (bad / "metrics.jsonl").write_text("")
    _json(bad / "status.json", {"state": "failed", "error": "the solver gave up at t=0.87"})
    sweep.aggregate(sw, metrics=["test_mse", "nfe_forward"])
    _json(
        sw / "sweep.json",
        {
            "format": sweep.SWEEP_FORMAT,
            "state": "finished",
            "backend": "local",
            "counts": {"done": 4, "failed": 1},
            "jobs": [
                {
                    "name": "three-body-ode-adjoint-0",
                    "state": "failed",
                    "error": "the solver gave up at t=0.87",
                },
                {"name": "three-body-ode-aca-0", "state": "done", "error": None},
            ],
        },
    )

    ctl = root / "runs" / "acrobot-symoden-adjoint-0"
    _json(
        ctl / "config.json",
        {"system": "acrobot", "model": "symoden", "method": "adjoint", "seed": 0},
    )
    summary = RunSummary("acrobot", "symoden", "adjoint", 0, test_mse=0.002, nfe_backward=1234)
    _json(ctl / "summary.json", summary.to_dict())
    _json(
        ctl / "control" / "control.json",
        {
            "success": True,
            "final_measure": 1.9999,
            "energy": {"work_abs": 39.5},
            "files": {"plot": "control_states.png"},
        },
    )
    _png(ctl / "control" / "control_states.png", "tab:green")
    return root


def test_report_gathers_every_table_and_figure(results):
    page = build_report(results)
    assert page == results.resolve() / "report.html"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    parsed = _Tables()
    parsed.feed(text)
    heads = {tuple(t[0]) for t in parsed.tables if t}
    assert ("candidate", "T", "NFE bwd", "grad rel. err") in heads
    assert ("model", "test MSE (ours)", "paper") in heads
    assert ("system", "model", "method", "n", "test_mse", "nfe_forward") in heads
    cells = {tuple(row) for t in parsed.tables for row in t}
    assert ("three-body", "ode", "aca", "2", "0.6 ± 0.14", "10.5 ± 0.71") in cells
    assert ("three-body", "ode", "naive", "2", "3 ± 1.4", "10.5 ± 0.71") in cells
    assert ("three-body-ode-adjoint-0", "failed", "the solver gave up at t=0.87") in cells
    assert any(
        row[:2] == ["runs/acrobot-symoden-adjoint-0/control/control.json", "yes"]
        for t in parsed.tables
        for row in t
    )
    assert any(
        row[0] == "sweeps/table5/runs/three-body-ode-aca-1" for t in parsed.tables for row in t
    )
    # Figures are embedded (self-contained); run plots are linked relative to the page.
    embedded = [s for s in parsed.images if s.startswith("data:image/png;base64,")]
    assert len(embedded) == len(parsed.images) >= 6  # toy, memory, tol, 2 aggregate, control
    assert "sweeps/table5/runs/three-body-ode-aca-0/plots/loss.png" in parsed.links
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_report_embeds_run_plots_on_request(results, tmp_path):
    page = build_report(results, tmp_path / "elsewhere" / "r.html", embed_run_plots=True)
    parsed = _Tables()
    parsed.feed(page.read_text())
    assert len(parsed.images) >= 6 + 4
    assert not any("loss.png" in link for link in parsed.links)


def test_report_of_an_empty_folder_says_so(tmp_path):
    with pytest.raises(DataError, match="nothing to report"):
        build_report(tmp_path)


def test_markdown_rendering():
    """markdown-it-py's CommonMark and pipe tables, headings shifted, numeric cells marked,
    raw HTML escaped."""
    out = markdown_to_html(
        "# Title\n\nSome `code` and **bold**.\n\n| a | b |\n|---|--:|\n| x | 1.5 |\n"
        "| 2 ± 0.1 | y |\n\n- one\n- two\n\n```\nraw <tag>\n```\n\n<script>x</script>\n"
    )
    assert "<h2>Title</h2>" in out and "<h1>" not in out
    assert "<code>code</code>" in out and "<strong>bold</strong>" in out
    parsed = _Tables()
    parsed.feed(out)
    assert parsed.tables == [[["a", "b"], ["x", "1.5"], ["2 ± 0.1", "y"]]]
    assert '<td class="num">1.5</td>' in out and '<td class="num">2 ± 0.1</td>' in out
    assert "<td>x</td>" in out and '<th class="num">b</th>' in out
    assert re.search(r"<li>one</li>\s*<li>two</li>", out)
    assert re.search(r"<pre><code>raw &lt;tag&gt;\s*</code></pre>", out)
    assert "<script>" not in out and "&lt;script&gt;" in out


def test_markdown_links_and_images_are_relative_to_the_page(tmp_path):
    from physid.app.report.page import Page

    folder = tmp_path / "results" / "bench"
    _png(folder / "fig one.png")
    page = Page(tmp_path / "results", tmp_path / "site" / "index.html", embed_run_plots=False)
    out = markdown_to_html(
        "See [the table](sub/t.md#row), [docs](https://example.org/a) and [top](#top).\n\n"
        "![the figure](fig%20one.png)\n",
        page=page,
        base=folder,
    )
    parsed = _Tables()
    parsed.feed(out)
    assert parsed.links == ["../results/bench/sub/t.md#row", "https://example.org/a", "#top"]
    assert len(parsed.images) == 1 and parsed.images[0].startswith("data:image/png;base64,")
    assert "<figcaption>the figure</figcaption>" in out
    assert "<p><figure>" not in out  # an image alone is a figure, not a paragraph
    assert (folder / "fig one.png").resolve() in page.used_images


def test_cli_report(results, tmp_path):
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(results), "-o", str(out), "--title", "Tables"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out.resolve())
    assert "<title>Tables</title>" in out.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 1
    assert [ln for ln in result.output.splitlines() if ln.strip()] == [
        f"Error: nothing to report under {empty}: no run directory, sweep, markdown table, "
        "control.json or figure."
    ]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(
    _chromium() is None,
    reason="no headless browser: install Debian's chromium (apt-get install -y chromium)",
)
def test_report_renders_in_a_headless_browser(results, tmp_path):
    from matplotlib.image import imread

    page = build_report(results)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,2000",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    grey = pixels.mean(axis=-1)
    assert grey.std() > 0.05  # not a blank page
    assert (grey < 0.5).mean() > 0.005  # dark pixels: text and lines
    # colour: the table header shading and the embedded figures
    assert (np.ptp(pixels, axis=-1) > 0.1).mean() > 0.001
