r"""Time to draw 10,000 samples of the likelihood proxy, with zuko's spline flow and jsbi's
(its softmax and its inverse that settles one parameter per pass: ``jsbi.flows.spline``),
and of the mixture of the flow and the proxy (``posterior="mixture"``).

Trains jeffreys returning its proxy (``posterior="proxy"``) on one task, saves it, and
loads it once per spline asked: with ``FLOWS["nsf"]`` patched to zuko's ``NSF`` and to
:class:`jsbi.flows.spline.NSF` (the same weights); for each posterior asked, the loaded
proxy's posterior or the mixture of the same flow and proxy. Each draws the samples at
observation 1 with the same seed, after a warm-up draw of 100: the wall time, and the
sampler's acceptance and split R-hat, with each number of torch threads asked (1, and
this 2-core machine's default, 2). Stop other work on the machine while it runs: these
are timings.

Usage:
    python benchmarks/proxy_sample_cost.py --threads 1,2 \
        --task gaussian_linear_uniform --seed 1 \
        --out benchmarks/results/proxy_sample_cost/gaussian_linear_uniform.csv
    python benchmarks/proxy_sample_cost.py --threads 2 --splines jsbi \
        --posteriors proxy,mixture --task gaussian_linear_uniform --seed 1 \
        --out benchmarks/results/proxy_sample_cost/gaussian_linear_uniform_mixture.csv
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import torch
import zuko

import jsbi.flows.conditional as conditional
from jsbi.benchmark import _train, code_version, write_rows
from jsbi.flows.spline import NSF
from jsbi.posteriors import MixturePosterior, load_posterior
from jsbi.seeding import seeded
from jsbi.simulators import get_task, simulate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="gaussian_linear_uniform")
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    p.add_argument("--splines", default="zuko,jsbi", help="comma-separated: zuko, jsbi")
    p.add_argument(
        "--posteriors", default="proxy", help="comma-separated: proxy, mixture (same fit)"
    )
    p.add_argument("--out", type=Path, default=Path("proxy_sample_cost.csv"))
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    splines = {"zuko": zuko.flows.NSF, "jsbi": NSF}
    splines = {name: splines[name] for name in args.splines.split(",")}
    kinds = args.posteriors.split(",")
    if not set(kinds) <= {"proxy", "mixture"}:
        p.error(f"--posteriors: proxy or mixture, got {args.posteriors!r}")
    torch.set_num_threads(threads[0])  # training's
    warnings.simplefilter("ignore")
    task = get_task(args.task)
    theta, x = simulate(task, args.num_simulations, seed=args.seed, show_progress_bar=False)
    options = {"posterior": "proxy"}
    post, _, _ = _train("jeffreys", task, theta, x, args.seed, 2**31 - 1, options, None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "posterior.pt"
        post.save(path)
        for (spline, cls), kind, count in itertools.product(splines.items(), kinds, threads):
            torch.set_num_threads(count)
            with mock.patch.dict(conditional.FLOWS, nsf=cls):  # restored on any exit
                loaded = load_posterior(path)
            if kind == "mixture":
                loaded = MixturePosterior(
                    loaded.flow, loaded.proxy, loaded.prior, history=loaded.history
                )
            loaded.sample((100,), x=task.observation(1))  # warm-up, the check's cache
            with seeded(args.seed):
                start = time.perf_counter()
                loaded.sample((args.num_samples,), x=task.observation(1))
                seconds = time.perf_counter() - start
            mixing = loaded.last_mixing
            row = {"task": args.task, "num_simulations": args.num_simulations}
            row |= {"seed": args.seed, "spline": spline, "posterior": kind, "threads": count}
            row |= {"samples": args.num_samples}
            row |= {
                "seconds": round(seconds, 2),
                "imh_acceptance": round(mixing.imh_acceptance, 3),
            }
            rows.append(row | {"rhat": round(mixing.rhat, 3), "code": code_version()})
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
