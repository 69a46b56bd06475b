r"""Why a base temperature does not calibrate npe: the calibration error that
:meth:`~jsbi.posteriors.Posterior.recalibrate` minimises, on the validation pairs it fits
and on fresh pairs, at a few temperatures.

For each task, trains npe (seed 0) on the simulations, then for each temperature T gives
the error (the mean distance of the sorted credibility levels of the truths to the uniform
quantiles, 100 posterior samples per pair) on the fit's validation pairs (a tenth of the
simulations) and on 500 fresh pairs (seed 777). Where the two disagree, or the error hardly
moves with T, the temperature fitted on the validation pairs cannot make the posterior
calibrated. With ``--coverage``, each row also has the expected-coverage deviations on the
fresh pairs (200 samples each, as the benchmark rows' columns), and a last row per task
(``fitted``) gives the temperature ``recalibrate`` keeps (its default grid).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/recalibration_check.py \
        --tasks two_moons,gaussian_mixture,slcp \
        --out benchmarks/results/recalibration/npe_1k.csv
    OMP_NUM_THREADS=1 python benchmarks/recalibration_check.py --tasks two_moons \
        --num-simulations 10000 --temperatures 0.85,1,1.1,1.2,1.35,1.5 --coverage \
        --out benchmarks/results/recalibration/npe_10k.csv
"""

from __future__ import annotations

import per_task

import jsbi
from jsbi.diagnostics.calibration import calibration
from jsbi.simulators import get_task, simulate
from jsbi.training.config import TrainConfig
from jsbi.training.data import split_indices

TEMPERATURES = (0.7, 0.85, 1.0, 1.2, 1.5)


def rows_for(
    name: str, n: int, fresh: int, temperatures=TEMPERATURES, coverage: bool = False
) -> list[dict]:
    task = get_task(name)
    theta, x = simulate(task, n, seed=0, show_progress_bar=False)
    theta_f, x_f = simulate(task, fresh, seed=777, show_progress_bar=False)
    post = jsbi.PosteriorEstimator(task.prior, seed=0).fit(theta, x, show_progress_bar=False)
    val, _ = split_indices(n, TrainConfig().validation_fraction, 0)  # the fit's own
    rows = []
    for t in temperatures:
        post._set_temperature(t)
        rows.append(_row(post, name, n, t, (theta[val], x[val]), (theta_f, x_f), coverage))
    if coverage:  # the temperature recalibrate keeps, scored likewise
        kept = post.recalibrate(theta[val], x[val])
        rows.append(_row(post, name, n, "fitted", (theta[val], x[val]), (theta_f, x_f), True))
        rows[-1]["temperature"] = f"fitted {kept:.4g}"
    return rows


def _row(post, name: str, n: int, t, validation, fresh, coverage: bool) -> dict:
    row = {"task": name, "num_simulations": n, "temperature": t}
    row["validation_error"] = round(post._calibration_error(*validation, 100, 0), 4)
    row["fresh_error"] = round(post._calibration_error(*fresh, 100, 0), 4)
    if coverage:
        cal = calibration(post, *fresh, 200, seed=0)
        row["coverage_max_deviation"] = round(cal["coverage_max_deviation"], 4)
        row["coverage_mean_deviation"] = round(cal["coverage_mean_deviation"], 4)
    print(row, flush=True)
    return row


def main() -> None:
    p = per_task.parser(__doc__, "two_moons,gaussian_mixture,slcp", "recalibration_check.csv")
    p.add_argument("--fresh", type=int, default=500)
    p.add_argument("--temperatures", default=",".join(map(str, TEMPERATURES)))
    p.add_argument("--coverage", action="store_true")
    per_task.run(
        p,
        lambda task, args: rows_for(
            task,
            args.num_simulations,
            args.fresh,
            [float(t) for t in args.temperatures.split(",")],
            args.coverage,
        ),
    )


if __name__ == "__main__":
    main()
