"""The latent-ODE MuJoCo hopper experiment (Rubanova et al. 2019; ACA paper, Table 4), end to end.

- :func:`simulate` writes the data set (:mod:`physid.envs.hopper`'s protocol) to an ``.npz``.
- ``fit`` trains a :class:`physid.models.latent_ode.LatentODE` on irregularly-sampled windows
  (``int(100 s)`` observed points per trajectory, re-drawn every batch) with the chosen gradient
  method for the latent ODE solve, through :func:`physid.training.train`.
- ``evaluate`` computes the test MSE over *all* 100 points of every test trajectory, in
  normalised units (the papers report it ×1e-2), with the test masks drawn once from a fixed seed
  and stored in the run (``test_mask.npy``); plots reconstructions against the truth per feature.
- ``render`` replays a test trajectory in MuJoCo beside the model's reconstruction (joint
  positions decoded and un-normalised) as an MP4.
- :class:`Hopper` is the system's experiment (the registry's ``hopper``): its ``simulate``,
  ``fit``, ``evaluate`` and ``render`` are what ``physid`` runs.

Presets: ``paper`` is the published setting (10,000 trajectories, 300 epochs, the paper's network
sizes; meant for a GPU); ``default`` keeps the protocol (batch 50, Adamax 1e-2 with decay, KL
annealing, 3 samples, dopri5 at rtol 1e-3 / atol 1e-4) at a CPU budget (1,000 trajectories,
smaller networks, fewer epochs); ``tiny`` exists for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from physid.envs import hopper as H
from physid.models.latent_ode import PRESET_SIZES, LatentODE, LatentODEConfig, kl_coefficient

from physid.data import TrajectoryDataset, load_dataset, subsample_mask
from physid.errors import ConfigError, DataError
from physid.experiment import DTYPES, AbstractExperiment, BaseConfig, SimulateOptions, option
from physid.render import write_video
from physid.runs import RunDir, RunSummary
from physid.training import TrainResult, load_model_state, train

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


PRESETS: dict[str, _Preset] = {
    "paper": _Preset(PRESET_SIZES["paper"], n_trajectories=10_000, epochs=300, eval_every=10),
    "default": _Preset(PRESET_SIZES["default"], n_trajectories=1_000, epochs=60, eval_every=5),
    "tiny": _Preset(PRESET_SIZES["tiny"], n_trajectories=20, epochs=2, eval_every=1),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig(BaseConfig):
    """Every option of a hopper latent-ODE fit (all recorded in the run's ``config.json``).
    ``None`` means "from the preset" (filled in by :meth:`resolve`).

    The shared options (method, solver, tolerances, seed, device, dtype, threads, epochs, run
    directory, resume, time limit, progress) are :class:`~physid.experiment.BaseConfig`'s; the
    defaults here follow the paper's protocol. The default run directory is
    ``runs/hopper-latent-ode-[preset-]obs<pct>-<method>-<seed>``.

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
        epochs: training epochs.
        batch_size: trajectories per batch (50).
        lr: Adamax learning rate (1e-2), multiplied by ``lr_decay`` every iteration down to
            ``lr * lr_min_factor``.
        n_samples: z0 samples in the training ELBO (3).
        eval_samples: z0 samples when measuring the test MSE (3, as the reference's test loop).
        kl_wait, kl_rate: KL weight 0 for ``kl_wait`` epochs, then ``1 - kl_rate**(e - wait)``.
        solver, rtol, atol: the latent ODE's solver and tolerances (dopri5, 1e-3, 1e-4).
        normalisation: ``"minmax"`` (sound, the default) or ``"reference"`` (the paper's quirk).
        eval_every: test MSE every this many epochs (and at the last epoch).
        test_mask_seed: seed of the fixed test masks.
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
    )
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
    batch_size: int = option(50, help="Trajectories per batch.")
    lr: float = option(1e-2, help="Adamax learning rate.")
    lr_decay: float = option(0.999, help="Learning-rate factor per iteration.")
    lr_min_factor: float = option(0.1, help="The learning rate stops decaying at lr x this.")
    n_samples: int = option(3, help="z0 samples in the training ELBO.")
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
    device: str = option("auto", help="Where tensors live: auto, cpu, cuda or cuda:N.")
    dtype: str = option("float32", help="Floating-point type of the model.", choices=tuple(DTYPES))
    threads: int | None = option(None, help="CPU threads for torch (none: torch's default).")

    def resolve(self) -> dict[str, Any]:
        """The preset's ``n_trajectories``, ``epochs`` and ``eval_every`` where not given."""
        p = PRESETS.get(self.preset)
        if p is None:
            return {}  # the choices check names the presets
        values = {
            "n_trajectories": p.n_trajectories,
            "epochs": p.epochs,
            "eval_every": p.eval_every,
        }
        return {k: v for k, v in values.items() if getattr(self, k) is None}

    def check(self) -> None:
        if not 0.0 < self.observed <= 1.0:
            raise ConfigError(f"--observed must be in (0, 1], got {self.observed}.")
        for name in ("batch_size", "n_samples", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0 or not 0 < self.lr_decay <= 1 or not 0 < self.lr_min_factor <= 1:
            raise ConfigError("lr must be > 0, lr_decay and lr_min_factor in (0, 1].")
        if int(self.eval_every or 0) < 1:
            raise ConfigError(f"eval_every must be at least 1, got {self.eval_every}.")
        if self.data is None and int(self.n_trajectories or 0) < 2:
            raise ConfigError(f"n_trajectories must be at least 2, got {self.n_trajectories}.")

    @property
    def name(self) -> str:
        """``latent-ode-[preset-]obs<pct>-<method>``: the run directory is
        ``runs/hopper-latent-ode-[preset-]obs<pct>-<method>-<seed>`` unless ``run_name``."""
        pct = int(round(100 * self.observed))
        preset = "" if self.preset == "default" else f"{self.preset}-"
        return f"{self.model}-{preset}obs{pct}-{self.method}"

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
        and ds.metadata.get("seed") == seed
        and ds.n_trajectories == n
        and ds.metadata.get("params")
        == json.loads(json.dumps(dataclasses.asdict(H.HopperParams())))
    )


@dataclasses.dataclass(frozen=True)
class _Tensors:
    t: torch.Tensor  # (T,)
    train: torch.Tensor  # (n_train, T, 14) normalised
    test: torch.Tensor  # (n_test, T, 14) normalised
    stats: dict[str, Any]


def _tensors(ds: TrajectoryDataset, cfg: FitConfig, device: torch.device) -> _Tensors:
    stats = H.normalisation_of(ds, cfg.normalisation)
    n_train = int(ds.metadata["n_train"])
    y = torch.as_tensor(H.normalise(ds.y, stats), dtype=cfg.torch_dtype, device=device)
    t = torch.as_tensor(ds.t, dtype=cfg.torch_dtype, device=device)
    return _Tensors(t=t, train=y[:n_train], test=y[n_train:], stats=stats)


# ---- model and training -----------------------------------------------------------------------


def build_model(cfg: FitConfig) -> LatentODE:
    """The latent ODE of the config's preset, in its ``dtype`` (initialised from the current
    torch RNG)."""
    return LatentODE(cfg.sizes).to(cfg.torch_dtype)


def _decode_kwargs(cfg: FitConfig, stats: Any) -> dict[str, Any]:
    return {
        "method": cfg.method,
        "solver": cfg.solver,
        "rtol": cfg.rtol,
        "atol": cfg.atol,
        "stats": stats,
        "compile": cfg.compile,
    }


def test_mse(
    model: LatentODE,
    x: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor,
    cfg: FitConfig,
    *,
    batch_size: int = 500,
    stats: Any = None,
    generator: torch.Generator | None = None,
) -> float:
    """MSE over every point of ``x`` (normalised units), averaged over ``cfg.eval_samples``
    z0 samples, the encoder seeing only ``mask``'s points.

    Args:
        x: ``(n, T, 14)``; mask: ``(n, T)`` bool.
    """
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for a in range(0, x.shape[0], batch_size):
                xb, mb = x[a : a + batch_size], mask[a : a + batch_size]
                x_hat, _, _ = model.reconstruct(
                    xb,
                    mb,
                    t,
                    n_samples=cfg.eval_samples,
                    generator=generator,
                    **_decode_kwargs(cfg, stats),
                )
                total += float(((x_hat - xb.unsqueeze(0)) ** 2).sum())
                count += x_hat.numel()
    finally:
        model.train(was_training)
    return total / max(count, 1)


def _test_mask(n_test: int, n_times: int, cfg: FitConfig) -> torch.Tensor:
    return subsample_mask(n_test, n_times, cfg.observed, seed=cfg.test_mask_seed)


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

    Writes into the run directory ``config.json``, ``metrics.jsonl`` (per epoch: ``loss``,
    ``train_mse``, ``loglik``, ``kl``, ``kl_coef``; latent-ODE ``nfe_forward``/``nfe_backward``
    and ``steps_accepted``/``steps_rejected`` summed over the epoch's iterations, and their
    means per iteration as ``*_per_iter``; encoder NFE (``encoder_nfe``, summed, and
    ``encoder_nfe_per_iter``), ``seconds``, ``train_seconds`` and every ``eval_every`` epochs
    ``test_mse``), ``model.pt`` and ``test_mask.npy``.

    Raises:
        ConfigError, DataError: bad options or data; TrainingError: the loss stayed non-finite.
    """
    import physid
    from physid._io import atomic_write

    epochs, eval_every = int(cfg.epochs or 0), int(cfg.eval_every or 1)
    device = cfg.torch_device()
    ds = load_data(cfg)
    data = _tensors(ds, cfg, device)
    n_train, n_times = data.train.shape[0], data.t.shape[0]

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adamax(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    test_mask = _test_mask(data.test.shape[0], n_times, cfg).to(device)
    lr_floor = cfg.lr * cfg.lr_min_factor
    n_batches = math.ceil(n_train / cfg.batch_size)

    def epoch_fn(epoch: int) -> dict[str, Any]:
        kl_coef = kl_coefficient(epoch, cfg.kl_wait, cfg.kl_rate)
        order = torch.randperm(n_train, generator=gen).to(device)
        stats, enc_stats = physid.SolveStats(), physid.SolveStats()
        sums = {"loss": 0.0, "train_mse": 0.0, "loglik": 0.0, "kl": 0.0}
        t0 = time.perf_counter()
        model.train()
        for b in range(n_batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = data.train[idx]
            mask = subsample_mask(xb.shape[0], n_times, cfg.observed, generator=gen).to(device)
            for group in optimizer.param_groups:
                if group["lr"] > lr_floor:
                    group["lr"] = max(group["lr"] * cfg.lr_decay, lr_floor)
            optimizer.zero_grad(set_to_none=True)
            terms = model.elbo(
                xb,
                mask,
                data.t,
                kl_coef=kl_coef,
                n_samples=cfg.n_samples,
                encoder_kwargs={"stats": enc_stats},
                **_decode_kwargs(cfg, stats),
            )
            terms.loss.backward()
            optimizer.step()
            sums["loss"] += float(terms.loss.detach())
            sums["train_mse"] += terms.mse
            sums["loglik"] += terms.loglik
            sums["kl"] += terms.kl
            if not math.isfinite(sums["loss"]):
                break
        train_seconds = time.perf_counter() - t0
        rec: dict[str, Any] = {k: v / n_batches for k, v in sums.items()}
        rec.update(
            kl_coef=kl_coef,
            # totals over the epoch (summed over epochs in summary.json) ...
            nfe_forward=stats.nfe_forward,
            nfe_backward=stats.nfe_backward,
            steps_accepted=stats.steps_accepted,
            steps_rejected=stats.steps_rejected,
            encoder_nfe=enc_stats.nfe_forward,
            # ... and means per iteration (batch), as Table 4 reports them
            nfe_forward_per_iter=stats.nfe_forward / n_batches,
            nfe_backward_per_iter=stats.nfe_backward / n_batches,
            steps_accepted_per_iter=stats.steps_accepted / n_batches,
            steps_rejected_per_iter=stats.steps_rejected / n_batches,
            encoder_nfe_per_iter=enc_stats.nfe_forward / n_batches,
            train_seconds=train_seconds,
        )
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            rec["test_mse"] = test_mse(model, data.test, data.t, test_mask, cfg)
        return rec

    result = train(
        model,
        epoch_fn,
        optimizer=optimizer,
        epochs=epochs,
        run_dir=run,
        config=_config_record(cfg, ds),
        scheduler_interval="manual",
        select_metric="train_mse",
        resume=cfg.resume,
        resume_ignore=cfg.RESUME_IGNORE,
        # runs made before the dtype option existed were float32
        resume_added={"dtype": "float32"},
        progress=cfg.progress,
        description=f"hopper {cfg.method} s={cfg.observed}",
        time_limit=cfg.time_limit,
        generators=(gen,),
    )
    with atomic_write(run / "test_mask.npy", "wb") as fh:
        np.save(fh, test_mask.cpu().numpy())
    return result


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in records if isinstance(r.get(key), int | float)]
    return float(np.mean(vals)) if vals else None


# ---- evaluation, plots, videos ------------------------------------------------------------------


def _load_run(
    run_dir: str | Path | RunDir, device: str = "cpu"
) -> tuple[FitConfig, LatentODE, _Tensors, torch.Tensor, int]:
    from physid.device import resolve_device

    run = RunDir.open(run_dir) if not isinstance(run_dir, RunDir) else run_dir
    cfg = FitConfig.from_run(run)
    dev = resolve_device(device)
    model = build_model(cfg)
    epoch = load_model_state(model, run, "last")
    model.to(dev).eval()
    data = _tensors(load_data(cfg), cfg, dev)
    mask_path = run / "test_mask.npy"
    if mask_path.exists():
        mask = torch.as_tensor(np.load(mask_path))
    else:
        mask = _test_mask(data.test.shape[0], data.t.shape[0], cfg)
    if mask.shape != data.test.shape[:2]:
        raise DataError(f"{mask_path} does not match the test set {tuple(data.test.shape[:2])}.")
    return cfg, model, data, mask.to(dev), epoch


def _evaluate(run: RunDir, totals: dict[str, Any]) -> RunSummary:
    """Test MSE of a run's last model and its plots (``physid evaluate RUN``).

    ``test_mse`` is over all 100 points of every test trajectory, in normalised units;
    ``train_mse`` the training MSE of the last epoch. Extras: ``test_mse_e2`` = MSE / 1e-2 as in
    Table 4 and the paper's number beside (``paper_test_mse_e2``), the latent ODE's NFE per
    iteration (``nfe_forward_per_iter``, ``nfe_backward_per_iter``: means over epochs),
    ``seconds_per_epoch``, ``stopped_early`` (the time limit stopped the fit). Plots:
    ``plots/reconstruction.png`` (a test trajectory, every feature, truth vs reconstruction,
    observed points marked), ``plots/loss.png``.
    """
    from physid.evaluate import plot_loss_curve, plot_trajectories

    cfg, model, data, mask, epoch = _load_run(run, device="auto")
    gen = torch.Generator().manual_seed(cfg.test_mask_seed)
    mse = test_mse(model, data.test, data.t, mask, cfg, generator=gen)
    with torch.no_grad():
        x_hat, mean, _ = model.reconstruct(
            data.test[:1], mask[:1], data.t, n_samples=1, **_decode_kwargs(cfg, None)
        )
        x_mean = model.decode(mean.unsqueeze(0), data.t, **_decode_kwargs(cfg, None))[0]
    plots = run.plots
    plot_trajectories(
        data.t,
        data.test[:1],
        plots / "reconstruction.png",
        pred=x_mean,
        labels=list(H.STATE_NAMES),
        max_states=14,
        observed=mask[:1],
        title=f"hopper test trajectory 0, {cfg.method}, {int(round(100 * cfg.observed))}% observed "
        "(normalised units)",
    )
    if run.metrics_path.exists():
        plot_loss_curve(run, plots / "loss.png")
    history = run.read_metrics()
    paper = PAPER_TABLE4.get(cfg.method, {}).get(round(cfg.observed, 3))
    extras: dict[str, Any] = {
        "name": cfg.name,
        "observed": cfg.observed,
        "preset": cfg.preset,
        "solver": cfg.solver,
        "rtol": cfg.rtol,
        "atol": cfg.atol,
        "model_evaluated": "last",
        "epoch_evaluated": epoch,
        "test_mse_e2": mse / 1e-2,
        "paper_test_mse_e2": paper,
        "normalisation": cfg.normalisation,
        "eval_samples": cfg.eval_samples,
        "n_test": int(data.test.shape[0]),
        "nfe_forward_per_iter": _mean(history, "nfe_forward_per_iter"),
        "nfe_backward_per_iter": _mean(history, "nfe_backward_per_iter"),
        "seconds_per_epoch": _mean(history, "seconds"),
        "stopped_early": run.load_checkpoint().get("stopped") == "time_limit",
    }
    return RunSummary(
        system=SYSTEM,
        model=cfg.model,
        method=cfg.method,
        seed=cfg.seed,
        test_mse=mse,
        train_mse=float(history[-1]["train_mse"]) if history else None,
        **totals,
        extras=extras,
    )


def _reconstruct_raw(
    cfg: FitConfig, model: LatentODE, data: _Tensors, mask: torch.Tensor, index: int
) -> tuple[np.ndarray, np.ndarray]:
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
    cfg, model, data, mask, _ = _load_run(run)
    truth, pred = _reconstruct_raw(cfg, model, data, mask, index)
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
