r"""Sampling throughput of jsbi's posteriors against sbi NPE's, rejection included.

Trains jsbi ``npe`` once per ``--supports`` mode and sbi's NPE on the same simulations
(cheap: the flows' accuracy does not matter here). For each observation it then times
``posterior.sample((n,), x_o)`` of every method after a warm-up call, ``--repeats``
rounds with the methods interleaved within each round, so that a change in the machine's
load hits every method alike. It prints, per method, the median samples/s with rejection
(what a user gets), the median raw draws/s (``reject_outside_prior=False``: the flow
alone), the share of raw draws outside the prior (what rejection has to redraw; sbi's own
leakage is measured the same way), the median over observations of each rate's ratio to
sbi's on the same observation, and how many returned samples lie outside the prior.

Both flows are zuko NSFs of the same size, so their raw rates should agree; the rates
with rejection then differ by the leakage of the two trained flows.

Example:
    $ OMP_NUM_THREADS=1 python benchmarks/sampling.py --tasks two_moons slcp
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch

import jsbi
from jsbi.diagnostics.baselines import train_sbi_npe
from jsbi.estimator import PosteriorEstimator
from jsbi.flows.support import SUPPORT_MODES, Support


def _sample(post, method: str, x_o, n: int, reject: bool) -> torch.Tensor:
    kw = {"show_progress_bars": False} if method == "sbi-npe" else {}
    return post.sample((n,), x=x_o, reject_outside_prior=reject, **kw)


def _timed(post, method: str, x_o, n: int, reject: bool) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    s = _sample(post, method, x_o, n, reject)
    return n / (time.perf_counter() - start), s


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [u / v for u, v in zip(a, b, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"])
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--supports", nargs="+", default=list(SUPPORT_MODES), choices=SUPPORT_MODES)
    args = p.parse_args(argv)
    head = f"{'task':<24} {'method':<20} {'samples/s':>10} {'raw draws/s':>12}"
    print(f"{head} {'x sbi':>6} {'raw x sbi':>9} {'leakage':>8} {'outside':>8}", flush=True)
    for name in args.tasks:
        task = jsbi.get_task(name)
        theta, x = jsbi.simulate(task, args.num_simulations, seed=0)
        posts = {}
        for support in args.supports:
            est = PosteriorEstimator(task.prior, support=support, seed=0)
            posts[f"jsbi-npe-{support}"] = est.fit(theta, x, show_progress_bar=False)
        posts["sbi-npe"] = train_sbi_npe(theta, x, task.prior, seed=0)[0]
        box = Support.from_prior(task.prior)
        # (method, reject) -> per observation, the median rate over the rounds.
        rates = {(m, r): [] for m in posts for r in (True, False)}
        leaks = {m: [] for m in posts}
        outside = dict.fromkeys(posts, 0)
        for obs in args.observations:
            x_o = task.observation(obs)
            torch.manual_seed(obs)
            for method, post in posts.items():
                _sample(post, method, x_o, 10, reject=True)  # warm-up
            rounds = {k: [] for k in rates}
            for _ in range(args.repeats):
                for (method, reject), times in rounds.items():
                    r, s = _timed(posts[method], method, x_o, args.num_samples, reject)
                    times.append(r)
                    out = ~box.contains(s)
                    if reject:
                        outside[method] += int(out.sum())
                    else:
                        leaks[method].append(float(out.double().mean()))
            for k, times in rounds.items():
                rates[k].append(statistics.median(times))
        for method in posts:
            # Paired per observation: the ratio to sbi's rate on the same x_o and rounds.
            ratio, raw_ratio = (
                statistics.median(_ratios(rates[method, r], rates["sbi-npe", r]))
                for r in (True, False)
            )
            print(
                f"{name:<24} {method:<20} {statistics.median(rates[method, True]):>10.3g} "
                f"{statistics.median(rates[method, False]):>12.3g} {ratio:>6.2f} "
                f"{raw_ratio:>9.2f} "
                f"{statistics.fmean(leaks[method]):>8.3f} {outside[method]:>8}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
