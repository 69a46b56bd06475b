r"""A conjugate Gaussian model with an exact posterior, for testing the diagnostics.

Prior ``N(0, I)``, simulator ``x = theta + N(0, s^2 I)``; the posterior is
``N(x / (1 + s^2), s^2 / (1 + s^2) I)``. ``scale`` multiplies the posterior's standard
deviation: below 1 it is over-confident, above 1 under-confident.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Independent, Normal


class GaussianPosterior:
    def __init__(self, dim: int = 2, noise: float = 0.5, scale: float = 1.0) -> None:
        self.dim, self.noise, self.scale = dim, noise, scale
        self.std = scale * noise / math.sqrt(1 + noise**2)

    def _dist(self, x: Tensor) -> Independent:
        return Independent(Normal(x / (1 + self.noise**2), self.std), 1)

    def sample_batched(self, sample_shape, x: Tensor) -> Tensor:
        return self._dist(x).sample(torch.Size(sample_shape))

    def log_prob_batched(self, theta: Tensor, x: Tensor) -> Tensor:
        return self._dist(x).log_prob(theta)

    def sample(self, sample_shape, x: Tensor) -> Tensor:
        return self.sample_batched(sample_shape, x.reshape(1, -1))[..., 0, :]

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        return self.log_prob_batched(theta[:, None], x.reshape(1, -1))[:, 0]

    def entropy(self) -> float:
        r"""Entropy of the exact posterior (the same for every x)."""
        return 0.5 * self.dim * (math.log(2 * math.pi * self.std**2) + 1)


class GaussianTask:
    r"""The model as a task: prior, simulator, observations and exact references."""

    name = "gaussian_toy"
    num_observations = 3

    def __init__(self, dim: int = 2, noise: float = 0.5) -> None:
        self.dim, self.noise = dim, noise
        self.prior = Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1)
        self.theta_names = [f"theta_{i + 1}" for i in range(dim)]
        g = torch.Generator().manual_seed(123)
        self._theta_o = torch.randn(self.num_observations, dim, generator=g)
        self._x_o = self._theta_o + noise * torch.randn(self.num_observations, dim, generator=g)

    def simulate(self, theta: Tensor) -> Tensor:
        return theta + self.noise * torch.randn_like(theta)

    def observation(self, i: int) -> Tensor:
        return self._x_o[i - 1 : i]

    def true_parameters(self, i: int) -> Tensor:
        return self._theta_o[i - 1 : i]

    def reference_samples(self, i: int, num_samples: int | None = None) -> Tensor:
        g = torch.Generator().manual_seed(1000 + i)
        n = num_samples or 1000
        post = GaussianPosterior(self.dim, self.noise)
        return post._dist(self.observation(i)).mean[0] + post.std * torch.randn(
            n, self.dim, generator=g
        )


def pairs(n: int, dim: int = 2, noise: float = 0.5, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, dim, generator=g)
    return theta, theta + noise * torch.randn(n, dim, generator=g)


class MixturePosterior:
    r"""The exact posterior of the ``gaussian_mixture`` task: with the box prior
    ``U(-10, 10)^2`` and ``x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``, it is the mixture
    ``0.5 N(x, I) + 0.5 N(x, 0.01 I)`` truncated to the box and renormalised (each
    component's mass inside by its CDF). Not Gaussian: a spike on a broad bump, cut at
    the prior's edges. ``scale`` multiplies both components' spreads (below 1:
    over-confident).
    """

    scales = (1.0, 0.1)

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def _mass(self, x: Tensor) -> Tensor:
        # The mixture's mass inside the box at each x, shape (B,).
        edge = torch.tensor(10.0)
        parts = [Normal(x, s * self.scale) for s in self.scales]
        return 0.5 * sum((n.cdf(edge) - n.cdf(-edge)).prod(-1) for n in parts)

    def sample_batched(self, sample_shape, x: Tensor) -> Tensor:
        n, b = torch.Size(sample_shape).numel(), len(x)
        out = torch.empty(n, b, 2)
        need = torch.ones(n, b, dtype=torch.bool)
        while need.any():  # rejection from the untruncated mixture
            spread = torch.where(torch.rand(n, b, 1) < 0.5, 1.0, 0.1) * self.scale
            draw = x + spread * torch.randn(n, b, 2)
            keep = need & (draw.abs() <= 10).all(-1)
            out[keep] = draw[keep]
            need &= ~keep
        return out.reshape(*sample_shape, b, 2)

    def log_prob_batched(self, theta: Tensor, x: Tensor, **ignored) -> Tensor:
        parts = [Normal(x, s * self.scale).log_prob(theta).sum(-1) for s in self.scales]
        lp = torch.logsumexp(torch.stack(parts), 0) + math.log(0.5) - self._mass(x).log()
        return torch.where((theta.abs() <= 10).all(-1), lp, torch.full_like(lp, -math.inf))
