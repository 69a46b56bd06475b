r"""Simulation throughput: jsbi's built-in simulators against sbibm's, and parallel speed-up.

Part 1 times, for each built-in task in :data:`jsbi.simulators.TASKS`, one call of jsbi's
vectorised simulator and one call of sbibm's (``sbibm.get_task(name).get_simulator()``)
on the same prior draws, and prints simulations per second for both and their ratio.
Tasks whose sbibm simulator cannot run here (e.g. ``sir`` and ``lotka_volterra`` need
Julia) are listed as skipped with the reason.

Part 2 times :func:`jsbi.simulate` with ``n_jobs=N`` against ``n_jobs=1`` on a
deliberately slow per-sample Python simulator (about 1 ms per simulation) and prints the
speed-up, after checking that both give the same pairs; then sbi's ``simulate_for_sbi``
on the same simulator, prior draws' count, batch size and workers (43's item 6: jsbi's
throughput stays ahead of sbi's). ``--out`` also writes every figure to a CSV (the
results page's "Simulation throughput" section).

Example:
    python benchmarks/simulation.py --num-simulations 10000
    python benchmarks/simulation.py --tasks two_moons slcp --num-simulations 1000
    python benchmarks/simulation.py --out benchmarks/results/simulation/throughput.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch.distributions import Independent, Uniform

import jsbi
from jsbi.simulators import TASKS, get_task, wrap

# Python loop iterations per slow simulation: about 1 ms on a 2020s CPU core.
SLOW_ITERATIONS = 13_000


def slow_simulator(theta):
    r"""One simulation costing about a millisecond of pure Python."""
    s, t = 0.0, float(theta[0])
    for _ in range(SLOW_ITERATIONS):
        s = math.sin(s + t)
    return torch.stack([theta[0] + s, theta[1] + 0.1 * torch.randn(())])


def slow_batch_simulator(theta):
    r"""sbi's form of :func:`slow_simulator`: a batch of parameters (a tensor, or the
    numpy array ``simulate_for_sbi`` hands its workers) in, a batch of outputs out."""
    return torch.stack([slow_simulator(t) for t in torch.as_tensor(theta, dtype=torch.float32)])


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"


def time_call(fn, theta) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    start = time.perf_counter()
    x = fn(theta)
    return time.perf_counter() - start, torch.as_tensor(x)


@contextlib.contextmanager
def trusted_torch_load():
    r"""Lets sbibm load its own shipped files, pickled before torch's ``weights_only``
    default (slcp_distractors' mixture parameters)."""
    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old


def bench_tasks(names: list[str], n: int) -> list[dict]:
    import sbibm

    rows = []
    for name in names:
        task = get_task(name)
        torch.manual_seed(0)
        theta = task.prior.sample((n,))
        row = {"task": name, "d": task.dim_theta}
        try:
            with trusted_torch_load():
                sbibm_sim = sbibm.get_task(name).get_simulator()
                sbibm_sim(theta[:2])  # warm-up; also fails here if e.g. Julia is missing
        except Exception as e:  # noqa: BLE001 - any failure means "cannot run here"
            row["skip"] = f"sbibm simulator cannot run: {type(e).__name__}: {e}"[:120]
            rows.append(row)
            continue
        task.simulate(theta[:2])  # warm-up
        t_jsbi, x_jsbi = time_call(task.simulate, theta)
        with trusted_torch_load():  # slcp_distractors' simulator loads it on every call
            t_sbibm, x_sbibm = time_call(sbibm_sim, theta)
        row.update(
            m=x_jsbi.shape[1],
            seconds={"jsbi": t_jsbi, "sbibm": t_sbibm},
            jsbi=n / t_jsbi,
            sbibm=n / t_sbibm,
            ratio=t_sbibm / t_jsbi,
            same_shape=tuple(x_jsbi.shape) == tuple(x_sbibm.shape),
        )
        rows.append(row)
    return rows


def warm_pool(n_jobs: int) -> None:
    r"""Starts joblib's worker pool, every worker importing torch and running
    :func:`slow_simulator` once, so that no timing below pays the start-up."""
    import joblib

    joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(slow_simulator)(torch.zeros(2)) for _ in range(4 * n_jobs)
    )


def bench_parallel(n: int, n_jobs: int) -> dict:
    prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
    sim = wrap(slow_simulator, prior, vectorized=False, name="slow")
    batch_size = max(1, math.ceil(n / (8 * n_jobs)))
    kwargs = dict(seed=0, batch_size=batch_size, show_progress_bar=False)

    # Start the worker pool before timing (loky reuses it across calls), each worker having
    # run the simulator once: a small jsbi.simulate call would stay in this process (its
    # first batch times the campaign as cheap) and leave the pool unstarted.
    warm_pool(n_jobs)

    start = time.perf_counter()
    theta_1, x_1 = jsbi.simulate(sim, n, n_jobs=1, **kwargs)
    t_1 = time.perf_counter() - start
    start = time.perf_counter()
    theta_n, x_n = jsbi.simulate(sim, n, n_jobs=n_jobs, **kwargs)
    t_n = time.perf_counter() - start
    same = torch.equal(theta_1, theta_n) and torch.equal(x_1, x_n)
    return {"n": n, "batch_size": batch_size, "t_1": t_1, "t_n": t_n, "same": same}


