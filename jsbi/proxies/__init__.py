r"""The model :math:`r_\psi(\theta \mid x)`: energy-based proxies, one file per family behind
the :class:`Proxy` protocol, and importance sampling with the flow as proposal."""

from __future__ import annotations

from jsbi.proxies.base import Proxy
from jsbi.proxies.build import PROXIES, ProxyConfig, build_proxy
from jsbi.proxies.likelihood import LikelihoodEnergy
from jsbi.proxies.mlp import MLPEnergy
from jsbi.proxies.ratio import PriorTimesRatioEnergy
from jsbi.proxies.residual import ResidualEnergy

__all__ = [
    "PROXIES",
    "LikelihoodEnergy",
    "MLPEnergy",
    "PriorTimesRatioEnergy",
    "Proxy",
    "ProxyConfig",
    "ResidualEnergy",
    "build_proxy",
]
