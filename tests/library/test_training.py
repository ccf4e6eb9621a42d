from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from physid.errors import ConfigError, SolverError, SolverStatus, TrainingError
from physid.training import load_checkpoint, load_model_state, train

W_TRUE = torch.tensor([[2.0, -1.0, 0.5]])


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    y = x @ W_TRUE.double().T + 0.3
    torch.manual_seed(seed)
    model = nn.Linear(3, 1).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    return x, y, model, opt


def _epoch_fn(x, y, model, opt, *, interrupt_at: int | None = None, nan_at=()):
    """Mini-batch SGD whose batches come from the global torch RNG (tests RNG restore)."""

    def fn(epoch: int) -> dict[str, float]:
        perm = torch.randperm(len(x))
        total = 0.0
        for i, start in enumerate(range(0, len(x), 16)):
            if epoch == interrupt_at and i == 2:
                raise KeyboardInterrupt  # mid-epoch: two steps already taken
            idx = perm[start : start + 16]
            opt.zero_grad()
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
            total += loss.item()
        loss_value = total / 4
        if epoch in nan_at:
            loss_value = math.nan
        with torch.no_grad():
            val = ((model(x) - y) ** 2).mean().item()
        return {"loss": loss_value, "val_mse": val}

    return fn


def _train(model, fn, opt, run_dir: Path, **kwargs):
    """``train`` quietly (no progress bar, no plot) with the test's optimiser and folder."""
    return train(model, fn, optimizer=opt, run_dir=run_dir, progress=False, plot=False, **kwargs)


