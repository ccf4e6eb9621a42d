"""The known-form measurement scripts on tiny budgets: they run, write their table, JSON and plot,
and the numbers they report obey what must hold (Levenberg-Marquardt converges on the paper's
three-body data; forward equals aca; the acrobot's Jacobian has rank 5 with the derived null
space)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from physid._io import load_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import known_form_acrobot  # noqa: E402
import known_form_basin  # noqa: E402
import known_form_errcon  # noqa: E402
import known_form_three_body_lm  # noqa: E402


def test_three_body_lm_converges_from_the_paper_guess(tmp_path: Path) -> None:
    argv = ["--skip-adam", "--lm", "1e-6", "--max-iterations", "10", "--out", str(tmp_path)]
    assert known_form_three_body_lm.main(argv) == 0
    res = load_json(tmp_path / "three_body_lm.json")
    (lm,) = res["lm"]
    assert lm["max_mass_rel_error"] < 1e-3 and lm["iterations"] <= 10
    assert len(lm["singular_values"]) == 3 and all(s > 0 for s in lm["std_errors"])
    assert "LM (forward sensitivities)" in (tmp_path / "three_body_lm.md").read_text()
    assert (tmp_path / "three_body_lm.png").stat().st_size > 0


def test_acrobot_identifies_the_base_parameters(tmp_path: Path) -> None:
    argv = ["--per-control", "1", "--steps", "40", "--tol", "1e-9", "--out", str(tmp_path)]
    assert known_form_acrobot.main(argv) == 0
    res = load_json(tmp_path / "acrobot.json")
    rel = res["identifiability"]["relative_singular_values"]
    assert rel[4] > 1e-4 and rel[5] < 1e-12
    assert min(res["identifiability"]["principal_angle_cosines"]) > 1 - 1e-8
    for fit in res["fits"].values():
        assert fit["rank"] == 5 and fit["max_base_rel_error"] < 1e-5
    assert set(res["swing_up"]) >= {"oracle (truth)", "identified (base fit)"}
    assert (tmp_path / "acrobot.png").stat().st_size > 0


@pytest.mark.slow  # reference gradients at 1e-12 for three points
def test_errcon_forward_equals_aca_and_errcon_is_more_accurate(tmp_path: Path) -> None:
    assert known_form_errcon.main(["--tols", "1e-5", "--out", str(tmp_path)]) == 0
    res = load_json(tmp_path / "errcon.json")
    for entry in res["points"].values():
        (aca,), (fwd,), (errcon,) = (entry["runs"][k] for k in ("aca", "forward", "forward+errcon"))
        assert abs(fwd["grad_rel_error"] - aca["grad_rel_error"]) < 1e-6
        assert fwd["steps_accepted"] == aca["steps_accepted"]
        assert errcon["grad_rel_error"] < aca["grad_rel_error"]
        assert errcon["steps_accepted"] > aca["steps_accepted"]


@pytest.mark.slow  # one start of each arm on 2000 points
def test_basin_runs_every_arm_and_resumes(tmp_path: Path) -> None:
    argv = ["--starts", "1", "--lm-iterations", "2", "--adam-epochs", "1", "--segments", "2"]
    argv += ["--out", str(tmp_path)]
    assert known_form_basin.main(argv) == 0
    res = load_json(tmp_path / "basin.json")
    assert set(res["summary"]) == {"lm-single", "lm-multiple", "adam"}
    assert all(res["summary"][arm]["n"] == 1 for arm in res["summary"])
    before = (tmp_path / "basin.json").stat().st_mtime_ns
    assert known_form_basin.main(argv) == 0  # everything saved: only the summary is redone
    assert load_json(tmp_path / "basin.json")["runs"] == res["runs"]
    assert (tmp_path / "basin.json").stat().st_mtime_ns >= before
