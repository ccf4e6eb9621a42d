"""The ``physid`` command line (Typer). Commands are thin: parse, call one library function.

System-specific commands live in the marked sections below (``# --- three-body ---`` etc.);
each imports its experiment module lazily so that ``physid --help`` stays fast.

Errors: any :class:`physid.errors.PhysidError` and any usage error (bad option value, missing
argument, unknown command) prints one line on stderr and exits with code 1. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from physid.errors import ConfigError, DataError, PhysidError

__all__ = [
    "app",
    "main",
    "DeviceOption",
    "SeedOption",
    "ProgressOption",
    "RunArgument",
    "load_run_config",
    "system_module",
    "fail",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str) -> None:
    """Print ``Error: message`` on stderr and exit with code 1."""
    typer.echo(f"Error: {_one_line(message)}", err=True)
    raise typer.Exit(1)


# Typer may vendor click (typer >= 0.22) or use it directly: find its UsageError either way.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def _is_usage_error(exc: BaseException) -> bool:
    # "physid fit" with no subcommand shows the help (click's NoArgsIsHelpError): leave it.
    return isinstance(exc, _UsageError) and type(exc).__name__ != "NoArgsIsHelpError"


class _PhysidGroup(TyperGroup):
    """The root group: turns physid errors and usage errors into one line and exit code 1."""

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
        except PhysidError as exc:
            fail(str(exc))
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


app = typer.Typer(
    cls=_PhysidGroup,
    name="physid",
    help="Identify physical systems from trajectories with differentiable ODE solvers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
simulate_app = typer.Typer(help="Generate a trajectory data set (.npz) from a simulator.")
fit_app = typer.Typer(help="Fit a model to a system's data; writes a run directory.")
control_app = typer.Typer(help="Drive a simulator with a controller built from a fitted model.")
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

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _check_device(value: str) -> str:
    v = value.strip().lower()
    if not _DEVICE_RE.match(v):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N.")
    return v


DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        callback=_check_device,
        help="Where tensors live: auto (CUDA when available), cpu, cuda or cuda:N.",
    ),
]
"""``device: DeviceOption = "auto"``; turn it into a torch device with
:func:`physid.device.resolve_device`."""

SeedOption = Annotated[int, typer.Option("--seed", help="Random seed.")]
"""``seed: SeedOption = 0``."""

ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars (on a terminal).")
]
"""``progress: ProgressOption = True``."""

RunArgument = Annotated[
    Path,
    typer.Argument(
        metavar="RUN", help="A run directory written by 'physid fit'.", show_default=False
    ),
]


# ---- dispatch on a run's system ---------------------------------------------------------------

_SYSTEM_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def _known_systems() -> list[str]:
    try:
        pkg = importlib.import_module("physid.models.experiments")
    except ModuleNotFoundError:
        return []
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(pkg.__path__)
        if not m.name.startswith("_")
    )


def system_module(system: str) -> ModuleType:
    """The experiment module of ``system``: ``"three-body"`` → ``models.experiments.three_body``.

    Raises:
        ConfigError: physid has no experiment module for ``system``.
    """
    if not isinstance(system, str) or not _SYSTEM_RE.match(system):
        raise ConfigError(f"{system!r} is not a system name.")
    name = f"physid.models.experiments.{system.replace('-', '_')}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, "models", "physid.models.experiments"):
            raise
        known = ", ".join(_known_systems()) or "none"
        raise ConfigError(f"physid knows no system {system!r} (known: {known}).") from exc


def load_run_config(run: Path) -> dict[str, Any]:
    """Read ``run/config.json`` and check it names a system.

    Raises:
        DataError: ``run`` is not a directory, has no readable ``config.json``, or the config
            has no ``"system"``.
    """
    from physid._io import load_json

    if not run.exists():
        raise DataError(f"run directory {run} does not exist.")
    if not run.is_dir():
        raise DataError(f"{run} is not a run directory.")
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{run} is not a run directory: it has no config.json.")
    cfg = load_json(cfg_path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("system"), str):
        raise DataError(f"{cfg_path} does not name a system.")
    return cfg


def _call(module: ModuleType, func: str, *args: Any) -> Any:
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"{module.__name__} does not provide {func}().")
    return fn(*args)


@app.command("evaluate")
def evaluate_cmd(run: RunArgument) -> None:
    """Extrapolation metrics and plots of a fitted run (written into RUN)."""
    cfg = load_run_config(run)
    _call(system_module(cfg["system"]), "evaluate", run)


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
    out: Annotated[Path, typer.Option("-o", "--out", help="The video file to write (.mp4).")],
) -> None:
    """Render a video of a run's predictions, or of a data set's trajectories."""
    if not source.exists():
        raise DataError(f"{source} does not exist: give a run directory or a data set (.npz).")
    if source.is_file():
        from physid.data import load_dataset

        ds = load_dataset(source)
        system = ds.metadata.get("system")
        if not isinstance(system, str):
            raise DataError(f"{source}'s metadata does not name a system.")
        _call(system_module(system), "render_dataset", source, out)
        return
    cfg = load_run_config(source)
    _call(system_module(cfg["system"]), "render", source, out)


# --- three-body ---


@simulate_app.command("three-body")
def simulate_three_body(
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Random unequal-mass systems from this seed (default: the paper's)."
        ),
    ] = None,
    n_trajectories: Annotated[
        int, typer.Option("--n-trajectories", min=1, help="Systems to simulate (needs --seed).")
    ] = 1,
    out: Annotated[
        Path | None, typer.Option("--out", help="The .npz to write (default data/three-body-…).")
    ] = None,
) -> None:
    """Simulate the three-body data (train: 1000 points on [0, 1]; test: 2000 on [0, 2])."""
    from physid.models.experiments import three_body

    path = three_body.simulate(out, seed=seed, n_trajectories=n_trajectories)
    typer.echo(str(path))


@fit_app.command("three-body")
def fit_three_body(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="ode (unknown masses), node (the paper's), node-pair (learned pair forces), "
            "lstm or lstm-aug.",
        ),
    ] = "ode",
    method: Annotated[
        str, typer.Option("--method", help="Gradient method: naive, adjoint, seminorm or aca.")
    ] = "aca",
    solver: Annotated[str, typer.Option("--solver", help="ODE solver (adaptive).")] = "dopri5",
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance (training).")] = 1e-7,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance (training).")] = 1e-7,
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Epochs (ode, node).")] = 100,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Adam learning rate (default 0.1; node-pair 0.01)."),
    ] = None,
    betas: Annotated[
        tuple[float, float], typer.Option("--betas", help="Adam betas (ode, node).")
    ] = (0.5, 0.5),
    lr_decay: Annotated[
        float, typer.Option("--lr-decay", help="Learning-rate factor per epoch (ode, node).")
    ] = 0.95,
    loss_weight_base: Annotated[
        float, typer.Option("--loss-weight-base", help="The loss weights time t by BASE**t.")
    ] = 0.01,
    node_scaling: Annotated[
        str,
        typer.Option(
            "--node-scaling",
            help="NODE conditioning: none (the paper), inputs, inputs+outputs.",
        ),
    ] = "none",
    lstm_epochs: Annotated[
        int, typer.Option("--lstm-epochs", min=0, help="Epochs (lstm, lstm-aug).")
    ] = 5000,
    lstm_lr: Annotated[float, typer.Option("--lstm-lr", help="Learning rate (lstm).")] = 0.01,
    lstm_lr_decay: Annotated[
        float, typer.Option("--lstm-lr-decay", help="Learning-rate factor per epoch (lstm).")
    ] = 0.999,
    lstm_hidden: Annotated[int, typer.Option("--lstm-hidden", min=1, help="LSTM width.")] = 64,
    system_seed: Annotated[
        int | None,
        typer.Option("--system-seed", help="Fit a random system from this seed (default: paper)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="A data set from 'physid simulate three-body'.")
    ] = None,
    trajectory: Annotated[
        int, typer.Option("--trajectory", min=0, help="Which system of --data.")
    ] = 0,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Parent of runs.")] = Path("runs"),
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Run folder name (default from the options).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")
    ] = 1,
    resume: Annotated[
        bool,
        typer.Option("--resume/--fresh", help="Continue an interrupted run, or start afresh."),
    ] = True,
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Stop after this many seconds.")
    ] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    progress: ProgressOption = True,
) -> None:
    """Fit a three-body model (Table 5 of the ACA paper); prints the run directory."""
    from physid.models.experiments import three_body

    config = three_body.FitConfig(
        model=model,
        method=method,
        solver=solver,
        rtol=rtol,
        atol=atol,
        epochs=epochs,
        lr=lr,
        betas=betas,
        lr_decay=lr_decay,
        loss_weight_base=loss_weight_base,
        node_scaling=node_scaling,
        lstm_epochs=lstm_epochs,
        lstm_lr=lstm_lr,
        lstm_lr_decay=lstm_lr_decay,
        lstm_hidden=lstm_hidden,
        system_seed=system_seed,
        data=None if data is None else str(data),
        trajectory=trajectory,
        runs_dir=str(runs_dir),
        run_name=run_name,
        threads=threads,
        resume=resume,
        time_limit=time_limit,
        seed=seed,
        device=device,
        progress=progress,
    )
    typer.echo(str(three_body.fit(config)))


# --- acrobot ---


@simulate_app.command("acrobot")
def simulate_acrobot(
    seed: SeedOption = 0,
    n_per_control: Annotated[
        int, typer.Option("--n-per-control", min=1, help="Trajectories per constant control (9).")
    ] = 128,
    n_steps: Annotated[
        int, typer.Option("--n-steps", min=1, help="Control periods (0.05 s) per trajectory.")
    ] = 32,
    out: Annotated[
        Path | None, typer.Option("--out", help="The .npz to write (default data/acrobot-…).")
    ] = None,
) -> None:
    """Simulate the seminorm paper's acrobot data: 9 constant controls, random initial states."""
    from physid.models.experiments import acrobot

    path = acrobot.simulate(out, seed=seed, n_per_control=n_per_control, n_steps=n_steps)
    typer.echo(str(path))


