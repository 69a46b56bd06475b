r"""Parity of jsbi's NPE with sbi's NPE on the same simulations.

For each task and simulation budget, the script simulates once, trains jsbi's ``npe``
(zuko NSF, sbi's defaults: 5 transforms, 5 x 50 hidden units, 10 bins, Adam 5e-4, batch
200, 10% validation, patience 20) and sbi's ``NPE`` with ``posterior_nn("zuko_nsf")`` on
exactly those pairs, then for each observation prints the C2ST of each posterior against
the task's reference samples (sbibm's definition, :func:`jsbi.diagnostics.c2st.c2st`),
the training wall times and their ratio, and sampling throughput. sbi's TensorBoard
logging is disabled (:func:`jsbi.diagnostics.baselines.train_sbi_npe`), so nothing lands
in the working tree.

Example:
    $ python benchmarks/npe_parity.py                                   # the full run
    $ python benchmarks/npe_parity.py --tasks two_moons --num-simulations 300 \
        --observations 1 --max-epochs 3 --num-samples 500               # a smoke test
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import jsbi
from jsbi.diagnostics.baselines import train_sbi_npe
from jsbi.diagnostics.c2st import c2st
from jsbi.inference import PosteriorEstimator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"], help="task names")
    p.add_argument(
        "--num-simulations", nargs="+", type=int, default=[1000, 10_000], help="budgets"
    )
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    p.add_argument(
        "--num-samples",
        type=int,
        default=10_000,
        help="posterior samples per observation (C2ST and throughput)",
    )
    p.add_argument("--max-epochs", type=int, default=2**31 - 1)
    p.add_argument("--stop-after-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument(
        "--unbounded",
        action="store_true",
        help="train jsbi's flow directly on theta, as sbi does (default: bounded flow)",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="simulation workers")
    p.add_argument("--csv", type=Path, default=None, help="also write per-observation rows")
    return p.parse_args(argv)


def _throughput(posterior, x_o: torch.Tensor, n: int, **kw) -> tuple[torch.Tensor, float]:
    posterior.sample((10,), x=x_o, **kw)  # warm-up: first calls pay one-off costs
    start = time.perf_counter()
    samples = posterior.sample((n,), x=x_o, **kw)
    return samples, n / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for task_name in args.tasks:
        task = jsbi.get_task(task_name)
        for n_sim in args.num_simulations:
            for seed in args.seeds:
                theta, x = jsbi.simulate(task, n_sim, seed=seed, n_jobs=args.n_jobs)
                est = PosteriorEstimator(
                    task.prior, flow="nsf", bounded=not args.unbounded, seed=seed
                )
                start = time.perf_counter()
                ours = est.fit(
                    theta,
                    x,
                    learning_rate=args.learning_rate,
                    batch_size=args.batch_size,
                    stop_after_epochs=args.stop_after_epochs,
                    max_epochs=args.max_epochs,
                    show_progress_bar=False,
                )
                t_ours = time.perf_counter() - start
                start = time.perf_counter()
                theirs, their_history = train_sbi_npe(
                    theta,
                    x,
                    task.prior,
                    seed=seed,
                    learning_rate=args.learning_rate,
                    training_batch_size=args.batch_size,
                    stop_after_epochs=args.stop_after_epochs,
                    max_num_epochs=args.max_epochs,
                )
                t_sbi = time.perf_counter() - start
                for obs in args.observations:
                    x_o = task.observation(obs)
                    ref = task.reference_samples(obs)[: args.num_samples]
                    n = len(ref)
                    with torch.random.fork_rng():
                        torch.manual_seed(seed)
                        s_ours, tp_ours = _throughput(ours, x_o, n)
                        s_sbi, tp_sbi = _throughput(theirs, x_o, n, show_progress_bars=False)
                    common = {"task": task_name, "num_simulations": n_sim, "seed": seed}
                    common["observation"] = obs
                    for method, s, t, tp, epochs in (
                        ("jsbi-npe", s_ours, t_ours, tp_ours, ours.history["epochs_trained"]),
                        ("sbi-npe", s_sbi, t_sbi, tp_sbi, their_history["epochs_trained"]),
                    ):
                        rows.append(
                            {
                                **common,
                                "method": method,
                                "c2st": c2st(s, ref, seed=seed),
                                "train_time_s": t,
                                "samples_per_s": tp,
                                "epochs": epochs,
                                "time_ratio_jsbi_over_sbi": t_ours / t_sbi,
                            }
                        )
                    print(
                        f"{task_name} N={n_sim} seed={seed} obs={obs}: "
                        f"c2st jsbi {rows[-2]['c2st']:.3f} sbi {rows[-1]['c2st']:.3f}",
                        file=sys.stderr,
                    )
    return rows


def _ms(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{fmt}} ± {spread:{fmt}}"


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["num_simulations"], r["method"]), []).append(r)
    head = (
        f"{'task':<12} {'N':>6} {'method':<9} {'C2ST (mean ± sd)':>18} "
        f"{'train s':>16} {'jsbi/sbi':>9} {'samples/s':>20}"
    )
    lines = [head, "-" * len(head)]
    for (task, n, method), rs in groups.items():
        lines.append(
            f"{task:<12} {n:>6} {method:<9} {_ms([r['c2st'] for r in rs], '.3f'):>18} "
            f"{_ms([r['train_time_s'] for r in rs], '.1f'):>16} "
            f"{statistics.fmean(r['time_ratio_jsbi_over_sbi'] for r in rs):>9.2f} "
            f"{_ms([r['samples_per_s'] for r in rs], '.3g'):>20}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print(table(rows))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
