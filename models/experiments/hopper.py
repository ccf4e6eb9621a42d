"""The latent-ODE MuJoCo hopper experiment (Rubanova et al. 2019; ACA paper, Table 4), end to end.

- :func:`simulate` writes the data set (:mod:`physid.envs.hopper`'s protocol) to an ``.npz``.
- ``fit`` trains a :class:`physid.models.latent_ode.LatentODE` on irregularly-sampled windows
  (``int(100 s)`` observed points per trajectory, re-drawn every batch) with the chosen gradient
  method for the latent ODE solve, through :func:`physid.training.train`.
- ``evaluate`` computes the test MSE over the scored points of every test trajectory (all 100
  for interpolation, the second half for extrapolation), in normalised units (the papers report
  it ×1e-2), with the test masks drawn once from a fixed seed and stored in the run
  (``test_mask.npy``, ``test_target.npy``), beside model-free baselines on the same points
  (:mod:`physid.baselines`: observed mean, linear interpolation; last value and linear
  extrapolation); plots reconstructions and baselines against the truth per feature.
- ``render`` replays a test trajectory in MuJoCo beside the model's reconstruction (joint
  positions decoded and un-normalised) as an MP4.
- :class:`Hopper` is the system's experiment (the registry's ``hopper``): its ``simulate``,
  ``fit``, ``evaluate`` and ``render`` are what ``physid`` runs.

Presets: ``paper`` is the published setting (10,000 trajectories, 300 epochs, batch 50, the
paper's network sizes; meant for a GPU); ``default`` keeps the protocol (Adamax 1e-2 decaying per
iteration to a 1e-3 floor, KL annealing, 3 samples, dopri5 at rtol 1e-3 / atol 1e-4) with
smaller networks, 5,000 trajectories and 10,000 iterations of batch 20 — meant as the fitted
regime on one CPU thread (docs/reproduce-hopper.md says what changed and why); ``tiny`` exists
for tests. The training loop, the task masks and the scoring live in
:mod:`physid.models.latent_fit` and :mod:`physid.models.latent_tasks` (shared with the
gymnasium MuJoCo tasks of :mod:`physid.models.experiments.mujoco`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from physid.envs import hopper as H
from physid.models import latent_fit as LF
from physid.models.latent_ode import PRESET_SIZES, LatentODE, LatentODEConfig
from physid.models.latent_tasks import TASKS, model_mse

from physid.data import TrajectoryDataset, load_dataset
from physid.errors import ConfigError, DataError
from physid.experiment import DTYPES, AbstractExperiment, BaseConfig, SimulateOptions, option
from physid.render import write_video
from physid.runs import RunDir, RunSummary
from physid.training import TrainResult

__all__ = [
    "SYSTEM",
    "MODEL",
    "PRESETS",
    "OBSERVED_FRACTIONS",
    "PAPER_TABLE4",
    "FitConfig",
    "SimulateConfig",
    "Hopper",
    "simulate",
    "load_data",
    "build_model",
    "test_mse",
]

SYSTEM = "hopper"
MODEL = "latent-ode"
OBSERVED_FRACTIONS = (0.1, 0.2, 0.5)

#: Test MSE ×1e-2 of the ACA paper's Table 4 (latent ODE; naive numbers from Rubanova et al.).
PAPER_TABLE4: dict[str, dict[float, float]] = {
    "adjoint": {0.1: 0.47, 0.2: 0.44, 0.5: 0.40},
    "naive": {0.1: 0.36, 0.2: 0.30, 0.5: 0.29},
    "aca": {0.1: 0.31, 0.2: 0.27, 0.5: 0.26},
}


@dataclasses.dataclass(frozen=True)
class _Preset:
    sizes: LatentODEConfig
    n_trajectories: int
    epochs: int
    eval_every: int
    # the training protocol (Rubanova et al.'s values unless a preset says otherwise)
    batch_size: int = 50
    lr: float = 1e-2
    lr_decay: float = 0.999
    lr_min_factor: float = 0.1
    n_samples: int = 3


#: The options a preset fills in where a config leaves them None.
_FROM_PRESET = (
    "n_trajectories",
    "epochs",
    "eval_every",
    "batch_size",
    "lr",
    "lr_decay",
    "lr_min_factor",
    "n_samples",
)

PRESETS: dict[str, _Preset] = {
    "paper": _Preset(PRESET_SIZES["paper"], n_trajectories=10_000, epochs=300, eval_every=10),
    # Meant as the fitted regime on one CPU thread (docs/reproduce-hopper.md): the protocol's
    # loss, optimiser, KL annealing, samples and tolerances, with 5,000 trajectories, batches of
    # 20 (iterations, not samples, limit the fit: per sample, batch 20 learned faster than 50 in
    # bench_results/hopper_explore, and an iteration of 20 costs a bit over half as much) and
    # 10,000 iterations (50 epochs x 200), the learning rate decaying from 1e-2 to its 1e-3
    # floor by iteration ~7,700. The earlier default (1,000 trajectories, batch 50, 960
    # iterations ending at lr 3.8e-3) stayed in the near-constant regime (2-3 dopri5 steps).
    "default": _Preset(
        PRESET_SIZES["default"],
        n_trajectories=5_000,
        epochs=50,
        eval_every=5,
        batch_size=20,
        lr=1e-2,
        lr_decay=0.9997,
        lr_min_factor=0.1,
    ),
    "tiny": _Preset(PRESET_SIZES["tiny"], n_trajectories=20, epochs=2, eval_every=1),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(BaseConfig):
    """Every option of a hopper latent-ODE fit (all recorded in the run's ``config.json``).
    ``None`` means "from the preset" (filled in by :meth:`resolve`).

    The shared options (method, solver, tolerances, seed, device, dtype, threads, epochs, run
    directory, resume, time limit, progress) are :class:`~physid.experiment.BaseConfig`'s; the
    defaults here follow the paper's protocol. The default run directory is
    ``runs/hopper-latent-ode-[preset-][extrap-]obs<pct>-<method>-<seed>``.

    Attributes:
        observed: the observed fraction s of each trajectory's 100 points (0.1, 0.2, 0.5).
        method: gradient method of the latent ODE solve: naive, adjoint, seminorm, aca.
        preset: ``"default"`` (CPU budget), ``"paper"`` (published sizes and budget) or
            ``"tiny"``.
        seed: seeds initialisation, batch order, masks and z0 samples.
        data: an existing data set (``physid simulate hopper``); by default one is generated
            with ``n_trajectories`` and ``data_seed`` and cached in ``data_dir``.
        n_trajectories: trajectories of the generated data set (80% train, 20% test).
        data_seed: seed of the generated data set (123 as in the reference).
        data_dir: where generated data sets are cached.
        task: ``"interpolation"`` (reconstruct every point of the window from ``observed`` of
            them) or ``"extrapolation"`` (observe ``observed`` of the first ``extrap_split`` of
            the window, predict the rest; :mod:`physid.models.latent_tasks`).
        extrap_split: the observable fraction of each window for extrapolation (0.5).
        extrap_loss: extrapolation's training likelihood over ``"all"`` points or only the
            ``"target"`` points (:class:`physid.models.latent_fit.TrainOptions`).
        epochs: training epochs.
        batch_size: trajectories per batch (the protocol: 50; the default preset: 20).
        lr: Adamax learning rate (1e-2), multiplied by ``lr_decay`` every iteration down to
            ``lr * lr_min_factor``.
        n_samples: z0 samples in the training ELBO (3).
        eval_samples: z0 samples when measuring the test MSE (3, as the reference's test loop).
        kl_wait, kl_rate: KL weight 0 for ``kl_wait`` epochs, then ``1 - kl_rate**(e - wait)``.
        solver, rtol, atol: the latent ODE's solver and tolerances (dopri5, 1e-3, 1e-4).
        normalisation: ``"minmax"`` (sound, the default) or ``"reference"`` (the paper's quirk).
        eval_every: test MSE every this many epochs (and at the last epoch).
        test_mask_seed: seed of the fixed test masks.
        snapshots: save the initial model and this many evenly spaced ones along the fit under
            ``<run>/snapshots/`` (for gradient studies along a fitted run; 0: none).
        init_from: start from this snapshot file or run directory's last model instead of a
            fresh initialisation (a warm start; the optimiser and the lr schedule start afresh).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: floating-point type of the model and data (float32, as the reference).
        threads: ``torch.set_num_threads`` for the run (CPU), or None to leave it.
        runs_dir, run_name: the run directory is ``runs_dir/run_name``.
        progress: progress bar; resume: continue an interrupted run; time_limit: seconds.
    """

    system: ClassVar[str] = SYSTEM
    MODELS: ClassVar[tuple[str, ...]] = (MODEL,)
    # Options that may change when an interrupted run is resumed (they do not change the fit).
    RESUME_IGNORE: ClassVar[tuple[str, ...]] = (
        *BaseConfig.RESUME_IGNORE,
        "data_dir",
        "eval_every",
        "snapshots",
    )
    # Options added after runs were made, with the value those runs behaved as.
    RESUME_ADDED: ClassVar[dict[str, Any]] = {
        "dtype": "float32",
        "task": "interpolation",
        "extrap_split": 0.5,
        "extrap_loss": "all",
        "init_from": None,
        "snapshots": 0,
    }
    RECORD_KEYS: ClassVar[tuple[str, ...]] = (
        *BaseConfig.RECORD_KEYS,
        "sizes",
        "n_train",
        "n_test",
        "data_seed_in_file",
    )

    model: str = option(MODEL, help="The latent ODE (the only model).", choices=(MODEL,))
    observed: float = option(0.1, help="Observed fraction of each trajectory's points (0, 1].")
    preset: str = option(
        "default",
        help="default (CPU budget), paper (published sizes and budget) or tiny.",
        choices=tuple(PRESETS),
    )
    seed: int = option(0, help="Seeds initialisation, batch order, masks and z0 samples.")
    data: str | None = option(None, help="A data set from 'physid simulate hopper'.")
    n_trajectories: int | None = option(
        None, help="Trajectories of the generated data set (default: the preset's)."
    )
    data_seed: int = option(123, help="Seed of the generated data set.")
    data_dir: str = option("data", help="Where generated data sets are cached.")
    # None: the preset's; resolve() fills it in, so a built config holds an int.
    epochs: int | None = option(  # type: ignore[assignment]
        None, help="Training epochs (default: the preset's)."
    )
    task: str = option(
        "interpolation",
        help="interpolation (reconstruct the window) or extrapolation (predict its second part).",
        choices=TASKS,
    )
    extrap_split: float = option(
        0.5, help="Extrapolation: the observable fraction of each window (0, 1)."
    )
    extrap_loss: str = option(
        "all",
        help="Extrapolation's training likelihood: over all points or only the target points.",
        choices=LF.EXTRAP_LOSSES,
    )
    batch_size: int | None = option(
        None, help="Trajectories per batch (default: the preset's; the protocol's 50)."
    )
    lr: float | None = option(None, help="Adamax learning rate (default: the preset's, 1e-2).")
    lr_decay: float | None = option(
        None, help="Learning-rate factor per iteration (default: the preset's)."
    )
    lr_min_factor: float | None = option(
        None, help="The learning rate stops decaying at lr x this (default: the preset's, 0.1)."
    )
    n_samples: int | None = option(
        None, help="z0 samples in the training ELBO (default: the preset's, 3)."
    )
    eval_samples: int = option(3, help="z0 samples when measuring the test MSE.")
    kl_wait: int = option(10, help="Epochs with KL weight 0.")
    kl_rate: float = option(0.99, help="KL weight 1 - rate**(epoch - wait) after the wait.")
    rtol: float = option(1e-3, help="Relative tolerance of the latent ODE solve.")
    atol: float = option(1e-4, help="Absolute tolerance of the latent ODE solve.")
    normalisation: str = option(
        "minmax",
        help="minmax (sound) or reference (the paper's (x - min) / max).",
        choices=H.NORMALISATIONS,
    )
    eval_every: int | None = option(
        None, help="Test MSE every this many epochs (default: the preset's)."
    )
    test_mask_seed: int = option(2024, help="Seed of the fixed test masks.")
    snapshots: int = option(
        0, help="Save the initial model and this many evenly spaced ones under RUN/snapshots."
    )
    init_from: str | None = option(
        None, help="Warm start from a snapshot file or a run directory's last model."
    )
    device: str = option("auto", help="Where tensors live: auto, cpu, cuda or cuda:N.")
    dtype: str = option("float32", help="Floating-point type of the model.", choices=tuple(DTYPES))
    threads: int | None = option(None, help="CPU threads for torch (none: torch's default).")

    def resolve(self) -> dict[str, Any]:
        """The preset's data size, budget and training protocol where not given."""
        p = PRESETS.get(self.preset)
        if p is None:
            return {}  # the choices check names the presets
        return {k: getattr(p, k) for k in _FROM_PRESET if getattr(self, k) is None}

    def check(self) -> None:
        if int(self.eval_every or 0) < 1:
            raise ConfigError(f"eval_every must be at least 1, got {self.eval_every}.")
        if self.data is None and int(self.n_trajectories or 0) < 2:
            raise ConfigError(f"n_trajectories must be at least 2, got {self.n_trajectories}.")
        if self.snapshots < 0:
            raise ConfigError(f"snapshots must be >= 0, got {self.snapshots}.")
        self.train_options()  # observed, task, lr schedule, batch and sample counts

    def train_options(self) -> LF.TrainOptions:
        """The training and evaluation options (:class:`physid.models.latent_fit.TrainOptions`).

        Raises:
            ConfigError: an option is out of range.
        """
        return LF.TrainOptions(
            observed=self.observed,
            task=self.task,
            extrap_split=self.extrap_split,
            extrap_loss=self.extrap_loss,
            batch_size=int(self.batch_size or 0),
            lr=float(self.lr or 0.0),
            lr_decay=float(self.lr_decay or 0.0),
            lr_min_factor=float(self.lr_min_factor or 0.0),
            n_samples=int(self.n_samples or 0),
            eval_samples=self.eval_samples,
            kl_wait=self.kl_wait,
            kl_rate=self.kl_rate,
            method=self.method,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            compile=self.compile,
        )

    @property
    def name(self) -> str:
        """``latent-ode-[preset-][extrap-]obs<pct>-<method>``: the run directory is
        ``runs/hopper-latent-ode-[preset-][extrap-]obs<pct>-<method>-<seed>`` unless
        ``run_name``."""
        pct = int(round(100 * self.observed))
        preset = "" if self.preset == "default" else f"{self.preset}-"
        task = "extrap-" if self.task == "extrapolation" else ""
        return f"{self.model}-{preset}{task}obs{pct}-{self.method}"

    @property
    def sizes(self) -> LatentODEConfig:
        """The network sizes of the preset."""
        return PRESETS[self.preset].sizes


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateConfig(SimulateOptions):
    """Options of ``physid simulate hopper`` (default out: ``data/hopper-n<N>-seed<S>.npz``)."""

    n_trajectories: int = option(1_000, help="Trajectories (the paper: 10,000).")
    seed: int = option(123, help="The data seed.")

    def check(self) -> None:
        if self.n_trajectories < 2:
            raise ConfigError(f"n_trajectories must be at least 2, got {self.n_trajectories}.")


# ---- data -------------------------------------------------------------------------------------


def simulate(
    n_trajectories: int = 1_000,
    seed: int = 123,
    out: str | Path | None = None,
    params: H.HopperParams = H.HopperParams(),
) -> Path:
    """Generate the hopper data set and write it (``physid simulate hopper``).

    Args:
        n_trajectories: trajectories (the paper: 10,000).
        seed: the data seed.
        out: the ``.npz`` to write; default ``data/hopper-n<N>-seed<S>.npz``.

    Returns:
        the path written.
    """
    path = Path(out) if out is not None else _cache_path("data", n_trajectories, seed)
    H.generate(n_trajectories, seed=seed, params=params).save(path)
    return path


def _cache_path(data_dir: str | Path, n: int, seed: int) -> Path:
    return Path(data_dir) / f"hopper-n{n}-seed{seed}.npz"


def load_data(cfg: FitConfig) -> TrajectoryDataset:
    """The data set of a (resolved) config: ``cfg.data``, else the cached or freshly generated
    ``n_trajectories``/``data_seed`` set.

    Raises:
        DataError: the file is not a hopper data set.
    """
    if cfg.data is not None:
        ds = load_dataset(cfg.data)
    else:
        n = int(cfg.n_trajectories or 0)
        path = _cache_path(cfg.data_dir, n, cfg.data_seed)
        if not (path.exists() and _is_cached_set(load_dataset(path), n, cfg.data_seed)):
            simulate(n, cfg.data_seed, path)
        ds = load_dataset(path)
    if ds.metadata.get("system") != SYSTEM or ds.state_dim != 14 or ds.t.ndim != 1:
        raise DataError("the data set is not a hopper data set (physid simulate hopper).")
    if "n_train" not in ds.metadata:
        raise DataError("the hopper data set's metadata has no n_train (train/test split).")
    return ds


def _is_cached_set(ds: TrajectoryDataset, n: int, seed: int) -> bool:
    """Whether a cached file is the protocol's set for ``n`` trajectories and ``seed``."""
    return (
        ds.metadata.get("system") == SYSTEM
        and ds.metadata.get("format_version") == H.FORMAT_VERSION
        and ds.metadata.get("seed") == seed
        and ds.n_trajectories == n
        and ds.metadata.get("params")
        == json.loads(json.dumps(dataclasses.asdict(H.HopperParams())))
    )


def _tensors(ds: TrajectoryDataset, cfg: FitConfig, device: torch.device) -> LF.WindowData:
    stats = H.normalisation_of(ds, cfg.normalisation)
    n_train = int(ds.metadata["n_train"])
    y = torch.as_tensor(H.normalise(ds.y, stats), dtype=cfg.torch_dtype, device=device)
    t = torch.as_tensor(ds.t, dtype=cfg.torch_dtype, device=device)
    return LF.WindowData(
        t=t, train=y[:n_train], test=y[n_train:], stats=stats, labels=H.STATE_NAMES
    )


# ---- model and training -----------------------------------------------------------------------


def build_model(cfg: FitConfig) -> LatentODE:
    """The latent ODE of the config's preset, in its ``dtype`` (initialised from the current
    torch RNG)."""
    return LatentODE(cfg.sizes).to(cfg.torch_dtype)


def _decode_kwargs(cfg: FitConfig, stats: Any) -> dict[str, Any]:
    return LF.decode_kwargs(cfg.train_options(), stats)


def test_mse(
    model: LatentODE,
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    cfg: FitConfig,
    *,
    target: torch.Tensor | None = None,
    batch_size: int = 500,
    stats: Any = None,
    generator: torch.Generator | None = None,
) -> float:
    """MSE over the ``target`` points of ``x`` (every point if None; normalised units), averaged
    over ``cfg.eval_samples`` z0 samples, the encoder seeing only ``mask``'s points.

    Args:
        x: ``(n, T, 14)``; mask, target: ``(n, T)`` bool.
    """
    return model_mse(
        model,
        x,
        t,
        mask,
        target,
        n_samples=cfg.eval_samples,
        generator=generator,
        batch_size=batch_size,
        **_decode_kwargs(cfg, stats),
    )


def _config_record(cfg: FitConfig, ds: TrajectoryDataset) -> dict[str, Any]:
    rec = cfg.to_dict()
    rec.update(
        sizes=dataclasses.asdict(cfg.sizes),
        n_train=int(ds.metadata["n_train"]),
        n_test=ds.n_trajectories - int(ds.metadata["n_train"]),
        data_seed_in_file=ds.metadata.get("seed"),
    )
    return rec


def _fit(cfg: FitConfig, run: RunDir) -> TrainResult:
    """Train a latent ODE on the hopper data (module docstring) into ``run`` (no evaluation);
    returns :func:`physid.training.train`'s result.

    Writes into the run directory ``config.json``, ``metrics.jsonl``
    (:func:`physid.models.latent_fit.make_epoch_fn`'s records: per epoch ``loss``,
    ``train_mse``, ``loglik``, ``kl``, ``kl_coef``; the latent ODE's ``nfe_forward`` /
    ``nfe_backward`` and forward ``steps_accepted`` / ``steps_rejected`` summed over the
    epoch's iterations, their means per iteration as ``*_per_iter`` and the maxima as
    ``steps_*_max``; encoder NFE; ``lr_end``; ``seconds``, ``train_seconds`` and every
    ``eval_every`` epochs ``test_mse``), ``model.pt``, ``test_mask.npy``, ``test_target.npy``
    and, with ``snapshots``, ``snapshots/*.pt``.

    Raises:
        ConfigError, DataError: bad options or data; TrainingError: the loss stayed non-finite.
    """
    ds = load_data(cfg)
    data = _tensors(ds, cfg, cfg.torch_device())
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    return fit_latent(cfg, run, model, data, _config_record(cfg, ds), label="hopper")


def fit_latent(
    cfg: FitConfig,
    run: RunDir,
    model: LatentODE,
    data: LF.WindowData,
    config: dict[str, Any],
    *,
    label: str,
) -> TrainResult:
    """Train ``model`` on ``data``'s windows into ``run`` with ``cfg``'s options (the warm start
    of ``cfg.init_from`` first): the fit of every latent-ODE experiment (hopper, mujoco).

    Args:
        config: the record written as ``config.json``.
        label: the progress bar's name of the system.
    """
    if cfg.init_from is not None:
        LF.load_initial_state(model, cfg.init_from)
    model = model.to(cfg.torch_device())
    return LF.fit_windows(
        model,
        data,
        cfg.train_options(),
        run_dir=run,
        config=config,
        epochs=int(cfg.epochs or 0),
        eval_every=int(cfg.eval_every or 1),
        seed=cfg.seed,
        test_mask_seed=cfg.test_mask_seed,
        progress=cfg.progress,
        resume=cfg.resume,
        resume_ignore=cfg.RESUME_IGNORE,
        resume_added=cfg.RESUME_ADDED,
        time_limit=cfg.time_limit,
        description=f"{label} {cfg.method} {cfg.task[:6]} s={cfg.observed}",
        snapshots=cfg.snapshots,
    )


# ---- evaluation, plots, videos ------------------------------------------------------------------


def _load_run(
    run_dir: str | Path | RunDir, device: str = "cpu", state: str | Path | None = None
) -> tuple[FitConfig, LatentODE, LF.WindowData, torch.Tensor, torch.Tensor, int]:
    """``(config, model at its last epoch, data, test observed mask, test target mask, epoch)``;
    the model from the snapshot file ``state`` instead where one is given."""
    from physid.device import resolve_device

    run = RunDir.open(run_dir) if not isinstance(run_dir, RunDir) else run_dir
    cfg = FitConfig.from_run(run)
    dev = resolve_device(device)
    model = build_model(cfg)
    epoch = LF.load_initial_state(model, run.path if state is None else state)
    model.to(dev).eval()
    data = _tensors(load_data(cfg), cfg, dev)
    obs, target = test_masks(run, data, cfg)
    return cfg, model, data, obs.to(dev), target.to(dev), epoch


def snapshot_test_mse(run_dir: str | Path | RunDir, snapshot: str | Path) -> float:
    """The test MSE (normalised units) of a run's snapshot, scored as :func:`_evaluate` scores
    the run's last model (its test masks and z0 samples): where a warm-started fit began.

    Raises:
        DataError: the run or the snapshot is missing, or the snapshot does not fit the model.
    """
    return float(_score(_load_run(run_dir, device="cpu", state=snapshot))["test_mse"])


def _score(
    loaded: tuple[FitConfig, LatentODE, LF.WindowData, torch.Tensor, torch.Tensor, int],
) -> dict[str, Any]:
    """:func:`physid.models.latent_fit.evaluate` of a loaded run on its test set, its z0
    samples drawn from the run's test seed (the same number on every call)."""
    cfg, model, data, obs, target, _ = loaded
    gen = torch.Generator().manual_seed(cfg.test_mask_seed)
    return LF.evaluate(model, data.test, data.t, obs, target, cfg.train_options(), generator=gen)


def test_masks(
    run: RunDir, data: LF.WindowData, cfg: FitConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's stored test masks (drawn again from the seed where a file is missing)."""
    obs, target = LF.fixed_test_masks(data, cfg.train_options(), cfg.test_mask_seed)
    mask_path, target_path = run / "test_mask.npy", run / "test_target.npy"
    if mask_path.exists():
        obs = torch.as_tensor(np.load(mask_path))
    if target_path.exists():
        target = torch.as_tensor(np.load(target_path))
    if obs.shape != data.test.shape[:2] or target.shape != data.test.shape[:2]:
        raise DataError(
            f"the test masks of {run} do not match the test set {tuple(data.test.shape[:2])}."
        )
    return obs, target


def _evaluate(run: RunDir, totals: dict[str, Any]) -> RunSummary:
    """Test MSE of a run's last model beside the baselines, and its plots (``physid evaluate
    RUN``).

    ``test_mse`` is over the scored points of every test trajectory (all 100 for interpolation,
    the second half for extrapolation), in normalised units; ``train_mse`` the training MSE of
    the last epoch. Extras: ``test_mse_e2`` = MSE / 1e-2 as in Table 4 and the paper's number
    beside for interpolation (``paper_test_mse_e2``), ``test_mse_posterior_mean`` (decoding the
    mean of q(z0)), ``baselines`` (:mod:`physid.baselines` on the same test points, masks and
    normalisation) with the model's ``ratio_to`` each and the list of baselines it ``beats``;
    the solver's regime (:func:`physid.models.latent_fit.training_extras`: NFE and forward
    accepted/rejected steps per iteration, ``iterations``, ``lr_final``),
    ``seconds_per_epoch``, ``stopped_early`` (the time limit stopped the fit). Plots:
    ``plots/reconstruction.png`` (a test trajectory, every feature, truth vs the model's
    posterior-mean reconstruction and the baselines, observed points marked),
    ``plots/loss.png``.
    """
    loaded = _load_run(run, device="auto")
    cfg = loaded[0]
    paper = (
        PAPER_TABLE4.get(cfg.method, {}).get(round(cfg.observed, 3))
        if cfg.task == "interpolation"
        else None
    )
    return summarise(
        run,
        totals,
        loaded,
        system=SYSTEM,
        labels=H.STATE_NAMES,
        title="hopper test trajectory 0",
        extras={"paper_test_mse_e2": paper},
    )


def summarise(
    run: RunDir,
    totals: dict[str, Any],
    loaded: tuple[FitConfig, LatentODE, LF.WindowData, torch.Tensor, torch.Tensor, int],
    *,
    system: str,
    labels: Sequence[str],
    title: str,
    extras: dict[str, Any],
) -> RunSummary:
    """Score a latent-ODE run (``loaded`` = :func:`_load_run`'s tuple) beside the baselines,
    draw its plots and return its summary: the evaluation of every latent-ODE experiment.

    Args:
        totals: :meth:`AbstractExperiment.training_totals` of the run.
        labels: the state's feature names (the reconstruction plot's panels).
        title: the start of the reconstruction plot's title (system and test window).
        extras: the experiment's own summary keys (after ``name``).
    """
    from physid.evaluate import plot_loss_curve

    cfg, model, data, obs, target, epoch = loaded
    opts = cfg.train_options()
    scored = _score(loaded)
    with torch.no_grad():
        mean, _ = model.encoder(data.test[:1], obs[:1], data.t)
        x_mean = model.decode(mean.unsqueeze(0), data.t, **LF.decode_kwargs(opts))[0, 0]
    pct = int(round(100 * cfg.observed))
    LF.plot_reconstruction(
        run.plots / "reconstruction.png",
        data.t,
        data.test[0],
        obs[0],
        target[0],
        x_mean,
        task=cfg.task,
        labels=labels,
        title=f"{title}, {cfg.task}, {cfg.method}, {pct}% observed (normalised units)",
    )
    if run.metrics_path.exists():
        plot_loss_curve(run, run.plots / "loss.png")
    history = run.read_metrics()
    mse = float(scored["test_mse"])
    record: dict[str, Any] = {
        "name": cfg.name,
        **extras,
        "observed": cfg.observed,
        "task": cfg.task,
        "preset": cfg.preset,
        "solver": cfg.solver,
        "rtol": cfg.rtol,
        "atol": cfg.atol,
        "model_evaluated": "last",
        "epoch_evaluated": epoch,
        "test_mse_e2": mse / 1e-2,
        "test_mse_posterior_mean": scored["test_mse_posterior_mean"],
        "baselines": scored["baselines"],
        "ratio_to": scored["ratio_to"],
        "beats": scored["beats"],
        "normalisation": cfg.normalisation,
        "eval_samples": cfg.eval_samples,
        "n_test": int(data.test.shape[0]),
        **LF.training_extras(history),
        "stopped_early": run.load_checkpoint().get("stopped") == "time_limit",
    }
    return RunSummary(
        system=system,
        model=cfg.model,
        method=cfg.method,
        seed=cfg.seed,
        test_mse=mse,
        train_mse=float(history[-1]["train_mse"]) if history else None,
        **totals,
        extras=record,
    )


def reconstruct(
    cfg: FitConfig, model: LatentODE, data: LF.WindowData, mask: torch.Tensor, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, reconstruction)`` of test window ``index`` in physical units ``(T, D)``: the
    state decoded from the posterior mean of z0 given the observed points of ``mask``."""
    if not 0 <= index < data.test.shape[0]:
        raise ConfigError(f"test trajectory {index} does not exist (0..{data.test.shape[0] - 1}).")
    with torch.no_grad():
        mean, _ = model.encoder(data.test[index : index + 1], mask[index : index + 1], data.t)
        x_hat = model.decode(mean, data.t, **_decode_kwargs(cfg, None))[0]
    truth = H.denormalise(data.test[index].double().cpu().numpy(), data.stats)
    pred = H.denormalise(x_hat.double().cpu().numpy(), data.stats)
    return truth, pred


def _render_run(
    run: RunDir,
    out: Path,
    *,
    index: int = 0,
    fps: int = 20,
    width: int = 320,
    height: int = 240,
) -> Path:
    """The MuJoCo hopper replaying test trajectory ``index`` (left, brown) beside the model's
    reconstruction from its observed points (right, blue): joint positions decoded from the
    posterior mean of z0 and un-normalised (``physid render RUN``).

    Args:
        fps: frames per second; the data are 200 steps per second, so 20 means 10× slow motion.

    Returns:
        the MP4 path.
    """
    cfg, model, data, mask, _, _ = _load_run(run)
    truth, pred = reconstruct(cfg, model, data, mask, index)
    left = H.render_states(truth[:, :7], width=width, height=height)
    right = H.render_states(pred[:, :7], width=width, height=height, rgba=(0.3, 0.5, 0.8, 1.0))
    return write_video(out, np.concatenate([left, right], axis=2), fps, macro_block_size=8)


def _render_data(
    path: str | Path,
    out: str | Path,
    *,
    index: int = 0,
    fps: int = 20,
    width: int = 320,
    height: int = 240,
) -> Path:
    """Render trajectory ``index`` of a hopper data set (``physid render DATASET``)."""
    ds = load_dataset(path)
    if ds.metadata.get("system") != SYSTEM or ds.state_dim != 14:
        raise DataError(f"{path} is not a hopper data set.")
    if not 0 <= index < ds.n_trajectories:
        raise ConfigError(f"trajectory {index} does not exist (0..{ds.n_trajectories - 1}).")
    frames = H.render_states(ds.y[index], width=width, height=height)
    return write_video(out, frames, fps, macro_block_size=8)


# ---- the experiment ---------------------------------------------------------------------------


class Hopper(AbstractExperiment[FitConfig]):
    """The MuJoCo hopper of the ACA paper's Table 4: a latent ODE on irregular samples."""

    name = SYSTEM
    Config = FitConfig
    Simulate = SimulateConfig

    def _simulate(self, options: SimulateConfig) -> Path:
        return simulate(options.n_trajectories, options.seed, options.out)

    def _fit(self, config: FitConfig, run: RunDir) -> TrainResult:
        return _fit(config, run)

    def _evaluate(self, config: FitConfig, run: RunDir) -> RunSummary:
        return _evaluate(run, self.training_totals(run))

    def _render(self, config: FitConfig, run: RunDir, out: Path, **options: Any) -> Path:
        """Options: ``index`` (test trajectory), ``fps``, ``width``, ``height``."""
        return _render_run(run, out, **options)

    def _render_dataset(self, dataset: Path, out: Path, trajectory: int) -> Path:
        return _render_data(dataset, out, index=trajectory)
