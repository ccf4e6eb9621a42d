"""The acrobot's physical constants from its trajectories, what motion can identify, and the
energy-shaping swing-up driven by the identified model.

1. **Data**: the seminorm paper's acrobot data (constant torques, states from U(-pi, pi)^4, 32
   control periods of 0.05 s; ground truth by DOP853 at 1e-10), ``--per-control`` trajectories
   per control, all four state components observed.
2. **Identifiability**: the equations of motion depend on the seven constants
   ``m1, m2, l1, lc1, lc2, i1, i2`` only through five combinations
   (:func:`physid.envs.acrobot.base_parameters`: ``a1 = i1 + m1 lc1² + m2 l1²``,
   ``a2 = i2 + m2 lc2²``, ``a3 = m2 l1 lc2``, ``a4 = g (m1 lc1 + m2 l1)``, ``a5 = g m2 lc2``),
   so the Jacobian of the trajectories with respect to the seven has rank 5 and its null space
   is that of ``∂a/∂θ``. The script prints the singular values (of the Jacobian with respect to
   ``log θ``, so that they compare relative changes) and the principal angles between the
   numerical and the derived null spaces.
3. **Identification**: Levenberg-Marquardt from every constant off by up to ±30%, (i) in the
   seven physical constants (rank-deficient: the Gauss-Newton step is the minimum-norm one) and
   (ii) in the five base parameters (full rank, with standard errors); the base parameters of
   both against the truth.
4. **Swing-up**: ``u = g⁺(∂V/∂q - ∂V_d/∂q) - g⁺ k M q̇`` (``V_d = -V``, k = 4 /s, |u| <= 50,
   zero-order hold 0.05 s, 20 s from q1 = 0.05) with V and M from (a) the identified model,
   (b) the truth (the oracle), (c) the initial guess, on the true simulator; success = tip height
   >= 1.9 and every |q̇| < 0.1 over the last 2 s.

Writes ``acrobot.{json,md,png}`` into ``--out``.

    python scripts/known_form_acrobot.py --out bench_results/known_form
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physid.envs import acrobot as sim  # noqa: E402
from physid.models.experiments.acrobot import (  # noqa: E402
    DEFAULT_DAMPING_RATE,
    MAX_TORQUE,
    tip_criterion,
)
from physid.models.known_form import KnownFormAcrobot  # noqa: E402

import physid  # noqa: E402
from physid import control as ctl  # noqa: E402
from physid._io import atomic_write, save_json  # noqa: E402

F64 = torch.float64


def identify(
    parameterization: str,
    init: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    u: torch.Tensor,
    tol: float,
) -> dict[str, Any]:
    model = KnownFormAcrobot(init, parameterization=parameterization, control=u)
    stats = physid.SolveStats()
    n = init.numel()

    def fun(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            model.constants.copy_(x)
        jac = physid.odeint_jacobian(model, y[0], t, rtol=tol, atol=tol, stats=stats)
        return (jac.ys - y).reshape(-1), jac.dparams.reshape(-1, n)

    cpu0 = time.process_time()
    res = physid.levenberg_marquardt(fun, init, lower=0.0)
    with torch.no_grad():
        model.constants.copy_(res.x)
    return {
        "model": model,
        "result": res,
        "cpu_seconds": time.process_time() - cpu0,
        "nfe_forward": stats.nfe_forward,
    }


def swing_up(model_v, model_minv, steps: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    params = sim.AcrobotParams()
    controller = ctl.EnergyShapingController(
        model_v,
        lambda q: sim.input_matrix(q, params),
        inverse_mass=model_minv,
        damping=ctl.MassDamping(DEFAULT_DAMPING_RATE),
        max_control=MAX_TORQUE,
    )
    state0 = np.array([0.05, 0.0, 0.0, 0.0])
    result = ctl.run_closed_loop(
        controller,
        lambda x, uu: sim.simulate(x, uu[None], params)[-1],
        state0,
        n_steps=steps,
        period=sim.CONTROL_PERIOD,
    )
    criterion = tip_criterion(params)
    height = sim.tip_height(result.states, params)
    last = result.t >= result.t[-1] - criterion.hold_time - 1e-9
    return {
        "success": ctl.hold_success(result, criterion),
        "final_tip_height": float(height[-1]),
        "min_tip_height_last_2s": float(height[last].min()),
        "max_speed_last_2s": float(np.abs(result.states[last, 2:]).max()),
        "work_abs": ctl.actuator_energy(result)["work_abs"],
        "t": result.t.tolist(),
        "tip_height": np.asarray(height).tolist(),
        "states": result.states.tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/known_form"))
    parser.add_argument("--per-control", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="Data and initial guess.")
    parser.add_argument("--spread", type=float, default=0.3, help="Initial guess: truth x U(1±s).")
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--steps", type=int, default=400, help="Swing-up control periods.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    truth = sim.AcrobotParams()
    t_np, states, u_np = sim.simulate_constant_controls(args.per_control, seed=args.seed)
    t = torch.as_tensor(t_np)
    y = torch.as_tensor(states).transpose(0, 1).contiguous()  # (T, trajectories, 4)
    u = torch.as_tensor(u_np)
    theta_true = torch.tensor([getattr(truth, n) for n in sim.PHYSICAL_PARAMETERS], dtype=F64)
    a_true = sim.base_parameters(truth)
    rng = np.random.default_rng(args.seed)
    theta0 = theta_true * torch.as_tensor(rng.uniform(1 - args.spread, 1 + args.spread, 7))
    a0 = sim.base_parameters(theta0, truth.gravity)

    # -- identifiability at the truth: the Jacobian with respect to log θ ---------------------
    probe = KnownFormAcrobot(theta_true, control=u)
    jac = physid.odeint_jacobian(probe, y[0], t, rtol=args.tol, atol=args.tol)
    J_log = jac.dparams.reshape(-1, 7) * theta_true  # ∂y/∂log θ
    _, s_log, vh = torch.linalg.svd(J_log, full_matrices=False)
    da = torch.autograd.functional.jacobian(
        lambda th: sim.base_parameters(th, truth.gravity), theta_true
    )
    da_log = da * theta_true
    null_derived = torch.linalg.svd(da_log).Vh[5:]
    cosines = torch.linalg.svdvals(null_derived @ vh[5:].T)
    identifiability = {
        "singular_values_log": s_log.tolist(),
        "relative_singular_values": (s_log / s_log[0]).tolist(),
        "null_directions_log": vh[5:].tolist(),
        "null_derived_log": null_derived.tolist(),
        "principal_angle_cosines": cosines.tolist(),
    }
    print("singular values of ∂y/∂log θ:", [f"{v:.3g}" for v in s_log.tolist()])
    print("null space vs derived, cosines of the principal angles:", cosines.tolist())

    # -- identification -------------------------------------------------------------------------
    fits: dict[str, Any] = {}
    for name, init in (("physical", theta0), ("base", a0)):
        fit = identify(name, init.clone(), y, t, u, args.tol)
        res = fit["result"]
        a_hat = fit["model"].base().detach()
        rel = ((a_hat - a_true).abs() / a_true).tolist()
        entry = {
            "initial": init.tolist(),
            "estimate": res.x.tolist(),
            "base_estimate": a_hat.tolist(),
            "base_rel_error": rel,
            "max_base_rel_error": max(rel),
            "iterations": res.iterations,
            "status": res.status,
            "cost": res.cost,
            "rank": res.rank,
            "singular_values": res.singular_values.tolist(),
            "std_errors": res.std_errors.tolist(),
            "cpu_seconds": fit["cpu_seconds"],
            "nfe_forward": fit["nfe_forward"],
        }
        if name == "physical":
            entry["physical_rel_error"] = ((res.x - theta_true).abs() / theta_true).tolist()
        fits[name] = entry
        fits[name]["_model"] = fit["model"]
        print(
            f"{name}: {res.iterations} iterations, rank {res.rank}, base parameters within "
            f"{max(rel):.2e}, {fit['cpu_seconds']:.1f} s CPU"
        )

    # -- swing-up -------------------------------------------------------------------------------
    identified = fits["base"]["_model"]
    guess = KnownFormAcrobot(a0, parameterization="base")
    controls = {
        "identified (base fit)": (identified.potential, identified.inverse_mass),
        "identified (physical fit)": (
            fits["physical"]["_model"].potential,
            fits["physical"]["_model"].inverse_mass,
        ),
        "oracle (truth)": (
            lambda q: sim.potential(q, truth),
            lambda q: torch.linalg.inv(sim.mass_matrix(q, truth)),
        ),
        "initial guess": (guess.potential, guess.inverse_mass),
    }
    swings = {}
    for name, (v, minv) in controls.items():
        with torch.no_grad():
            swings[name] = swing_up(v, minv, args.steps)
        print(
            f"swing-up with {name}: success {swings[name]['success']}, final tip height "
            f"{swings[name]['final_tip_height']:.3f}"
        )

    oracle = np.asarray(swings["oracle (truth)"]["states"])
    for s in swings.values():
        s["max_state_deviation_from_oracle"] = float(
            np.abs(np.asarray(s.pop("states")) - oracle).max()
        )
    for entry in fits.values():
        entry.pop("_model")
    results = {
        "settings": vars(args) | {"out": str(args.out)},
        "n_trajectories": int(y.shape[1]),
        "n_times": len(t),
        "physical_names": list(sim.PHYSICAL_PARAMETERS),
        "base_names": list(sim.BASE_PARAMETERS),
        "theta_true": theta_true.tolist(),
        "base_true": a_true.tolist(),
        "identifiability": identifiability,
        "fits": fits,
        "swing_up": swings,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "acrobot.json", results)
    with atomic_write(args.out / "acrobot.md", "w") as fh:
        fh.write(markdown(results))
    plot(results, args.out / "acrobot.png")
    print(markdown(results))
    return 0


def markdown(r: dict[str, Any]) -> str:
    ident = r["identifiability"]
    lines = [
        f"{r['n_trajectories']} trajectories x {r['n_times']} samples; constants "
        f"{', '.join(r['physical_names'])}; base parameters {', '.join(r['base_names'])}.",
        "",
        "Singular values of ∂(trajectories)/∂log θ at the truth, relative to the largest: "
        + ", ".join(f"{v:.2g}" for v in ident["relative_singular_values"])
        + ". Cosines of the principal angles between the numerical null space (last two right "
        "singular vectors) and the derived one (null space of ∂a/∂log θ): "
        + ", ".join(f"{c:.12f}" for c in ident["principal_angle_cosines"])
        + ".",
        "",
        "| fit | unknowns | rank | iterations | max base-parameter rel. error | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in r["fits"].items():
        lines.append(
            f"| {name} | {len(f['estimate'])} | {f['rank']} | {f['iterations']} | "
            f"{f['max_base_rel_error']:.2e} | {f['cpu_seconds']:.1f} |"
        )
    phys = r["fits"]["physical"]
    lines += [
        "",
        "Physical constants from the 7-parameter fit (relative error; only the base "
        "combinations are determined): "
        + ", ".join(
            f"{n} {e:.1e}"
            for n, e in zip(r["physical_names"], phys["physical_rel_error"], strict=True)
        )
        + ".",
        "",
        "Base parameters (5-parameter fit): "
        + ", ".join(
            f"{n} = {v:.8g} ± {s:.1g} (true {tv:.8g})"
            for n, v, s, tv in zip(
                r["base_names"],
                r["fits"]["base"]["estimate"],
                r["fits"]["base"]["std_errors"],
                r["base_true"],
                strict=True,
            )
        )
        + ".",
        "",
        "| swing-up model | success | final tip height | min tip height, last 2 s | "
        "max speed, last 2 s | actuator work | max state deviation from the oracle's rollout |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in r["swing_up"].items():
        lines.append(
            f"| {name} | {s['success']} | {s['final_tip_height']:.3f} | "
            f"{s['min_tip_height_last_2s']:.3f} | {s['max_speed_last_2s']:.3g} | "
            f"{s['work_abs']:.1f} | {s['max_state_deviation_from_oracle']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.3), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    sv = np.asarray(r["identifiability"]["relative_singular_values"])
    ax1.semilogy(np.arange(1, 8), np.maximum(sv, 1e-18), "o-", label="7 physical (log θ)")
    ax1.axvspan(5.5, 7.5, color="tab:red", alpha=0.1, label="not identifiable")
    ax1.set_xlabel("singular value index")
    ax1.set_ylabel("σ_i / σ_1 of ∂(trajectories)/∂log θ")
    ax1.set_title("what motion determines: 5 of 7")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize="small")
    for name, s in r["swing_up"].items():
        ax2.plot(s["t"], s["tip_height"], label=f"{name} ({'success' if s['success'] else 'fail'})")
    ax2.axhline(1.9, color="grey", ls=":", lw=1)
    ax2.set_xlabel("t [s]")
    ax2.set_ylabel("tip height")
    ax2.set_title("energy-shaping swing-up on the true acrobot")
    ax2.legend(fontsize="small")
    ax2.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
