r"""Phase 2 of ``npe-first``, variant by variant, on one development cell.

Trains jsbi ``npe`` and then each variant of the symmetric objective (``--variant
NAME key=value ...``) on the same simulations. A variant's options are those of
:class:`~jsbi.inference.trainer.AdaptiveStep`, with the likelihood proxy and
``schedule="npe-first"``, and:

- ``flow.key=value``, an option of the flow (e.g. ``flow.passes=2``, a coupling flow);
- ``proxy.key=value``, one of the proxy (e.g. ``proxy.flow=maf``, a MAF likelihood; a
  JSON value is read as JSON);
- ``posterior=flow``, what the run returns;
- ``objective=npe``, an ``npe`` variant.

Per variant it prints the NLL of fresh held-out pairs, C2ST (sbibm's definition) on the
given observations, which phase won, what the run returned (flow or proxy), which
candidate likelihood was chosen (with candidates), and the wall time relative to ``npe``.
Development tasks only: it is how the default was chosen.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phase2.py --task two_moons \
        --variant k4 num_proxy_samples=4 --variant stl num_proxy_samples=1 path_gradient=True
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phase2.py --task slcp --variant sel \
        'proxy.alternatives=[{"flow": "maf", "num_transforms": 3}]'
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

import torch
from objectives import _value

import jsbi
from jsbi.benchmark import DEV_TASKS
from jsbi.diagnostics.c2st import c2st
from jsbi.posteriors.proxy import ProxyPosterior
from jsbi.seeding import seeded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="two_moons", choices=list(DEV_TASKS))
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objective", default="jeffreys")
    p.add_argument("--observations", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--no-npe", action="store_true", help="skip the npe reference run")
    p.add_argument(
        "--proxy-ess",
        nargs="*",
        type=float,
        default=[],
        metavar="K",
        help="where a run returns its proxy, also score it resampled at each ESS of K times "
        "the samples asked (ProxyPosterior.ess_per_sample; fewer repeated samples)",
    )
    p.add_argument(
        "--variant", nargs="+", action="append", default=[], metavar="NAME [KEY=VALUE ...]"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    task = jsbi.get_task(args.task)
    theta, x = jsbi.simulate(task, args.num_simulations, seed=args.seed, show_progress_bar=False)
    theta_h, x_h = jsbi.simulate(
        task, args.held_out, seed=args.seed + 10_000, show_progress_bar=False
    )
    runs = [] if args.no_npe else [("npe", {"objective": "npe"})]
    for name, *kv in args.variant:
        # A JSON value (list or dict) is read as JSON, e.g.
        # proxy.alternatives='[{"flow": "maf", "num_transforms": 3}]'.
        options = {
            k: json.loads(v) if v[:1] in ("[", "{") else _value(v)
            for k, v in (s.split("=", 1) for s in kv)
        }
        named = {
            k: options.pop(k)
            for k in ("objective", "proxy", "schedule", "gate", "posterior")
            if k in options
        }
        # flow.KEY=VALUE is the flow's option (e.g. flow.passes=2, a coupling flow);
        # proxy.KEY=VALUE the proxy's (e.g. proxy.flow=maf, a MAF likelihood).
        flow = {k[5:]: options.pop(k) for k in list(options) if k.startswith("flow.")}
        proxy = {k[6:]: options.pop(k) for k in list(options) if k.startswith("proxy.")}
        if proxy:
            options["proxy_kwargs"] = proxy
        named.setdefault("objective", args.objective)
        if named["objective"] == "npe":
            if extra := sorted(set(options) | (set(named) - {"objective"})):
                p.error(f"variant {name}: npe takes flow.KEY options only, got {extra}")
            runs.append((name, {**named, **flow}))
            continue
        named.setdefault("proxy", "likelihood")
        named.setdefault("schedule", "npe-first")
        runs.append((name, {**named, **flow, "objective_kwargs": options}))
    npe_time = None
    # torch's lazy import of torch._dynamo in the first optimiser (3 s) is not npe's cost.
    importlib.import_module("torch._dynamo")
    # One reference set per observation, drawn once and seeded, for every variant alike
    # (an analytic task's reference is drawn from torch's random state).
    refs = {}
    for obs in args.observations:
        with seeded(args.seed):
            refs[obs] = task.reference_samples(obs, args.num_samples)

    def score(post) -> list[float]:
        # C2ST of the posterior's samples at each observation, drawn with the seed.
        scores = []
        for obs in args.observations:
            torch.manual_seed(args.seed)
            samples = post.sample((args.num_samples,), x=task.observation(obs))
            scores.append(c2st(samples, refs[obs]))
        return scores

    for name, kwargs in runs:
        est = jsbi.PosteriorEstimator(task.prior, seed=args.seed, **kwargs)
        start = time.perf_counter()
        post = est.fit(theta, x, show_progress_bar=False)
        seconds = time.perf_counter() - start
        npe_time = npe_time or seconds
        with torch.no_grad():
            nll = float(-est.flow.log_prob(theta_h, x_h).mean())
        scores = score(post)
        h = post.history
        extra = []
        for k in args.proxy_ess if isinstance(post, ProxyPosterior) else []:
            post.ess_per_sample = k
            again = score(post)
            extra.append(
                f"{statistics.fmean(again):.3f} {[round(s, 3) for s in again]} at ESS {k:g}x"
            )
        print(
            f"{args.task} {args.num_simulations} {name:<12} held-out NLL {nll:.3f}, C2ST "
            f"{statistics.fmean(scores):.3f} {[round(s, 3) for s in scores]}, epochs "
            f"{h['epochs_trained']} (best {h['best_epoch']}, phase {h.get('best_phase')}), "
            f"returns {h.get('posterior', 'flow')}, "
            + (
                f"proxy stopped at epoch {h['proxy_stopped_epoch']}, "
                if "proxy_stopped_epoch" in h
                else ""
            )
            + f"{seconds:.0f} s = {seconds / npe_time:.1f}x npe"
            + (f", at the switch {h['phase2_start']}" if "phase2_start" in h else "")
            + (f", candidates {h['proxy_candidates']}" if "proxy_candidates" in h else "")
            + (f"; the proxy's C2ST {'; '.join(extra)}" if extra else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
