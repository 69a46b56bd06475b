r"""Which proxy knows what the flow does not? Stand-alone proxies against the npe flow.

For each task and budget it trains jsbi's ``npe`` flow, then fits every proxy family of
METHOD.md section 4b on its own, by its own data loss, on the same training pairs and
with early stopping on the same validation pairs:

- ``likelihood``: :math:`\pi(\theta) \, l_\psi(x \mid \theta)`, a conditional NSF on ``x``
  given ``theta`` fitted by maximum likelihood (NLE);
- ``ratio-nrea``: :math:`\pi e^{g}`, ``g`` by the one-negative contrastive loss (today's
  warm-up);
- ``ratio-nrec``: :math:`\pi e^{g}`, ``g`` by NRE-C (``K`` atoms, ``gamma``);
- ``residual``: :math:`q_{npe} e^{g}`, ``g`` zero-initialised, fitted by ``C`` with
  ``log Z`` importance-sampled from the flow.

It prints, per proxy, the NLL of fresh held-out pairs (the proxy's ``log Z`` by defensive
importance sampling, half flow and half prior samples, with the smallest ESS fraction)
against the flow's, the paired difference (negative: the proxy is the better model), and
with ``--observations`` the C2ST of proxy samples (importance resampling) and of flow
samples against the reference posterior. ``--likelihood-variant NAME KEY=VALUE ...`` adds
a likelihood proxy built with other options (e.g. ``likelihood-t2 num_transforms=2``), so
that a cheaper proxy is scored against the default on the same pairs; the ``fit s`` column
and the time per epoch say what it saves. Development tasks only.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proxy_table.py --tasks two_moons \
        --num-simulations 1000 --out benchmarks/results/proxy_table
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proxy_table.py --tasks two_moons \
        --proxies likelihood --likelihood-variant likelihood-t2 num_transforms=2
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import statistics
import time
from pathlib import Path

import torch
from objectives import _value

import jsbi
from jsbi.benchmark import DEV_TASKS
from jsbi.diagnostics.c2st import c2st
from jsbi.estimator import PosteriorEstimator
from jsbi.objectives import contrastive_ratio_loss, log_normalizer, nrec_loss, proxy_fit
from jsbi.proxies.importance import importance_resample, proxy_nll
from jsbi.proxies.likelihood import LikelihoodEnergy
from jsbi.proxies.ratio import PriorTimesRatioEnergy
from jsbi.proxies.residual import ResidualEnergy
from jsbi.seeding import seeded
from jsbi.training.data import split_indices

PROXIES = ("likelihood", "ratio-nrea", "ratio-nrec", "residual")


def fit_by_early_stopping(
    module,
    loss,
    theta_tr,
    x_tr,
    theta_val,
    x_val,
    *,
    seed,
    lr=5e-4,
    batch_size=200,
    patience=20,
    max_epochs=2000,
):
    r"""Adam on ``loss(module, theta, x)`` with early stopping on the validation loss."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, epoch = math.inf, None, 0, 0
    n = len(theta_tr)
    while epoch - best_epoch < patience and epoch < max_epochs:
        epoch += 1
        module.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - n % batch_size if n >= batch_size else n, batch_size):
            idx = order[i : i + batch_size]
            value = loss(module, theta_tr[idx], x_tr[idx])
            opt.zero_grad()
            value.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
        module.eval()
        with torch.no_grad():
            torch.manual_seed(seed)  # the same validation samples every epoch
            val = float(loss(module, theta_val, x_val))
        if val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    module.eval()
    return {"epochs": epoch, "best_epoch": best_epoch, "best_validation_loss": best}


def _roll_atoms(theta: torch.Tensor, K: int, start: int) -> torch.Tensor:
    # K parameter atoms per x from the batch itself: theta rolled by start, start+1, ...
    return torch.stack([theta.roll(start + k, dims=0) for k in range(K)])


