r"""Importance sampling of an energy-based proxy with the flow as proposal.

The proxy :math:`r_\psi(\theta \mid x) = e^{-E_\psi(\theta, x)} / Z_\psi(x)` has no sampler
and no normaliser of its own. Both come from the *defensive* proposal

.. math:: m(\theta \mid x) = (1 - a) \, q_\phi(\theta \mid x) + a \, \pi(\theta),

the flow (where the posterior mass is) mixed with the prior (which bounds the weights
where the flow puts no mass): :math:`\hat Z = \frac{1}{S} \sum_s e^{-E(\theta_s)} /
m(\theta_s)` is unbiased, and resampling the :math:`\theta_s` by those weights draws
approximately from :math:`r`. The effective sample size fraction of the weights says how
far to trust both (near :math:`1/S`: unreliable).

This is how jsbi measures a proxy against the flow (its held-out NLL,
:func:`proxy_nll`) and how it samples a proxy that is the better model
(:func:`importance_resample`).

Example:
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> from jsbi.inference.ebm import PriorTimesRatioEnergy
    >>> from jsbi.inference.flows import build_conditional_flow
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> theta = prior.sample((64,)); x = theta + 0.1 * torch.randn(64, 2)
    >>> flow = build_conditional_flow(theta, x, prior, num_transforms=1)
    >>> energy = PriorTimesRatioEnergy(prior, 2)   # g = 0: the proxy is the prior
    >>> log_z, ess = proxy_log_normalizer(energy, flow, prior, x[:3], num_samples=256)
    >>> log_z.shape, bool(log_z.abs().max() < 0.5)
    (torch.Size([3]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.objectives import defensive_log_proposal, log_normalizer
from jsbi.proxies.base import PriorLogDensity

__all__: list[str] = []


@torch.no_grad()
def defensive_samples(
    flow: nn.Module,
    prior: Distribution,
    x: Tensor,
    num_samples: int,
    prior_fraction: float = 0.5,
    log_prior: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Draws ``num_samples`` points per ``x`` from the defensive mixture ``m``.

    A fixed share (``round(num_samples * prior_fraction)``) comes from the prior, the rest
    from the flow (stratified, which keeps the estimator unbiased for the mixture's
    density).

    Arguments:
        flow: The conditional flow :math:`q_\phi` (``sample`` and ``log_prob``).
        prior: The prior :math:`\pi`.
        x: Observations, shape ``(B, m)``.
        num_samples: :math:`S`, samples per observation.
        prior_fraction: :math:`a \in [0, 1)`.
        log_prior: The prior's :class:`~jsbi.proxies.base.PriorLogDensity`, to reuse
            across calls (built from ``prior`` when ``None``).

    Returns:
        ``theta`` of shape ``(S, B, d)`` and :math:`\log m(\theta \mid x)` of shape
        ``(S, B)``; the flow's draws come first (``theta[:S - round(S a)]``).
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 <= prior_fraction < 1:
        raise ValueError(f"prior_fraction must be in [0, 1), got {prior_fraction}")
    num_prior = int(round(num_samples * prior_fraction))
    num_flow = int(num_samples) - num_prior
    theta_q = flow.sample((num_flow,), x)
    theta_p = prior.sample((num_prior, len(x))).to(theta_q)
    theta = torch.cat([theta_q, theta_p])
    if log_prior is None:
        log_prior = PriorLogDensity(prior)
    log_prior = log_prior.to(theta.device)
    log_q = flow.log_prob(theta, x)
    a = num_prior / num_samples
    return theta, defensive_log_proposal(log_q, log_prior(theta), a)


def neg_energy_inside(
    energy: Callable[[Tensor, Tensor], Tensor], theta: Tensor, x: Tensor, log_prior: nn.Module
) -> Tensor:
    r""":math:`-E(\theta, x)`, and ``-inf`` outside the prior's support whatever the
    proxy's ``outside_energy``: a finite one keeps training losses finite, but the proxy's
    posterior (the prior times a likelihood or a ratio) has no mass there, so its samples,
    normaliser and density never count a point outside (``log_prior``: the prior's
    :class:`~jsbi.proxies.base.PriorLogDensity`)."""
    v = -energy(theta, x)
    return v.masked_fill(~log_prior.to(theta.device).inside(theta), -math.inf)


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


@torch.no_grad()
def proxy_log_normalizer(
    energy: nn.Module,
    flow: nn.Module,
    prior: Distribution,
    x: Tensor,
    num_samples: int = 1024,
    prior_fraction: float = 0.5,
    chunk_size: int = 64,
    inside: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, ...]:
    r"""Estimates :math:`\log Z_\psi(x)` by defensive importance sampling, with its ESS.

    Arguments:
        energy: The proxy's energy :math:`E_\psi`.
        flow: The proposal flow :math:`q_\phi`.
        prior: The prior :math:`\pi`.
        x: Observations, shape ``(B, m)``.
        num_samples: Samples per observation.
        prior_fraction: The prior's share of the proposal.
        chunk_size: Observations per chunk (bounds memory).
        inside: A membership test (e.g. :meth:`Support.contains
            <jsbi.flows.support.Support.contains>`): when given, the flow's draws
            also estimate the flow's mass inside the support, at no extra sampling.

    Returns:
        ``(log_z, ess)``, both of shape ``(B,)``; ``ess`` is the fraction in ``[0, 1]``.
        With ``inside``, a third tensor of shape ``(B,)``: the share of the flow's draws
        inside (``num_samples - round(num_samples * prior_fraction)`` per ``x``).
    """
    log_prior = PriorLogDensity(prior)
    num_flow = int(num_samples) - int(round(num_samples * prior_fraction))
    log_z, ess, mass = [], [], []
    for s in _chunks(len(x), chunk_size):
        theta, log_m = defensive_samples(
            flow, prior, x[s], num_samples, prior_fraction, log_prior=log_prior
        )
        lz, e = log_normalizer(neg_energy_inside(energy, theta, x[s], log_prior), log_m)
        log_z.append(lz)
        ess.append(e)
        if inside is not None:
            mass.append(inside(theta[:num_flow]).float().mean(0))
    if inside is None:
        return torch.cat(log_z), torch.cat(ess)
    return torch.cat(log_z), torch.cat(ess), torch.cat(mass)


@torch.no_grad()
def proxy_nll(
    energy: nn.Module,
    flow: nn.Module,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    num_samples: int = 1024,
    prior_fraction: float = 0.5,
    chunk_size: int = 64,
    inside: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, ...]:
    r"""The proxy's negative log density at pairs, :math:`E_\psi(\theta, x) + \log Z_\psi(x)`.

    Its mean over held-out pairs is comparable with the flow's ``-log q(theta | x)``:
    both estimate :math:`\mathbb{E}\, \mathrm{KL}(p(\cdot \mid x) \,\|\, \cdot)` up to the
    same constant, so the lower one is the better posterior model.

    Arguments:
        energy, flow, prior, num_samples, prior_fraction, chunk_size, inside: See
            :func:`proxy_log_normalizer`.
        theta: Parameters, shape ``(B, d)``.
        x: Data, shape ``(B, m)``.

    Returns:
        ``(nll, ess)``, both of shape ``(B,)``, and with ``inside`` the flow's mass inside
        the support per ``x``.
    """
    log_z, ess, *mass = proxy_log_normalizer(
        energy, flow, prior, x, num_samples, prior_fraction, chunk_size, inside
    )
    e = torch.cat([energy(theta[s], x[s]) for s in _chunks(len(x), chunk_size)])
    return (e + log_z, ess, *mass)


@torch.no_grad()
def proxy_minus_flow(
    energy: nn.Module,
    flow: nn.Module,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    num_samples: int = 256,
    prior_fraction: float = 0.5,
) -> dict[str, float]:
    r"""Which is the better posterior model on pairs: the proxy's NLL minus the flow's.

    The flow's NLL is the posterior's: a flow that leaks out of a bounded support
    (``flow.leaks``) is truncated to it, its density renormalised by its mass inside,
    estimated from the importance sampler's own flow draws (floored at one draw in
    :math:`n + 1`).

    Arguments:
        energy, flow, prior, num_samples, prior_fraction: See :func:`proxy_log_normalizer`.
        theta: Parameters, shape ``(B, d)``.
        x: Data, shape ``(B, m)``.

    Returns:
        ``proxy_nll`` (its mean), ``proxy_minus_flow`` (the mean paired difference;
        negative: the proxy is better; NaN where unmeasurable), its standard error
        ``proxy_minus_flow_se``, the same for the equal mixture of the two
        (``mixture_minus_flow``, ``mixture_minus_flow_se``: its NLL
        :math:`\log 2 - \log(e^{-\mathrm{NLL}_r} + e^{-\mathrm{NLL}_q})` minus the
        flow's) and ``proxy_ess`` (the weights' mean ESS fraction).
    """
    inside = flow.support.contains if getattr(flow, "leaks", False) else None
    nll_r, ess, *mass = proxy_nll(
        energy,
        flow,
        prior,
        theta,
        x,
        num_samples=num_samples,
        prior_fraction=prior_fraction,
        inside=inside,
    )
    log_mass = 0.0
    if mass:
        n = num_samples - round(num_samples * prior_fraction)
        log_mass = mass[0].clamp_min(1 / (n + 1)).log()
    nll_q = log_mass - flow.log_prob(theta, x)
    # The equal mixture of the two (``posterior="mixture"``), from the same pairs.
    nll_m = math.log(2) - torch.logaddexp(-nll_r, -nll_q)
    gap, gap_se = _mean_se(nll_r - nll_q)
    mix, mix_se = _mean_se(nll_m - nll_q)
    return {
        "proxy_nll": float(nll_r.mean()),
        "proxy_minus_flow": gap,
        "proxy_minus_flow_se": gap_se,
        "mixture_minus_flow": mix,
        "mixture_minus_flow_se": mix_se,
        "proxy_ess": float(ess.mean()),
    }


def _mean_se(diff: Tensor) -> tuple[float, float]:
    # A paired difference's mean and standard error (inf from one pair).
    se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    return float(diff.mean()), se


@torch.no_grad()
def importance_resample(
    energy: nn.Module,
    flow: nn.Module,
    prior: Distribution,
    x: Tensor,
    num_samples: int,
    num_candidates: int | None = None,
    prior_fraction: float = 0.5,
    chunk_size: int = 16_384,
    *,
    max_candidates: int | None = None,
    target_ess: float | None = None,
) -> tuple[Tensor, float]:
    r"""Draws approximate samples of the proxy :math:`r_\psi(\cdot \mid x)` at one ``x``.

    Sampling-importance-resampling: ``num_candidates`` points from the defensive mixture
    are resampled (with replacement) in proportion to :math:`e^{-E_\psi} / m`. With
    ``max_candidates``, more chunks of candidates are drawn while the weights' ESS is
    below ``target_ess`` (default ``num_samples``), up to ``max_candidates`` in all: the
    candidates are independent draws of one proposal, so their union is a valid
    importance sample, and a hard ``x`` gets more of them instead of repeated points.

    Arguments:
        energy, flow, prior, prior_fraction: See :func:`proxy_log_normalizer`.
        x: One observation, shape ``(m,)`` or ``(1, m)``.
        num_samples: Samples to return.
        num_candidates: Proposal draws (default ``10 * num_samples``).
        chunk_size: Candidates per chunk.
        max_candidates: The most proposal draws while the ESS is short of ``target_ess``
            (default: ``num_candidates``, no extra draws).
        target_ess: The ESS that ends the extra draws (default ``num_samples``).

    Returns:
        Samples of shape ``(num_samples, d)`` and the weights' ESS (a count, not a
        fraction): a resample of more samples than its ESS repeats points.
    """
    x = x.reshape(1, -1)
    log_prior = PriorLogDensity(prior)
    n = int(num_candidates or 10 * num_samples)
    cap = max(n, int(max_candidates or n))
    target = float(num_samples if target_ess is None else target_ess)
    thetas, log_ws = [], []

    def draw(count: int) -> None:
        for s in _chunks(count, chunk_size):
            theta, log_m = defensive_samples(
                flow, prior, x, s.stop - s.start, prior_fraction, log_prior=log_prior
            )
            log_ws.append((neg_energy_inside(energy, theta, x, log_prior) - log_m)[:, 0])
            thetas.append(theta[:, 0])

    def ess_of(log_w: Tensor) -> float:
        log_w = log_w.double()  # float32 loses the ratio's last digits
        return math.exp(float(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))

    draw(n)
    log_w = torch.cat(log_ws)
    ess = ess_of(log_w) if torch.isfinite(log_w).any() else 0.0
    while ess < target and n < cap:
        # About enough more to reach the target at the ESS per candidate seen so far
        # (at least as many again as drawn: a geometric growth, few rounds).
        extra = n if ess <= 0 else math.ceil(n * (target / ess - 1))
        extra = min(max(extra, n), cap - n)
        draw(extra)
        n += extra
        log_w = torch.cat(log_ws)
        ess = ess_of(log_w) if torch.isfinite(log_w).any() else 0.0
    if not torch.isfinite(log_w).any():
        raise ValueError("every candidate has zero proxy density: the proxy cannot be sampled")
    theta = torch.cat(thetas)
    pick = torch.multinomial(torch.softmax(log_w, 0), num_samples, replacement=True)
    return theta[pick], ess
