r"""Per-step cost of npe-first's two phases, relative to one ``npe`` step.

Builds each configuration on the same simulations (seed 0, one torch thread), then times
its training step on the same batches (``--batches`` batches of 200): ``npe``;
``jeffreys`` in phase 1 (the flow's npe step plus the proxy's own fit, on every batch or
every 2nd / 4th: ``proxy_every``); ``jeffreys`` in phase 2, gate on, for each variant of
METHOD.md section 4b's cost list (K flow samples per x, path gradients, the reverse term
on a sub-batch, a coupling flow); phase 2 with the gate off; and the gate's per-epoch
measurement on 100 validation pairs (with the default's importance samples, and with
64 or 256). With these and
a run's epoch counts, ``jeffreys``' wall time relative to ``npe``'s is
``(E1 * phase1 + E2 * phase2 + E2 * gate / steps_per_epoch) / (E_npe * npe)``.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phase_cost.py --tasks two_moons slcp
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import jsbi
from jsbi.estimator import PosteriorEstimator

VARIANTS = {
    "K=1 path gradient (default)": {},
    "K=8 (the earlier default)": {
        "num_proxy_samples": 8,
        "objective_kwargs": {"path_gradient": False},
    },
    "K=4": {"num_proxy_samples": 4, "objective_kwargs": {"path_gradient": False}},
    "K=8 sub-batch 50": {
        "num_proxy_samples": 8,
        "objective_kwargs": {"path_gradient": False, "reverse_batch_size": 50},
    },
    "K=1 path gradient sub-batch 50": {
        "num_proxy_samples": 1,
        "objective_kwargs": {"path_gradient": True, "reverse_batch_size": 50},
    },
    "K=1 path gradient, passes=2": {"passes": 2},
}


def _time(fn, batches, repeats: int = 1) -> float:
    fn(*batches[0])  # warm-up (lazy buffers, allocator)
    start = time.perf_counter()
    for _ in range(repeats):
        for theta, x in batches:
            fn(theta, x)
    return (time.perf_counter() - start) / (repeats * len(batches))


def _built(task, theta, x, **kwargs):
    est = PosteriorEstimator(task.prior, seed=0, **kwargs)
    est.fit(theta, x, max_epochs=1, show_progress_bar=False)
    est.step.train()
    return est.step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp"])
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.tasks:
        task = jsbi.get_task(name)
        theta, x = jsbi.simulate(task, args.num_simulations, seed=0, show_progress_bar=False)
        g = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(args.batches):
            idx = torch.randint(len(theta), (200,), generator=g)
            batches.append((theta[idx], x[idx]))
        val = (theta[:100], x[:100])
        base = _time(_built(task, theta, x, objective="npe").step, batches)
        rows = [("npe", base)]
        for every in (1, 2, 4):
            kw = {"objective_kwargs": {"proxy_every": every}}
            step = _built(task, theta, x, objective="jeffreys", **kw)
            step.plan.phase, step.plan.symmetric_from = 1, 10**9
            nth = {2: "2nd", 4: "4th"}
            what = "npe + proxy fit" + ("" if every == 1 else f" on every {nth[every]} batch")
            rows.append((f"jeffreys phase 1 ({what})", _time(step.step, batches)))
        for label, kwargs in VARIANTS.items():
            step = _built(task, theta, x, objective="jeffreys", **kwargs)
            step.plan.phase, step.plan.symmetric_from, step.epoch = 2, 0, 1
            step.plan.gate_value = 1.0
            rows.append((f"jeffreys phase 2, {label}", _time(step.step, batches)))
            if label == "K=1 path gradient (default)":
                step.plan.gate_value = 0.0
                rows.append(("jeffreys phase 2, gate off", _time(step.step, batches)))
                step.plan.gate_value = 1.0
                step.eval()
                gate = _time(step.measure_proxy, [val], repeats=3)
                n = step.config.gate_samples
                rows.append((f"gate measurement (100 val. pairs, {n} samples)", gate))
                for other in sorted({64, 256} - {n}):
                    measure = functools.partial(step.measure_proxy, num_samples=other)
                    gate = _time(measure, [val], repeats=3)
                    rows.append((f"gate measurement (100 val. pairs, {other} samples)", gate))
        print(f"\n{name}, {args.num_simulations} simulations, batch 200")
        print(f"{'configuration':52s} {'ms':>8s} {'x npe':>7s}")
        for label, seconds in rows:
            print(f"{label:52s} {1e3 * seconds:8.1f} {seconds / base:7.2f}")


if __name__ == "__main__":
    main()
