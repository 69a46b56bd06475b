r"""Tutorial 1: your simulator to a posterior you can trust.

A numpy simulator of a noisy exponential decay, wrapped for jsbi; a simulation campaign
stored on disk; jsbi's ``npe`` and its default symmetric objective (``jeffreys``) trained
on the same pairs; the report that checks both; and a decision.

Run it with ``python docs/tutorials/first_posterior.py --out tutorial-out/first``
(``--settings small`` for the smallest run, which CI uses).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Independent, Uniform

import jsbi
from jsbi.diagnostics import compare

SETTINGS = {
    # A laptop CPU in a few minutes.
    "full": {"num_simulations": 2000, "num_sbc": 300, "num_samples": 300, "max_epochs": None},
    # CI: every step runs, nothing converges.
    "small": {"num_simulations": 300, "num_sbc": 40, "num_samples": 50, "max_epochs": 3},
}
TIMES = np.linspace(0.0, 5.0, 10)
NAMES = ["amplitude", "rate"]


# --- 1. The simulator: one parameter vector in, one observation out, in numpy ---------
def decay(theta: np.ndarray) -> np.ndarray:
    amplitude, rate = theta
    signal = amplitude * np.exp(-rate * TIMES)
    # numpy's global generator: jsbi.simulate seeds it per batch, so runs repeat.
    return signal + 0.05 * np.random.normal(size=TIMES.shape)


def prior() -> Independent:
    return Independent(Uniform(torch.tensor([0.5, 0.1]), torch.tensor([2.0, 1.5])), 1)


def decide(report) -> str:
    r"""The method to use: calibrated on both checks (coverage and SBC), then the lowest
    NLTP (held-out negative log probability of the true parameters: a proper score,
    lower is better). When none is calibrated, says so and what to do."""
    trusted = [
        name
        for name, res in report.methods.items()
        if res.coverage.verdict == "calibrated" and res.sbc.calibrated
    ]
    nltp = {name: res.nltp.mean for name, res in report.methods.items()}
    if trusted:
        return f"{min(trusted, key=nltp.get)} (calibrated on both checks, lowest NLTP)"
    best = min(nltp, key=nltp.get)
    return (
        f"none yet: no method is calibrated on both checks. Simulate more pairs (the store "
        f"keeps these: call jsbi.simulate again with a larger num_simulations) and retrain; "
        f"until then {best} has the lowest NLTP"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tutorial-out/first_posterior")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="full")
    args = parser.parse_args(argv)
    cfg, out = SETTINGS[args.settings], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # --- 2. Wrap it: the name and version go into the store's fingerprint --------------
    sim = jsbi.wrap(
        decay,
        prior(),
        vectorized=False,
        numpy=True,
        name="decay",
        version="1",
        theta_names=NAMES,
        x_names=[f"y(t={t:.1f})" for t in TIMES],
    )

    # --- 3. Simulate: every batch is saved; a rerun loads them instead ------------------
    theta, x = jsbi.simulate(sim, cfg["num_simulations"], seed=0, store=out / "store")
    print(f"simulated {len(theta)} pairs: theta {tuple(theta.shape)}, x {tuple(x.shape)}")

    # The data we want to explain: here simulated at known parameters, so we can check.
    theta_true = torch.tensor([[1.2, 0.6]])
    torch.manual_seed(123)
    np.random.seed(123)
    x_o = sim.simulate(theta_true)

    # --- 4. Train npe (maximum likelihood) and the default symmetric objective ----------
    fit = {"max_epochs": cfg["max_epochs"] or 2**31 - 1}
    posteriors, histories = {}, {}
    for objective in ("npe", "jeffreys"):
        estimator = jsbi.PosteriorEstimator(sim.prior, objective=objective, seed=0)
        t0 = time.perf_counter()
        posterior = estimator.fit(theta, x, **fit)
        h = {**posterior.history, "wall_time": time.perf_counter() - t0}
        posteriors[f"jsbi-{objective}"] = posterior
        histories[f"jsbi-{objective}"] = h
        print(
            f"{objective:9s} {h['epochs_trained']:4d} epochs, {h['wall_time']:6.1f} s, "
            f"best validation NLL {h['best_validation_loss']:.3f}"
            + (f", best phase {h['best_phase']}" if "best_phase" in h else "")
        )

    # --- 5. Check both on fresh simulations, and look at x_o ----------------------------
    report = compare(
        posteriors,
        sim,
        observations={1: x_o},
        num_sbc=cfg["num_sbc"],
        num_posterior_samples=cfg["num_samples"],
        num_c2st_samples=2000,
        histories=histories,
    )
    index = report.save(out / "report")
    print(report.summary())
    print(f"report: {index}")

    for name, posterior in posteriors.items():
        s = posterior.sample((2000,), x=x_o)
        mean, sd = s.mean(0).tolist(), s.std(0).tolist()
        text = ", ".join(f"{n} {m:.3f} ± {d:.3f}" for n, m, d in zip(NAMES, mean, sd, strict=True))
        print(f"{name:14s} posterior at x_o: {text} (true 1.2, 0.6)")

    # --- 6. Decide -------------------------------------------------------------------------
    choice = decide(report)
    print(f"use: {choice}")
    seconds = time.perf_counter() - start
    print(f"tutorial 1 ran in {seconds:.0f} s")
    nltp = {name: res.nltp.mean for name, res in report.methods.items()}
    assert all(math.isfinite(v) for v in nltp.values())
    return {"choice": choice, "nltp": nltp, "report": index, "seconds": seconds}


if __name__ == "__main__":
    main()
