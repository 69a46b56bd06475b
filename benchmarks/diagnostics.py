r"""Wall time of jsbi's batched diagnostics against sbi's own.

Trains jsbi's NPE and sbi's NPE on the same simulations with a small budget, then times
SBC (``--num-sbc`` pairs x ``--num-posterior-samples`` samples), expected coverage and
TARP:

* jsbi's diagnostics (chunked ``sample_batched``) on both posteriors, each diagnostic
  drawing its own samples, and the one-pass variant that :func:`jsbi.diagnostics.compare`
  uses (one draw serves all three);
* sbi's ``run_sbc`` (marginal ranks), ``run_sbc(..., reduce_fns=log_prob)`` (sbi's
  expected coverage) and ``run_tarp`` on both posteriors.

Usage:
    python benchmarks/diagnostics.py                       # the full 1,000 x 1,000 run
    python benchmarks/diagnostics.py --num-simulations 500 --max-epochs 2 \
        --num-sbc 50 --num-posterior-samples 50            # a smoke test
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch


def _timed(fn: Callable[[], Any]) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a failing tool is a result to print
        return time.perf_counter() - start, f"failed: {type(e).__name__}: {e}"[:90]
    return time.perf_counter() - start, "ok"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="two_moons")
    parser.add_argument("--num-simulations", type=int, default=5000)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--num-sbc", type=int, default=1000)
    parser.add_argument("--num-posterior-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import jsbi
    from jsbi.diagnostics import expected_coverage, run_sbc, run_tarp, train_sbi_npe
    from jsbi.diagnostics.coverage import coverage_from_log_probs
    from jsbi.diagnostics.sbc import draw_samples, log_prob_batched, sbc_ranks
    from jsbi.diagnostics.tarp import tarp_from_samples

    warnings.filterwarnings("ignore")
    task = jsbi.get_task(args.task)
    theta, x = jsbi.simulate(task, args.num_simulations, seed=args.seed)
    theta_t, x_t = jsbi.simulate(task, args.num_sbc, seed=args.seed + 1)
    L, B, seed = args.num_posterior_samples, args.batch_size, args.seed

    start = time.perf_counter()
    est = jsbi.PosteriorEstimator(task.prior, objective="npe", seed=seed)
    jsbi_post = est.fit(theta, x, max_epochs=args.max_epochs, show_progress_bar=False)
    t_jsbi = time.perf_counter() - start
    start = time.perf_counter()
    sbi_post, _ = train_sbi_npe(theta, x, task.prior, seed=seed, max_num_epochs=args.max_epochs)
    t_sbi = time.perf_counter() - start
    print(f"training: jsbi-npe {t_jsbi:.1f} s, sbi-npe {t_sbi:.1f} s ({len(theta)} simulations)")

    def one_pass(post: Any) -> None:
        samples = draw_samples(post, x_t, L, batch_size=B, seed=seed)
        sbc_ranks(samples, theta_t)
        lq = log_prob_batched(
            post, torch.cat([theta_t[None], samples]), x_t, batch_size=B, normalize=False
        )
        coverage_from_log_probs(lq[1:], lq[0])
        tarp_from_samples(samples, theta_t, seed=seed)

    def sbi_tools(post: Any) -> dict[str, Callable[[], Any]]:
        from sbi.diagnostics import run_sbc as sbi_run_sbc
        from sbi.diagnostics import run_tarp as sbi_run_tarp

        def log_prob(th: torch.Tensor, xo: torch.Tensor) -> torch.Tensor:
            # Normalisation cancels in the ranks; sbi's default would re-estimate it per x.
            return post.log_prob(th, x=xo, norm_posterior=False)

        return {
            "sbc": lambda: sbi_run_sbc(
                theta_t, x_t, post, L, show_progress_bar=False, use_batched_sampling=True
            ),
            "coverage": lambda: sbi_run_sbc(
                theta_t, x_t, post, L, reduce_fns=log_prob, show_progress_bar=False
            ),
            "tarp": lambda: sbi_run_tarp(
                theta_t, x_t, post, num_posterior_samples=L, show_progress_bar=False
            ),
        }

    results = []
    for name, post in (("jsbi-npe", jsbi_post), ("sbi-npe", sbi_post)):
        jobs = {
            ("jsbi", "sbc"): lambda p=post: run_sbc(p, theta_t, x_t, L, batch_size=B, seed=seed),
            ("jsbi", "coverage"): lambda p=post: expected_coverage(
                p, theta_t, x_t, L, batch_size=B, seed=seed
            ),
            ("jsbi", "tarp"): lambda p=post: run_tarp(p, theta_t, x_t, L, batch_size=B, seed=seed),
            ("jsbi", "all three, one draw"): lambda p=post: one_pass(p),
        }
        jobs.update({("sbi", k): v for k, v in sbi_tools(post).items()})
        for (tool, diagnostic), fn in jobs.items():
            seconds, status = _timed(fn)
            results.append(
                {
                    "posterior": name,
                    "tool": tool,
                    "diagnostic": diagnostic,
                    "seconds": seconds,
                    "status": status,
                }
            )
            print(f"{name:9s} {tool:5s} {diagnostic:20s} {seconds:8.2f} s  {status}", flush=True)
    print(
        f"({args.num_sbc} pairs x {L} samples, task {args.task}, "
        f"{torch.get_num_threads()} torch threads)"
    )
    return results


if __name__ == "__main__":
    main()
