r"""Where the report's time goes: each diagnostic of one method, timed alone.

Trains one method on a task at seed 0 (as ``jsbi report`` does) and runs the steps of the
report's diagnostics in turn (SBC draws, coverage densities, TARP, NLTP, then at one
observation the draws, C2ST on 10,000 and on 5,000 samples, and leakage), printing each
step's seconds.

    OMP_NUM_THREADS=1 python benchmarks/report_profile.py --task two_moons --method jeffreys
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

from jsbi.benchmark import method_options
from jsbi.diagnostics.c2st import c2st, leakage, nltp
from jsbi.diagnostics.sbc import draw_samples, log_prob_batched
from jsbi.diagnostics.tarp import tarp_from_samples
from jsbi.pipeline import train_method
from jsbi.simulators import get_task, simulate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="two_moons")
    p.add_argument("--method", default="jeffreys")
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=400, help="the report's default at 0.05")
    p.add_argument("--samples", type=int, default=100, help="the report's default at 0.05")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    task = get_task(args.task)
    theta, x = simulate(task, args.num_simulations, seed=0, show_progress_bar=False)
    options = method_options(args.method, None)
    post = train_method(args.method, task.prior, theta, x, seed=0, estimator_options=options)
    post = post.posterior
    torch.manual_seed(1)
    theta = task.prior.sample((args.pairs,))
    x = torch.as_tensor(task.simulate(theta)).float()

    def timed(what, run):
        start = time.perf_counter()
        out = run()
        print(f"{what}: {time.perf_counter() - start:.1f} s", flush=True)
        return out

    samples = timed("SBC draws", lambda: draw_samples(post, x, args.samples, seed=1))
    both = torch.cat([theta[None], samples])
    timed("coverage densities", lambda: log_prob_batched(post, both, x, normalize=False))
    timed("TARP", lambda: tarp_from_samples(samples, theta, seed=1))
    timed("NLTP", lambda: nltp(post, theta, x))
    x_o = task.observation(1)
    draws = timed("10,000 draws at observation 1", lambda: draw_samples(post, x_o, 10_000))
    ref = task.reference_samples(1, 10_000)
    timed("C2ST, 10,000 samples", lambda: c2st(draws[:, 0], ref, seed=0))
    timed("C2ST, 5,000 samples", lambda: c2st(draws[:5000, 0], ref[:5000], seed=0))
    timed("leakage", lambda: leakage(post, x_o, task.prior, 10_000, seed=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
