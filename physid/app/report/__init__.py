"""One static HTML page of everything under a folder: runs, sweeps, benchmarks, control.

:func:`build_report` walks a folder and gathers:

- **results**: every markdown file outside run directories (``physid bench gradients``'s
  ``gradients.md``, the scripts' ``table5.md``, ``table4.md``, ``seminorm.md``, ...), rendered
  with its tables and the images it names, followed by the other figures of its folder and its
  JSON twin (collapsed) — :mod:`~physid.app.report.results`;
- **sweeps**: every ``sweep.json`` / ``aggregate.json`` (``physid sweep``): the mean ± std table,
  the jobs that did not finish and why, the aggregate plots — :mod:`~physid.app.report.sweeps`;
- **control**: every ``control.json`` (``physid control``), with its state plot —
  :mod:`~physid.app.report.control`;
- **runs**: every run directory (:meth:`physid.runs.RunDir.find`), one table per system of its
  :class:`~physid.runs.RunSummary`, with links to (or embedded) run plots —
  :mod:`~physid.app.report.runs`;
- **other**: figures and JSON tables in folders none of the above covers.

Markdown is rendered by markdown-it-py (:mod:`~physid.app.report.markdown`); the page itself by
:mod:`~physid.app.report.page`. Figures are embedded as base64 data (the page is one
self-contained file), except run plots, which are linked relative to the page unless
``embed_run_plots``. No JavaScript, no network.
"""

from __future__ import annotations

from physid.app.report.build import build_report
from physid.app.report.markdown import markdown_to_html

__all__ = ["build_report", "markdown_to_html"]
