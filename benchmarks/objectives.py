r"""jsbi's objectives against sbi's NPE on the development tasks.

For each task, simulation budget and seed the script simulates once, then trains on
exactly those pairs: jsbi ``npe``, ``jeffreys``, ``srfe`` (tau = 0.5 constant and an
annealed schedule), the fixed-weight penalty ablation of ``jeffreys``, and sbi's NPE
(zuko NSF of the same size). It prints, per cell, the C2ST against the reference
posterior (sbibm's definition; mean and spread over observations and seeds), the training
wall time, and the per-epoch cost of each method relative to jsbi ``npe``.

Development set only (tune here): ``two_moons``, ``gaussian_mixture``, ``slcp``,
``gaussian_linear_uniform`` with observations 1-5.

Example:
    $ python benchmarks/objectives.py                                     # the full grid
    $ python benchmarks/objectives.py --tasks two_moons --num-simulations 1000 \
        --seeds 0 --observations 1 2 --num-samples 2000                  # a quick look
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import joblib
import torch

import jsbi
from jsbi.diagnostics.baselines import train_sbi_npe
from jsbi.diagnostics.c2st import c2st

DEV_TASKS = ["two_moons", "gaussian_mixture", "slcp", "gaussian_linear_uniform"]

#: method name -> PosteriorEstimator keyword arguments (``None``: sbi's NPE).
METHODS: dict[str, dict | None] = {
    "npe": {"objective": "npe"},
    "jeffreys": {"objective": "jeffreys"},
    "srfe-0.5": {"objective": "srfe", "tau": 0.5},
    "srfe-anneal": {"objective": "srfe", "tau_schedule": "anneal", "tau": 0.1},
    "jeffreys-fixed": {"objective": "jeffreys", "adaptive": False},
    "sbi-npe": None,
}


#: Options that PosteriorEstimator takes by name; other ``--set`` keys go to AdaptiveStep.
NAMED_OPTIONS = {
    "tau",
    "tau_schedule",
    "eps",
    "alpha",
    "dual_lr",
    "num_proxy_samples",
    "adaptive",
    "warmup_epochs",
    "proxy",
    "share_embedding",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=DEV_TASKS)
    p.add_argument("--num-simulations", nargs="+", type=int, default=[1000, 10_000])
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--num-samples", type=int, default=10_000, help="samples for C2ST")
    p.add_argument("--max-epochs", type=int, default=2**31 - 1)
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra estimator options for the jsbi adaptive methods (e.g. warmup_epochs=20)",
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


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def train(
    method: str, task, theta, x, seed: int, args, checkpoint: Path | None = None
) -> tuple[object, float, int]:
    """Trains one method; returns the posterior, training seconds and epochs.

    For jsbi the seconds are the sum of the epochs' times, so a run resumed from its
    checkpoint reports the time of the whole run.
    """
    start = time.perf_counter()
    if METHODS[method] is None:
        posterior, history = train_sbi_npe(
            theta, x, task.prior, seed=seed, max_num_epochs=args.max_epochs
        )
        return posterior, time.perf_counter() - start, history["epochs_trained"]
    kwargs = dict(METHODS[method])
    if kwargs["objective"] != "npe":
        extra = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        named = {k: extra.pop(k) for k in list(extra) if k in NAMED_OPTIONS}
        kwargs.update(named, objective_kwargs=extra)
    est = jsbi.PosteriorEstimator(task.prior, seed=seed, **kwargs)
    posterior = est.fit(
        theta, x, max_epochs=args.max_epochs, show_progress_bar=False, checkpoint=checkpoint
    )
    history = posterior.history
    return posterior, float(sum(history["epoch_time"])), history["epochs_trained"]


def run_unit(task_name: str, n_sim: int, seed: int, method: str, args) -> list[dict]:
    """Simulates (seeded: every method of a cell sees the same pairs), trains, scores."""
    torch.set_num_threads(1)
    name = f"{task_name}_{n_sim}_{seed}_{method}"
    done = args.out / "rows" / f"{name}.csv" if args.out else None
    if done is not None and done.exists():
        with open(done, newline="") as f:
            return [_typed(r) for r in csv.DictReader(f)]
    checkpoint = None
    if args.out is not None:
        (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint = args.out / "checkpoints" / f"{name}.ckpt"
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, n_sim, seed=seed, show_progress_bar=False)
    posterior, seconds, epochs = train(method, task, theta, x, seed, args, checkpoint)
    rows = []
    for obs in args.observations:
        torch.manual_seed(seed)
        samples = posterior.sample((args.num_samples,), x=task.observation(obs))
        ref = task.reference_samples(obs, args.num_samples)
        rows.append(
            dict(
                task=task_name,
                num_simulations=n_sim,
                seed=seed,
                method=method,
                observation=obs,
                c2st=c2st(samples, ref, seed=seed),
                train_seconds=seconds,
                epochs=epochs,
                seconds_per_epoch=seconds / max(epochs, 1),
            )
        )
    mean = statistics.mean(r["c2st"] for r in rows)
    print(
        f"  {task_name} n={n_sim} seed={seed} {method:>15}: C2ST {mean:.3f} "
        f"({seconds:.0f} s, {epochs} epochs)",
        flush=True,
    )
    if done is not None:
        done.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(done.with_suffix(".tmp"), rows)
        done.with_suffix(".tmp").replace(done)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    return rows


def _typed(row: dict) -> dict:
    out = dict(row)
    for k in ("num_simulations", "seed", "observation", "epochs"):
        out[k] = int(row[k])
    for k in ("c2st", "train_seconds", "seconds_per_epoch"):
        out[k] = float(row[k])
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> list[dict]:
    units = [
        (t, n, s, m)
        for t in args.tasks
        for n in args.num_simulations
        for s in args.seeds
        for m in args.methods
    ]
    # Longest first keeps the workers busy to the end: big budgets, adaptive methods.
    units.sort(key=lambda u: (-u[1], METHODS[u[3]] is None or u[3] == "npe"))
    results = joblib.Parallel(n_jobs=args.n_jobs)(
        joblib.delayed(run_unit)(*unit, args) for unit in units
    )
    return [row for rows in results for row in rows]


def load_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "rows").glob("*.csv")):
        with open(path, newline="") as f:
            rows.extend(_typed(r) for r in csv.DictReader(f))
    return rows


def summarise(rows: list[dict], methods: Sequence[str]) -> str:
    def spread(values: list[float]) -> str:
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.3f} ± {sd:.3f}"

    lines = [
        "| task | sims | method | C2ST (mean ± sd over obs x seeds) | train s | s/epoch vs npe |",
        "|---|---|---|---|---|---|",
    ]
    cells = sorted({(r["task"], r["num_simulations"]) for r in rows}, key=str)
    for task, n in cells:
        cell = [r for r in rows if r["task"] == task and r["num_simulations"] == n]
        npe_epoch = [r["seconds_per_epoch"] for r in cell if r["method"] == "npe"]
        for method in methods:
            mine = [r for r in cell if r["method"] == method]
            if not mine:
                continue
            per_epoch = statistics.mean(r["seconds_per_epoch"] for r in mine)
            ratio = f"{per_epoch / statistics.mean(npe_epoch):.2f}" if npe_epoch else "-"
            seconds = statistics.mean(r["train_seconds"] for r in mine)
            lines.append(
                f"| {task} | {n} | {method} | {spread([r['c2st'] for r in mine])} | "
                f"{seconds:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.summarise:
        if args.out is None:
            raise SystemExit("--summarise needs --out DIR")
        rows = load_rows(args.out)
    else:
        rows = run(args)
    if not rows:
        raise SystemExit("no results")
    print(summarise(rows, [m for m in METHODS if m in {r["method"] for r in rows}]))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
