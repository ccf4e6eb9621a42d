"""The ``physid`` command line (Typer). Commands are thin: parse, call one library function.

The per-system commands (``simulate``, ``fit``, ``control``) are built from the registry
(:mod:`physid.app.registry`): each system's option dataclasses declare the options, and a
system's module is imported only when one of its commands runs or shows its help.

Errors: any :class:`physid.errors.PhysidError`, any usage error (bad option value, missing
argument, unknown command) and any failed file operation (``OSError``) prints one line on stderr
and exits with code 1; an interrupted fit (Ctrl-C, SIGTERM) exits with code 130 after saving
its checkpoint. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from physid.app import registry
from physid.errors import ConfigError, DataError, FitInterrupted, PhysidError

__all__ = ["app", "main", "fail"]

INTERRUPT_EXIT = 130


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = 1) -> None:
    """Print ``Error: message`` on stderr and exit with ``code`` (1)."""
    typer.echo(f"Error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


# Typer may vendor click (typer >= 0.22) or use it directly: find its UsageError either way.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def _is_usage_error(exc: BaseException) -> bool:
    # "physid fit" with no subcommand shows the help (click's NoArgsIsHelpError): leave it.
    return isinstance(exc, _UsageError) and type(exc).__name__ != "NoArgsIsHelpError"


def _os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    return f"cannot access {where}: {exc.strerror or exc}."


class _PhysidGroup(TyperGroup):
    """The root group: physid errors, usage errors and failed file operations become one line
    and exit code 1; an interrupt becomes exit code 130."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:
            if _is_usage_error(exc):
                _usage_fail(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FitInterrupted as exc:
            fail(str(exc), FitInterrupted.exit_code)
        except PhysidError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted.", INTERRUPT_EXIT)
        except OSError as exc:
            fail(_os_message(exc))
        except Exception as exc:
            if _is_usage_error(exc):
                _usage_fail(exc)
            raise


def _usage_fail(exc: Any) -> None:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    fail(f"{message}{hint}")


def _version_callback(value: bool) -> None:
    if value:
        from physid._io import package_version

        typer.echo(f"physid {package_version()}")
        raise typer.Exit()


# ---- per-system commands, built from the registry ----------------------------------------------


class _SystemGroup(TyperGroup):
    """A group with one subcommand per registered system (``physid fit three-body``...)."""

    kind = ""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(registry.names(control=self.kind == "control"))

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.list_commands(ctx):
            return None
        return _LazyCommand(self.kind, name)


class _LazyCommand(TyperCommand):
    """A system's command, built (and its module imported) only when it is run or asked for
    its own help; listing it in its group's help needs only the registry's title."""

    def __init__(self, kind: str, name: str):
        title = registry.title(name)
        super().__init__(name, help=title, short_help=title)
        self.kind = kind

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        real = _system_command(self.kind, self.name or "")
        return real.make_context(info_name, args, parent=parent, **extra)


class _SimulateGroup(_SystemGroup):
    kind = "simulate"


class _FitGroup(_SystemGroup):
    kind = "fit"


class _ControlGroup(_SystemGroup):
    kind = "control"


def _system_command(kind: str, name: str) -> Any:
    from physid.app.options import command_from_options

    experiment = registry.get(name)
    title = registry.title(name)
    if kind == "simulate":

        def simulate(options: Any) -> None:
            typer.echo(str(experiment.simulate(options)))

        return command_from_options(
            name,
            experiment.Simulate,
            simulate,
            help=f"Simulate a data set (.npz): {title} Prints its path.",
        )
    if kind == "fit":

        def fit(config: Any) -> None:
            typer.echo(str(experiment.fit(config)))

        return command_from_options(
            name,
            experiment.Config,
            fit,
            help=f"Fit a model, then evaluate it: {title} Prints the run directory; "
            "an interrupted fit exits with code 130 and resumes when run again.",
        )
    controllable = registry.get_control(name)

    def control(options: Any) -> None:
        record = controllable.control(options)
        keys = ("success", "final_measure", "energy", "out")
        typer.echo(json.dumps({k: record[k] for k in keys if k in record}))

    return command_from_options(
        name,
        controllable.Control,
        control,
        help=f"Drive the true simulator with a controller from a fitted model: {title}",
    )


app = typer.Typer(
    cls=_PhysidGroup,
    name="physid",
    help="Identify physical systems from trajectories with differentiable ODE solvers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
simulate_app = typer.Typer(
    cls=_SimulateGroup, help="Generate a trajectory data set (.npz) from a simulator."
)
fit_app = typer.Typer(cls=_FitGroup, help="Fit a model to a system's data; writes a run directory.")
control_app = typer.Typer(
    cls=_ControlGroup, help="Drive a simulator with a controller built from a fitted model."
)
bench_app = typer.Typer(help="Benchmarks: print tables, write JSON and plots.")
sweep_app = typer.Typer(help="Run a grid of systems x models x methods x seeds.")
for _sub, _name in (
    (simulate_app, "simulate"),
    (fit_app, "fit"),
    (control_app, "control"),
    (bench_app, "bench"),
    (sweep_app, "sweep"),
):
    app.add_typer(_sub, name=_name, no_args_is_help=True)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the physid version and exit.",
        ),
    ] = False,
) -> None:
    """Identify physical systems from trajectories with differentiable ODE solvers
    (naive, adjoint, seminorm and ACA gradients)."""


