r"""jsbi's objectives against sbi's NPE on the development tasks.

For each task, simulation budget and seed, every method trains on the same simulations:
by default jsbi ``npe``, ``jeffreys`` and ``srfe`` (tau = 0.5; both with the likelihood
proxy and the npe-first schedule), ``jeffreys-proxy`` (the same run, returning the proxy
where it is clearly the better model) and sbi's NPE (zuko NSF of the same size); any
method of :data:`jsbi.benchmark.METHODS` with ``--methods`` (revision 1's are the
``*-joint`` ones, its fixed-weight ablation ``jeffreys-fixed``). It prints, per cell,
the C2ST against the reference posterior (sbibm's definition;
mean and spread over observations and seeds), the training wall time, and the per-epoch
cost of each method relative to jsbi ``npe``. The harness is :mod:`jsbi.benchmark` (also
``jsbi benchmark``); with ``--out`` the run is resumable and parallel (``--n-jobs``).

Development set only (tune here): ``two_moons``, ``gaussian_mixture``, ``slcp``,
``gaussian_linear_uniform`` with observations 1-5.

Example:
    $ python benchmarks/objectives.py --out benchmarks/results/objectives     # the full grid
    $ python benchmarks/objectives.py --tasks two_moons --num-simulations 1000 \
        --seeds 0 --observations 1 2 --num-samples 2000                  # a quick look
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from jsbi.benchmark import (
    DEV_TASKS,
    METHODS,
    load_rows,
    run_benchmark,
    summary_table,
    write_rows,
)


def _value(text: str):
    if "," in text:  # a tuple, e.g. proxy_hidden_features=128,128,128
        return tuple(_value(t) for t in text.split(",") if t)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(DEV_TASKS))
    p.add_argument("--num-simulations", nargs="+", type=int, default=[1000, 10_000])
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["npe", "jeffreys", "jeffreys-proxy", "srfe", "sbi-npe"],
        choices=list(METHODS),
        help="methods of jsbi.benchmark.METHODS (default: %(default)s)",
    )
    p.add_argument("--num-samples", type=int, default=10_000, help="samples for C2ST")
    p.add_argument("--max-epochs", type=int, default=2**31 - 1)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra jsbi options: flow options (e.g. z_score_theta=local, num_transforms=3) "
        "for every jsbi method, the others for the adaptive methods (e.g. warmup_epochs=20, "
        "or AdaptiveStep's reverse_batch_size=25); a comma makes a tuple "
        "(proxy_hidden_features=128,128,128)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="resumable run: one CSV per finished (task, sims, seed, method) and a training "
        "checkpoint per unfinished one are kept here; rerunning skips finished units and "
        "resumes the others",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="units trained in parallel (joblib)")
    p.add_argument(
        "--summarise", action="store_true", help="only print the table of what --out holds"
    )
    p.add_argument("--csv", type=Path, default=None, help="write one row per observation")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.summarise:
        if args.out is None:
            raise SystemExit("--summarise needs --out DIR")
        rows = load_rows(args.out)
    else:
        rows = run_benchmark(
            args.tasks,
            args.num_simulations,
            args.methods,
            observations=args.observations,
            seeds=args.seeds,
            num_samples=args.num_samples,
            max_epochs=args.max_epochs,
            options={k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)},
            out=args.out,
            n_jobs=args.n_jobs,
        )
    if not rows:
        raise SystemExit("no results")
    print(summary_table(rows))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_rows(args.csv, rows)


if __name__ == "__main__":
    main()
