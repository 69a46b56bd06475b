r"""Everything the README's GPU section needs, in one command (under 5 minutes on one GPU).

On two_moons at 10,000 and 100,000 simulations (seed 0), for npe and the default
(jeffreys): trains on the accelerator with an epoch cap, and prints the time per epoch,
the epochs, the training time and the C2ST (sbibm's MLP) at observation 1; then the same
runs' time per epoch on the CPU, from a few epochs (the CPU figures of the same run);
then the largest training batch that fits on the accelerator (npe's forward and backward
pass, doubling until out of memory). Without the accelerator it says so and exits with
status 2; ``--device cpu`` runs every step on the CPU (what the tests do).

Example:
    $ .venv/bin/python benchmarks/gpu_check.py
    $ .venv/bin/python benchmarks/gpu_check.py --device cpu --budgets 1000 --max-epochs 2 \
        --cpu-epochs 1 --num-samples 500 --max-batch 4096
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import jsbi
from jsbi.diagnostics import c2st
from jsbi.estimator import PosteriorEstimator


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train(method: str, device: str, theta, x, task, epochs: int, samples: int | None):
    r"""One capped fit: (seconds per epoch, epochs, seconds, C2ST or NaN)."""
    est = PosteriorEstimator(task.prior, objective=method, device=device, seed=0)
    _sync(device)
    start = time.perf_counter()
    post = est.fit(theta, x, max_epochs=epochs, show_progress_bar=False)
    _sync(device)
    seconds = time.perf_counter() - start
    n = int(post.history["epochs_trained"])
    score = float("nan")
    if samples:
        with torch.random.fork_rng(devices=[0] if device.startswith("cuda") else []):
            torch.manual_seed(0)
            draws = post.sample((samples,), x=task.observation(1).to(device))
        if draws.device.type != torch.device(device).type:
            raise AssertionError(f"{method} on {device}: samples came back on {draws.device}")
        score = float(c2st(draws.cpu(), task.reference_samples(1, samples), seed=0))
    return seconds / max(n, 1), n, seconds, score


def largest_batch(device: str, theta, x, task, cap: int) -> int:
    r"""The largest power-of-two batch whose npe forward and backward pass fits."""
    from jsbi.flows import build_conditional_flow

    flow = build_conditional_flow(theta[:1000], x[:1000], task.prior).to(device)
    size, fits = 256, 0
    while size <= cap:
        idx = torch.randint(len(theta), (size,))
        try:
            loss = -flow.log_prob(theta[idx].to(device), x[idx].to(device)).mean()
            loss.backward()
            _sync(device)
            fits = size
        except torch.OutOfMemoryError:
            break
        finally:
            flow.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        size *= 2
    return fits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--budgets", default="10000,100000")
    p.add_argument("--methods", default="npe,jeffreys")
    p.add_argument("--max-epochs", type=int, default=30, help="epoch cap on the accelerator")
    p.add_argument("--cpu-epochs", type=int, default=2, help="epochs timed on the CPU")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--max-batch", type=int, default=1 << 20)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (use --device cpu to run the script)")
        return 2
    task = jsbi.get_task("two_moons")
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({name}); torch {torch.__version__}; jsbi {jsbi.__version__}")
    head = f"{'N':>7s} {'method':9s} {'s/epoch':>8s} {'epochs':>6s} {'train s':>8s} {'C2ST':>6s}"
    head += f" {'CPU s/epoch':>11s} {'speed-up':>8s}"
    print(head)
    for n in (int(b) for b in args.budgets.split(",")):
        theta, x = jsbi.simulate(task, n, seed=0)
        for method in args.methods.split(","):
            per, epochs, seconds, score = train(
                method, args.device, theta, x, task, args.max_epochs, args.num_samples
            )
            cpu, _, _, _ = train(method, "cpu", theta, x, task, args.cpu_epochs, None)
            print(
                f"{n:7d} {method:9s} {per:8.2f} {epochs:6d} {seconds:8.1f} {score:6.3f} "
                f"{cpu:11.2f} {cpu / per:7.1f}x",
                flush=True,
            )
    theta, x = jsbi.simulate(task, 2000, seed=0)
    fits = largest_batch(args.device, theta, x, task, args.max_batch)
    print(f"largest npe batch that fits: {fits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
