r"""What a fit costs, an older commit's package against this checkout's, on the same pairs.

For each task (1,000 simulations unless asked, seed 0), trains npe and the default with
the older commit's ``jsbi`` (checked out with ``git worktree`` into a temporary folder)
and with this checkout's, one process at a time: the wall time of the fit, its epochs'
time, the work after the last epoch (``decide_time``; the older code may not record it),
the phase-1 probes, what phase 2 did, what was returned and the flow's best validation
NLL (equal where the two runs trained the same flow). Stop other work on the machine
while it runs: these are timings.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/fit_cost.py --old ae382b7 \
        --tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform \
        --out benchmarks/results/fit_cost/dev_1k.csv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("npe", "jeffreys")


def worker(tasks: list[str], n: int, seed: int) -> None:
    # Runs in a child process whose PYTHONPATH picks the package: one JSON line per fit.
    import warnings

    import torch

    from jsbi.benchmark import method_options
    from jsbi.methods.plans import phase2_outcome
    from jsbi.pipeline import train_method
    from jsbi.simulators import get_task, simulate

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for name in tasks:
        task = get_task(name)
        theta, x = simulate(task, n, seed=seed, show_progress_bar=False)
        for method in METHODS:
            options = method_options(method, None)
            t = train_method(method, task.prior, theta, x, seed=seed, estimator_options=options)
            h = t.history
            row = {
                "task": name,
                "num_simulations": n,
                "seed": seed,
                "method": method,
                "seconds": round(t.seconds, 1),
                "epochs_seconds": round(sum(h["epoch_time"]), 1),
                "decide_seconds": round(h["decide_time"], 1) if "decide_time" in h else "",
                "epochs": t.epochs,
                "probes": len(h.get("probes", [])),
                "phase2": phase2_outcome(h),
                "returned": h.get("posterior", ""),
                "best_validation_nll": round(h["best_validation_loss"], 5),
            }
            print("ROW " + json.dumps(row), flush=True)


def _run(code: str, tag: str, args: argparse.Namespace) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", "--tasks", args.tasks]
    cmd += ["--num-simulations", str(args.num_simulations), "--seed", str(args.seed)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
    return [{"code": tag, **r} for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="the older commit (required unless --worker)")
    p.add_argument("--tasks", default="two_moons,gaussian_mixture,slcp,gaussian_linear_uniform")
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("fit_cost.csv"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.tasks.split(","), args.num_simulations, args.seed)
        return
    if not args.old:
        p.error("--old is required: the commit to compare this checkout with")
    from jsbi.benchmark import write_rows

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), args.old], check=True)
        try:
            rows = _run(str(tree), args.old, args)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=True)
    rows += _run(str(ROOT), "this checkout", args)
    for r in rows:
        print(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
