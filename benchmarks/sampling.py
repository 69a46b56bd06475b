r"""Sampling throughput of jsbi's posteriors against sbi NPE's, rejection included.

Trains jsbi ``npe`` once per ``--supports`` mode and sbi's NPE on the same simulations
(cheap: the flows' accuracy does not matter here), then for each observation times
``posterior.sample((n,), x_o)`` (after a warm-up call) ``--repeats`` times and prints the
median samples/s, the rejected share and whether any returned sample lies outside the
prior.

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
from jsbi.inference import SUPPORT_MODES, PosteriorEstimator, Support


def _rate(posterior, x_o, n: int, repeats: int, **kw) -> tuple[float, torch.Tensor]:
    posterior.sample((10,), x=x_o, **kw)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        s = posterior.sample((n,), x=x_o, **kw)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), s


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"])
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--supports", nargs="+", default=list(SUPPORT_MODES), choices=SUPPORT_MODES)
    args = p.parse_args(argv)
    head = f"{'task':<12} {'method':<20} {'samples/s (median over obs)':>28}"
    print(f"{head} {'rejected':>9} {'outside':>8}")
    for name in args.tasks:
        task = jsbi.get_task(name)
        theta, x = jsbi.simulate(task, args.num_simulations, seed=0)
        posts = {}
        for support in args.supports:
            est = PosteriorEstimator(task.prior, support=support, seed=0)
            posts[f"jsbi-npe-{support}"] = est.fit(theta, x, show_progress_bar=False)
        posts["sbi-npe"] = train_sbi_npe(theta, x, task.prior, seed=0)[0]
        box = Support.from_prior(task.prior)
        for method, post in posts.items():
            kw = {"show_progress_bars": False} if method == "sbi-npe" else {}
            rates, rejected, outside = [], [], 0
            for obs in args.observations:
                torch.manual_seed(obs)
                r, s = _rate(post, task.observation(obs), args.num_samples, args.repeats, **kw)
                rates.append(r)
                rejected.append(getattr(post, "last_leakage", None) or 0.0)
                outside += int((~box.contains(s)).sum())
            print(
                f"{name:<12} {method:<20} {statistics.median(rates):>28.3g} "
                f"{statistics.fmean(rejected):>9.3f} {outside:>8}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
