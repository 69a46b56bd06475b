r"""Why a base temperature does not calibrate npe at 1,000 simulations: the calibration
error that :meth:`~jsbi.posteriors.Posterior.recalibrate` minimises, on the validation
pairs it fits and on fresh pairs, at a few temperatures.

For each task, trains npe (seed 0) on 1,000 simulations, then for each temperature T gives
the error (the mean distance of the sorted credibility levels of the truths to the uniform
quantiles, 100 posterior samples per pair) on the fit's 100 validation pairs and on 500
fresh pairs (seed 777). Where the two disagree, or the error hardly moves with T, the
temperature fitted on the validation pairs cannot make the posterior calibrated.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/recalibration_check.py \
        --tasks two_moons,gaussian_mixture,slcp \
        --out benchmarks/results/recalibration/npe_1k.csv
"""

from __future__ import annotations

import per_task

import jsbi
from jsbi.simulators import get_task, simulate
from jsbi.training.config import TrainConfig
from jsbi.training.data import split_indices

TEMPERATURES = (0.7, 0.85, 1.0, 1.2, 1.5)


def rows_for(name: str, n: int, fresh: int) -> list[dict]:
    task = get_task(name)
    theta, x = simulate(task, n, seed=0, show_progress_bar=False)
    theta_f, x_f = simulate(task, fresh, seed=777, show_progress_bar=False)
    post = jsbi.PosteriorEstimator(task.prior, seed=0).fit(theta, x, show_progress_bar=False)
    val, _ = split_indices(n, TrainConfig().validation_fraction, 0)  # the fit's own
    rows = []
    for t in TEMPERATURES:
        post._set_temperature(t)
        row = {"task": name, "num_simulations": n, "temperature": t}
        row["validation_error"] = round(post._calibration_error(theta[val], x[val], 100, 0), 4)
        row["fresh_error"] = round(post._calibration_error(theta_f, x_f, 100, 0), 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    p = per_task.parser(__doc__, "two_moons,gaussian_mixture,slcp", "recalibration_check.csv")
    p.add_argument("--fresh", type=int, default=500)
    per_task.run(p, lambda task, args: rows_for(task, args.num_simulations, args.fresh))


if __name__ == "__main__":
    main()
