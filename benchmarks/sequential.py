r"""Two rounds of truncated sequential NPE (TSNPE) against one round, same budget, at x_o.

For each observation: one round of ``2 N`` prior simulations trains jsbi ``npe`` (the
baseline); two rounds train ``npe`` on ``N`` prior simulations (shared by every
observation), build the :class:`~jsbi.inference.TruncatedProposal` of that posterior at
``x_o``, simulate ``N`` more from it and train ``npe`` on all ``2 N`` pairs. Both are
scored by C2ST (sbibm's MLP definition) against the reference posterior at ``x_o``;
prints per observation and the mean ± sd with the paired difference ± its standard error.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sequential.py --task two_moons \\
        --num-simulations 500 --observations 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from pathlib import Path

import torch

import jsbi
from jsbi.diagnostics import c2st
from jsbi.estimator import PosteriorEstimator
from jsbi.posteriors.sequential import TruncatedProposal


def _fit(prior, theta, x, seed, **kwargs):
    est = PosteriorEstimator(prior, seed=seed)
    return est.fit(theta, x, show_progress_bar=False, **kwargs)


def _score(post, task, i, n, seed):
    torch.manual_seed(seed)
    samples = post.sample((n,), x=task.observation(i))
    return c2st(samples, task.reference_samples(i)[:n], seed=seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="two_moons")
    p.add_argument("--num-simulations", type=int, default=500, help="N, per round")
    p.add_argument("--observations", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--quantile", type=float, default=1e-4)
    p.add_argument("--csv", type=Path, help="per-observation rows")
    args = p.parse_args()
    task, n, seed = jsbi.get_task(args.task), args.num_simulations, args.seed
    prior = task.prior

    start = time.perf_counter()
    theta, x = jsbi.simulate(task, 2 * n, seed=seed, show_progress_bar=False)
    one = _fit(prior, theta, x, seed)
    theta1, x1 = jsbi.simulate(task, n, seed=seed + 1, show_progress_bar=False)
    first = _fit(prior, theta1, x1, seed)
    print(f"round-1 posteriors trained in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for i in args.observations:
        x_o = task.observation(i)
        t0 = time.perf_counter()
        proposal = TruncatedProposal(prior, first, x_o, quantile=args.quantile, seed=seed)
        theta2, x2 = jsbi.simulate(
            task, n, seed=seed + 100 + i, proposal=proposal, show_progress_bar=False
        )
        two = _fit(
            prior, torch.cat([theta1, theta2]), torch.cat([x1, x2]), seed, proposal=proposal
        )
        seconds = time.perf_counter() - t0
        row = {
            "task": args.task,
            "observation": i,
            "num_simulations_per_round": n,
            "seed": seed,
            "one_round": _score(one, task, i, args.num_samples, seed),
            "two_rounds": _score(two, task, i, args.num_samples, seed),
            "region_prior_mass": proposal.prior_mass,
            "round2_seconds": seconds,
        }
        rows.append(row)
        print(
            f"observation {i}: one round of {2 * n} {row['one_round']:.3f}, two rounds of {n} "
            f"{row['two_rounds']:.3f} (region's prior mass {proposal.prior_mass:.3f}, round 2 "
            f"{seconds:.0f} s)",
            flush=True,
        )
        if args.csv:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            with args.csv.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                w.writeheader()
                w.writerows(rows)
    one_r = [r["one_round"] for r in rows]
    two_r = [r["two_rounds"] for r in rows]
    diff = [b - a for a, b in zip(one_r, two_r, strict=True)]
    sd = statistics.stdev if len(rows) > 1 else (lambda v: math.nan)
    print(
        f"\n{args.task}, C2ST over observations {args.observations} ({args.num_samples} samples)"
        f"\none round of {2 * n}: {statistics.mean(one_r):.3f} ± {sd(one_r):.3f}"
        f"\ntwo rounds of {n}:   {statistics.mean(two_r):.3f} ± {sd(two_r):.3f}"
        f"\ntwo minus one (paired): {statistics.mean(diff):+.3f} ± "
        f"{sd(diff) / math.sqrt(len(diff)):.3f}"
    )


if __name__ == "__main__":
    main()