@fit_app.command("acrobot")
def fit_acrobot(
    model: Annotated[str, typer.Option("--model", help="The model: symoden.")] = "symoden",
    method: Annotated[
        str, typer.Option("--method", help="Gradient method: naive, adjoint, seminorm or aca.")
    ] = "adjoint",
    preset: Annotated[
        str, typer.Option("--preset", help="SymODEN size: default (small) or paper (509,108).")
    ] = "default",
    paper: Annotated[
        bool,
        typer.Option("--paper", help="The paper's setting: paper preset, 128/control, 50 epochs."),
    ] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", min=0, help="Epochs.")] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Windows per batch.")
    ] = 256,
    n_per_control: Annotated[
        int | None, typer.Option("--n-per-control", min=1, help="Trajectories per control.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="An existing data set (default: simulate).")
    ] = None,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", min=1, help="Cap batches per epoch (tests).")
    ] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Parent of runs.")] = Path("runs"),
    seed: SeedOption = 0,
    progress: ProgressOption = True,
) -> None:
    """Fit Symplectic ODE-Net to the acrobot; prints the run directory."""
    from physid.models.experiments import acrobot

    if model != "symoden":
        raise ConfigError(f"the acrobot is fitted with --model symoden, not {model!r}.")
    options: dict[str, Any] = {
        "method": method,
        "batch_size": batch_size,
        "max_batches": max_batches,
        "runs_dir": str(runs_dir),
        "seed": seed,
        "progress": progress,
        "data": None if data is None else str(data),
    }
    if not paper:
        options["preset"] = preset
    if epochs is not None:
        options["epochs"] = epochs
    if n_per_control is not None:
        options["n_per_control"] = n_per_control
    config = acrobot.FitConfig.paper(**options) if paper else acrobot.FitConfig(**options)
    typer.echo(str(acrobot.fit(config)))


