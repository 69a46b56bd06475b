r"""zuko's neural spline flow, with the spline's softmax computed by ``exp`` and a sum,
and an inverse that settles one parameter per pass.

torch 2.13's CPU ``softmax`` over a last dimension of fewer than 16 entries (a spline's
bins: 10 by default) is slower than ``exp`` over the max-shifted input divided by its
sum, and faster from 16 on (``benchmarks/softmax_cost.py``): :func:`softmax` takes the
faster of the two. The spline transform computes two such softmaxes per transform and
per pass, and sampling a fully autoregressive flow makes one pass per parameter.

zuko's autoregressive inverse recomputes, at each of its ``passes``, the network's output
and the splines of every parameter, of which that pass settles those of one rank of the
order (one parameter, in a fully autoregressive flow). :class:`NSF`'s inverse computes at
each pass the last layer's rows and the splines of that rank alone: the same network, the
same values (each parameter's spline reads only the parameters already settled). With the
softmax above, 10,000 MCMC draws of a 10-parameter proxy took 17.4 s against zuko's
58.5 s (``benchmarks/proxy_sample_cost.py``; the docs' *Results*).

:class:`NSF` is zuko's :class:`zuko.flows.NSF` in every other respect: the same modules
and parameters (a saved flow loads into either), the same spline up to float rounding.

Example:
    >>> import torch, zuko
    >>> phi = [torch.randn(4, 3, k) for k in (10, 10, 9)]
    >>> x = 4 * torch.rand(4, 3) - 2
    >>> ours, theirs = MonotonicRQSTransform(*phi), zuko.transforms.MonotonicRQSTransform(*phi)
    >>> bool(torch.allclose(ours(x), theirs(x), atol=1e-5))
    True
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
import zuko
from torch import Tensor
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.nn import MaskedLinear
from zuko.utils import broadcast, unpack

__all__: list[str] = []


#: From this many entries in the last dimension on, torch's CPU softmax is the faster.
TORCH_FROM = 16


def softmax(t: Tensor) -> Tensor:
    r"""The softmax over the last dimension: :math:`e^{t - \max t} / \sum e^{t - \max t}`
    on a CPU for fewer than :data:`TORCH_FROM` entries, torch's otherwise."""
    if t.shape[-1] >= TORCH_FROM or t.device.type != "cpu":
        return torch.softmax(t, dim=-1)
    e = (t - t.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


class MonotonicRQSTransform(zuko.transforms.MonotonicRQSTransform):
    r""":class:`zuko.transforms.MonotonicRQSTransform`, its bins' widths and heights by
    :func:`softmax` (its ``__init__``, zuko 1.6's, with that one change)."""

    def __init__(
        self,
        widths: Tensor,
        heights: Tensor,
        derivatives: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        **kwargs,
    ) -> None:
        torch.distributions.Transform.__init__(self, **kwargs)

        widths = widths / (1 + abs(2 * widths / math.log(slope)))
        heights = heights / (1 + abs(2 * heights / math.log(slope)))
        derivatives = derivatives / (1 + abs(derivatives / math.log(slope)))

        widths = F.pad(softmax(widths), (1, 0), value=0)
        heights = F.pad(softmax(heights), (1, 0), value=0)
        derivatives = F.pad(derivatives, (1, 1), value=0)

        self.horizontal = bound * (2 * torch.cumsum(widths, dim=-1) - 1)
        self.vertical = bound * (2 * torch.cumsum(heights, dim=-1) - 1)
        self.derivatives = torch.exp(derivatives)


class NSF(zuko.flows.NSF):
    r""":class:`zuko.flows.NSF` with :class:`MonotonicRQSTransform` as its spline."""

    def __init__(
        self, features: int, context: int = 0, bins: int = 8, slope: float = 1e-3, **kwargs
    ) -> None:
        zuko.flows.MAF.__init__(
            self,
            features=features,
            context=context,
            univariate=partial(MonotonicRQSTransform, slope=slope),
            shapes=[(bins,), (bins,), (bins - 1,)],
            **kwargs,
        )
        for t in self.transform.transforms:
            _ranked(t)


class _RankedInverse(zuko.transforms.AutoregressiveTransform):
    r""":class:`zuko.transforms.AutoregressiveTransform` at context ``c``, whose inverse
    computes at pass ``k`` only the parameters of rank ``k`` (their rows of the network's
    last layer, and their splines), and with them the log-determinant of its Jacobian:
    a draw with its log density (``rsample_and_log_prob``) then costs no further pass of
    the network."""

    def __init__(self, owner: MaskedAutoregressiveTransform, c: Tensor | None, **kwargs):
        super().__init__(partial(owner.meta, c), owner.passes, **kwargs)
        self.owner, self.c = owner, c

    def _inverse(self, y: Tensor) -> Tensor:
        owner = self.owner
        *body, last = owner.hyper
        total = owner.total
        weight = last.mask * last.weight
        # Each rank's parameters, in one device sync per inverse (not one per pass).
        order = owner.order.to(y.device)
        ranks = torch.argsort(order, stable=True).split(
            torch.bincount(order, minlength=self.passes).tolist()
        )
        x = torch.zeros_like(y)
        ladj = 0
        for idx in ranks:
            rows = (idx[:, None] * total + torch.arange(total, device=y.device)).reshape(-1)
            h = x if self.c is None else torch.cat(broadcast(x, self.c, ignore=1), dim=-1)
            for layer in body:
                h = layer(h)
            phi = F.linear(h, weight[rows], last.bias[rows]).unflatten(-1, (-1, total))
            spline = owner.univariate(*unpack(phi, owner.shapes))
            settled = spline.inv(y[..., idx])
            # These parameters are final (they read settled ranks only): so is their part
            # of the forward log-determinant at x.
            ladj = ladj + spline.log_abs_det_jacobian(settled, y[..., idx]).sum(-1)
            x = x.index_copy(-1, idx, settled)  # (out of place: rsample's gradient)
        self._settled = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        # The inverse's own, where (x, y) is the pair it just computed; else a forward pass.
        settled = getattr(self, "_settled", None)
        if settled is not None and settled[0] is x and settled[1] is y:
            return settled[2]
        return super().log_abs_det_jacobian(x, y)


class _MaskedAutoregressive(MaskedAutoregressiveTransform):
    r""":class:`zuko.flows.MaskedAutoregressiveTransform` with :class:`_RankedInverse`
    (the same module: only its class is swapped in)."""

    def forward(self, c: Tensor | None = None) -> zuko.transforms.Transform:
        return _RankedInverse(self, c)


def _ranked(transform: object) -> None:
    # Swaps the ranked inverse into a zuko MAF transform whose network ends in a plain
    # masked linear layer and whose order is known (else zuko's own inverse stays).
    if (
        type(transform) is MaskedAutoregressiveTransform
        and transform.order is not None
        and isinstance(transform.hyper[-1], MaskedLinear)
    ):
        transform.__class__ = _MaskedAutoregressive
