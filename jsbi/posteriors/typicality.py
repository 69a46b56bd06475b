r"""Is an observation typical of the simulations? A prior-predictive p-value per ``x``
(docs/method.md).

Under the model, an observation is one more draw of :math:`p(x)`. Its p-value is the share
of reference draws of :math:`p(x)` that are no more typical than it:

* with a likelihood proxy, by the model's own evidence: :math:`P(\log p(X) \le \log
  p(x_o))`, :math:`\log p` importance-sampled (:meth:`~jsbi.posteriors.Posterior.log_evidence`),
  the reference :math:`X` the fit's held-out (validation) simulations, never trained on
  (they only choose where training stops): under the simulator an observation is
  exchangeable with them, so the p-value is valid whatever the proxy learned. Its least
  value is :math:`1 / (n + 1)`, below 0.01 from 100 of them (1,000 simulations at the
  default validation fraction); with fewer, the reference is 1,000 draws of the learned
  model itself (:math:`\theta \sim \pi`, :math:`X \sim l_\psi(\cdot \mid \theta)`),
  valid only as far as the model is right. Against held-out simulations the embedding
  check below stands beside it, each at half the level (``Typicality.partner``):
  the p-value is twice the smaller of the two, which keeps the level and the finer
  resolution of the embedding's 1,000 reference simulations;
* without one, by a distance in the flow's embedding space (its z-scored, embedded ``x``):
  the mean distance to the ``k`` nearest embedded simulations, against the same statistic
  of each simulation among the others (at most 1,000 of them).

A small p-value says that ``x_o`` is atypical of the simulator: every amortised posterior
there is an extrapolation. :class:`Typicality` holds the reference, fitted once after
training; the posterior caches each observation's p-value.

sbi's ``calc_misspecification_mmd`` tests an observation against simulations by MMD, with
a permutation null drawn anew for every observation; the nearest-neighbour statistic's null
is computed once, so the check costs one distance computation per new ``x``.

Example:
    >>> import torch
    >>> ref = Typicality.from_statistics("evidence", torch.linspace(-3, 3, 500))
    >>> round(ref.p_value_of(torch.tensor(-3.5)), 3)    # far in the lower tail
    0.002
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

__all__: list[str] = []

#: The p-value below which an observation is called atypical.
THRESHOLD = 0.01
#: Reference statistics of the check (its p-values are >= 1 / (n + 1)).
REFERENCE_SIZE = 1000
#: Importance samples per x of the evidence statistic (the reference's too). The p-value is
#: valid for any number, the observation's statistic being computed as the reference's;
#: 64 cost a quarter of 256 and flagged as often on two_moons and slcp (docs/method.md).
EVIDENCE_SAMPLES = 64
#: Held-out simulations the evidence check needs to use them as its reference: with
#: ``n`` of them the least p-value is ``1 / (n + 1)``, below :data:`THRESHOLD` from 100.
MIN_HELD_OUT = 100


class Typicality:
    r"""The reference of a posterior's misspecification check.

    Arguments:
        kind: ``"evidence"`` (``reference`` holds log evidences, shape ``(n,)``) or
            ``"embedding"`` (``reference`` holds embedded simulations, shape ``(n, k)``).
        reference: The reference statistics.
        null: ``"embedding"``: each reference simulation's own statistic among the others,
            shape ``(n,)`` (computed when ``None``).
        k: ``"embedding"``: neighbours per statistic.
        source: What the reference was computed on: ``"held-out"`` (simulations the fit
            never trained on), ``"model"`` (draws of the learned model's prior
            predictive) or ``"simulations"`` (the training simulations, ``"embedding"``).
        partner: ``"evidence"``: an ``"embedding"`` reference combined with it, each at
            half the level: the p-value is ``min(1, 2 min(p, p_partner))``, valid when
            both are (a union bound), and as resolving as the finer of the two.
    """

    def __init__(
        self,
        kind: str,
        reference: Tensor,
        null: Tensor | None = None,
        k: int = 0,
        source: str | None = None,
        partner: Typicality | None = None,
    ):
        if kind not in ("evidence", "embedding"):
            raise ValueError(f"kind must be 'evidence' or 'embedding', got {kind!r}")
        if partner is not None and (kind != "evidence" or partner.kind != "embedding"):
            raise ValueError("partner: an 'embedding' reference beside an 'evidence' one")
        self.kind = kind
        self.partner = partner
        self.source = source or ("simulations" if kind == "embedding" else "model")
        self.reference = reference.detach().double().cpu()
        if kind == "embedding":
            n = len(self.reference)
            self.k = int(k) if k else max(1, min(10, n // 10))
            self.scale = self.reference.std(0).clamp_min(1e-12)
            self.null = self._leave_one_out() if null is None else null.double().cpu()
        else:
            self.k, self.null = 0, None

    @classmethod
    def from_statistics(cls, kind: str, reference: Tensor) -> Typicality:
        return cls(kind, reference)

    def _knn(self, z: Tensor, exclude_self: bool = False) -> Tensor:
        # Mean distance of each row of z to its k nearest reference embeddings.
        d = torch.cdist(z / self.scale, self.reference / self.scale)
        if exclude_self:
            d.fill_diagonal_(math.inf)
        return d.topk(self.k, dim=1, largest=False).values.mean(1)

    def _leave_one_out(self) -> Tensor:
        return self._knn(self.reference, exclude_self=True)

    def p_value_of(self, statistic: Tensor, embedding: Tensor | None = None) -> float:
        r"""The p-value of an observation's statistic (its log evidence, or its embedding
        of shape ``(k,)``); with a ``partner``, ``embedding`` is the observation's
        embedding and the two p-values are combined."""
        if self.partner is not None:
            if embedding is None:
                raise ValueError("p_value_of: this check needs the observation's embedding")
            p = min(self._own_p_value(statistic), self.partner.p_value_of(embedding))
            return min(1.0, 2 * p)
        return self._own_p_value(statistic)

    def _own_p_value(self, statistic: Tensor) -> float:
        statistic = statistic.detach().double().cpu()
        n = len(self.reference)
        if self.kind == "evidence":
            below = int((self.reference <= statistic).sum())
        else:
            stat = self._knn(statistic.reshape(1, -1))[0]
            below = int((self.null >= stat).sum())
        return (1 + below) / (n + 1)

    def state(self) -> dict[str, Any]:
        r"""What a saved posterior keeps."""
        return {
            "kind": self.kind,
            "reference": self.reference.float(),
            "null": None if self.null is None else self.null.float(),
            "k": self.k,
            "source": self.source,
            "partner": None if self.partner is None else self.partner.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Typicality:
        return cls(
            state["kind"],
            state["reference"],
            state.get("null"),
            state.get("k", 0),
            state.get("source"),  # (saved before it was recorded: None)
            None if state.get("partner") is None else cls.from_state(state["partner"]),
        )


@torch.no_grad()
def fit_typicality(
    flow: nn.Module,
    proxy: Any,
    prior: Distribution,
    x: Tensor,
    draws: int = EVIDENCE_SAMPLES,
    held_out: Tensor | None = None,
    combine: bool = True,
) -> Typicality:
    r"""The reference of a trained posterior's misspecification check.

    With a likelihood proxy: the log evidence of the held-out simulations ``held_out``
    (at most :data:`REFERENCE_SIZE`; the fit's validation ``x``, never trained on), which
    under the simulator are exchangeable with an observation, so the p-value is valid
    however well the proxy learned; where fewer than :data:`MIN_HELD_OUT` are given, of
    :data:`REFERENCE_SIZE` draws of the learned model's own prior predictive (``theta ~
    prior``, ``x ~ l(x | theta)``), valid only as far as the model is right. Without a
    likelihood proxy: the flow's embedding of (at most that many of) the simulations
    ``x``. ``draws``: importance draws per log evidence (the observation's statistic must
    use as many). ``combine``: the held-out evidence check has the embedding check as its
    ``partner`` (with 100 held-out simulations its least p-value is 1/101;
    the embedding's, against 1,000 simulations, 1/1001).
    """
    from jsbi.proxies.importance import proxy_log_normalizer
    from jsbi.seeding import seeded

    n = REFERENCE_SIZE
    with seeded(0, [x.device]):
        if proxy is not None and proxy.has_likelihood:
            proxy.eval()
            if held_out is not None and len(held_out) >= MIN_HELD_OUT:
                log_z, _ = proxy_log_normalizer(proxy, flow, prior, held_out[:n], draws)
                partner = _embedding_reference(flow, x, n) if combine else None
                # (-inf is a simulation the model calls impossible: kept, as x_o's would be.)
                log_z = log_z[~torch.isnan(log_z)]
                return Typicality("evidence", log_z, source="held-out", partner=partner)
            if getattr(proxy, "summary", None) is not None:
                # A likelihood of summaries cannot draw x: the embedding's check.
                return _embedding_reference(flow, x, n)
            theta = prior.sample((n,)).to(x.device).reshape(n, -1)
            x_model = proxy.simulate(theta)
            log_z, _ = proxy_log_normalizer(proxy, flow, prior, x_model, draws)
            return Typicality("evidence", log_z[torch.isfinite(log_z)], source="model")
        return _embedding_reference(flow, x, n)


def _embedding_reference(flow: nn.Module, x: Tensor, n: int) -> Typicality:
    # The flow's embedding of (at most n of) the simulations x.
    rows = torch.randperm(len(x), device=x.device)[:n]
    return Typicality("embedding", flow.embed(x[rows]))
