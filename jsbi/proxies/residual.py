r"""The flow times a learned correction: the ``residual`` proxy (section 4b)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
from torch import Tensor

from jsbi.objectives import log_normalizer, proxy_fit
from jsbi.proxies.base import ConditionalEnergy, _check_outside_energy, _energy_from_log_density

__all__ = ["ResidualEnergy"]


class ResidualEnergy(ConditionalEnergy):
    r"""The flow times a learned correction: the ``residual`` proxy.

    .. math:: E_\psi(\theta, x) = -\log q_{\bar\phi}(\theta \mid x) - g_\psi(\theta, x),
        \qquad r_\psi \propto q_{\bar\phi} \, e^{g_\psi}

    with :math:`q_{\bar\phi}` a frozen copy of the flow (:meth:`sync` refreshes it, fully
    or as an exponential moving average) and :math:`g_\psi` an MLP whose last layer is
    zeroed, so at initialisation the proxy *is* the flow (:math:`Z_\psi = 1`). Its
    normaliser :math:`Z_\psi(x) = \mathbb{E}_{q_{\bar\phi}}[e^{g_\psi}]` is
    importance-sampled from the flow itself, with an ESS near 1 while ``g`` is small. The
    support is the prior's: the energy is ``outside_energy`` outside it, whether the flow
    is transformed (no mass there) or truncated (its mass there is cut).

    Arguments:
        flow: The flow :math:`q_\phi` to copy (a
            :class:`~jsbi.flows.conditional.ConditionalFlow`).
        outside_energy: The energy where the frozen flow has zero density.
        num_samples: Samples of the frozen flow per ``x`` for :math:`\log Z` in
            :meth:`fit_loss`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, statistics); ``dim_theta`` and ``dim_x`` come from the flow.

    References:
        | Simulation-based Inference with the Generalized Kullback-Leibler Divergence
          (Miller, Federici, Weniger & Forre, 2023), arXiv:2310.01808
    """

    fit_name = "fit"

    def __init__(
        self,
        flow: nn.Module,
        outside_energy: float = math.inf,
        num_samples: int = 16,
        **kwargs,
    ) -> None:
        kwargs.setdefault("zero_init", True)
        super().__init__(flow.dim_theta, flow.dim_x, **kwargs)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.outside_energy = _check_outside_energy(outside_energy)
        self.num_samples = int(num_samples)
        self.base = copy.deepcopy(flow)
        self.base.requires_grad_(False)
        self.base.eval()

    def parameters(self, recurse: bool = True):
        # The frozen copy is not the proxy's to train.
        return (p for p in super().parameters(recurse) if p.requires_grad)

    def train(self, mode: bool = True) -> ResidualEnergy:
        super().train(mode)
        self.base.eval()
        return self

    @torch.no_grad()
    def sync(self, flow: nn.Module, decay: float = 0.0) -> None:
        r"""Moves the frozen copy: :math:`\bar\phi \leftarrow d \bar\phi + (1 - d) \phi`.

        Arguments:
            flow: The flow whose weights to take.
            decay: :math:`d \in [0, 1)`; ``0`` copies.
        """
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        target = dict(self.base.state_dict())
        for name, value in flow.state_dict().items():
            if value.is_floating_point() and decay > 0:
                target[name].mul_(decay).add_(value.to(target[name]), alpha=1 - decay)
            else:
                target[name].copy_(value)

    def correction(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The learned correction :math:`g_\psi(\theta, x)`, shape ``(..., B)``."""
        return self.h(theta, x)

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The proxy's fit :math:`C = \mathbb{E}_D[E] + \mathbb{E}_x \log Z`, with
        :math:`\log Z = \log \mathbb{E}_{q_{\bar\phi}}[e^{g}]` from ``num_samples`` draws of
        the frozen flow."""
        with torch.no_grad():
            theta_k = self.base.sample((self.num_samples,), x)
            log_q = self.base.log_prob(theta_k, x)
        log_z, _ = log_normalizer(-self(theta_k, x), log_q)
        return proxy_fit(self(theta, x), log_z)

    def base_log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log q_{\bar\phi}(\theta \mid x)`, shape ``(..., B)``; ``-inf`` outside
        the prior's support (also for a flow that leaks: the proxy never does)."""
        lq = self.base.log_prob(theta, x)
        if self.base.leaks:
            inside = self.base.support.contains(theta)
            lq = torch.where(inside.expand_as(lq), lq, torch.full_like(lq, -math.inf))
        return lq

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`-\log q_{\bar\phi}(\theta \mid x) - g_\psi(\theta, x)`."""
        g = self.correction(theta, x)
        lq = self.base_log_prob(theta, x)
        lq = lq.expand_as(g) if lq.shape != g.shape else lq
        log_density = torch.where(torch.isneginf(lq), lq, lq + g)
        return _energy_from_log_density(log_density, self.outside_energy)