def build(name, task, flow, theta_tr, x_tr, args):
    m = x_tr.shape[1]
    variants = dict(args.likelihood_variant)
    if name == "likelihood" or name in variants:
        options = variants.get(name, {})
        proxy = LikelihoodEnergy(task.prior, m, **options).set_standardization(theta_tr, x_tr)

        def loss(mod, th, x):
            return mod.data_loss(th, x)

    elif name.startswith("ratio"):
        proxy = PriorTimesRatioEnergy(task.prior, m, hidden_features=(64, 64))
        proxy.set_standardization(theta_tr, x_tr)
        K, gamma = args.atoms, args.gamma

        def loss(mod, th, x):
            if name == "ratio-nrea":
                g_marginal = mod.log_ratio(th.roll(1, 0), x)
                return contrastive_ratio_loss(mod.log_ratio(th, x), g_marginal)
            joint = torch.cat([th[None], _roll_atoms(th, K - 1, 1)])
            marginal = _roll_atoms(th, K, K)
            return nrec_loss(mod.log_ratio(joint, x), mod.log_ratio(marginal, x), gamma)

    elif name == "residual":
        proxy = ResidualEnergy(flow, hidden_features=(64, 64)).set_standardization(theta_tr, x_tr)

        def loss(mod, th, x):
            with torch.no_grad():
                theta_k = mod.base.sample((args.residual_samples,), x)
                log_q = mod.base.log_prob(theta_k, x)
            log_z, _ = log_normalizer(-mod(theta_k, x), log_q)
            return proxy_fit(mod(th, x), log_z)

    else:
        raise ValueError(name)
    return proxy, loss


