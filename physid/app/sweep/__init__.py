"""Experiment grids: systems x models x methods x seeds (x any other option), run as jobs.

A grid comes from a TOML file (:func:`load_grid`) or from options (:func:`make_grid`)::

    out = "sweeps/table5"          # optional: where the sweep writes (relative to the current
                                   # folder, like every path of the options; --out wins)

    [grid]                         # axes: every combination is one job
    systems = ["three-body"]
    models = ["ode", "node"]
    methods = ["naive", "adjoint", "aca"]
    seeds = [0, 1, 2]
    # rtol = [1e-5, 1e-7]          # any other fit option with a list of values

    [grid.hopper]                  # axes for one system only (replace the common ones)
    observed = [0.1, 0.2, 0.5]

    [options]                      # fixed options of every job
    epochs = 100

    [options.three-body]           # fixed options of one system's jobs
    rtol = 1e-7

The package, by concept:

- :mod:`~physid.app.sweep.grid`: the grid (TOML, options);
- :mod:`~physid.app.sweep.jobs`: its jobs, named and validated against each system's fit options
  (:mod:`physid.app.registry`: ``get(system).Config``); this package knows no system;
- :mod:`~physid.app.sweep.status` and :mod:`~physid.app.sweep.process`: one job, one Python
  process (``python -m physid.app.sweep JOB.json``) running
  ``registry.get(system).fit(Config.from_dict(options))``, its state in ``status.json``;
- :mod:`~physid.app.sweep.schedule`: which jobs run, in a local pool or as Ray tasks;
  ``sweep.json``;
- :mod:`~physid.app.sweep.aggregate` and :mod:`~physid.app.sweep.plots`: mean ± std over seeds.

A job's state lives in its run directory, ``OUT/runs/<name>/``: ``job.json`` (what to run),
``status.json`` (``running``, ``done``, ``failed`` or ``interrupted``, with the error message;
written atomically) and ``job.log`` (the job's output). Running the same sweep again skips the
jobs that are ``done`` with the same options and runs the others again; an interrupted (SIGINT,
SIGTERM) or failed fit resumes from its last checkpoint. At the end ``OUT/sweep.json`` lists
every job and its state, and :func:`aggregate` writes mean ± std over seeds of every number in
the runs' ``summary.json`` per grid cell: ``aggregate.json``, ``aggregate.md`` and ``plots/``.
"""

from __future__ import annotations

from physid.app.sweep.aggregate import DISPLAY_METRICS, aggregate, format_aggregate, format_stats
from physid.app.sweep.grid import Grid, load_grid, make_grid, parse_value
from physid.app.sweep.jobs import SWEEP_FORMAT, Job, expand
from physid.app.sweep.process import execute_job
from physid.app.sweep.schedule import SweepResult, print_result, run_sweep
from physid.app.sweep.status import STATES, read_status

__all__ = [
    "SWEEP_FORMAT",
    "STATES",
    "DISPLAY_METRICS",
    "Grid",
    "Job",
    "SweepResult",
    "load_grid",
    "make_grid",
    "parse_value",
    "expand",
    "run_sweep",
    "print_result",
    "execute_job",
    "read_status",
    "aggregate",
    "format_aggregate",
    "format_stats",
]
