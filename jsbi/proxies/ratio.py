r"""The prior times a learned ratio: the ``ratio`` proxy (NRE-style, docs/method.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from jsbi.objectives import contrastive_ratio_loss, nrec_loss
from jsbi.proxies.base import (
    ConditionalEnergy,
    PriorLogDensity,
    _check_outside_energy,
    _energy_from_log_density,
)

__all__ = ["PriorTimesRatioEnergy"]


class PriorTimesRatioEnergy(ConditionalEnergy):
    r"""The prior times a learned ratio: the ``ratio`` proxy.

    .. math:: E_\psi(\theta, x) = -\log \pi(\theta) - g_\psi(\theta, x),
        \qquad r_\psi(\theta \mid x) \propto \pi(\theta) \, e^{g_\psi(\theta, x)}

    with :math:`g_\psi` an MLP on standardised :math:`\theta` and the embedded,
    standardised :math:`x`. The proxy has exactly the prior's support, and
    :math:`g_\psi` plays the log likelihood-to-evidence ratio
    :math:`\log p(x \mid \theta) / p(x)` (for which :math:`Z_\psi = 1`), so the
    contrastive losses :func:`jsbi.objectives.contrastive_ratio_loss` (NRE-A)
    and :func:`jsbi.objectives.nrec_loss` (NRE-C) on :meth:`log_ratio`
    warm-start it. By default the last layer is zeroed, so the proxy starts as the prior.

    Outside the prior's support the energy is ``outside_energy``, ``+inf`` by
    default (exact: zero proxy density); see :class:`PriorLogDensity` for how the prior
    is evaluated safely. Outside points have a constant energy, hence zero gradient. With
    ``+inf``, a flow sample outside makes :func:`~jsbi.objectives.reverse_kl`
    ``+inf`` (a leak is infinitely bad); pass a large finite ``outside_energy`` to
    keep such losses finite instead.

    Arguments:
        prior: The prior :math:`\pi(\theta)`, a torch distribution with event shape
            ``(d,)`` (or batch shape ``(d,)`` of scalars, summed).
        dim_x: The data dimension ``m``.
        outside_energy: The energy outside the support (``math.inf`` or a finite float).
        zero_init: Whether ``g = 0`` at initialisation.
        contrastive: The loss of :meth:`fit_loss`: ``"nrea"`` (one negative per pair)
            or ``"nrec"`` (NRE-C with ``num_atoms`` atoms and odds ``gamma``).
        num_atoms: NRE-C's :math:`K`.
        gamma: NRE-C's :math:`\gamma`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, statistics).

    Example:
        >>> from torch.distributions import Independent, Uniform
        >>> prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
        >>> energy = PriorTimesRatioEnergy(prior, dim_x=3)
        >>> energy(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 3))
        tensor([1.3863,    inf], grad_fn=<WhereBackward0>)
    """

    fit_name = "contrastive"

    def __init__(
        self,
        prior: Distribution,
        dim_x: int,
        outside_energy: float = math.inf,
        zero_init: bool = True,
        contrastive: str = "nrea",
        num_atoms: int = 10,
        gamma: float = 1.0,
        **kwargs,
    ) -> None:
        log_prior = PriorLogDensity(prior)
        super().__init__(log_prior.dim, dim_x, zero_init=zero_init, **kwargs)
        if contrastive not in ("nrea", "nrec"):
            raise ValueError(f"contrastive must be 'nrea' or 'nrec', got {contrastive!r}")
        if int(num_atoms) < 2:
            raise ValueError(f"num_atoms must be >= 2, got {num_atoms}")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.outside_energy = _check_outside_energy(outside_energy)
        self.prior = prior
        self.prior_density = log_prior
        self.contrastive = contrastive
        self.num_atoms = int(num_atoms)
        self.gamma = float(gamma)

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The contrastive loss of :math:`g` on a batch of joint pairs.

        ``"nrea"``: :func:`~jsbi.objectives.contrastive_ratio_loss` with one
        negative per pair (``theta`` permuted in the batch); ``"nrec"``:
        :func:`~jsbi.objectives.nrec_loss` with ``num_atoms`` atoms taken from
        the batch's other parameters.
        """
        if self.contrastive == "nrea":
            perm = torch.randperm(len(theta), device=theta.device)
            return contrastive_ratio_loss(self.log_ratio(theta, x), self.log_ratio(theta[perm], x))
        K = min(self.num_atoms, len(theta) // 2)
        if K < 1:
            raise ValueError(f"NRE-C needs a batch of at least 2 pairs, got {len(theta)}")
        joint = torch.stack([theta.roll(k, dims=0) for k in range(K)])
        marginal = torch.stack([theta.roll(K + k, dims=0) for k in range(K)])
        return nrec_loss(self.log_ratio(joint, x), self.log_ratio(marginal, x), self.gamma)

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log \pi(\theta)`, ``-inf`` outside the support, shape ``(...)``.

        Arguments:
            theta: Parameters, shape ``(..., d)``.
        """
        return self.prior_density(theta)

    def log_ratio(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The learned log ratio :math:`g_\psi(\theta, x)`, shape ``(..., B)``."""
        return self.h(theta, x)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`E_\psi(\theta, x) = -\log \pi(\theta) - g_\psi(\theta, x)`.

        Arguments:
            theta: Parameters, shape ``(..., B, d)``.
            x: Data, shape ``(B, m)``.

        Returns:
            Energies, shape ``(..., B)``; ``outside_energy`` outside the prior's support.
        """
        g = self.log_ratio(theta, x)
        lp = self.log_prior(theta)
        lp = lp.expand_as(g) if lp.shape != g.shape else lp
        log_density = torch.where(torch.isneginf(lp), lp, lp + g)
        return _energy_from_log_density(log_density, self.outside_energy)