# ---- reusable options -------------------------------------------------------------------------


def _check_device(value: str) -> str:
    from physid.device import check_device_name

    try:
        return check_device_name(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        callback=_check_device,
        help="Where tensors live: auto (CUDA when available), cpu, cuda or cuda:N.",
    ),
]

ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars (on a terminal).")
]

RunArgument = Annotated[
    Path,
    typer.Argument(
        metavar="RUN", help="A run directory written by 'physid fit'.", show_default=False
    ),
]


# ---- commands on runs and data sets -----------------------------------------------------------


@app.command("evaluate")
def evaluate_cmd(run: RunArgument) -> None:
    """Test metrics and plots of a fitted run (written into RUN: summary.json, plots/)."""
    experiment, opened = registry.for_run(run)
    summary = experiment.evaluate(opened)
    typer.echo(json.dumps({"run": str(opened), "test_mse": summary.test_mse}))


@app.command("render")
def render_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="RUN|DATASET",
            help="A run directory, or a data set (.npz) written by 'physid simulate'.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="The video to write (.mp4; default RUN/video.mp4, or the data set's path "
            "with .mp4).",
        ),
    ] = None,
    trajectory: Annotated[
        int, typer.Option("--trajectory", min=0, help="Which trajectory of a data set.")
    ] = 0,
) -> None:
    """Render a video of a run's predictions, or of a data set's trajectory; prints its path."""
    if not source.exists():
        raise DataError(f"{source} does not exist: give a run directory or a data set (.npz).")
    if source.is_file():
        path = registry.for_dataset(source).render_dataset(source, out, trajectory=trajectory)
    else:
        experiment, run = registry.for_run(source)
        path = experiment.render(run, out)
    typer.echo(str(path))


# --- bench ---


@bench_app.command("gradients")
def bench_gradients(
    problems: Annotated[
        list[str] | None,
        typer.Option("--problem", "-p", help="toy, three-body, node, memory (repeatable)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for JSON and plots.")] = Path(
        "bench_results"
    ),
    repeats: Annotated[int, typer.Option(help="Timed repeats after one warm-up.")] = 3,
    quick: Annotated[bool, typer.Option(help="Smaller memory horizons (a smoke run).")] = False,
    torchdiffeq: Annotated[
        bool, typer.Option(help="Compare with torchdiffeq when it is installed.")
    ] = True,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="Add physid's compiled fast path on three-body and node (compile seconds "
            "reported apart, not in the timed median).",
        ),
    ] = True,
    diffrax: Annotated[
        bool | None,
        typer.Option(
            "--diffrax/--no-diffrax",
            help="Add diffrax (RecursiveCheckpointAdjoint, BacksolveAdjoint) on three-body and "
            "node, in a one-thread subprocess, jit compile reported apart  [default: on when "
            "the bench-jax extra is installed]",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="Torch threads (default: torch's own; the diffrax peer always uses one)."
        ),
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Time, NFE, backward memory and gradient error of every gradient method, beside
    physid's compiled fast path, torchdiffeq and diffrax."""
    import torch
    from rich.console import Console

    from physid.app import bench_gradients as bench
    from physid.device import resolve_device

    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}.")
    if threads is not None:
        torch.set_num_threads(threads)
    bench.run(
        out,
        tuple(problems) if problems else bench.PROBLEMS,
        repeats=repeats,
        device=resolve_device(device),
        quick=quick,
        with_torchdiffeq=torchdiffeq,
        with_compile=compile_,
        with_diffrax=diffrax,
        console=Console(width=max(Console().width, 150)),
    )
    typer.echo(f"wrote {out / 'gradients.json'}, {out / 'gradients.md'} and plots")


# --- sweep ---


def _set_options(values: list[str] | None) -> dict[str, Any]:
    from physid.app.sweep import parse_value

    options: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. epochs=2), got {item!r}.")
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    return options


