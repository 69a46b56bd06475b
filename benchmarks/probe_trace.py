r"""The phase-1 probes of the default, per epoch: does the proxy trail the flow early where
the flow is returned in the end?

For each task, trains the default (jeffreys, seed 0) and writes each probe's epoch and
the proxy's validation NLL minus the flow's with its standard error (64 importance draws
per pair, as the probes measure it; negative: the proxy is ahead), then the run's phase 2
outcome, what it returned, and the final measurement (256 draws) that decided it. A
proxy that leads the flow in phase 1 cannot be dropped early without losing the runs
where it would win.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/probe_trace.py \
        --tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform \
        --out benchmarks/results/probe_trace/dev_1k.csv
"""

from __future__ import annotations

import per_task

from jsbi.methods.plans import phase2_outcome
from jsbi.pipeline import train_method
from jsbi.simulators import get_task, simulate

DEV_TASKS = "two_moons,gaussian_mixture,slcp,gaussian_linear_uniform"


def rows_for(name: str, n: int, seed: int) -> list[dict]:
    task = get_task(name)
    theta, x = simulate(task, n, seed=seed, show_progress_bar=False)
    h = train_method("jeffreys", task.prior, theta, x, seed=seed).history
    final = h.get("final_proxy") or {}
    end = {
        "phase2": phase2_outcome(h),
        "returned": h["posterior"],
        "final_gap": round(final.get("proxy_minus_flow", float("nan")), 3),
        "final_gap_se": round(final.get("proxy_minus_flow_se", float("nan")), 3),
        "epochs": len(h["epoch_time"]),
    }
    base = {"task": name, "num_simulations": n, "seed": seed}
    rows = [
        base | {"probe_epoch": e, "gap": round(g, 3), "gap_se": round(se, 3)} | end
        for e, g, se in h.get("probes", [])
    ]
    for r in rows:
        print(r, flush=True)
    return rows


def main() -> None:
    p = per_task.parser(__doc__, DEV_TASKS, "probe_trace.csv")
    p.add_argument("--seed", type=int, default=0)
    per_task.run(p, lambda task, args: rows_for(task, args.num_simulations, args.seed))


if __name__ == "__main__":
    main()
