r"""The proxy sampler's MALA step size, before and after the pilot search, on one model.

Trains the default (jeffreys) on a task at seed 0, as the benchmark does, and samples its
likelihood proxy at each observation three ways, with the same seeds: the sampler of an
older commit (``--old``, read with ``git show``), this checkout's, and independence steps
alone. Prints C2ST (sbibm's MLP, 10,000 samples) against the reference, MALA's and the
independence step's acceptance, the population's drift and the seconds spent sampling.

    OMP_NUM_THREADS=1 python benchmarks/mala_step.py --task two_moons --old 61b44b8
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from jsbi.benchmark import method_options
from jsbi.diagnostics.c2st import c2st
from jsbi.pipeline import train_method
from jsbi.posteriors import ProxyPosterior
from jsbi.posteriors import mcmc as new
from jsbi.simulators import get_task, simulate

ROOT = Path(__file__).resolve().parents[1]


def _old_sampler(rev: str):
    # The module as it was at `rev`, imported under its own name.
    text = subprocess.run(
        ["git", "show", f"{rev}:jsbi/posteriors/mcmc.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "mcmc_old.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("mcmc_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mcmc_old"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="two_moons")
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--observations", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--steps", type=int, default=10, help="MCMC steps (the default's 10)")
    p.add_argument("--old", required=True, help="the commit whose sampler to compare")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    task = get_task(args.task)
    theta, x = simulate(task, args.num_simulations, seed=0, show_progress_bar=False)
    options = method_options("jeffreys", None)
    post = train_method("jeffreys", task.prior, theta, x, seed=0, estimator_options=options)
    post = post.posterior
    if not isinstance(post, ProxyPosterior):
        print(f"the default returned its flow on {args.task}: no proxy to sample")
        return 1
    samplers = [("old", _old_sampler(args.old), 1), ("new", new, 1), ("imh", new, 0)]
    for name, module, mala in samplers:
        scores, seconds = [], 0.0
        for obs in args.observations:
            torch.manual_seed(obs)
            x_o = task.observation(obs).reshape(1, -1)
            start = time.perf_counter()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the mixing verdict is printed instead
                s, info = module.sample_proxy(
                    post.proxy, post.flow, post._prior, x_o, 10_000,
                    num_steps=args.steps, num_mala=mala,
                )  # fmt: skip
            seconds += time.perf_counter() - start
            scores.append(c2st(s[:, 0], task.reference_samples(obs, 10_000), seed=0))
            print(
                f"{name} obs {obs}: C2ST {scores[-1]:.3f}, IMH acceptance "
                f"{info.imh_acceptance:.3f}, MALA acceptance {info.mala_acceptance:.3f}, "
                f"drift {info.drift:.3f}",
                flush=True,
            )
        mean = sum(scores) / len(scores)
        print(f"{name}: mean C2ST {mean:.4f}, {seconds:.1f} s sampling", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
