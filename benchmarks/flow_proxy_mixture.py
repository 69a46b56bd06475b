r"""The default's flow, its likelihood proxy, and their equal mixture, from one fit.

A study for the choice of what ``posterior="auto"`` returns: where the proxy's and the
flow's validation NLL are within their noise, would returning both (an equal mixture,
whose KL from the true posterior is at most the mean of its members') do better than
either? For each (task, seed): jeffreys fitted on ``--num-simulations`` pairs; the flow's
posterior, the proxy's (MCMC, as the default returns it) and their mixture
(:class:`~jsbi.posteriors.MixturePosterior`, what ``posterior="mixture"`` returns); C2ST
(MLP) at observations 1-5 with ``--num-samples`` samples (the mixture's are the first
halves of its members' draws: the same law, at no extra sampling); calibration
(:func:`jsbi.diagnostics.calibration.calibration`) on ``--pairs`` fresh prior-predictive
pairs, ``--pair-samples`` samples each. One JSON line per fit on stdout.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/flow_proxy_mixture.py --units gaussian_mixture:1 \
        --out benchmarks/results/flow_proxy_mixture/dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from jsbi.benchmark import code_version
from jsbi.diagnostics.c2st import c2st
from jsbi.diagnostics.calibration import calibration
from jsbi.estimator import PosteriorEstimator
from jsbi.methods.plans import phase2_outcome
from jsbi.posteriors import MixturePosterior, Posterior, ProxyPosterior
from jsbi.posteriors.proxy import candidates_per_sample
from jsbi.seeding import seeded
from jsbi.simulators import get_task, simulate


def study(name: str, seed: int, args: argparse.Namespace) -> dict:
    task = get_task(name)
    theta, x = simulate(task, args.num_simulations, seed=seed, show_progress_bar=False)
    est = PosteriorEstimator(task.prior, objective="jeffreys", seed=seed)
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(theta, x, show_progress_bar=False)
    h, m = est.history, est.history.get("final_proxy")
    row = {"task": name, "n": args.num_simulations, "seed": seed, "code": code_version()}
    row |= {k: getattr(args, k) for k in ("num_samples", "pairs", "pair_samples")}
    row |= {"train_s": round(time.time() - start, 1), "phase2": phase2_outcome(h)}
    row |= {"returned": h["posterior"]}
    proxy = est._finite_proxy()
    if not m or proxy is None:
        return row  # the proxy was abandoned: nothing to mix
    row |= {
        "val_gap": round(m["proxy_minus_flow"], 4),
        "val_se": round(m["proxy_minus_flow_se"], 4),
        "val_mix_gap": round(m["mixture_minus_flow"], 4),
        "val_mix_se": round(m["mixture_minus_flow_se"], 4),
    }
    common = {"history": h, "typicality": est._typicality}
    flow = Posterior(est.flow, est.prior, proxy=proxy, **common)
    cps = candidates_per_sample(m)
    prox = ProxyPosterior(est.flow, proxy, est.prior, candidates_per_sample=cps, **common)
    ns = args.num_samples
    scores: dict[str, list[float]] = {"flow": [], "proxy": [], "mixture": []}
    for o in (1, 2, 3, 4, 5):
        xo = task.observation(o)
        with seeded(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sf = flow.sample((ns,), x=xo).cpu()
            sp = prox.sample((ns,), x=xo).cpu()
            ref = task.reference_samples(o, ns)
        sm = torch.cat([sf[: ns // 2], sp[: ns - ns // 2]])
        for k, s in (("flow", sf), ("proxy", sp), ("mixture", sm)):
            scores[k].append(round(c2st(s, ref, seed=seed), 4))
    for k, v in scores.items():
        row[f"c2st_{k}"] = v
    with seeded(10_000 + seed):
        th = task.prior.sample((args.pairs,))
        xs = task.simulate(th)
    ok = torch.isfinite(xs).all(-1)
    mix = MixturePosterior(est.flow, proxy, est.prior, candidates_per_sample=cps, **common)
    # The mixture's density uses the proxy's log Z per x: the same estimates as the proxy
    # posterior's (one cache for both), not a second importance-sampling run per pair.
    mix._log_z = prox._log_z
    for k, post in (("flow", flow), ("proxy", prox), ("mixture", mix)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cal = calibration(post, th[ok], xs[ok], args.pair_samples, seed=seed)
        row[f"cal_{k}"] = {
            c: v if isinstance(v, bool) else round(float(v), 4) for c, v in cal.items()
        }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", nargs="+", required=True, help="task:seed ...")
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=4000)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--pair-samples", type=int, default=100)
    p.add_argument(
        "--out",
        type=Path,
        help="a JSON-lines file the rows are appended to; units in it are skipped",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    done = set()
    if args.out is not None and args.out.exists():
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line]
        done = {(r["task"], r["n"], r["seed"]) for r in rows}
    for unit in args.units:
        name, seed = unit.split(":")
        if (name, args.num_simulations, int(seed)) in done:
            continue
        line = json.dumps(study(name, int(seed), args))
        print(line, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
