r"""How often SBC's verdict calls an exact posterior out of band: one 95% band per
parameter (the verdict before the family-wise band) against :func:`check_sbc`'s
family-wise band, for the conjugate Gaussian model's exact posterior in 2, 5 and 10
dimensions (``tests/diagnostics/analytic.py``), at a benchmark row's setting (500 pairs,
200 posterior samples each), over 200 seeds.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/sbc_false_alarm.py \
        --out benchmarks/results/calibration_checks/sbc_false_alarm.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from jsbi.benchmark import write_rows
from jsbi.diagnostics.sbc import check_sbc, ecdf_band, run_sbc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.diagnostics.analytic import GaussianPosterior, pairs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="2,5,10")
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("sbc_false_alarm.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for d in map(int, args.dims.split(",")):
        per_parameter = family_wise = 0
        for seed in range(args.seeds):
            theta, x = pairs(args.pairs, dim=d, seed=seed)
            ranks = run_sbc(GaussianPosterior(dim=d), theta, x, args.samples, seed=seed)
            r = ranks.numpy()
            per_parameter += any(
                ecdf_band(r[:, j], args.samples)["outside"].any() for j in range(d)
            )
            family_wise += not check_sbc(ranks, args.samples).calibrated
        rows.append(
            {
                "dim": d,
                "seeds": args.seeds,
                "pairs": args.pairs,
                "samples": args.samples,
                "out_of_band_per_parameter_bands": per_parameter / args.seeds,
                "out_of_band_family_wise": family_wise / args.seeds,
            }
        )
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)


if __name__ == "__main__":
    main()
