r"""The proxy sampler's rounds against fixed steps, on a posterior known exactly.

The conjugate Gaussian of ``tests/posteriors/test_mcmc.py`` (``theta ~ N(0, I_3)``,
``x ~ N(theta, 0.25 I)``), its exact energy as the proxy and an untrained flow as the
proposal (a poor one). For each setting, 10,000 samples at 2 observations; the error is
the largest over parameters and observations of |mean error| / sd + |log sd ratio|
against the exact posterior, and "warns" is whether :func:`check_mixing` would.

    python benchmarks/mcmc_rounds.py
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal

from jsbi.flows import build_conditional_flow
from jsbi.posteriors.mcmc import mixing_problems, sample_proxy

D, S2 = 3, 0.25
X_O = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]])


def energy(theta, x):
    return 0.5 * (theta**2).sum(-1) + 0.5 / S2 * ((x - theta) ** 2).sum(-1)


def main() -> None:
    torch.manual_seed(0)
    prior = Independent(Normal(torch.zeros(D), torch.ones(D)), 1)
    theta = prior.sample((300,))
    x = theta + math.sqrt(S2) * torch.randn(300, D)
    flow = build_conditional_flow(theta, x, prior, num_transforms=1, hidden_features=(16,))
    mean, sd = X_O / (1 + S2), math.sqrt(S2 / (1 + S2))
    print("| steps | most steps | steps run | drift | error | warns |")
    print("|---|---|---|---|---|---|")
    for steps, most in ((2, 2), (2, 16), (4, 4), (4, 16), (10, 10), (10, 40)):
        torch.manual_seed(1)
        s, info = sample_proxy(energy, flow, prior, X_O, 10_000, num_steps=steps, max_steps=most)
        error = ((s.mean(0) - mean).abs() / sd + (s.std(0) / sd).log().abs()).max()
        warns = "yes" if mixing_problems(info) else "no"
        run = f"{info.num_steps} | {info.drift:.3f} | {error:.3f} | {warns}"
        print(f"| {steps} | {most} | {run} |")


if __name__ == "__main__":
    main()