@control_app.command("acrobot")
def control_acrobot(
    run: Annotated[
        Path | None, typer.Option("--run", help="A fitted acrobot run directory.")
    ] = None,
    oracle: Annotated[
        bool, typer.Option("--oracle", help="Use the true V, M, g instead of a run.")
    ] = False,
    damping: Annotated[
        float | None,
        typer.Option("--damping", min=0.0, help="Damping rate k [1/s] of u = -g⁺ k M q̇ (4)."),
    ] = None,
    input_damping: Annotated[
        float | None,
        typer.Option("--input-damping", min=0.0, help="Use u = -K_d q̇ with this K_d instead."),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Control periods (0.05 s).")] = 400,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default RUN/control).")
    ] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write an MP4.")] = True,
) -> None:
    """Energy-shaping swing-up of the true acrobot from a learned (or the true) model."""
    import json

    from physid.control import InputDamping, MassDamping
    from physid.models.experiments import acrobot

    options: dict[str, Any] = {"steps": steps, "video": video}
    if damping is not None and input_damping is not None:
        raise ConfigError("give --damping or --input-damping, not both.")
    if damping is not None:
        options["damping"] = MassDamping(damping)
    if input_damping is not None:
        options["damping"] = InputDamping(input_damping)
    if oracle:
        record = acrobot.oracle_control(out or Path("runs") / "acrobot-oracle-control", **options)
    elif run is None:
        raise ConfigError("give --run RUN (a fitted acrobot run) or --oracle.")
    else:
        load_run_config(run)
        record = acrobot.control(run, out=out, **options)
    keys = ("success", "final_measure", "energy")
    typer.echo(json.dumps({k: record[k] for k in keys}))


