r"""Parity of jsbi's NPE with sbi's NPE on the same simulations.

For each task, simulation budget and seed, the script simulates once, trains jsbi's ``npe``
once per way of respecting the prior's support (``--supports``: ``transform`` and
``truncate``; zuko NSF, sbi's defaults: 5 transforms, 5 x 50 hidden units, 10 bins, Adam
5e-4, batch 200, 10% validation, patience 20; ``--coupling`` adds jsbi's flow with
coupling transforms, ``passes=2``) and sbi's ``NPE`` with
``posterior_nn("zuko_nsf")`` on exactly those pairs, then for each observation records the
C2ST of each posterior against the task's reference samples (sbibm's definition,
:func:`jsbi.diagnostics.c2st.c2st`), the training wall times and their ratio, the sampling
throughput (rejection included) and how many returned samples lie outside the prior. The
table gives the mean and spread over observations and seeds, and the paired difference to
sbi NPE with its standard error. sbi's TensorBoard
logging is disabled (:func:`jsbi.diagnostics.baselines.train_sbi_npe`), so nothing lands
in the working tree.

Example:
    $ python benchmarks/npe_parity.py --csv benchmarks/results/npe_parity_v2.csv  # full run
    $ python benchmarks/npe_parity.py --table benchmarks/results/npe_parity_v2/*.csv
    # (then, per seed: training time, epochs and time per epoch against sbi NPE's)
    $ python benchmarks/npe_parity.py --tasks two_moons --num-simulations 300 \
        --seeds 0 --observations 1 --max-epochs 3 --num-samples 500     # a smoke test
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import jsbi
from jsbi.benchmark import DEV_TASKS
from jsbi.diagnostics.c2st import c2st
from jsbi.flows.support import SUPPORT_MODES, Support
from jsbi.pipeline import SBI_NPE, train_method
from jsbi.seeding import seeded


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_cell_args(p, seeds=[0, 1], num_samples=10_000)
    p.add_argument(
        "--supports",
        nargs="+",
        default=list(SUPPORT_MODES),
        choices=SUPPORT_MODES,
        help="jsbi's ways to respect a bounded prior, one jsbi-npe-<support> method each",
    )
    p.add_argument(
        "--coupling",
        action="store_true",
        help="also train each jsbi method with a coupling flow (zuko passes=2), as "
        "jsbi-npe-<support>-coupling",
    )
    p.add_argument(
        "--unbounded",
        action="store_true",
        help="the older spelling of --supports truncate",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="simulation workers")
    args = p.parse_args(argv)
    if args.unbounded:
        args.supports = ["truncate"]
    return args


def add_cell_args(p: argparse.ArgumentParser, *, seeds: list[int], num_samples: int) -> None:
    r"""The options of a grid of (task, budget, seed) cells scored on observations:
    the grid, the training options (sbi's defaults), ``--csv`` and ``--table``."""
    p.add_argument("--tasks", nargs="+", default=list(DEV_TASKS), help="task names")
    p.add_argument(
        "--num-simulations", nargs="+", type=int, default=[1000, 10_000], help="budgets"
    )
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--seeds", nargs="+", type=int, default=seeds, help="training seeds")
    p.add_argument(
        "--num-samples",
        type=int,
        default=num_samples,
        help="posterior samples per observation (C2ST and throughput)",
    )
    p.add_argument("--max-epochs", type=int, default=2**31 - 1)
    p.add_argument("--stop-after-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="per-observation rows, written after every cell; a rerun skips its finished cells",
    )
    p.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="print the table of these --csv files and exit (nothing trained)",
    )


def _throughput(posterior, x_o: torch.Tensor, n: int, **kw) -> tuple[torch.Tensor, float]:
    posterior.sample((10,), x=x_o, **kw)  # warm-up: first calls pay one-off costs
    start = time.perf_counter()
    samples = posterior.sample((n,), x=x_o, **kw)
    return samples, n / (time.perf_counter() - start)


def _fit_options(args: argparse.Namespace) -> dict:
    return {
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "stop_after_epochs": args.stop_after_epochs,
        "max_epochs": args.max_epochs,
    }


def _train(method: str, task, theta, x, seed: int, args: argparse.Namespace, **options):
    trained = train_method(
        method,
        task.prior,
        theta,
        x,
        seed=seed,
        estimator_options=options or None,
        fit_options=_fit_options(args),
    )
    return trained.posterior, trained.seconds, trained.epochs


