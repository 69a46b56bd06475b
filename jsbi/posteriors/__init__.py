r"""What fit returns: the flow's :class:`Posterior`, the proxy's :class:`ProxyPosterior`,
their :class:`MixturePosterior`, sequential proposals and loading."""

from __future__ import annotations

from jsbi.posteriors.io import PosteriorLoadError, load_posterior
from jsbi.posteriors.mixture import MixturePosterior
from jsbi.posteriors.posterior import Posterior
from jsbi.posteriors.proxy import ProxyPosterior
from jsbi.posteriors.sequential import TruncatedProposal

__all__ = [
    "MixturePosterior",
    "Posterior",
    "PosteriorLoadError",
    "ProxyPosterior",
    "TruncatedProposal",
    "load_posterior",
]
