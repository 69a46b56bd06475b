r"""What a fit costs, an older commit's package against this checkout's, on the same pairs.

For each task (1,000 simulations unless asked, seed 0), trains npe and the default with
the older commit's ``jsbi`` (checked out with ``git worktree`` into a temporary folder)
and with this checkout's, one process at a time: the wall time of the fit, its epochs'
time, the work after the last epoch (``decide_time``; the older code may not record it),
the phase-1 probes, what phase 2 did, what was returned and the flow's best validation
NLL (equal where the two runs trained the same flow). Stop other work on the machine
while it runs: these are timings.

With ``--variants`` instead of ``--old``, this checkout alone trains npe, the default, and
the default with each variant's options (``;`` between variants, ``,`` between a
variant's ``name=value`` options), with the final proxy-minus-flow NLL gap and its
standard error (negative: the proxy is the better model).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/fit_cost.py --old ae382b7 \
        --tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform \
        --out benchmarks/results/fit_cost/dev_1k.csv
    OMP_NUM_THREADS=1 python benchmarks/fit_cost.py \
        --variants "proxy_every=2;proxy_patience=10" \
        --out benchmarks/results/fit_cost/variants/dev_1k.csv
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _variants(text: str) -> list[tuple[str, str, dict]]:
    # "a=1,b=2;c=3" -> the methods to train: (label, method, its options).
    out = [("npe", "npe", {}), ("jeffreys", "jeffreys", {})]
    for variant in filter(None, text.split(";")):
        options = dict(kv.split("=", 1) for kv in variant.split(","))
        parsed = {
            k: json.loads(v) if v[:1].isdigit() or v in ("null", "true", "false") else v
            for k, v in options.items()
        }
        out.append((f"jeffreys {variant}", "jeffreys", parsed))
    return out


def worker(tasks: list[str], n: int, seed: int, variants: str = "") -> None:
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
        for label, method, extra in _variants(variants):
            options = method_options(method, extra)
            t = train_method(method, task.prior, theta, x, seed=seed, estimator_options=options)
            h = t.history
            final = h.get("final_proxy") or {}
            row = {
                "task": name,
                "num_simulations": n,
                "seed": seed,
                "method": label,
                "seconds": round(t.seconds, 1),
                "epochs_seconds": round(sum(h["epoch_time"]), 1),
                "decide_seconds": round(h["decide_time"], 1) if "decide_time" in h else "",
                "epochs": t.epochs,
                "probes": len(h.get("probes", [])),
                "phase2": phase2_outcome(h),
                "returned": h.get("posterior", ""),
                "best_validation_nll": round(h["best_validation_loss"], 5),
            }
            if variants:
                row["proxy_minus_flow"] = round(final.get("proxy_minus_flow", math.nan), 4)
                row["proxy_minus_flow_se"] = round(final.get("proxy_minus_flow_se", math.nan), 4)
            print("ROW " + json.dumps(row), flush=True)


def _checkout() -> str:
    # This checkout's commit, "+changes" where the package differs from it.
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "jsbi"]).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def _run(code: str, tag: str, args: argparse.Namespace) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", "--tasks", args.tasks]
    cmd += ["--num-simulations", str(args.num_simulations), "--seed", str(args.seed)]
    cmd += ["--variants", args.variants]
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
    p.add_argument("--variants", default="", help="the default's variants, instead of --old")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.tasks.split(","), args.num_simulations, args.seed, args.variants)
        return
    if bool(args.old) == bool(args.variants):
        p.error("give --old (a commit to compare this checkout with) or --variants")
    from jsbi.benchmark import write_rows

    if args.variants:
        rows = _run(str(ROOT), _checkout(), args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_rows(args.out, rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), args.old], check=True)
        try:
            rows = _run(str(tree), args.old, args)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=True)
    rows += _run(str(ROOT), _checkout(), args)
    for r in rows:
        print(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