def score(key: dict, method: str, posterior, t, epochs, t_sbi, x_o, ref, support) -> dict:
    r"""One row: ``key`` (task, budget, seed, observation) and ``method``'s C2ST against
    ``ref`` at ``x_o`` from as many samples (drawn with the seed), its training time,
    epochs, sampling rate and samples outside the prior's ``support``."""
    kw = {"show_progress_bars": False} if method == SBI_NPE else {}
    with torch.random.fork_rng():
        torch.manual_seed(key["seed"])
        s, tp = _throughput(posterior, x_o, len(ref), **kw)
    return {
        **key,
        "method": method,
        "c2st": c2st(s, ref, seed=key["seed"]),
        "train_time_s": t,
        "samples_per_s": tp,
        "epochs": epochs,
        "time_ratio_over_sbi": t / t_sbi,
        "samples_outside_prior": int((~support.contains(s)).sum()),
    }


def _cell(task_name: str, n_sim: int, seed: int, args: argparse.Namespace) -> list[dict]:
    r"""Simulates once, trains every method on those pairs and scores each observation."""
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, n_sim, seed=seed, n_jobs=args.n_jobs)
    trained = {}
    for support in args.supports:
        trained[f"jsbi-npe-{support}"] = _train(
            "npe", task, theta, x, seed, args, flow="nsf", support=support
        )
        if args.coupling:
            trained[f"jsbi-npe-{support}-coupling"] = _train(
                "npe", task, theta, x, seed, args, flow="nsf", support=support, passes=2
            )
    trained["sbi-npe"] = _train(SBI_NPE, task, theta, x, seed, args)
    t_sbi = trained["sbi-npe"][1]
    support = Support.from_prior(task.prior)
    rows = []
    for obs in args.observations:
        x_o = task.observation(obs)
        # Analytic references are drawn from torch's random state: seeded, so that a rerun
        # scores against the same samples.
        with seeded(seed):
            ref = task.reference_samples(obs)[: args.num_samples]
        scores = []
        for method, (posterior, t, epochs) in trained.items():
            key = {"task": task_name, "num_simulations": n_sim, "seed": seed, "observation": obs}
            rows.append(score(key, method, posterior, t, epochs, t_sbi, x_o, ref, support))
            scores.append(f"{method} {rows[-1]['c2st']:.3f}")
        print(f"{task_name} N={n_sim} seed={seed} obs={obs}: " + ", ".join(scores), flush=True)
    return rows


