r"""Tutorial 4: which simulator explains the data? Evidence, Bayes factors, and a warning
when neither does.

Two candidate models of the same measurements (a signal decaying in time): exponential
decay and a straight line. Each gets a jeffreys posterior, whose likelihood proxy is a
learned model of p(x | theta); its evidence p(x_o) compares the two models on one
dataset, and its prior-predictive p-value says whether x_o is typical of a model at all.

Run it with ``python docs/tutorials/comparing_models.py --out tutorial-out/models``
(``--settings small`` for the smallest run, which CI uses).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from sbi.utils import BoxUniform

import jsbi

SETTINGS = {
    "full": {"num_simulations": 3000, "fit": {}},
    "small": {"num_simulations": 500, "fit": {"max_epochs": 20}},
}
T = torch.linspace(0.0, 4.0, 8)  # the measurement times
NOISE = 0.05


def exponential(theta: torch.Tensor) -> torch.Tensor:
    # 1. Model A: y(t) = amplitude * exp(-rate * t), plus measurement noise.
    amplitude, rate = theta[:, :1], theta[:, 1:]
    return amplitude * torch.exp(-rate * T) + NOISE * torch.randn(len(theta), len(T))


def linear(theta: torch.Tensor) -> torch.Tensor:
    # 2. Model B: y(t) = intercept - slope * t, plus the same noise.
    intercept, slope = theta[:, :1], theta[:, 1:]
    return intercept - slope * T + NOISE * torch.randn(len(theta), len(T))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tutorial-out/comparing_models")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="full")
    args = parser.parse_args(argv)
    cfg = SETTINGS[args.settings]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(0)

    priors = {
        "exponential": BoxUniform(torch.tensor([0.5, 0.1]), torch.tensor([2.0, 1.5])),
        "linear": BoxUniform(torch.tensor([0.5, 0.0]), torch.tensor([2.0, 0.5])),
    }
    simulators = {"exponential": exponential, "linear": linear}

    # 3. The data: one exponential decay (amplitude 1.2, rate 0.8).
    x_o = exponential(torch.tensor([[1.2, 0.8]]))[0]

    # 4. One posterior per model, each with its likelihood proxy (jeffreys' default).
    posteriors = {}
    for name, sim in simulators.items():
        model = jsbi.wrap(sim, priors[name], name=name)
        theta, x = jsbi.simulate(model, cfg["num_simulations"], seed=1)
        est = jsbi.PosteriorEstimator(priors[name], objective="jeffreys", seed=0)
        posteriors[name] = est.fit(theta, x, show_progress_bar=False, **cfg["fit"])

    # 5. Is x_o typical of each model? A small prior-predictive p-value says the model
    #    could hardly have produced it (a warning says so when x_o is used).
    for name, post in posteriors.items():
        print(f"{name:12s} prior-predictive p-value of x_o: {post.observation_p_value(x_o):.3g}")

    # 6. The evidence and the log Bayes factor, with their standard errors.
    comparison = jsbi.compare_models(posteriors, x_o)
    print()
    print(comparison.table())
    value, se = comparison.log_bayes_factor("exponential", "linear")
    print(f"\nlog Bayes factor, exponential over linear: {value:.1f} ± {se:.2f}")

    # 7. The posterior of the model the data favour, at x_o.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = posteriors[comparison.best].sample((2000,), x=x_o)
    print(f"posterior mean under {comparison.best}: {samples.mean(0).numpy().round(3)}")
    seconds = time.perf_counter() - start
    print(f"tutorial 4 ran in {seconds:.0f} s")
    assert math.isfinite(value)
    return {"best": comparison.best, "log_bf": value, "se": se, "seconds": seconds}


if __name__ == "__main__":
    main()