def test_loss_decreases_and_files_written(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    res = train(
        model,
        _epoch_fn(x, y, model, opt),
        optimizer=opt,
        scheduler=sched,
        epochs=30,
        run_dir=tmp_path / "run",
        config={"system": "toy", "lr": 0.05},
        progress=False,
    )
    assert not res.interrupted and res.epochs_completed == 30
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < 0.1 * losses[0]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30
    first = json.loads(lines[0])
    assert {"epoch", "seconds", "lr", "loss", "val_mse"} <= set(first)
    assert first["epoch"] == 0 and first["lr"] == pytest.approx(0.05)
    assert json.loads(lines[1])["lr"] == pytest.approx(0.05 * 0.95)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["system"] == "toy" and "physid_version" in cfg
    assert (tmp_path / "run" / "plots" / "loss.png").stat().st_size > 0


def test_best_checkpoint_is_min_of_select_metric(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    values = iter([5.0, 3.0, 4.0, 1.0, 2.0])

    def fn(epoch: int) -> dict[str, float]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # every epoch gives a different model
        return {"loss": 1.0, "score": next(values)}

    res = _train(model, fn, opt, tmp_path, epochs=5, select_metric="score")
    assert res.best_epoch == 3 and res.best_metric == 1.0
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["best"]["epoch"] == 3 and ckpt["last"]["epoch"] == 4
    fresh = nn.Linear(3, 1).double()
    assert load_model_state(fresh, tmp_path, "best") == 3
    # the best model is the state after 4 increments, the last one after 5
    torch.testing.assert_close(fresh.bias, model.bias - 1.0)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path: Path) -> None:
    epochs = 8
    x, y, model, opt = _problem()
    full = train(
        model,
        _epoch_fn(x, y, model, opt),
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        epochs=epochs,
        run_dir=tmp_path / "full",
        progress=False,
        plot=False,
    )
    w_full = [p.detach().clone() for p in model.parameters()]

    # interrupted at epoch 5, mid-epoch
    x, y, model, opt = _problem()
    part = train(
        model,
        _epoch_fn(x, y, model, opt, interrupt_at=5),
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        epochs=epochs,
        run_dir=tmp_path / "resumed",
        progress=False,
        plot=False,
    )
    assert part.interrupted and part.epochs_completed == 5
    assert load_checkpoint(tmp_path / "resumed")["last"]["epoch"] == 4

    # a new process: fresh objects, a different RNG state, same options
    torch.manual_seed(999)
    x, y, model, opt = _problem(seed=0)
    torch.manual_seed(999)
    res = train(
        model,
        _epoch_fn(x, y, model, opt),
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        epochs=epochs,
        run_dir=tmp_path / "resumed",
        progress=False,
        plot=False,
    )
    assert res.resumed_from == 5 and res.epochs_completed == epochs and not res.interrupted
    for a, b in zip(w_full, model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full.history]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == list(range(epochs))


def test_resume_refuses_changed_options(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    fn = _epoch_fn(x, y, model, opt)
    _train(model, fn, opt, tmp_path, epochs=2, config={"lr": 0.05})
    with pytest.raises(ConfigError, match="different options \\(lr\\)"):
        _train(model, fn, opt, tmp_path, epochs=3, config={"lr": 0.1})
    # more epochs is fine, and resume=False starts over
    res = _train(model, fn, opt, tmp_path, epochs=3, config={"lr": 0.05})
    assert res.resumed_from == 2 and res.epochs_completed == 3
    res = _train(model, fn, opt, tmp_path, epochs=1, config={"lr": 0.1}, resume=False)
    assert res.resumed_from == 0 and len(res.history) == 1


def test_resume_accepts_an_option_added_later_at_its_old_behaviour(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    fn = _epoch_fn(x, y, model, opt)
    _train(model, fn, opt, tmp_path, epochs=2, config={"lr": 0.05})  # before "scaling" existed
    added = {"scaling": "none"}
    with pytest.raises(ConfigError, match="different options \\(scaling\\)"):
        _train(
            model,
            fn,
            opt,
            tmp_path,
            epochs=3,
            config={"lr": 0.05, "scaling": "inputs"},
            resume_added=added,
        )
    with pytest.raises(ConfigError, match="different options \\(scaling\\)"):
        _train(model, fn, opt, tmp_path, epochs=3, config={"lr": 0.05, "scaling": "none"})
    res = _train(
        model,
        fn,
        opt,
        tmp_path,
        epochs=3,
        config={"lr": 0.05, "scaling": "none"},
        resume_added=added,
    )
    assert res.resumed_from == 2 and res.epochs_completed == 3


def test_nan_guard_recovers(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    fn = _epoch_fn(x, y, model, opt)
    tries = {"n": 0}

    def flaky(epoch: int):
        out = fn(epoch)
        if epoch == 2 and tries["n"] == 0:  # NaN only on the first try of epoch 2
            tries["n"] += 1
            return {**out, "loss": float("nan")}
        return out

    res = train(model, flaky, optimizer=opt, epochs=4, run_dir=tmp_path, progress=False, plot=False)
    assert res.nan_events == 1 and res.epochs_completed == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    assert all(math.isfinite(r["loss"]) for r in res.history)
    assert res.history[2]["lr"] == pytest.approx(0.025)


def test_nan_guard_gives_up(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    fn = _epoch_fn(x, y, model, opt, nan_at={1})
    with pytest.raises(TrainingError, match="epoch 1: loss is not finite after 2 retries"):
        _train(model, fn, opt, tmp_path, epochs=3, nan_retries=2)
    # the last good epoch is on disk and resumable
    assert load_checkpoint(tmp_path)["last"]["epoch"] == 0


def test_nan_guard_catches_non_finite_solver_error(tmp_path: Path) -> None:
    x, y, model, opt = _problem()

    def fn(epoch: int):
        if epoch == 1:
            raise SolverError(SolverStatus.NON_FINITE, "NaN at t=0.5", t=0.5, step_size=0.1)
        return _epoch_fn(x, y, model, opt)(epoch)

    with pytest.raises(TrainingError, match="non-finite state"):
        _train(model, fn, opt, tmp_path, epochs=3, nan_retries=1)


def test_missing_select_metric(tmp_path: Path) -> None:
    x, y, model, opt = _problem()
    with pytest.raises(TrainingError, match="returned no 'loss'"):
        _train(model, lambda e: {"mse": 1.0}, opt, tmp_path, epochs=1)


def test_progress_bar_with_captured_streams(tmp_path: Path, capsys) -> None:
    x, y, model, opt = _problem()
    res = train(
        model,
        _epoch_fn(x, y, model, opt, interrupt_at=1),
        optimizer=opt,
        epochs=3,
        run_dir=tmp_path,
        progress=True,
        plot=False,
    )
    assert res.interrupted and res.epochs_completed == 1
    # train() records the interruption; saying how to resume is its caller's (the experiment)
    assert load_checkpoint(tmp_path)["stopped"] == "interrupted"
    capsys.readouterr()


def test_resuming_with_no_epochs_left_marks_the_run_done(tmp_path: Path) -> None:
    """An interrupted run resumed with as many epochs as it had finished (or fewer) trains
    nothing and is then finished: its checkpoint no longer says interrupted."""
    x, y, model, opt = _problem()
    part = _train(model, _epoch_fn(x, y, model, opt, interrupt_at=3), opt, tmp_path, epochs=6)
    assert part.interrupted and load_checkpoint(tmp_path)["stopped"] == "interrupted"
    before = [p.detach().clone() for p in model.parameters()]
    res = _train(model, _epoch_fn(x, y, model, opt), opt, tmp_path, epochs=2)
    assert not res.interrupted and res.resumed_from == 3 and res.epochs_completed == 3
    assert load_checkpoint(tmp_path)["stopped"] == "done"
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
