"""Training and scoring a latent ODE on windows of state trajectories, whatever the system.

The pieces of a latent-ODE fit that do not depend on the data set (the hopper of
:mod:`physid.models.experiments.hopper` and the gymnasium tasks of
:mod:`physid.models.experiments.mujoco` use them alike):

- :func:`make_epoch_fn`: one epoch of Rubanova et al.'s ``run_models.py`` loop — shuffled
  batches, observed points re-drawn per batch (:func:`physid.models.latent_tasks.task_masks`), the
  learning rate multiplied by ``lr_decay`` before every iteration down to ``lr * lr_min_factor``,
  the annealed KL weight (:func:`physid.models.latent_ode.kl_coefficient`) — for a
  ``physid.training`` fit. Its record has the latent ODE's NFE and *accepted / rejected forward
  steps* (epoch totals and means per iteration), so that the solver's regime (a near-constant
  latent flow takes 2-3 dopri5 steps) is visible in ``metrics.jsonl``.
- :func:`evaluate`: the model's test MSE (over ``eval_samples`` z0 samples, and from the posterior
  mean) beside the baselines of the task (:mod:`physid.baselines`) on the same points, masks and
  normalisation.
- :func:`plot_reconstruction`: truth, model and baselines of one test window, per feature.

The options are a frozen :class:`TrainOptions` (the experiments' configs build one).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from physid.models.latent_ode import LatentODE, kl_coefficient
from physid.models.latent_tasks import check_task, model_predictions, score, task_masks

from physid.baselines import baseline_predictions, masked_mse
from physid.errors import ConfigError
from physid.runs import RunDir
from physid.training import TrainResult

__all__ = [
    "EXTRAP_LOSSES",
    "TrainOptions",
    "decode_kwargs",
    "lr_floor",
    "iterations_to_floor",
    "make_epoch_fn",
    "evaluate",
    "plot_reconstruction",
    "WindowData",
    "fixed_test_masks",
    "snapshot_epochs",
    "load_initial_state",
    "fit_windows",
    "training_extras",
]


EXTRAP_LOSSES = ("all", "target")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The options of a latent-ODE fit that the training loop and the evaluation read; defaults
    are the protocol of Rubanova et al.'s ``run_models.py`` (PROTOCOLS.md).

    Attributes:
        observed: fraction ``s`` of the observable points the encoder sees (0.1, 0.2, 0.5).
        task: ``"interpolation"`` or ``"extrapolation"`` (:mod:`physid.models.latent_tasks`).
        extrap_split: for extrapolation, the observable fraction of each window (first half).
        extrap_loss: for extrapolation, the points the training likelihood covers: ``"all"``
            (reconstruct the observed span and predict the rest) or ``"target"`` (only the points
            to predict, as the reference's extrapolation mode).
        batch_size: windows per iteration (50).
        lr, lr_decay, lr_min_factor: Adamax learning rate, multiplied by ``lr_decay`` before
            every iteration down to ``lr * lr_min_factor`` (1e-2, 0.999, 0.1).
        n_samples: z0 samples in the training ELBO (3); eval_samples: in the test MSE (3).
        kl_wait, kl_rate: :func:`physid.models.latent_ode.kl_coefficient` (10, 0.99).
        method, solver, rtol, atol: the latent ODE's gradient method and solve (aca, dopri5,
            1e-3, 1e-4).
        compile: solve through the compiled fast path (:func:`physid.odeint`'s ``compile``).
    """

    observed: float = 0.1
    task: str = "interpolation"
    extrap_split: float = 0.5
    extrap_loss: str = "all"
    batch_size: int = 50
    lr: float = 1e-2
    lr_decay: float = 0.999
    lr_min_factor: float = 0.1
    n_samples: int = 3
    eval_samples: int = 3
    kl_wait: int = 10
    kl_rate: float = 0.99
    method: str = "aca"
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    compile: bool = False

    def __post_init__(self) -> None:
        import physid

        check_task(self.task, self.extrap_split)
        if self.extrap_loss not in EXTRAP_LOSSES:
            raise ConfigError(
                f"unknown extrap_loss {self.extrap_loss!r}; choose {' or '.join(EXTRAP_LOSSES)}."
            )
        if not 0.0 < self.observed <= 1.0:
            raise ConfigError(f"--observed must be in (0, 1], got {self.observed}.")
        if self.lr <= 0 or not 0 < self.lr_decay <= 1 or not 0 < self.lr_min_factor <= 1:
            raise ConfigError("lr must be > 0, lr_decay and lr_min_factor in (0, 1].")
        for name in ("batch_size", "n_samples", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.method not in physid.GRADIENT_METHODS:
            raise ConfigError(
                f"unknown method {self.method!r}; "
                f"choose one of {', '.join(physid.GRADIENT_METHODS)}."
            )
        if self.solver not in physid.SOLVER_NAMES:
            raise ConfigError(
                f"unknown solver {self.solver!r}; choose one of {', '.join(physid.SOLVER_NAMES)}."
            )
        if self.rtol <= 0 or self.atol <= 0:
            raise ConfigError(f"rtol and atol must be > 0, got {self.rtol} and {self.atol}.")


def decode_kwargs(opts: TrainOptions, stats: Any = None) -> dict[str, Any]:
    """The :meth:`LatentODE.decode` options of a config (gradient method, solver, tolerances)."""
    return {
        "method": opts.method,
        "solver": opts.solver,
        "rtol": opts.rtol,
        "atol": opts.atol,
        "stats": stats,
        "compile": opts.compile,
    }


def lr_floor(opts: TrainOptions) -> float:
    """The learning rate's floor, ``lr * lr_min_factor``."""
    return opts.lr * opts.lr_min_factor


def iterations_to_floor(opts: TrainOptions) -> int:
    """Iterations until the per-iteration decay reaches the floor (0 without decay)."""
    if opts.lr_decay >= 1.0 or opts.lr_min_factor >= 1.0:
        return 0
    return math.ceil(math.log(opts.lr_min_factor) / math.log(opts.lr_decay))


def make_epoch_fn(
    model: LatentODE,
    optimizer: torch.optim.Optimizer,
    train_x: torch.Tensor,
    t: torch.Tensor,
    opts: TrainOptions,
    generator: torch.Generator,
    *,
    epochs: int,
    eval_every: int,
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    snapshot_dir: Path | None = None,
    snapshot_epochs: Sequence[int] = (),
) -> Callable[[int], dict[str, Any]]:
    """One epoch of training, for :func:`physid.training.train`.

    Args:
        model, optimizer: the latent ODE and its optimiser (Adamax in the protocol).
        train_x: ``(n_train, time, features)`` normalised training windows.
        t: ``(time,)``.
        opts: the fit's options (:class:`TrainOptions`).
        generator: the source of batch order, masks and z0 samples (checkpoint it).
        epochs, eval_every: the test MSE is computed every ``eval_every`` epochs and at the last.
        test: ``(x, observed_mask, target_mask)`` of the test set, or None.
        snapshot_dir, snapshot_epochs: after each of these epochs (numbered from 0) the model's
            state is saved to ``snapshot_dir/epoch_<NNNN>.pt`` (for studies along the fit, e.g.
            gradient errors at checkpoints); epoch ``-1`` saves the initial model, before the
            first epoch, to ``snapshot_dir/initial.pt``.

    Returns:
        ``epoch_fn(epoch) -> record`` with per-iteration means of ``loss``, ``train_mse`` (over
        the loss's points), ``loglik``, ``kl``; ``kl_coef``; the latent ODE's ``nfe_forward``,
        ``nfe_backward`` and forward ``steps_accepted``/``steps_rejected`` summed over the
        epoch's ``iterations`` (the totals ``summary.json`` adds up), their means per iteration
        (``*_per_iter``) and the accepted/rejected maxima over the iterations
        (``steps_*_max``); the encoder's ``encoder_nfe`` (total and ``encoder_nfe_per_iter``);
        ``lr_end``; ``train_seconds``; and ``test_mse`` on evaluation epochs.
    """
    import physid

    n_train, n_times = train_x.shape[0], t.shape[0]
    device = train_x.device
    n_batches = math.ceil(n_train / opts.batch_size)
    floor = lr_floor(opts)
    target_loss = opts.task == "extrapolation" and opts.extrap_loss == "target"

    snapshots = set(snapshot_epochs)

    def snapshot(epoch: int) -> None:
        if snapshot_dir is not None and epoch in snapshots:
            from physid._io import save_torch

            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            name = "initial.pt" if epoch < 0 else f"epoch_{epoch:04d}.pt"
            save_torch(snapshot_dir / name, {"epoch": epoch, "model": state})

    def epoch_fn(epoch: int) -> dict[str, Any]:
        if epoch == 0:
            snapshot(-1)
        kl_coef = kl_coefficient(epoch, opts.kl_wait, opts.kl_rate)
        order = torch.randperm(n_train, generator=generator).to(device)
        enc_stats = physid.SolveStats()
        sums = {"loss": 0.0, "train_mse": 0.0, "loglik": 0.0, "kl": 0.0}
        per_iter: dict[str, list[int]] = {k: [] for k in ("nf", "nb", "acc", "rej")}
        t0 = time.perf_counter()
        model.train()
        done = 0
        for b in range(n_batches):
            idx = order[b * opts.batch_size : (b + 1) * opts.batch_size]
            xb = train_x[idx]
            obs, target = task_masks(
                xb.shape[0],
                n_times,
                opts.observed,
                opts.task,
                split=opts.extrap_split,
                generator=generator,
                device=device,
            )
            for group in optimizer.param_groups:
                if group["lr"] > floor:
                    group["lr"] = max(group["lr"] * opts.lr_decay, floor)
            stats = physid.SolveStats()
            optimizer.zero_grad(set_to_none=True)
            terms = model.elbo(
                xb,
                obs,
                t,
                kl_coef=kl_coef,
                n_samples=opts.n_samples,
                generator=None,
                encoder_kwargs={"stats": enc_stats},
                target=target if target_loss else None,
                **decode_kwargs(opts, stats),
            )
            terms.loss.backward()
            optimizer.step()
            done += 1
            sums["loss"] += float(terms.loss.detach())
            sums["train_mse"] += terms.mse
            sums["loglik"] += terms.loglik
            sums["kl"] += terms.kl
            per_iter["nf"].append(stats.nfe_forward)
            per_iter["nb"].append(stats.nfe_backward)
            per_iter["acc"].append(stats.steps_accepted)
            per_iter["rej"].append(stats.steps_rejected)
            if not math.isfinite(sums["loss"]):
                break
        done = max(done, 1)
        rec: dict[str, Any] = {k: v / done for k, v in sums.items()}
        totals = {k: int(sum(v)) for k, v in per_iter.items()}
        rec.update(
            kl_coef=kl_coef,
            # totals over the epoch's iterations (summed over epochs in summary.json) ...
            nfe_forward=totals["nf"],
            nfe_backward=totals["nb"],
            steps_accepted=totals["acc"],
            steps_rejected=totals["rej"],
            encoder_nfe=enc_stats.nfe_forward,
            iterations=done,
            # ... and means per iteration (one batch), as Table 4 reports them
            nfe_forward_per_iter=totals["nf"] / done,
            nfe_backward_per_iter=totals["nb"] / done,
            steps_accepted_per_iter=totals["acc"] / done,
            steps_rejected_per_iter=totals["rej"] / done,
            steps_accepted_max=max(per_iter["acc"], default=0),
            steps_rejected_max=max(per_iter["rej"], default=0),
            encoder_nfe_per_iter=enc_stats.nfe_forward / done,
            lr_end=float(optimizer.param_groups[0]["lr"]),
            train_seconds=time.perf_counter() - t0,
        )
        if test is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            x, obs, target = test
            rec["test_mse"] = masked_mse(
                model_predictions(
                    model, x, t, obs, n_samples=opts.eval_samples, **decode_kwargs(opts)
                ),
                x,
                target,
            )
        snapshot(epoch)
        return rec

    return epoch_fn


def evaluate(
    model: LatentODE,
    x: torch.Tensor,
    t: torch.Tensor,
    obs: torch.Tensor,
    target: torch.Tensor,
    opts: TrainOptions,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """The model's test MSE beside the task's baselines, on the same points and masks.

    Args:
        x: ``(n, time, features)`` normalised test windows; obs / target: ``(n, time)`` masks.
        generator: the source of the z0 samples (fix it for a reproducible number).

    Returns:
        ``{"test_mse": mean over eval_samples samples of z0, "test_mse_posterior_mean": decoding
        the mean of q(z0), "task", "baselines": {name: mse}, "ratio_to": {name: test_mse /
        baseline}, "beats": [...]}``.
    """
    kw = decode_kwargs(opts)
    mse = masked_mse(
        model_predictions(model, x, t, obs, n_samples=opts.eval_samples, generator=generator, **kw),
        x,
        target,
    )
    mse_mean = masked_mse(model_predictions(model, x, t, obs, posterior_mean=True, **kw), x, target)
    scored = score(mse, x, t, obs, target, opts.task)
    return {
        "test_mse": mse,
        "test_mse_posterior_mean": mse_mean,
        "task": opts.task,
        "baselines": scored["baselines"],
        "ratio_to": scored["ratio_to"],
        "beats": scored["beats"],
    }


_BASELINE_STYLE = {
    "observed_mean": ("tab:gray", ":"),
    "least_squares_line": ("tab:olive", ":"),
    "linear_interpolation": ("tab:green", "-."),
    "last_value": ("tab:gray", "-."),
    "linear_extrapolation_last_two": ("tab:green", "-."),
    "linear_extrapolation_least_squares": ("tab:olive", ":"),
}


def plot_reconstruction(
    path: str | Path,
    t: torch.Tensor,
    x: torch.Tensor,
    obs: torch.Tensor,
    target: torch.Tensor,
    pred: torch.Tensor,
    *,
    task: str,
    labels: Sequence[str] | None = None,
    baselines: Mapping[str, torch.Tensor] | None = None,
    max_states: int = 18,
    title: str | None = None,
) -> Path:
    """One window, every feature: truth (black), observed points, the model (red) and the
    baselines (thin lines); for extrapolation a vertical line where the observed span ends.

    Args:
        t: ``(time,)``; x: ``(time, features)``; obs, target: ``(time,)`` bool;
        pred: ``(time, features)`` the model's reconstruction.
        baselines: ``{name: (time, features)}``; default: every baseline of the task.

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    tt = t.detach().cpu().double().numpy()
    y = x.detach().cpu().double().numpy()
    p = pred.detach().cpu().double().numpy()
    m = obs.detach().cpu().numpy().astype(bool)
    if baselines is None:
        baselines = {
            k: v[0]
            for k, v in baseline_predictions(x.unsqueeze(0), t, obs.unsqueeze(0), task).items()
        }
    n = min(y.shape[1], max_states)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 2.4 * rows + 0.6), layout="constrained")
    split = None
    if task == "extrapolation" and bool((~target.cpu()).any()):
        split = float(tt[int((~target.cpu()).nonzero().max()) + 1])
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, b in baselines.items():
            color, style = _BASELINE_STYLE.get(name, ("tab:purple", ":"))
            bv = b.detach().cpu().double().numpy()
            ax.plot(tt, bv[:, i], color=color, linestyle=style, linewidth=0.9, label=name)
        ax.plot(tt, y[:, i], color="black", linewidth=1.3, label="truth")
        ax.plot(tt, p[:, i], color="tab:red", linewidth=1.3, label="latent ODE")
        ax.plot(tt[m], y[m, i], "o", color="tab:blue", markersize=3, label="observed")
        if split is not None:
            ax.axvline(split, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(labels[i] if labels is not None and i < len(labels) else f"state {i}")
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    from physid.evaluate import save_figure

    return save_figure(fig, path, dpi=110)


@dataclasses.dataclass(frozen=True)
class WindowData:
    """Normalised windows of one data set, ready for a fit.

    Attributes:
        t: ``(time,)``; train: ``(n_train, time, features)``; test: ``(n_test, time, features)``.
        stats: the normalisation statistics (``{"scheme", "offset", "scale"}``).
        labels: a name per feature.
    """

    t: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    stats: dict[str, Any]
    labels: tuple[str, ...]


def load_initial_state(model: LatentODE, source: str | Path) -> int:
    """Initialise ``model`` from a snapshot file (``snapshots/*.pt`` of a fit) or from the last
    model of a run directory (a warm start, e.g. to compare gradient methods from a shared
    checkpoint).

    Returns:
        the epoch the state comes from (-1 for an initial snapshot).

    Raises:
        DataError: the source does not exist or does not fit the model.
    """
    from physid._io import load_torch
    from physid.errors import DataError
    from physid.training import load_model_state

    path = Path(source)
    if path.is_dir():
        return load_model_state(model, path, "last")
    if not path.is_file():
        raise DataError(f"{path} is neither a snapshot file nor a run directory.")
    entry = load_torch(path)
    if not isinstance(entry, dict) or "model" not in entry:
        raise DataError(f"{path} is not a latent-ODE snapshot.")
    try:
        model.load_state_dict(entry["model"])
    except RuntimeError as exc:
        raise DataError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from exc
    return int(entry.get("epoch", -1))


def snapshot_epochs(epochs: int, n: int) -> list[int]:
    """``-1`` (the initial model) and ``n`` evenly spaced epochs ending at the last one (empty for
    ``n == 0``)."""
    if n <= 0 or epochs <= 0:
        return []
    return [-1] + sorted({max(0, round(epochs * k / n) - 1) for k in range(1, n + 1)})


def fixed_test_masks(
    data: WindowData, opts: TrainOptions, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed test masks of a fit (drawn once from ``seed``): ``(observed, target)``."""
    return task_masks(
        data.test.shape[0],
        data.t.shape[0],
        opts.observed,
        opts.task,
        split=opts.extrap_split,
        seed=seed,
        device=data.test.device,
    )


def fit_windows(
    model: LatentODE,
    data: WindowData,
    opts: TrainOptions,
    *,
    run_dir: str | Path | RunDir,
    config: Mapping[str, Any],
    epochs: int,
    eval_every: int,
    seed: int,
    test_mask_seed: int,
    progress: bool = True,
    resume: bool = True,
    resume_ignore: Sequence[str] = (),
    resume_added: Mapping[str, Any] | None = None,
    time_limit: float | None = None,
    description: str = "latent ODE",
    snapshots: int = 0,
) -> TrainResult:
    """Fit a latent ODE on ``data.train`` with :func:`physid.training.train` (Adamax, the
    per-iteration decay, :func:`make_epoch_fn`); test MSE on ``data.test`` every ``eval_every``
    epochs with the fixed masks of :func:`fixed_test_masks` (saved as ``test_mask.npy`` and
    ``test_target.npy``).

    The model must be freshly initialised from ``torch.manual_seed(seed)`` by the caller (so that
    the initialisation is the caller's to define); batches, masks and samples are drawn from a
    generator seeded with ``seed``. ``snapshots > 0`` saves the initial model and ``snapshots``
    evenly spaced ones along the run (the last epoch included) under ``run_dir/snapshots/``.

    Returns:
        :func:`physid.training.train`'s result (:func:`training_extras` summarises its records).
    """
    from physid._io import atomic_write
    from physid.training import train

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    optimizer = torch.optim.Adamax(model.parameters(), lr=opts.lr)
    gen = torch.Generator().manual_seed(seed)
    obs, target = fixed_test_masks(data, opts, test_mask_seed)
    epoch_fn = make_epoch_fn(
        model,
        optimizer,
        data.train,
        data.t,
        opts,
        gen,
        epochs=epochs,
        eval_every=eval_every,
        test=(data.test, obs, target),
        snapshot_dir=run / "snapshots",
        snapshot_epochs=snapshot_epochs(epochs, snapshots),
    )
    result = train(
        model,
        epoch_fn,
        optimizer=optimizer,
        epochs=epochs,
        run_dir=run,
        config=config,
        scheduler_interval="manual",
        select_metric="train_mse",
        resume=resume,
        resume_ignore=resume_ignore,
        resume_added=resume_added,
        progress=progress,
        description=description,
        time_limit=time_limit,
        generators=(gen,),
    )
    for name, mask in (("test_mask.npy", obs), ("test_target.npy", target)):
        with atomic_write(run / name, "wb") as fh:
            np.save(fh, mask.cpu().numpy())
    return result


def training_extras(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a fit's ``metrics.jsonl`` says about the solver's regime, for ``summary.json``.

    Returns:
        ``iterations`` (optimiser steps done), ``seconds_per_epoch``, ``nfe_forward_per_iter`` /
        ``nfe_backward_per_iter`` (means over all iterations), ``steps_accepted_per_iter`` /
        ``steps_rejected_per_iter`` (forward steps per iteration over the run) and the same at
        the last epoch (``*_last_epoch``), ``lr_final``; None where the records lack them.
    """
    hist = [r for r in history if "iterations" in r]
    iterations = int(sum(int(r["iterations"]) for r in hist))

    def per_iter(key: str) -> float | None:
        if not iterations:
            return None
        return float(sum(float(r.get(key, 0.0)) for r in hist)) / iterations

    secs = [float(r["seconds"]) for r in history if isinstance(r.get("seconds"), int | float)]
    last = hist[-1] if hist else {}
    return {
        "iterations": iterations,
        "seconds_per_epoch": float(np.mean(secs)) if secs else None,
        "nfe_forward_per_iter": per_iter("nfe_forward"),
        "nfe_backward_per_iter": per_iter("nfe_backward"),
        "steps_accepted_per_iter": per_iter("steps_accepted"),
        "steps_rejected_per_iter": per_iter("steps_rejected"),
        "steps_accepted_last_epoch": last.get("steps_accepted_per_iter"),
        "steps_rejected_last_epoch": last.get("steps_rejected_per_iter"),
        "lr_final": last.get("lr_end"),
    }
