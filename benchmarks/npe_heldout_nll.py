r"""jsbi ``npe`` against sbi's NPE by held-out NLL: per training seed, on the same pairs.

Simulates ``N`` training pairs (seed 1000) and 2,000 fresh test pairs (seed 99999), trains
each method per seed on the same pairs (:func:`jsbi.pipeline.train_method`), and prints
the epochs, the best validation loss and the test pairs' mean ``-log q(theta | x)`` (the
flow's own density, before any truncation: both methods' flows live on z-scored theta).
Cheaper than C2ST and over the whole prior predictive, not five observations.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/npe_heldout_nll.py gaussian_mixture \
        10000 0,1 npe,sbi-npe
"""

from __future__ import annotations

import json
import sys
import time

import torch

import jsbi
from jsbi.pipeline import train_method


def main() -> None:
    task_name, n = sys.argv[1], int(sys.argv[2])
    seeds = [int(s) for s in sys.argv[3].split(",")]
    methods = sys.argv[4].split(",")
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, n, seed=1000)
    theta_test, x_test = jsbi.simulate(task, 2000, seed=99999)
    for seed in seeds:
        for m in methods:
            options = dict(extra) if m != "sbi-npe" else None
            start = time.perf_counter()
            trained = train_method(m, task.prior, theta, x, seed=seed, estimator_options=options)
            with torch.no_grad():
                if m == "sbi-npe":
                    net = trained.posterior.posterior_estimator
                    lp = net.log_prob(theta_test.unsqueeze(0), condition=x_test).squeeze(0)
                else:
                    lp = trained.posterior.flow.log_prob(theta_test, x_test)
            print(
                f"{task_name} n={n} seed={seed} {m} {extra} epochs={trained.epochs} "
                f"best_val={trained.history.get('best_validation_loss'):.4f} "
                f"heldout_nll={-lp.mean().item():.4f} s={time.perf_counter() - start:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