def _variant(words, parser):
    # ["likelihood-t2", "num_transforms=2"] -> ("likelihood-t2", {"num_transforms": 2})
    name, *pairs = words
    if name in PROXIES or any("=" not in kv for kv in pairs) or "=" in name:
        parser.error(f"--likelihood-variant: expected a new NAME then KEY=VALUE, got {words}")
    options = {k: _value(v) for k, v in (kv.split("=", 1) for kv in pairs)}
    try:  # an unknown option is an error now, not after the npe flow trained
        LikelihoodEnergy(torch.distributions.Normal(torch.zeros(1), 1.0), 1, **options)
    except TypeError as err:
        parser.error(f"--likelihood-variant {name}: {err}")
    return name, options


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows) -> str:
    r"""One line per (task, budget, model): held-out NLL, minus the flow's (± its standard
    error, paired over the held-out pairs), the smallest ESS fraction of ``log Z``'s
    importance weights, and the mean C2ST over the observations scored."""
    lines = [
        "| task | sims | model | held-out NLL | minus flow (± se) | min ESS | C2ST | fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scores = json.loads(r["c2st"])
        c2st_text = f"{statistics.fmean(scores):.3f} (n={len(scores)})" if scores else "-"
        diff = (
            "-"
            if r["model"] == "flow"
            else f"{float(r['nll_minus_flow']):+.3f} ± {float(r['nll_diff_sd']):.3f}"
        )
        lines.append(
            f"| {r['task']} | {r['num_simulations']} | {r['model']} | {float(r['nll']):.3f} | "
            f"{diff} | {float(r['min_ess']):.3f} | {c2st_text} | {float(r['fit_time']):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(DEV_TASKS), choices=list(DEV_TASKS))
    p.add_argument("--num-simulations", nargs="+", type=int, default=[1000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=PROXIES)
    p.add_argument("--held-out", type=int, default=500, help="fresh pairs for the NLLs")
    p.add_argument("--is-samples", type=int, default=2048, help="per x, for log Z")
    p.add_argument("--observations", nargs="*", type=int, default=[])
    p.add_argument("--num-samples", type=int, default=10_000, help="samples for C2ST")
    p.add_argument("--atoms", type=int, default=10, help="NRE-C's K")
    p.add_argument("--gamma", type=float, default=1.0, help="NRE-C's gamma")
    p.add_argument("--residual-samples", type=int, default=16)
    p.add_argument(
        "--likelihood-variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="also fit a likelihood proxy NAME with these LikelihoodEnergy options "
        "(repeatable), e.g. likelihood-t2 num_transforms=2",
    )
    p.add_argument("--out", default=None, help="folder for rows.csv (appended)")
    p.add_argument(
        "--support",
        default=None,
        choices=["transform", "truncate"],
        help="the npe flow's support (default: the package's; the recorded tables used transform)",
    )
    p.add_argument(
        "--table",
        nargs="+",
        metavar="ROWS_CSV",
        help="print the markdown table of these rows.csv files and exit (nothing trained)",
    )
    args = p.parse_args()
    args.likelihood_variant = [_variant(v, p) for v in args.likelihood_variant]
    if args.table:
        print(markdown_table([r for path in args.table for r in _read(path)]))
        return
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for task_name in args.tasks:
        task = jsbi.get_task(task_name)
        for n in args.num_simulations:
            theta, x = jsbi.simulate(task, n, seed=args.seed, show_progress_bar=False)
            start = time.perf_counter()
            est = PosteriorEstimator(
                task.prior, objective="npe", seed=args.seed, support=args.support
            )
            posterior = est.fit(theta, x, show_progress_bar=False)
            flow_time = time.perf_counter() - start
            flow = est.flow
            val, tr = split_indices(len(theta), 0.1, args.seed)  # the flow's own split
            theta_h, x_h = jsbi.simulate(
                task, args.held_out, seed=args.seed + 10_000, show_progress_bar=False
            )
            with torch.no_grad():
                nll_flow = -flow.log_prob(theta_h, x_h)
            # One reference set per observation, drawn once and seeded, for every model
            # alike (an analytic task's reference is drawn from torch's random state).
            refs = {}
            for obs in args.observations:
                with seeded(args.seed):
                    refs[obs] = task.reference_samples(obs, args.num_samples)
            flow_c2st = []
            for obs in args.observations:
                torch.manual_seed(args.seed)
                samples = posterior.sample((args.num_samples,), x=task.observation(obs))
                flow_c2st.append(c2st(samples, refs[obs], seed=args.seed))
            row0 = {
                "task": task_name,
                "num_simulations": n,
                "seed": args.seed,
                "model": "flow",
                "nll": statistics.fmean(nll_flow.tolist()),
                "nll_minus_flow": 0.0,
                "nll_diff_sd": 0.0,
                "min_ess": 1.0,
                "epochs": est.history["epochs_trained"],
                "fit_time": flow_time,
                "c2st": json.dumps(flow_c2st),
            }
            rows = [row0]
            print(
                f"{task_name} {n}: flow held-out NLL {row0['nll']:.3f} "
                f"({row0['epochs']} epochs, {flow_time:.0f} s, "
                f"{1e3 * flow_time / row0['epochs']:.0f} ms/epoch)"
                + (f", C2ST {statistics.fmean(flow_c2st):.3f}" if flow_c2st else ""),
                flush=True,
            )
            for name in [*args.proxies, *(v for v, _ in args.likelihood_variant)]:
                torch.manual_seed(args.seed)
                proxy, loss = build(name, task, flow, theta[tr], x[tr], args)
                start = time.perf_counter()
                info = fit_by_early_stopping(
                    proxy, loss, theta[tr], x[tr], theta[val], x[val], seed=args.seed
                )
                fit_time = time.perf_counter() - start
                torch.manual_seed(args.seed)
                nll, ess = proxy_nll(
                    proxy, flow, task.prior, theta_h, x_h, num_samples=args.is_samples
                )
                diff = nll - nll_flow
                proxy_c2st, sir_ess = [], []
                for obs in args.observations:
                    torch.manual_seed(args.seed)
                    samples, e = importance_resample(
                        proxy, flow, task.prior, task.observation(obs), args.num_samples
                    )
                    proxy_c2st.append(c2st(samples, refs[obs], seed=args.seed))
                    sir_ess.append(e)
                row = {
                    "task": task_name,
                    "num_simulations": n,
                    "seed": args.seed,
                    "model": name,
                    "nll": statistics.fmean(nll.tolist()),
                    "nll_minus_flow": statistics.fmean(diff.tolist()),
                    "nll_diff_sd": statistics.stdev(diff.tolist()) / math.sqrt(len(diff)),
                    "min_ess": float(ess.min()),
                    "epochs": info["epochs"],
                    "fit_time": fit_time,
                    "c2st": json.dumps(proxy_c2st),
                }
                rows.append(row)
                print(
                    f"  {name:<11} NLL {row['nll']:.3f}, minus flow {row['nll_minus_flow']:+.3f} "
                    f"± {row['nll_diff_sd']:.3f} (se), min ESS fraction {row['min_ess']:.3f}, "
                    f"{info['epochs']} epochs, {fit_time:.0f} s "
                    f"({1e3 * fit_time / info['epochs']:.0f} ms/epoch)"
                    + (
                        f", C2ST {statistics.fmean(proxy_c2st):.3f} "
                        f"(SIR ESS min {min(sir_ess):.0f})"
                        if proxy_c2st
                        else ""
                    ),
                    flush=True,
                )
            if out:
                path = out / "rows.csv"
                new = not path.exists()
                with path.open("a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    if new:
                        w.writeheader()
                    w.writerows(rows)


if __name__ == "__main__":
    main()
