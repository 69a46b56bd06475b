r"""Which proxy, with which options: :class:`ProxyConfig`, and the builder of every family.

Example:
    >>> ProxyConfig(family="ratio", options={"contrastive": "nrec"}).family
    'ratio'
    >>> ProxyConfig(family="ratoi")
    Traceback (most recent call last):
    ...
    ValueError: family must be one of 'ratio', 'likelihood', 'residual', 'mlp', got 'ratoi'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.distributions import Distribution

from jsbi.config import Config, option
from jsbi.flows.conditional import ConditionalFlow
from jsbi.proxies.base import Proxy
from jsbi.proxies.likelihood import LikelihoodEnergy
from jsbi.proxies.mlp import MLPEnergy
from jsbi.proxies.ratio import PriorTimesRatioEnergy
from jsbi.proxies.residual import ResidualEnergy

__all__ = ["PROXIES", "ProxyConfig", "build_proxy"]

#: The proxy families of docs/method.md (and the free ``mlp`` energy).
PROXIES = ("ratio", "likelihood", "residual", "mlp")


@dataclasses.dataclass(frozen=True)
class ProxyConfig(Config):
    r"""The energy-based proxy :math:`r_\psi(\theta \mid x)` of a symmetric method.

    Arguments:
        family: ``"likelihood"``: :math:`-\log \pi(\theta) - \log l_\psi(x \mid \theta)`
            with a conditional flow on ``x`` (NLE); ``"ratio"``: :math:`-\log \pi(\theta) -
            g_\psi(\theta, x)`; ``"residual"``: :math:`-\log q_{\bar\phi} - g_\psi`, a
            correction of a frozen copy of the flow; ``"mlp"``: a free MLP energy.
        hidden_features: The energy MLP's hidden widths (not the likelihood flow's).
        options: Further arguments of the family's class (e.g. ``contrastive="nrec"`` for
            the ratio proxy; ``num_transforms`` or candidate likelihoods
            ``alternatives=[{"flow": "maf"}]`` for the likelihood proxy).
        share_embedding: Whether the proxy reads ``x`` through the flow's embedding net;
            the likelihood proxy then models the embedding's summaries ``s(x)``, not
            ``x`` (for high-dimensional ``x``).
    """

    what = "proxy"

    family: str = option("likelihood", "the proxy family", choices=PROXIES)
    hidden_features: tuple[int, ...] = option((64, 64), "the energy MLP's hidden widths")
    options: Mapping[str, Any] = option({}, "further arguments of the proxy's class")
    share_embedding: bool = option(False, "read x through the flow's embedding net")

    def check(self) -> None:
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options must be a dict, got {self.options!r}")


def build_proxy(
    config: ProxyConfig, flow: ConditionalFlow, prior: Distribution, theta: Tensor, x: Tensor
) -> Proxy:
    r"""Builds the proxy ``config`` names, standardised on the training pairs.

    Arguments:
        config: The proxy's :class:`ProxyConfig`.
        flow: The flow, whose x-embedding the proxy may share (and which the residual
            proxy copies).
        prior: The prior (the support and base density of the prior-times proxies).
        theta: Training parameters, shape ``(n, d)``.
        x: Training data, shape ``(n, m)``.

    Returns:
        The proxy module, on ``theta``'s device.
    """
    m = x.shape[1]
    options = dict(config.options)
    if config.family == "likelihood":
        if config.share_embedding:
            options["summary"] = flow.embed
        energy: Proxy = LikelihoodEnergy(prior, m, **options)
        return energy.set_standardization(theta, x).to(theta.device)
    kwargs: dict[str, Any] = {"hidden_features": tuple(config.hidden_features), **options}
    if config.share_embedding:
        kwargs["embedding"] = flow.embedding_net
    builders = {
        "ratio": lambda: PriorTimesRatioEnergy(prior, m, **kwargs),
        "residual": lambda: ResidualEnergy(flow, **kwargs),
        "mlp": lambda: MLPEnergy(theta.shape[1], m, confinement=1e-2, **kwargs),
    }
    energy = builders[config.family]()
    return energy.set_standardization(theta, x).to(theta.device)
