"""Short exploratory latent-ODE fits on the hopper: what limits learning (docs/hopper.md).

A bare training loop (no run directory, no resume) with every knob of the study on the command
line — data size, iterations, batch, lr schedule, optimiser, widths, latent size, tolerances, a
time scale, the observed fraction — that logs, every ``--eval-every`` iterations, the training
MSE, the test MSE of the posterior mean on the first 200 test windows (fixed masks, seed 2024),
the latent solve's accepted/rejected dopri5 steps and NFE per iteration, seconds per iteration,
the lr, the KL weight and the posterior's mean std, as JSON lines in ``--out`` (the first line has
the arguments and the baselines on the same windows). The runs of the study are in
``bench_results/hopper_explore/``.

Example (the protocol's schedule at the old default sizes, 3,000 iterations):
    python scripts/hopper_explore.py --iters 3000 --eval-every 200 --out /tmp/r1.jsonl
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physid.models.experiments import hopper as E  # noqa: E402
from physid.models.latent_ode import LatentODE, LatentODEConfig, kl_coefficient  # noqa: E402

import physid  # noqa: E402
from physid.baselines import baseline_mse  # noqa: E402
from physid.data import subsample_mask  # noqa: E402

torch.set_num_threads(1)
p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--n", type=int, default=1000)
p.add_argument("--iters", type=int, default=1000)
p.add_argument("--batch", type=int, default=50)
p.add_argument("--lr", type=float, default=1e-2)
p.add_argument("--decay", type=float, default=0.999)
p.add_argument("--floor", type=float, default=1e-3)
p.add_argument("--observed", type=float, default=0.1)
p.add_argument("--latent", type=int, default=15)
p.add_argument("--rec", type=int, default=30)
p.add_argument("--gru", type=int, default=50)
p.add_argument("--units", type=int, default=100)
p.add_argument("--gen-layers", type=int, default=2)
p.add_argument("--rec-layers", type=int, default=1)
p.add_argument("--z0", type=int, default=50)
p.add_argument("--rtol", type=float, default=1e-3)
p.add_argument("--atol", type=float, default=1e-4)
p.add_argument("--method", default="aca")
p.add_argument("--samples", type=int, default=3)
p.add_argument("--kl-wait-iters", type=int, default=None)
p.add_argument("--kl-rate", type=float, default=0.99)
p.add_argument("--kl-epoch-iters", type=int, default=16)
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--norm", default="minmax")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--opt", default="adamax")
p.add_argument("--init-std", type=float, default=0.1)
p.add_argument("--tscale", type=float, default=1.0)
p.add_argument("--out", required=True)
p.add_argument("--data-dir", default="data")
a = p.parse_args()

cfg = E.FitConfig(n_trajectories=a.n, normalisation=a.norm, data_dir=a.data_dir)
d = E._tensors(E.load_data(cfg), cfg, torch.device("cpu"))
t = d.t * a.tscale
ntest = min(200, d.test.shape[0])
xt = d.test[:ntest]
tmask = subsample_mask(ntest, 100, a.observed, seed=2024)
base = baseline_mse(xt.double(), t.double(), tmask)
sizes = LatentODEConfig(
    latent_dim=a.latent,
    rec_dim=a.rec,
    gru_units=a.gru,
    units=a.units,
    gen_layers=a.gen_layers,
    rec_layers=a.rec_layers,
    z0_units=a.z0,
    init_std=a.init_std,
)
torch.manual_seed(a.seed)
model = LatentODE(sizes)
nparams = sum(p.numel() for p in model.parameters())
opt = (torch.optim.Adamax if a.opt == "adamax" else torch.optim.Adam)(model.parameters(), lr=a.lr)
gen = torch.Generator().manual_seed(a.seed)
ntrain = d.train.shape[0]
nb = math.ceil(ntrain / a.batch)
out = open(a.out, "w")
out.write(json.dumps({"args": vars(a), "baselines": base, "nparams": nparams}) + "\n")
print("baselines", {k: v * 100 for k, v in base.items()}, "params", nparams, flush=True)
kw = dict(method=a.method, solver="dopri5", rtol=a.rtol, atol=a.atol)
acc = {"mse": 0.0, "acc": 0, "rej": 0, "nf": 0, "nb": 0, "n": 0, "sec": 0.0}
order = torch.randperm(ntrain, generator=gen)
t_start = time.perf_counter()
for it in range(1, a.iters + 1):
    b = (it - 1) % nb
    if b == 0:
        order = torch.randperm(ntrain, generator=gen)
    idx = order[b * a.batch : (b + 1) * a.batch]
    xb = d.train[idx]
    mask = subsample_mask(xb.shape[0], 100, a.observed, generator=gen)
    for g in opt.param_groups:
        g["lr"] = max(g["lr"] * a.decay, a.floor)
    epoch_equiv = (it - 1) // a.kl_epoch_iters
    wait = 10 if a.kl_wait_iters is None else a.kl_wait_iters // a.kl_epoch_iters
    kl = kl_coefficient(epoch_equiv, wait, a.kl_rate)
    st = physid.SolveStats()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    terms = model.elbo(xb, mask, t, kl_coef=kl, n_samples=a.samples, stats=st, **kw)
    terms.loss.backward()
    opt.step()
    acc["sec"] += time.perf_counter() - t0
    acc["mse"] += terms.mse
    acc["acc"] += st.steps_accepted
    acc["rej"] += st.steps_rejected
    acc["nf"] += st.nfe_forward
    acc["nb"] += st.nfe_backward
    acc["n"] += 1
    if it % a.eval_every == 0 or it == a.iters:
        model.eval()
        with torch.no_grad():
            mean, std = model.encoder(xt, tmask, t)
            xh = model.decode(mean, t, method="naive", solver="dopri5", rtol=a.rtol, atol=a.atol)
            tm = float(((xh - xt) ** 2).mean())
        model.train()
        n = acc["n"]
        rec = {
            "it": it,
            "train_mse": acc["mse"] / n,
            "test_mse_mean_z0": tm,
            "acc": acc["acc"] / n,
            "rej": acc["rej"] / n,
            "nfe_f": acc["nf"] / n,
            "nfe_b": acc["nb"] / n,
            "s_per_it": acc["sec"] / n,
            "lr": opt.param_groups[0]["lr"],
            "kl": kl,
            "std": float(std.mean()),
            "wall": time.perf_counter() - t_start,
        }
        out.write(json.dumps(rec) + "\n")
        out.flush()
        print(
            f"it {it} train {rec['train_mse'] * 100:.4f} test {tm * 100:.4f} "
            f"acc {rec['acc']:.1f} rej {rec['rej']:.1f} "
            f"nfe {rec['nfe_f']:.0f}/{rec['nfe_b']:.0f} {rec['s_per_it']:.3f}s/it "
            f"lr {rec['lr']:.2e} kl {kl:.3f}",
            flush=True,
        )
        acc = {k: 0 if k != "sec" else 0.0 for k in acc}
        acc["mse"] = 0.0
torch.save(model.state_dict(), a.out + ".pt")
