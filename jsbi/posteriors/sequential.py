r"""Sequential inference by truncation (TSNPE): the prior restricted to the posterior's
highest-density region at an observation, as the next round's proposal.

Round 1 trains on prior simulations. Round 2 draws parameters from
:class:`TruncatedProposal` (the prior, truncated to where the round-1 posterior at
``x_o`` is above its ``quantile`` density level), simulates, and trains the same NPE loss
on all rounds' pairs. Because the proposal is the prior times an indicator that (up to
``quantile``) contains the posterior's mass, the pooled pairs are draws from a truncated
prior whose posterior at ``x_o`` is the true one: the loss needs no correction, unlike
other sequential NPE variants.

Example:
    >>> theta1, x1 = jsbi.simulate(task, 500, seed=0)
    >>> post1 = PosteriorEstimator(prior).fit(theta1, x1, max_epochs=5)
    >>> proposal = TruncatedProposal(prior, post1, x_o)
    >>> theta2, x2 = jsbi.simulate(task, 500, seed=1, proposal=proposal)
    >>> post2 = PosteriorEstimator(prior).fit(
    ...     torch.cat([theta1, theta2]), torch.cat([x1, x2]), proposal=proposal, max_epochs=5
    ... )
    >>> post2.sample((10,), x=x_o).shape
    torch.Size([10, 2])

References:
    | Truncated proposals for scalable and hassle-free simulation-based inference
    | (Deistler et al., 2022)
    | https://arxiv.org/abs/2210.04815
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from jsbi.flows.support import prior_device
from jsbi.seeding import seeded

__all__ = ["TruncatedProposal"]


class TruncatedProposal(Distribution):
    r"""The prior truncated to a posterior's highest-density region at one observation.

    The region is :math:`\{\theta : \log q(\theta \mid x_o) \ge t\}`, with :math:`t` the
    ``quantile`` of :math:`\log q` over ``num_samples`` posterior samples (so the region
    holds ``1 - quantile`` of the posterior's mass). Sampling is rejection from the prior;
    ``log_prob`` is the prior's, renormalised by the region's prior mass (a Monte Carlo
    estimate from ``num_samples`` prior draws), and :math:`-\infty` outside.

    Arguments:
        prior: The prior, a torch distribution with event shape ``(d,)``.
        posterior: A posterior with ``sample(shape, x=...)`` and ``log_prob(theta,
            x=...)`` (jsbi's or sbi's), typically the previous round's.
        x_o: The observation, shape ``(m,)`` or ``(1, m)``.
        quantile: The posterior mass left outside the region, in ``(0, 1)`` (TSNPE's
            default ``1e-4``).
        num_samples: Posterior samples for the threshold, and prior samples for the
            region's prior mass.
        seed: Seeds both estimates (the global random stream is left untouched).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        prior: Distribution,
        posterior: Any,
        x_o: Tensor,
        quantile: float = 1e-4,
        num_samples: int = 10_000,
        seed: int = 0,
    ) -> None:
        if not isinstance(prior, Distribution) or len(prior.event_shape) != 1:
            raise ValueError("prior must be a torch distribution with event shape (d,)")
        if not (isinstance(quantile, (int, float)) and 0 < quantile < 1):
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        if int(num_samples) < 100 or int(num_samples) * quantile < 1:
            raise ValueError(
                f"num_samples must be >= 100 and at least 1 / quantile = "
                f"{math.ceil(1 / quantile)}, got {num_samples}"
            )
        x_o = torch.as_tensor(x_o, dtype=torch.float32).reshape(1, -1)
        if not torch.isfinite(x_o).all():
            raise ValueError("x_o must be finite")
        super().__init__(
            batch_shape=torch.Size(), event_shape=prior.event_shape, validate_args=False
        )
        self.prior, self.posterior, self.x_o = prior, posterior, x_o
        self.quantile, self.num_samples = float(quantile), int(num_samples)
        with seeded(seed):
            with torch.no_grad():
                s = posterior.sample((self.num_samples,), x=x_o)
                lq = torch.sort(self._log_q(s)).values
                self.threshold = float(lq[int(self.quantile * self.num_samples)])
                inside = self.inside(prior.sample((self.num_samples,)))
        accepted = int(inside.sum())
        if accepted == 0:
            raise ValueError(
                f"none of {self.num_samples} prior draws falls in the posterior's region at "
                "x_o: the region is too small to sample by rejection; raise quantile or "
                "num_samples"
            )
        #: The region's prior mass (a Monte Carlo estimate) and its standard error.
        self.prior_mass = accepted / self.num_samples
        self.prior_mass_se = math.sqrt(self.prior_mass * (1 - self.prior_mass) / self.num_samples)

    @property
    def support(self) -> Any:
        return self.prior.support

    def _log_q(self, theta: Tensor) -> Tensor:
        return torch.as_tensor(self.posterior.log_prob(theta, x=self.x_o)).reshape(-1)

    @torch.no_grad()
    def inside(self, theta: Tensor) -> Tensor:
        r"""Whether each row of ``theta`` (shape ``(n, d)``) lies in the region."""
        theta = torch.as_tensor(theta).reshape(-1, self.event_shape[0])
        return self._log_q(theta) >= self.threshold

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape)
        n = max(1, shape.numel())
        out, have = [], 0
        while have < n:
            # Enough candidates for the rest at the estimated acceptance rate, plus 10 %.
            k = min(1_000_000, math.ceil(1.1 * (n - have) / self.prior_mass) + 10)
            theta = self.prior.sample((k,))
            keep = theta[self.inside(theta)]
            out.append(keep)
            have += len(keep)
        theta = torch.cat(out)[:n].to(prior_device(self.prior))
        return theta.reshape(*shape, *self.event_shape)

    @torch.no_grad()
    def log_prob(self, value: Tensor) -> Tensor:
        value = torch.as_tensor(value)
        flat = value.reshape(-1, self.event_shape[0])
        lp = torch.as_tensor(self.prior.log_prob(flat)).reshape(-1) - math.log(self.prior_mass)
        lp = torch.where(self.inside(flat), lp, torch.full_like(lp, -math.inf))
        return lp.reshape(value.shape[:-1])

    def __repr__(self) -> str:
        return (
            f"TruncatedProposal(quantile={self.quantile}, prior_mass={self.prior_mass:.3g} "
            f"± {self.prior_mass_se:.1g})"
        )
