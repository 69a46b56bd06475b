r"""What :meth:`~jsbi.posteriors.Posterior.recalibrate` costs, with and without its NLL
guard, and with the guard's truncated-flow renormalisation at 1,000 and 10,000 draws per
pair.

Trains npe (seed 0, at most ``--max-epochs`` epochs: the cost does not need a converged
flow) on the task's simulations, then times ``recalibrate`` on the fit's validation pairs
(a tenth of the simulations), each time from T = 1, and prints the temperature kept and
how many were refused.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/recalibration_cost.py --task two_moons \
        --num-simulations 10000 --max-epochs 20
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import jsbi
import jsbi.posteriors.posterior as posterior_module
from jsbi.simulators import get_task, simulate
from jsbi.training.config import TrainConfig
from jsbi.training.data import split_indices


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="two_moons")
    p.add_argument("--num-simulations", type=int, default=10_000)
    p.add_argument("--max-epochs", type=int, default=20)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    task = get_task(args.task)
    n = args.num_simulations
    theta, x = simulate(task, n, seed=0, show_progress_bar=False)
    post = jsbi.PosteriorEstimator(task.prior, seed=0).fit(
        theta, x, show_progress_bar=False, max_epochs=args.max_epochs
    )
    val, _ = split_indices(n, TrainConfig().validation_fraction, 0)  # the fit's own
    runs = [("no guard", {"nll_tolerance": None}, 1000)]
    runs += [(f"guarded, {m:,} draws per pair", {}, m) for m in (1000, 10_000)]
    for label, options, draws in runs:
        posterior_module.GUARD_MASS_SAMPLES = draws
        post._set_temperature(1.0)
        start = time.perf_counter()
        kept = post.recalibrate(theta[val], x[val], **options)
        seconds = time.perf_counter() - start
        refused = len(post.history["recalibration"]["refused"])
        print(f"{label}: T {kept:.4g}, {seconds:.1f} s, {refused} refused", flush=True)


if __name__ == "__main__":
    main()
