r"""Per-epoch training cost of the adaptive objectives relative to jsbi ``npe``.

Trains each configuration for 13 epochs on 1,000 simulations of a task (seed 0, one torch
thread) and prints the mean wall time of the 10 warm-up epochs (flow on F, proxy
contrastive) and of the epochs after warm-up (the reverse term on), so the cost of the
reverse term is visible on its own. Configurations: ``npe``; ``jeffreys`` (defaults: K = 8
flow samples for each of the batch's 200 observations); ``jeffreys`` with
``reverse_batch_size=25`` (K x 25 samples); ``jeffreys`` and ``npe`` with a coupling NSF
(zuko ``passes=2``: sampling needs one pass instead of d).

Example:
    $ .venv/bin/python benchmarks/step_cost.py --tasks two_moons slcp
"""

from __future__ import annotations

import argparse

import torch

import jsbi
from jsbi.estimator import PosteriorEstimator

JOINT = {"objective": "jeffreys", "proxy": "ratio", "schedule": "joint"}
CONFIGS = {
    "npe": {"objective": "npe"},
    # The joint schedule (warm-up epochs 1-10, then the reverse term every epoch), whose
    # per-epoch cost this script measures; npe-first's phase 2 is benchmarks/phase2.py.
    "jeffreys-joint": {**JOINT},
    "jeffreys-joint reverse_batch_size=25": {
        **JOINT,
        "objective_kwargs": {"reverse_batch_size": 25},
    },
    "jeffreys-joint passes=2": {**JOINT, "passes": 2},
    "npe passes=2": {"objective": "npe", "passes": 2},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"])
    p.add_argument("--num-simulations", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.tasks:
        task = jsbi.get_task(name)
        theta, x = jsbi.simulate(task, args.num_simulations, seed=0, show_progress_bar=False)
        base = None
        for label, kwargs in CONFIGS.items():
            est = PosteriorEstimator(task.prior, seed=0, **kwargs)
            est.fit(theta, x, max_epochs=13, show_progress_bar=False)
            times = est.history["epoch_time"]
            warm, after = sum(times[:10]) / 10, sum(times[10:]) / len(times[10:])
            base = after if base is None else base
            print(
                f"{name:>10} {label:<32} warm-up {warm:.3f} s/epoch, after {after:.3f} "
                f"s/epoch ({after / base:.1f}x npe)",
                flush=True,
            )


if __name__ == "__main__":
    main()
