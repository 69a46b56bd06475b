r"""The cost of an ensemble: K flows trained as one batched module against K separate fits.

On two_moons (seed 0), for K in 1, 5, 10: the seconds per epoch of ``npe`` with
``ensemble=K`` (one module with a leading member dimension, ``vmap`` over the members),
and of K separate ``npe`` fits (K times one flow's epoch): the median time between
consecutive epochs' ends over a fixed number of epochs, after a warm-up fit, one torch
thread.

Usage:
    python benchmarks/ensemble_cost.py --num-simulations 10000 --epochs 5 \
        --out benchmarks/results/ensemble_cost/ensemble_cost.csv
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

import jsbi
from jsbi.benchmark import write_rows


def seconds_per_epoch(prior, theta, x, epochs: int, **options) -> float:
    # The median time between the ends of consecutive epochs: the loop's own cost, not
    # the flow's construction or what fit does after training.
    est = jsbi.PosteriorEstimator(prior, seed=0, **options)
    ends: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the epoch cap, on purpose
        est.fit(
            theta,
            x,
            max_epochs=epochs + 1,
            show_progress_bar=False,
            callback=lambda epoch, logs: ends.append(time.perf_counter()),
        )
    return statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--members", default="1,5,10")
    p.add_argument("--out", type=Path, default=Path("ensemble_cost.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, args.num_simulations, seed=0)
    seconds_per_epoch(task.prior, theta, x, 1)  # warm-up: the first fit pays for imports
    one = seconds_per_epoch(task.prior, theta, x, args.epochs)
    rows = []
    for k in (int(v) for v in args.members.split(",")):
        batched = seconds_per_epoch(task.prior, theta, x, args.epochs, ensemble=k)
        rows.append(
            {
                "members": k,
                "num_simulations": args.num_simulations,
                "batched_seconds_per_epoch": round(batched, 3),
                "separate_seconds_per_epoch": round(k * one, 3),
                "speed_up": round(k * one / batched, 2),
            }
        )
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
