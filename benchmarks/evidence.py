r"""The likelihood proxy's evidence against the closed form on sbibm's gaussian_linear.

theta ~ N(0, 0.1 I), x ~ N(theta, 0.1 I) in 10 dimensions, so p(x) = N(0, 0.2 I). For each
budget and likelihood flow (the default spline flow, and one affine autoregressive
transform: the model's own family), trains jeffreys (seed 0) and compares
``Posterior.log_evidence`` at 20 draws of p(x) with the exact log density: the mean and
largest absolute error, and the largest Monte Carlo standard error the estimate reports.

Usage:
    python benchmarks/evidence.py --num-simulations 2000,10000 \
        --out benchmarks/results/evidence/evidence.csv
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from torch.distributions import MultivariateNormal

import jsbi
from jsbi.benchmark import write_rows

LIKELIHOODS = {"nsf (default)": {}, "maf, 1 transform": {"flow": "maf", "num_transforms": 1}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-simulations", default="2000,10000")
    p.add_argument("--num-points", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("evidence.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    task = jsbi.get_task("gaussian_linear")
    exact = MultivariateNormal(torch.zeros(10), covariance_matrix=0.2 * torch.eye(10))
    torch.manual_seed(7)
    xs = exact.sample((args.num_points,))
    rows = []
    for n in (int(v) for v in args.num_simulations.split(",")):
        theta, x = jsbi.simulate(task, n, seed=0)
        for name, options in LIKELIHOODS.items():
            start = time.perf_counter()
            est = jsbi.PosteriorEstimator(
                task.prior, objective="jeffreys", seed=0, proxy_options=options
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                post = est.fit(theta, x, show_progress_bar=False)
            log_z, se = post.log_evidence(xs)
            err = (log_z - exact.log_prob(xs)).abs()
            rows.append(
                {
                    "num_simulations": n,
                    "likelihood": name,
                    "mean_abs_error": round(float(err.mean()), 3),
                    "max_abs_error": round(float(err.max()), 3),
                    "max_se": round(float(se.max()), 3),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
