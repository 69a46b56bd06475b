r"""Does the default's phase 2 change its result, and when?

Phase 2 keeps its state only where it lowers the flow's validation NLL below phase 1's
best (docs/method.md): elsewhere the run returns phase 1's state, and phase 2's epochs,
run to the early-stopping patience, bought nothing. For each (task, N) this trains the
default once (the package on ``PYTHONPATH``; training only, no C2ST) and writes, from its
history: the phase-1 and phase-2 epochs, their seconds, the epochs of phase 2 that set a
new best validation NLL (1-based within phase 2) and by how much the best fell, and the
phase the returned state came from. A run whose phase 2 set no new best returned phase 1's
state: what ``jeffreys-nophase2`` returns, at phase 1's cost. Phase 2's trajectory does not
depend on its patience, only where it stops: the results page gives the smallest patience
that returns the same state.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/phase2_trace.py \
        --units two_moons:500,gaussian_mixture:500,slcp:2000 --seed 0 \
        --out benchmarks/results/phase2_trace/front_units.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path


def new_bests(validation: list[float], phases: list[int]) -> tuple[list[int], float]:
    r"""The phase-2 epochs (1-based within phase 2) whose validation NLL set a new best
    below every earlier epoch's, and how far phase 2 lowered the best (0 where it never
    did: the run returned phase 1's state)."""
    best1 = min(
        (v for v, p in zip(validation, phases, strict=True) if p != 2 and math.isfinite(v)),
        default=math.inf,
    )
    best, gains = best1, []
    phase2 = [v for v, p in zip(validation, phases, strict=True) if p == 2]
    for j, v in enumerate(phase2, start=1):
        if math.isfinite(v) and v < best:
            gains.append(j)
            best = v
    return gains, (best1 - best if gains else 0.0)


def trace(task_name: str, n: int, seed: int) -> dict:
    import torch

    from jsbi.benchmark import code_version
    from jsbi.methods.plans import phase2_outcome
    from jsbi.pipeline import train_method
    from jsbi.simulators import get_task, simulate

    torch.set_num_threads(1)
    task = get_task(task_name)
    theta, x = simulate(task, n, seed=seed, show_progress_bar=False)
    t = train_method("jeffreys", task.prior, theta, x, seed=seed)
    h = t.history
    phase = [int(p) for p in h.get("train_phase", [])]
    times = h["epoch_time"]
    p1 = [k for k, p in enumerate(phase) if p != 2]
    p2 = [k for k, p in enumerate(phase) if p == 2]
    gains, gain = new_bests(h["validation_loss"], phase)
    return {
        "task": task_name,
        "num_simulations": n,
        "seed": seed,
        "phase2": phase2_outcome(h),
        "returned": h.get("posterior", ""),
        "phase1_epochs": len(p1),
        "phase2_epochs": len(p2),
        "phase1_seconds": round(sum(times[k] for k in p1), 1),
        "phase2_seconds": round(sum(times[k] for k in p2), 1),
        "train_seconds": round(t.seconds, 1),
        "phase2_new_best_epochs": " ".join(map(str, gains)),
        "phase2_gain_nats": round(gain, 5),
        "best_phase": h.get("best_phase", ""),
        "code": code_version(),
    }


def main() -> None:
    from jsbi.benchmark import write_rows

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", required=True, help="task:N,task:N,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    # Units already in --out are kept and not trained again; each new one is written as
    # soon as it is done.
    rows = list(csv.DictReader(args.out.open())) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for unit in args.units.split(","):
        name, n = unit.split(":")
        done = {(r["task"], int(r["num_simulations"]), int(r["seed"])) for r in rows}
        if (name, int(n), args.seed) in done:
            continue
        rows.append(trace(name, int(n), args.seed))
        print(rows[-1], flush=True)
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
