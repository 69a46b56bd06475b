r"""The equal mixture of the flow and the likelihood proxy: ``posterior="mixture"``.

Both models are trained anyway. Where neither is clearly the better one on the
validation pairs, returning both costs nothing in training: the mixture
:math:`m = \tfrac12 q_\phi(\theta \mid x) + \tfrac12 r_\psi(\theta \mid x)` has a forward
KL from the true posterior :math:`p` no larger than the mean of its members'
(:math:`\mathrm{KL}(p \,\|\, m)` is convex in :math:`m`), and a density that is
normalised because each member's is (the flow's renormalised by its accepted mass inside
the prior where it is truncated, the proxy's by its importance-sampled
:math:`\log \hat Z_\psi(x)`).

Sampling draws, per observation, how many of the ``n`` samples come from the proxy
(``Binomial(n, 1/2)``), takes them from the proxy's sampler and the rest from the
flow's, and shuffles them: ``n`` independent draws of the mixture.

Example:
    >>> post = estimator.fit(theta, x)            # objective="jeffreys", posterior="mixture"
    ... # doctest: +SKIP
    >>> post.sample((1000,), x=x_o); post.log_prob(theta, x=x_o)    # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from jsbi.posteriors.posterior import Posterior
from jsbi.posteriors.proxy import ProxyPosterior
from jsbi.posteriors.spec import VERSION

__all__ = ["MixturePosterior"]


class MixturePosterior(ProxyPosterior):
    r"""The equal-weight mixture of the flow's posterior and the proxy's.

    The arguments are :class:`~jsbi.posteriors.proxy.ProxyPosterior`'s: ``flow``, the
    proxy (which must have a normaliser, as the likelihood proxy does) and its sampler's
    options. :attr:`last_mixing` describes the proxy's chains of the last draw,
    :attr:`last_leakage` the flow's rejected fraction.

    ``log_prob`` is always normalised (both members must be, to be mixed):
    ``norm_posterior=False`` is ignored.
    """

    def __repr__(self) -> str:
        flow = self.flow.config.get("flow")
        return f"MixturePosterior(proxy={type(self.proxy).__name__}, flow={flow})"

    @torch.no_grad()
    def _sample(self, n: int, x: Tensor, reject: bool, max_rounds: int = 1000) -> Tensor:
        B, dev = len(x), self.device
        # Describe this draw only: None where the proxy drew nothing (every k was 0).
        self.last_mixing = self.last_ess = None
        if n == 0:
            return torch.empty(0, B, self.dim_theta, device=dev)
        # How many of each observation's n samples are the proxy's.
        half = torch.full((B,), 0.5, device=dev)
        k = torch.distributions.Binomial(n, half).sample().long()
        most, least = int(k.max()), int(k.min())
        # Every observation gets the most any needs from each member (one vectorised
        # call each): with B observations about sqrt(n ln(B) / 2) draws per member and
        # observation go unused, none with one observation.
        parts = []
        if most:
            parts.append(ProxyPosterior._sample(self, most, x, reject, max_rounds))
        if n - least:
            parts.append(Posterior._sample(self, n - least, x, reject, max_rounds))
        both = torch.cat(parts)  # (most + n - least, B, d); n >= 1 rows
        # Row i of column b is used if it is one of b's first k_b proxy draws or its
        # first n - k_b flow draws; random keys order the used rows, unused ones last.
        i = torch.arange(len(both), device=dev)[:, None]
        used = torch.where(i < most, i < k[None], i - most < n - k[None])
        keys = torch.rand(len(both), B, device=dev).masked_fill(~used, 2.0)
        order = keys.argsort(0)[:n]
        return torch.gather(both, 0, order[..., None].expand(n, B, self.dim_theta))

    def _log_prob(
        self, theta: Tensor, x: Tensor, track_gradients: bool, normalize: bool = True
    ) -> Tensor:
        def flow(t: Tensor, rows: Tensor) -> Tensor:
            return Posterior._log_prob(self, t, rows, track_gradients, True)

        def both(t: Tensor, rows: Tensor) -> Tensor:
            proxy = self._proxy_log_prob(t, rows, track_gradients, True)
            return torch.logaddexp(flow(t, rows), proxy) - math.log(2)

        # Beyond the proxy's domain the flow answers for the proxy: the mixture is the flow.
        return self._by_domain(theta, x, both, flow)

    def recalibrate(self, *args: Any, **kwargs: Any) -> float:
        r"""Not for the mixture: its proxy half does not move with the flow's temperature."""
        raise ValueError(
            "recalibrate applies to a flow posterior: this one is the mixture of the flow and "
            "the proxy, whose half does not depend on the flow's temperature "
            "(posterior='flow' returns the flow)"
        )

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["proxy"]["mixture"] = True  # the flow and the proxy, half each
        state["version"] = VERSION  # what a reader of version 1 refuses
        return state
