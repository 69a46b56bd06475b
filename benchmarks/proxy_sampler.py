r"""How to sample the likelihood proxy: MCMC against importance resampling, side by side.

For each task, one jeffreys estimator is trained with ``posterior="proxy"`` (seeded), and
its proxy is sampled at each observation by importance resampling and by MCMC with a
range of steps; the flow itself is sampled too. Each row gives C2ST against the reference
posterior (sbibm's MLP, and sbi's random forest), the share of distinct samples among
10,000, the seconds per 10,000 samples (one observation at a time) and, for MCMC, the
acceptance rates, split R-hat, ESS, the population's drift and the steps run. The fixed
variants run exactly their steps (the default runs 10); ``mcmc-10-to-40`` goes on in rounds
of 10 while the population still drifts, up to 40.

    OMP_NUM_THREADS=1 python benchmarks/proxy_sampler.py --tasks two_moons slcp \
        --num-simulations 1000 --out benchmarks/results/proxy_sampler
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

import jsbi
from jsbi.diagnostics.c2st import c2st
from jsbi.posteriors import Posterior, ProxyPosterior
from jsbi.seeding import seeded

VARIANTS = {
    "flow": None,
    "importance": {"sampler": "importance"},
    **{
        f"mcmc-{k}": {"sampler": "mcmc", "mcmc_steps": k, "mcmc_mala": 1, "mcmc_max_steps": k}
        for k in (5, 10, 20, 40)
    },
    # Rounds of 10 steps while the population still drifts, up to 40 (mcmc_max_steps=40).
    "mcmc-10-to-40": {"sampler": "mcmc", "mcmc_steps": 10, "mcmc_mala": 1, "mcmc_max_steps": 40},
    "imh-20": {"sampler": "mcmc", "mcmc_steps": 20, "mcmc_mala": 0, "mcmc_max_steps": 20},
    "sbi-slice": "sbi",
}
FIELDS = (
    "task", "num_simulations", "seed", "variant", "observation", "c2st", "c2st_rf",
    "distinct", "seconds_per_10k", "imh_acceptance", "mala_acceptance", "rhat", "ess",
    "drift", "num_steps", "train_seconds", "phase2_ran", "proxy_minus_flow",
)  # fmt: skip


class _SbiSlice:
    """sbi's own MCMCPosterior (its defaults: vectorised slice sampling, 20 chains, 200
    warm-up steps, SIR initialisation from the prior) on the proxy's potential
    ``-E(theta, x)``: what the issue asks the hand-written sampler to be measured against."""

    last_mixing = None

    def __init__(self, post: ProxyPosterior):
        self.post = post

    def sample(self, shape, x):
        from sbi.inference import MCMCPosterior

        proxy = self.post.proxy

        def potential(theta, x_o):
            return -proxy(theta, x_o.reshape(1, -1).expand(len(theta), -1))

        mcmc = MCMCPosterior(potential, proposal=self.post.prior)
        return mcmc.sample(shape, x=x.reshape(1, -1), show_progress_bars=False)


def _posterior(post: ProxyPosterior, options: dict | str | None):
    if options is None:
        return Posterior(post.flow, post.prior, history=post.history)
    if options == "sbi":
        return _SbiSlice(post)
    keep = {
        "candidates_per_sample": post.candidates_per_sample,
        "max_candidates_per_sample": post.max_candidates_per_sample,
    }
    return ProxyPosterior(
        post.flow, post.proxy, post.prior, history=post.history, **keep, **options
    )


def run(
    task_name: str, n: int, seed: int, observations, num_c2st: int, out: Path, variants: dict
) -> None:
    path = out / "rows.csv"
    if path.exists():  # before anything is trained
        with open(path, newline="") as f:
            if next(csv.reader(f)) != list(FIELDS):
                raise SystemExit(f"{path} has other columns than these rows: write elsewhere")
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, n, seed=seed, show_progress_bar=False)
    est = jsbi.PosteriorEstimator(task.prior, objective="jeffreys", posterior="proxy", seed=seed)
    start = time.perf_counter()
    post = est.fit(theta, x, show_progress_bar=False)
    seconds = time.perf_counter() - start
    h = post.history
    measured = h.get("final_proxy", {})
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for name, options in variants.items():
            sampler = _posterior(post, options)
            for obs in observations:
                x_o = task.observation(obs)
                with seeded(seed + obs, ["cpu"]):
                    t0 = time.perf_counter()
                    samples = sampler.sample((10_000,), x=x_o)
                    took = time.perf_counter() - t0
                    reference = task.reference_samples(obs, num_c2st)
                distinct = len(torch.unique(samples, dim=0)) / len(samples)
                mix = getattr(sampler, "last_mixing", None)
                row = {
                    "task": task_name,
                    "num_simulations": n,
                    "seed": seed,
                    "variant": name,
                    "observation": obs,
                    "c2st": c2st(samples[:num_c2st], reference, seed=seed),
                    "c2st_rf": c2st(samples[:num_c2st], reference, seed=seed, classifier="rf"),
                    "distinct": distinct,
                    "seconds_per_10k": took,
                    "imh_acceptance": mix.imh_acceptance if mix else "",
                    "mala_acceptance": mix.mala_acceptance if mix else "",
                    "rhat": mix.rhat if mix else "",
                    "ess": mix.ess if mix else "",
                    "drift": mix.drift if mix else "",
                    "num_steps": mix.num_steps if mix else "",
                    "train_seconds": seconds,
                    "phase2_ran": 2 in h.get("train_phase", []),
                    "proxy_minus_flow": measured.get("proxy_minus_flow", ""),
                }
                writer.writerow(row)
                f.flush()
                print(
                    f"{task_name} {n} {name} obs {obs}: C2ST {row['c2st']:.3f} "
                    f"(rf {row['c2st_rf']:.3f}), distinct {distinct:.2f}, {took:.1f} s",
                    flush=True,
                )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons"])
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--observations", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--num-c2st-samples", type=int, default=2000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="which samplers to run")
    p.add_argument("--out", type=Path, default=Path("benchmark-out/proxy_sampler"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        run(
            task,
            args.num_simulations,
            args.seed,
            args.observations,
            args.num_c2st_samples,
            args.out,
            {k: VARIANTS[k] for k in args.variants.split(",")},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
