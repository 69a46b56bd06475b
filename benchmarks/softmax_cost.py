r"""torch's softmax against ``exp`` and a sum, alone and in zuko's spline flow.

Times, on one thread: the softmax over the last dimension (spline bins) of a
``(N, 10, bins)`` tensor; and a 10-parameter neural spline flow (5 transforms, 10 bins,
context 10, jsbi's default widths) drawing 10,000 samples and taking one
``log_prob``-and-backward step on a batch of 200, with zuko's spline and with
:mod:`jsbi.flows.spline`'s, on the same weights. Stop other work on the machine while it
runs: these are timings.

With ``--paired TASKS``, trains npe at 1,000 simulations with each spline on the same
pairs and seeds instead, and records each run's best validation NLL, epochs and time.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/softmax_cost.py \
        --out benchmarks/results/softmax_cost/softmax_cost.csv
    OMP_NUM_THREADS=1 python benchmarks/softmax_cost.py --paired two_moons,gaussian_mixture \
        --out benchmarks/results/softmax_cost/paired/npe.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import torch
import zuko

from jsbi.benchmark import write_rows
from jsbi.flows.spline import NSF, softmax


def _seconds(f, repeats: int) -> float:
    f()
    start = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - start) / repeats


def _row(what: str, torch_s: float, ours_s: float) -> dict:
    return {
        "what": what,
        "torch_ms": round(1e3 * torch_s, 3),
        "jsbi_ms": round(1e3 * ours_s, 3),
        "speed_up": round(torch_s / ours_s, 2),
    }


def softmax_rows() -> list[dict]:
    rows = []
    for n in (200, 10_000):
        for bins in (8, 10, 16, 32):
            t = torch.randn(n, 10, bins)
            torch_s = _seconds(lambda t=t: torch.softmax(t, -1), 20)
            ours = _seconds(lambda t=t: softmax(t), 20)
            rows.append(_row(f"softmax ({n}, 10, {bins})", torch_s, ours))
    return rows


def flow_rows() -> list[dict]:
    kwargs = {"features": 10, "context": 10, "bins": 10, "transforms": 5}
    kwargs["hidden_features"] = (50,) * 5
    theirs = zuko.flows.NSF(**kwargs)
    ours = NSF(**kwargs)
    ours.load_state_dict(theirs.state_dict())
    c = torch.randn(10_000, 10)
    theta, x = torch.randn(200, 10), torch.randn(200, 10)

    def draw(flow):
        with torch.no_grad():
            flow(c).sample()

    def step(flow):
        flow.zero_grad()
        (-flow(x).log_prob(theta).mean()).backward()

    rows = []
    for what, f, repeats in (("10,000 samples", draw, 2), ("log_prob + backward, 200", step, 50)):
        torch_s = _seconds(lambda f=f: f(theirs), repeats)
        ours_s = _seconds(lambda f=f: f(ours), repeats)
        rows.append(_row(f"NSF 10-D: {what}", torch_s, ours_s))
    return rows


def paired_rows(task_name: str, seeds: list[int]) -> list[dict]:
    # npe trained with zuko's spline and with jsbi's on the same pairs and seed: the
    # same model up to rounding, which early stopping may turn into another run.
    import jsbi.flows.conditional as conditional
    from jsbi.pipeline import train_method
    from jsbi.simulators import get_task, simulate

    task = get_task(task_name)
    rows = []
    for seed in seeds:
        theta, x = simulate(task, 1000, seed=seed, show_progress_bar=False)
        for spline, cls in (("zuko", zuko.flows.NSF), ("jsbi", NSF)):
            with mock.patch.dict(conditional.FLOWS, nsf=cls):  # restored on any exit
                t = train_method("npe", task.prior, theta, x, seed=seed)
            row = {"task": task_name, "seed": seed, "spline": spline, "epochs": t.epochs}
            row |= {"best_validation_nll": round(t.history["best_validation_loss"], 4)}
            rows.append(row | {"seconds": round(t.seconds, 2)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("softmax_cost.csv"))
    p.add_argument(
        "--paired",
        help="instead: npe at 1,000 simulations with each spline, on these tasks",
    )
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9,10,11")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.paired:
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = [r for task in args.paired.split(",") for r in paired_rows(task, seeds)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_rows(args.out, rows)
        return
    rows = softmax_rows() + flow_rows()
    for r in rows:
        print(r, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