def _read_rows(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("num_simulations", "seed", "observation", "epochs", "samples_outside_prior"):
            r[k] = int(r[k])
        for k in ("c2st", "train_time_s", "samples_per_s", "time_ratio_over_sbi"):
            r[k] = float(r[k])
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        # Every column of every row (a resumed file's older rows may lack newer ones).
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def run(args: argparse.Namespace) -> list[dict]:
    methods = {f"jsbi-npe-{s}" for s in args.supports} | {"sbi-npe"}
    if args.coupling:
        methods |= {f"jsbi-npe-{s}-coupling" for s in args.supports}
    return run_cells(args, methods, _cell)


def run_cells(args: argparse.Namespace, methods, cell) -> list[dict]:
    r"""Every (budget, task, seed) cell of ``args`` that ``args.csv`` does not hold for
    all ``methods`` and observations, by ``cell(task, budget, seed, args)``; the CSV is
    rewritten after each cell, so a rerun resumes."""
    rows = _read_rows(args.csv)
    # Small budgets first, so every task has a row early.
    for n_sim in sorted(args.num_simulations):
        for task_name in args.tasks:
            for seed in args.seeds:
                key = (task_name, n_sim, seed)
                done = {
                    (r["method"], r["observation"])
                    for r in rows
                    if (r["task"], r["num_simulations"], r["seed"]) == key
                }
                if all((m, o) in done for m in methods for o in args.observations):
                    continue
                rows = [r for r in rows if (r["task"], r["num_simulations"], r["seed"]) != key]
                rows += cell(task_name, n_sim, seed, args)
                if args.csv is not None:
                    _write_rows(args.csv, rows)
    return rows


def _ms(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{fmt}} ± {spread:{fmt}}"


def table(rows: list[dict]) -> str:
    r"""Mean and spread over observations and seeds; the paired difference to sbi NPE
    (same task, budget, seed and observation)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["num_simulations"], r["method"]), []).append(r)
    sbi = {
        (r["task"], r["num_simulations"], r["seed"], r["observation"]): r
        for r in rows
        if r["method"] == "sbi-npe"
    }
    head = (
        f"{'task':<24} {'N':>6} {'method':<19} {'C2ST (mean ± sd)':>16} "
        f"{'minus sbi (± se)':>17} {'train s':>14} {'t/t_sbi':>8} {'samples/s':>9} "
        f"{'outside':>7}"
    )
    lines = [head, "-" * len(head)]
    for (task, n, method), rs in sorted(groups.items()):
        diffs = [
            r["c2st"] - sbi[(task, n, r["seed"], r["observation"])]["c2st"]
            for r in rs
            if (task, n, r["seed"], r["observation"]) in sbi
        ]
        paired = "" if method == "sbi-npe" or not diffs else _mse(diffs)
        lines.append(
            f"{task:<24} {n:>6} {method:<19} {_ms([r['c2st'] for r in rs], '.3f'):>16} "
            f"{paired:>17} {_ms([r['train_time_s'] for r in rs], '.0f'):>14} "
            f"{statistics.fmean(r['time_ratio_over_sbi'] for r in rs):>8.2f} "
            f"{statistics.fmean(r['samples_per_s'] for r in rs):>9.3g} "
            f"{sum(r['samples_outside_prior'] for r in rs):>7}"
        )
    return "\n".join(lines)


def seed_table(rows: list[dict]) -> str:
    r"""Per (task, budget, seed, method): the mean C2ST over the cell's observations and
    its paired difference to sbi NPE's (same observations), then the training time, the
    epochs it took and the time per epoch, each over sbi NPE's in the same cell. A total
    time ratio mixes the per-epoch cost with where early stopping happened to end; this
    separates them, and shows whether a seed's C2ST went with where it stopped."""
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:  # one row per observation; the training is the same for all of them
        key = (r["task"], r["num_simulations"], r["seed"])
        cells.setdefault(key, {}).setdefault(r["method"], []).append(r)
    head = (
        f"{'task':<24} {'N':>6} {'seed':>4} {'method':<19} {'C2ST':>6} {'- sbi':>7} "
        f"{'train s':>8} {'epochs':>6} {'ms/epoch':>8} {'t/t_sbi':>8} {'per-epoch / sbi':>15}"
    )
    lines = [head, "-" * len(head)]
    for (task, n, seed), methods in sorted(cells.items()):
        sbi_rows = methods.get("sbi-npe")
        sbi = sbi_rows[0] if sbi_rows else None
        sbi_c2st = {s["observation"]: s["c2st"] for s in sbi_rows or []}
        for method, rs in sorted(methods.items()):
            r = rs[0]
            per_epoch = r["train_time_s"] / max(r["epochs"], 1)
            ratio = per_epoch / (sbi["train_time_s"] / max(sbi["epochs"], 1)) if sbi else math.nan
            diffs = [
                o["c2st"] - sbi_c2st[o["observation"]] for o in rs if o["observation"] in sbi_c2st
            ]
            paired = f"{statistics.fmean(diffs):+.3f}" if diffs and method != "sbi-npe" else ""
            lines.append(
                f"{task:<24} {n:>6} {seed:>4} {method:<19} "
                f"{statistics.fmean(o['c2st'] for o in rs):>6.3f} {paired:>7} "
                f"{r['train_time_s']:>8.0f} {r['epochs']:>6} {1e3 * per_epoch:>8.0f} "
                f"{r['time_ratio_over_sbi']:>8.2f} {ratio:>15.2f}"
            )
    return "\n".join(lines)


def _mse(values: list[float]) -> str:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:+.3f} ± {se:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        # A cell run in two files (e.g. one support each) has sbi NPE's rows twice: once.
        rows: dict[tuple, dict] = {}
        for path in args.table:
            for r in _read_rows(path):
                key = (r["task"], r["num_simulations"], r["seed"], r["observation"])
                rows.setdefault((*key, r["method"]), r)
        print(table(list(rows.values())))
        print()
        print(seed_table(list(rows.values())))
        return 0
    rows = run(args)
    print(table(rows))
    print()
    print(seed_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
