from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from physid._io import (
    append_jsonl,
    atomic_write,
    load_json,
    load_torch,
    read_jsonl,
    save_json,
    save_torch,
    to_jsonable,
)
from physid.device import resolve_device
from physid.errors import ConfigError, DataError
from physid.runs import RunDir, RunSummary


def test_json_round_trip_and_conversion(tmp_path: Path) -> None:
    obj = {"a": 1, "b": np.float64(2.5), "c": torch.tensor([1.0, 2.0]), "d": (1, 2), "e": None}
    save_json(tmp_path / "sub" / "x.json", obj)
    assert load_json(tmp_path / "sub" / "x.json") == {
        "a": 1,
        "b": 2.5,
        "c": [1.0, 2.0],
        "d": [1, 2],
        "e": None,
    }
    assert to_jsonable(float("nan")) is None


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("new, half written")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]  # no temporary file left behind


def test_load_json_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_json(bad)


def test_torch_round_trip_and_errors(tmp_path: Path) -> None:
    save_torch(tmp_path / "m.pt", {"w": torch.arange(3.0)})
    assert torch.equal(load_torch(tmp_path / "m.pt")["w"], torch.arange(3.0))
    with pytest.raises(DataError, match="does not exist"):
        load_torch(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DataError, match="not a readable torch checkpoint"):
        load_torch(junk)


def test_jsonl_ignores_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"epoch": 0})
    append_jsonl(p, {"epoch": 1})
    with open(p, "a") as fh:
        fh.write('{"epoch": 2, "lo')
    assert read_jsonl(p) == [{"epoch": 0}, {"epoch": 1}]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_files_get_ordinary_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    from physid._io import save_json

    path = tmp_path / "x.json"
    save_json(path, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_require_finished_names_what_is_missing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(DataError, match="has no summary.json: fit it first"):
        run.require_finished()
    run.path.mkdir()
    run.write_summary(RunSummary("hopper", "latent-ode", "aca", 0, test_mse=1e-3, interrupted=True))
    with pytest.raises(DataError, match="unfinished: run its fit again"):
        run.require_finished()
    run.write_summary(RunSummary("hopper", "latent-ode", "aca", 0, test_mse=1e-3))
    assert run.require_finished() is run
    assert run.require_finished().read_summary().test_mse == 1e-3
