r"""The reverse side's Monte Carlo estimate from the flow's own samples (docs/method.md).

:class:`ReverseEstimator` is what the symmetric step draws each batch: ``K`` flow samples
per observation (reparameterised, with the path gradient where asked for), the proxy's
energy there, :math:`\log Z` by importance sampling (the flow as proposal, or the
defensive flow + prior mixture with ``M`` prior samples), and then the terms of
:func:`~jsbi.objectives.reverse_terms` (reverse KL, SRFE) or, for ``distill``,
:func:`~jsbi.objectives.forward_kl_from_proxy`. Which model descends which term
is :func:`~jsbi.objectives.primal_losses`; this module only estimates.

Example:
    >>> from jsbi.flows import build_conditional_flow
    >>> from jsbi.methods import SymmetricConfig
    >>> from jsbi.proxies import ProxyConfig, build_proxy
    >>> flow = build_conditional_flow(theta, x, prior, support="transform", num_transforms=1)
    >>> proxy = build_proxy(ProxyConfig(), flow, prior, theta, x)
    >>> estimate = ReverseEstimator(flow, proxy, prior, SymmetricConfig())
    >>> r = estimate(x[:8])
    >>> r.flow.shape, r.log_z.shape, r.outside  # a transformed flow never leaves the prior
    (torch.Size([]), torch.Size([8]), 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.methods.config import SymmetricConfig
from jsbi.objectives import (
    defensive_log_proposal,
    forward_kl_from_proxy,
    log_normalizer,
    reverse_terms,
)
from jsbi.proxies.base import PriorLogDensity
from jsbi.proxies.importance import defensive_samples

__all__: list[str] = []


@dataclass
class ReverseEstimate:
    r"""One batch's reverse-side estimate.

    Attributes:
        flow: The flow's term (its gradient moves the flow; :math:`\log Z` detached).
        proxy: The proxy's term (:math:`\log q` detached), ``None`` for ``distill`` or
            without :math:`\log Z`.
        log_z: :math:`\hat{\log Z}(x)` per observation (gradient to the proxy only), or
            ``None`` when not asked for.
        ess: The importance sampler's ESS fraction per observation, or ``None``.
        outside: Flow samples outside the prior's support (left out of the terms).
    """

    flow: Tensor
    proxy: Tensor | None
    log_z: Tensor | None
    ess: Tensor | None
    outside: int


class ReverseEstimator:
    r"""Estimates the reverse side of the symmetric objective on a batch of observations.

    Arguments:
        flow: The conditional flow :math:`q_\phi` (sampled).
        proxy: The conditional energy :math:`E_\psi`.
        prior: The prior (for prior samples in :math:`\log Z` and for ``distill``).
        config: The step's options: ``objective``, ``num_proxy_samples`` (``K``),
            ``num_prior_samples`` (``M``), ``path_gradient`` and ``reverse_batch_size``.
    """

    def __init__(
        self,
        flow: nn.Module,
        proxy: nn.Module,
        prior: Distribution | None,
        config: SymmetricConfig,
    ) -> None:
        self.flow, self.proxy, self.prior = flow, proxy, prior
        self.term = config.term
        self.num_proxy_samples, self.num_prior_samples = (
            config.num_proxy_samples,
            config.num_prior_samples,
        )
        self.path_gradient = config.path_gradient and config.term == "kl"
        self.batch_size = config.reverse_batch_size
        # The prior's log density, -inf outside its support (safe at its boundaries).
        self.log_prior = None if prior is None else PriorLogDensity(prior)

    def batch(self, x: Tensor) -> Tensor:
        r"""The observations of a batch that enter the term (its first ``reverse_batch_size``;
        all by default)."""
        return x if self.batch_size is None else x[: self.batch_size]

    def __call__(
        self, x: Tensor, *, tau: float | None = None, needs_log_z: bool = True
    ) -> ReverseEstimate:
        r"""The estimate on observations ``x`` (``tau``: SRFE's order)."""
        if self.term == "distill":
            K, M = self.num_proxy_samples, self.num_prior_samples or self.num_proxy_samples
            theta_s, log_m = defensive_samples(self.flow, self.prior, x, K + M, M / (K + M))
            neg_energy = -self.proxy(theta_s, x)
            R = forward_kl_from_proxy(self.flow.log_prob(theta_s, x), neg_energy, log_m)
            log_z, ess = log_normalizer(neg_energy, log_m)
            return ReverseEstimate(R, None, log_z, ess, 0)
        theta_k, log_q_k = self.flow_samples(x)
        energy_k = self.proxy(theta_k, x)
        log_z = ess = None
        if needs_log_z:
            # log Z's samples are detached inside log_normalizer; only psi gets its gradient.
            log_z, ess = self.log_normalizer(x, theta_k.detach(), log_q_k, energy_k)
        tau = tau if self.term == "renyi" else None
        R_flow, R_proxy, outside = reverse_terms(log_q_k, energy_k, log_z, tau=tau)
        return ReverseEstimate(R_flow, R_proxy, log_z, ess, outside)

    def flow_samples(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``K`` reparameterised samples per observation and their :math:`\log q`."""
        theta_k, log_q_k = self.flow.rsample_and_log_prob((self.num_proxy_samples,), x)
        if self.path_gradient:
            # Sticking the landing: the score term has zero mean, so drop it by
            # evaluating log q with the flow's parameters detached.
            params = {k: v.detach() for k, v in self.flow.named_parameters()}
            log_q_k = torch.func.functional_call(self.flow, params, (theta_k, x))
        return theta_k, log_q_k

    def fresh_log_normalizer(self, x: Tensor) -> Tensor:
        r""":math:`\hat{\log Z}(x)` from ``K`` fresh flow samples drawn without gradient
        (the proxy's gradient only): the fit :math:`C` of a proxy without its own."""
        with torch.no_grad():
            theta_k, log_q_k = self.flow.rsample_and_log_prob((self.num_proxy_samples,), x)
        return self.log_normalizer(x, theta_k, log_q_k, self.proxy(theta_k, x))[0]

    def log_normalizer(
        self, x: Tensor, theta_k: Tensor, log_q_k: Tensor, energy_k: Tensor
    ) -> tuple[Tensor, Tensor]:
        r""":math:`\hat{\log Z}` and its ESS from the flow's samples, plus ``M`` prior
        samples per observation under the defensive mixture when ``M > 0``."""
        M = self.num_prior_samples
        if M == 0:
            return log_normalizer(-energy_k, log_q_k)
        K = theta_k.shape[0]
        with torch.no_grad():
            theta_p = self.prior.sample((M, len(x))).to(theta_k)
            log_q_p = self.flow.log_prob(theta_p, x)
            theta_all = torch.cat([theta_k.detach(), theta_p])
            log_pi = self.log_prior.to(theta_all.device)(theta_all)
            log_m = defensive_log_proposal(
                torch.cat([log_q_k.detach(), log_q_p]), log_pi, M / (K + M)
            )
        energy = torch.cat([energy_k, self.proxy(theta_p, x)])
        return log_normalizer(-energy, log_m)
