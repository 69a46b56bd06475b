r"""How much do repeated samples inflate C2ST? Reference samples resampled with replacement.

Importance resampling (the likelihood proxy's sampler,
:func:`jsbi.proxies.importance.importance_resample`) draws its samples with replacement
from weighted candidates, so a resample of ``n`` samples from candidates whose ESS is ``k
n`` repeats points. This script isolates that effect from any model error. For each task it
scores, against ``n`` fresh reference samples of observation 1:

- ``n`` other fresh reference samples (C2ST near 0.5);
- ``n`` samples drawn with replacement from ``k n`` other reference samples, equally
  weighted (an ESS of ``k n``), for each ``k`` in ``--ess-multiples`` (at most 4 with
  2,000 samples: sbibm stores 10,000 per observation).

The samples are exact, so any excess over the fresh C2ST is the repeats alone: the
classifier recognises repeated points across its cross-validation folds.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repeats_c2st.py --tasks two_moons slcp
"""

from __future__ import annotations

import argparse

import torch

import jsbi
from jsbi.diagnostics.c2st import c2st


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "slcp", "gaussian_linear_uniform"])
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--ess-multiples", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    n = args.num_samples
    need = n * (1 + max(args.ess_multiples))  # sbibm stores 10,000 per observation
    for name in args.tasks:
        task = jsbi.get_task(name)
        ref = task.reference_samples(1, need)
        if len(ref) < need:
            raise SystemExit(f"{name}: {len(ref)} reference samples, {need} needed")
        # The target, and after it the fresh samples and the pools (each row's samples
        # are independent of the target's).
        target, fresh, pool = ref[:n], ref[n : 2 * n], ref[n:]
        print(
            f"{name} (d={ref.shape[1]}): fresh {c2st(fresh, target, seed=args.seed):.3f}",
            flush=True,
        )
        g = torch.Generator().manual_seed(args.seed)
        for k in args.ess_multiples:
            drawn = pool[: k * n][torch.randint(k * n, (n,), generator=g)]
            unique = len(torch.unique(drawn, dim=0))
            score = c2st(drawn, target, seed=args.seed)
            print(f"  ESS {k} x {n}: {unique} distinct of {n}, C2ST {score:.3f}", flush=True)


if __name__ == "__main__":
    main()
