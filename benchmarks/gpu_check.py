r"""Every path on the GPU: npe and jeffreys on two_moons, on CUDA and on the CPU.

Trains each method on the same simulations (seed 0) on ``cuda`` and on ``cpu``, with
the prior left on the CPU (as a user builds it) so that the device handling of the
prior, the proxies and the reverse term is exercised. Prints, per method and device,
the training time, the epochs, and the C2ST at observation 1 against the reference
posterior; then the GPU/CPU time ratio. Also simulates once with the prior on CUDA, and
checks ``theta`` and ``x`` come back on one device.

Sized to finish in under 5 minutes on a machine with one GPU (1,000 simulations, at
most 150 epochs per method). Without CUDA it says so and exits with status 2.

Example:
    $ .venv/bin/python benchmarks/gpu_check.py
    $ .venv/bin/python benchmarks/gpu_check.py --num-simulations 1000 --max-epochs 150
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import jsbi
from jsbi.diagnostics import c2st
from jsbi.estimator import PosteriorEstimator


def _run(method: str, device: str, theta, x, task, args) -> tuple[float, int, float]:
    est = PosteriorEstimator(task.prior, objective=method, device=device, seed=0)
    start = time.perf_counter()
    post = est.fit(theta, x, max_epochs=args.max_epochs, show_progress_bar=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.random.fork_rng(devices=[0] if device.startswith("cuda") else []):
        torch.manual_seed(0)
        samples = post.sample((args.num_samples,), x=task.observation(1).to(device))
    if samples.device.type != torch.device(device).type:
        raise AssertionError(f"{method} on {device}: samples came back on {samples.device}")
    reference = task.reference_samples(1, args.num_samples)
    score = c2st(samples.cpu(), reference, seed=0)
    return seconds, int(post.history["epochs_trained"]), float(score)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-simulations", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--methods", default="npe,jeffreys")
    parser.add_argument(
        "--device",
        default="cuda",
        help="the accelerator to check against the CPU (default: cuda; 'cpu' runs the "
        "script's own logic on a machine without one)",
    )
    args = parser.parse_args(argv)
    gpu = args.device
    if gpu.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0) if gpu.startswith("cuda") else gpu
    print(f"torch {torch.__version__}, {name}, jsbi {jsbi.__version__}")
    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, args.num_simulations, seed=0)

    # A prior on the GPU: simulate gives theta and x on one device.
    on_gpu = jsbi.wrap(
        lambda t: task.simulate(t.cpu()),
        torch.distributions.Independent(
            torch.distributions.Uniform(-torch.ones(2, device=gpu), torch.ones(2, device=gpu)),
            1,
        ),
        name="two_moons_device_prior",
    )
    t_gpu, x_gpu = jsbi.simulate(on_gpu, 50, seed=0)
    print(f"simulate with a prior on {gpu}: theta on {t_gpu.device}, x on {x_gpu.device}")
    if t_gpu.device != x_gpu.device:
        raise AssertionError("simulate returned theta and x on different devices")

    rows = {}
    print(f"{'method':10s} {'device':6s} {'train s':>8s} {'epochs':>6s} {'C2ST':>6s}")
    for method in args.methods.split(","):
        for device in (gpu, "cpu"):
            seconds, epochs, score = _run(method, device, theta, x, task, args)
            rows[method, device] = seconds
            print(f"{method:10s} {device:6s} {seconds:8.1f} {epochs:6d} {score:6.3f}", flush=True)
    for method in args.methods.split(","):
        ratio = rows[method, gpu] / rows[method, "cpu"]
        print(f"{method}: {gpu} time / cpu time = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