def bench_sbi(n: int, n_jobs: int, batch_size: int) -> dict:
    r"""sbi's ``simulate_for_sbi`` on :func:`slow_simulator`'s batches: seconds with one
    worker and with ``n_jobs`` (its joblib pool started before the timing, as jsbi's)."""
    from sbi.inference import simulate_for_sbi

    prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
    kwargs = dict(simulation_batch_size=batch_size, seed=0, show_progress_bar=False)
    warm_pool(n_jobs)
    seconds = {}
    for workers in (1, n_jobs):
        start = time.perf_counter()
        _, x = simulate_for_sbi(slow_batch_simulator, prior, n, num_workers=workers, **kwargs)
        seconds[workers] = time.perf_counter() - start
        assert x.shape == (n, 2), x.shape
    return {"t_1": seconds[1], "t_n": seconds[n_jobs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--num-simulations",
        type=int,
        default=10_000,
        help="prior draws per task for the jsbi vs sbibm timing",
    )
    parser.add_argument(
        "--tasks", nargs="*", default=None, help=f"tasks to time (default: all of {sorted(TASKS)})"
    )
    parser.add_argument(
        "--parallel-simulations",
        type=int,
        default=None,
        help="simulations for the n_jobs speed-up (default: min(2000, --num-simulations))",
    )
    parser.add_argument("--n-jobs", type=int, default=2, help="workers for the speed-up")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here (CSV)")
    args = parser.parse_args()

    if args.num_simulations <= 0:
        parser.error("--num-simulations must be positive")
    names = sorted(TASKS) if args.tasks is None else args.tasks
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
    if not names:
        print("no built-in tasks registered in jsbi.simulators.TASKS: nothing to compare")

    warnings.filterwarnings("ignore")  # sbibm/pyro deprecation noise
    n = args.num_simulations
    print(
        f"Simulators: {n:,} prior draws per task, one call each, torch threads = "
        f"{torch.get_num_threads()}\n"
    )
    header = (
        f"{'task':<26}{'d':>4}{'m':>6}{'jsbi sims/s':>16}{'sbibm sims/s':>16}{'jsbi/sbibm':>12}"
    )
    print(header)
    print("-" * len(header))
    record = []
    for row in bench_tasks(names, n):
        if "skip" in row:
            print(f"{row['task']:<26}{row['d']:>4}   skipped: {row['skip']}")
            continue
        for tool in ("jsbi", "sbibm"):
            record.append(
                {"part": "built-in task", "simulator": row["task"], "tool": tool, "n_jobs": 1,
                 "simulations": n, "seconds": row["seconds"][tool],
                 "simulations_per_second": round(row[tool])}
            )  # fmt: skip
        note = "" if row["same_shape"] else "  (x shapes differ!)"
        print(
            f"{row['task']:<26}{row['d']:>4}{row['m']:>6}{row['jsbi']:>16,.0f}"
            f"{row['sbibm']:>16,.0f}{row['ratio']:>11.1f}x{note}"
        )
    for name in ("sir", "lotka_volterra"):
        if name not in TASKS:
            print(f"{name:<26}   not a jsbi task (sbibm's needs Julia): skipped")

    n_par = args.parallel_simulations or min(2000, n)
    r = bench_parallel(n_par, args.n_jobs)
    print(
        f"\njsbi.simulate on a slow per-sample Python simulator (~1 ms each), "
        f"{r['n']:,} simulations, batch_size={r['batch_size']}:"
    )
    print(f"{'n_jobs':>8}{'seconds':>10}{'sims/s':>10}{'speed-up':>10}")
    print(f"{1:>8}{r['t_1']:>10.2f}{rate(r['n'], r['t_1']):>10}{1:>9.2f}x")
    speedup = r["t_1"] / r["t_n"]
    print(f"{args.n_jobs:>8}{r['t_n']:>10.2f}{rate(r['n'], r['t_n']):>10}{speedup:>9.2f}x")
    print(f"same pairs for n_jobs=1 and n_jobs={args.n_jobs}: {r['same']}")

    sbi_times = bench_sbi(r["n"], args.n_jobs, r["batch_size"])
    print("\nsbi's simulate_for_sbi, the same simulator, draws and batch_size:")
    for jobs, key in ((1, "t_1"), (args.n_jobs, "t_n")):
        print(
            f"{jobs:>8}{sbi_times[key]:>10.2f}{rate(r['n'], sbi_times[key]):>10}"
            f"{sbi_times[key] / r[key]:>9.2f}x jsbi's seconds"
        )
    for tool, times in (("jsbi", r), ("sbi simulate_for_sbi", sbi_times)):
        for jobs, key in ((1, "t_1"), (args.n_jobs, "t_n")):
            record.append(
                {"part": "slow per-sample simulator", "simulator": "slow (about 1 ms)",
                 "tool": tool, "n_jobs": jobs, "simulations": r["n"],
                 "seconds": times[key],
                 "simulations_per_second": round(r["n"] / times[key])}
            )  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record[0]))
            writer.writeheader()
            writer.writerows(record)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