# --- hopper ---


@simulate_app.command("hopper")
def simulate_hopper(
    seed: Annotated[int, typer.Option("--seed", help="Data seed (123 as in the reference).")] = 123,
    n_trajectories: Annotated[
        int, typer.Option("--n-trajectories", min=2, help="Trajectories (the paper: 10,000).")
    ] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", help="The .npz to write (default data/hopper-…).")
    ] = None,
) -> None:
    """Simulate the MuJoCo hopper data set of Rubanova et al. (zero control, random states)."""
    from physid.models.experiments import hopper

    typer.echo(str(hopper.simulate(n_trajectories, seed, out)))


@fit_app.command("hopper")
def fit_hopper(
    model: Annotated[str, typer.Option("--model", help="The model: latent-ode.")] = "latent-ode",
    observed: Annotated[
        float, typer.Option("--observed", help="Observed fraction per trajectory: 0.1, 0.2, 0.5.")
    ] = 0.1,
    method: Annotated[
        str, typer.Option("--method", help="Gradient method: naive, adjoint, seminorm or aca.")
    ] = "aca",
    preset: Annotated[
        str, typer.Option("--preset", help="default (CPU budget) or paper (GPU, 300 epochs).")
    ] = "default",
    epochs: Annotated[int | None, typer.Option("--epochs", min=0, help="Epochs.")] = None,
    n_trajectories: Annotated[
        int | None, typer.Option("--n-trajectories", min=2, help="Trajectories to generate.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="An existing data set (default: simulate).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="The run directory (default runs/hopper-…).")
    ] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run folders go.")] = Path(
        "runs"
    ),
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where generated data sets are cached.")
    ] = Path("data"),
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
) -> None:
    """Fit a latent ODE to irregularly-sampled hopper trajectories; prints the run directory."""
    from physid.models.experiments import hopper

    if model != "latent-ode":
        raise ConfigError(f"the hopper is fitted with --model latent-ode, not {model!r}.")
    config = hopper.FitConfig(
        observed=observed,
        method=method,
        preset=preset,
        epochs=epochs,
        n_trajectories=n_trajectories,
        data=None if data is None else str(data),
        threads=threads,
        run_dir=None if run_dir is None else str(run_dir),
        runs_dir=str(runs_dir),
        data_dir=str(data_dir),
        seed=seed,
        device=device,
        progress=progress,
    )
    typer.echo(str(hopper.fit(config)))


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
    device: DeviceOption = "auto",
) -> None:
    """Time, NFE, backward memory and gradient error of every gradient method (and torchdiffeq)."""
    from rich.console import Console

    from physid.device import resolve_device
    from physid.models.experiments import bench_gradients as bench

    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}.")
    bench.run(
        out,
        tuple(problems) if problems else bench.PROBLEMS,
        repeats=repeats,
        device=resolve_device(device),
        quick=quick,
        with_torchdiffeq=torchdiffeq,
        console=Console(width=max(Console().width, 150)),
    )
    typer.echo(f"wrote {out / 'gradients.json'}, {out / 'gradients.md'} and plots")


# --- sweep ---


def _set_options(values: list[str] | None) -> dict[str, Any]:
    from physid.sweep import parse_value

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
    Exit code 1 if a job failed.
    """
    from rich.console import Console

    from physid import sweep

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
        raise PhysidError(
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
    from physid import sweep

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
    from physid.report import build_report

    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    path = build_report(root, out, title=title, embed_run_plots=embed_run_plots)
    typer.echo(str(path))


def main() -> None:
    """The ``physid`` console script."""
    app()
