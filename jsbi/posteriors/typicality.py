r"""Is an observation typical of the simulations? A prior-predictive p-value per ``x``
(docs/method.md).

Under the model, an observation is one more draw of :math:`p(x)`. Its p-value is the share
of reference draws of :math:`p(x)` that are no more typical than it:

* with a likelihood proxy, by the model's own evidence: :math:`P(\log p(X) \le \log
  p(x_o))`, :math:`\log p` importance-sampled (:meth:`~jsbi.posteriors.Posterior.log_evidence`),
  the reference :math:`X` drawn from the learned model itself (:math:`\theta \sim \pi`,
  :math:`X \sim l_\psi(\cdot \mid \theta)`), so that no fit's optimism about its own
  training pairs enters and the reference is as large as asked (1,000);
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


class Typicality:
    r"""The reference of a posterior's misspecification check.

    Arguments:
        kind: ``"evidence"`` (``reference`` holds log evidences of draws of the model's
            prior predictive, shape ``(n,)``) or ``"embedding"`` (``reference`` holds
            embedded simulations, shape ``(n, k)``).
        reference: The reference statistics.
        null: ``"embedding"``: each reference simulation's own statistic among the others,
            shape ``(n,)`` (computed when ``None``).
        k: ``"embedding"``: neighbours per statistic.
    """

    def __init__(self, kind: str, reference: Tensor, null: Tensor | None = None, k: int = 0):
        if kind not in ("evidence", "embedding"):
            raise ValueError(f"kind must be 'evidence' or 'embedding', got {kind!r}")
        self.kind = kind
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

    def p_value_of(self, statistic: Tensor) -> float:
        r"""The p-value of an observation's statistic (its log evidence, or its embedding
        of shape ``(k,)``)."""
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
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Typicality:
        return cls(state["kind"], state["reference"], state.get("null"), state.get("k", 0))


@torch.no_grad()
def fit_typicality(
    flow: nn.Module,
    proxy: Any,
    prior: Distribution,
    x: Tensor,
    draws: int = EVIDENCE_SAMPLES,
) -> Typicality:
    r"""The reference of a trained posterior's misspecification check.

    With a likelihood proxy: the log evidence of :data:`REFERENCE_SIZE` draws of the
    learned model's own prior predictive (``theta ~ prior``, ``x ~ l(x | theta)``), a null
    without the fit's optimism about its training pairs; else the flow's embedding of (at
    most that many of) the simulations ``x``. ``draws``: importance draws per log
    evidence (the observation's statistic must use as many).
    """
    from jsbi.proxies.importance import proxy_log_normalizer
    from jsbi.seeding import seeded

    n = REFERENCE_SIZE
    with seeded(0, [x.device]):
        if proxy is not None and proxy.has_likelihood:
            proxy.eval()
            theta = prior.sample((n,)).to(x.device).reshape(n, -1)
            x_model = proxy.simulate(theta)
            log_z, _ = proxy_log_normalizer(proxy, flow, prior, x_model, draws)
            return Typicality("evidence", log_z[torch.isfinite(log_z)])
        rows = torch.randperm(len(x), device=x.device)[:n]
        return Typicality("embedding", flow.embed(x[rows]))