@sweep_app.command("run")
def sweep_run(
    grid_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="GRID.toml",
            help="A grid file (TOML: grid axes and fixed options).",
            show_default=False,
        ),
    ] = None,
    systems: Annotated[
        list[str] | None,
        typer.Option("--system", "-s", help="three-body, acrobot, hopper (repeatable)."),
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Models (repeatable).")
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", help="naive, adjoint, seminorm, aca (repeatable)."),
    ] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="Seeds (repeatable).")] = None,
    set_options: Annotated[
        list[str] | None,
        typer.Option("--set", help="A fixed option KEY=VALUE of every job (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: the grid's out, or sweeps/…)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Jobs at a time (default: CPUs).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Run the jobs on this Ray cluster (auto, local, or ADDRESS)."
        ),
    ] = None,
    cpus_per_job: Annotated[
        float, typer.Option("--cpus-per-job", min=0.0, help="CPUs per Ray task.")
    ] = 1.0,
    gpus_per_job: Annotated[
        float, typer.Option("--gpus-per-job", min=0.0, help="GPUs per Ray task.")
    ] = 0.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the jobs and their state; run nothing.")
    ] = False,
    progress: ProgressOption = True,
) -> None:
    """Run a grid of fits (systems x models x methods x seeds) as independent jobs.

    Done jobs are skipped; failed or interrupted ones run again and resume.
    Writes OUT/runs/JOB/, OUT/sweep.json, OUT/aggregate.json|md, OUT/plots/.
    Exit code 1 if a job failed or was interrupted; 130 if the sweep itself is interrupted.
    """
    from rich.console import Console

    from physid.app import sweep
    from physid.app.sweep.grid import check_out

    base = sweep.load_grid(grid_file) if grid_file is not None else None
    grid = sweep.make_grid(
        systems or [],
        models=models or [],
        methods=methods or [],
        seeds=seeds or [],
        options=_set_options(set_options),
        base=base,
    )
    if out is None:
        if grid.out is not None:
            out = Path(grid.out)
        else:
            out = Path("sweeps") / (grid_file.stem if grid_file is not None else "sweep")
    out = check_out(out)
    console = Console(width=max(Console().width, 120))
    if dry_run:
        for job in sweep.expand(grid, out):
            status = sweep.read_status(job.run_dir) or {}
            typer.echo(f"{job.name}\t{status.get('state', 'new')}\t{job.run_dir}")
        return
    try:
        result = sweep.run_sweep(
            grid,
            out,
            workers=workers,
            ray_address=ray_address,
            cpus_per_job=cpus_per_job,
            gpus_per_job=gpus_per_job,
            progress=progress,
            console=console,
        )
    except KeyboardInterrupt:
        raise FitInterrupted(
            f"the sweep was interrupted; its running jobs are recorded as interrupted in "
            f"{out / 'sweep.json'}: run the same command again to resume them."
        ) from None
    if result.failed:
        first = result.outcomes[result.failed[0]]
        raise PhysidError(
            f"{len(result.failed)} of {len(result.jobs)} jobs did not finish (first: "
            f"{result.failed[0]}: {first.get('error')}); see {result.out / 'sweep.json'}."
        )


@sweep_app.command("aggregate")
def sweep_aggregate(
    root: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="A sweep folder, or any folder of run directories.",
            show_default=False,
        ),
    ],
    metrics: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Columns of the table (summary.json keys, repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write (default DIR).")
    ] = None,
) -> None:
    """Mean ± std over seeds per grid cell of the runs' summary.json; markdown, JSON, plots."""
    from physid.app import sweep

    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    result = sweep.aggregate(root, out=out, metrics=metrics or None)
    typer.echo(sweep.format_aggregate(result))
    typer.echo(f"wrote {(out or root) / 'aggregate.json'}, aggregate.md and plots/")


@app.command("report")
def report_cmd(
    root: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="A folder of runs, sweeps and benchmark results.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The HTML file (default DIR/report.html).")
    ] = None,
    title: Annotated[str, typer.Option("--title", help="The page's title.")] = "physid report",
    embed_run_plots: Annotated[
        bool,
        typer.Option(
            "--embed-run-plots/--link-run-plots",
            help="Embed every run's plots (bigger page) or link to them.",
        ),
    ] = False,
) -> None:
    """One static HTML page of every run, sweep, benchmark table and figure under DIR."""
    from physid.app.report import build_report

    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    path = build_report(root, out, title=title, embed_run_plots=embed_run_plots)
    typer.echo(str(path))


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The ``physid`` console script. SIGTERM is handled as Ctrl-C: a fit saves its checkpoint,
    records the interruption and exits with code 130."""
    signal.signal(signal.SIGTERM, _sigterm)
    app()
