r"""The symmetric step's primal update: one Adam optimiser per model, each on its own loss.

:class:`PrimalOptimizers` holds the flow's and the proxy's optimisers for
:class:`~jsbi.inference.trainer.AdaptiveStep`. ``descend(loss_flow, loss_proxy)`` takes
each model's gradient of its own loss in its own parameters, both before either model
moves, then clips and steps. A shared embedding belongs to the flow: the proxy's step
never moves it. ``state_dict`` / ``load_state_dict`` restore the optimisers' moments but
keep the current learning rates, which a fault recovery may have shrunk.

Example:
    >>> flow, proxy = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> opt = PrimalOptimizers(flow, proxy, learning_rate=0.1)
    >>> opt.start()
    >>> before = proxy.weight.clone()
    >>> opt.descend(flow(torch.ones(2)).sum(), None)  # the flow's step only
    >>> torch.equal(proxy.weight, before)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["PrimalOptimizers"]


class PrimalOptimizers:
    r"""The flow's and the proxy's Adam optimisers.

    Arguments:
        flow: The flow (its optimiser's parameters, a shared embedding included).
        proxy: The proxy (its parameters that are not the flow's).
        learning_rate: The flow's learning rate.
        proxy_learning_rate: The proxy's (``None``: the flow's).
        clip_max_norm: Gradient norm clip for both models (``None``: off).

    Raises:
        ValueError: If ``learning_rate`` is not finite and > 0.
    """

    def __init__(
        self,
        flow: nn.Module,
        proxy: nn.Module,
        learning_rate: float,
        proxy_learning_rate: float | None = None,
        clip_max_norm: float | None = 5.0,
    ) -> None:
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0 and finite, got {learning_rate}")
        self.flow, self.proxy = flow, proxy
        self.learning_rate = float(learning_rate)
        self.proxy_learning_rate = float(proxy_learning_rate or learning_rate)
        self.clip_max_norm = clip_max_norm
        self.flow_optimizer: torch.optim.Optimizer | None = None
        self.proxy_optimizer: torch.optim.Optimizer | None = None

    def proxy_parameters(self) -> list[nn.Parameter]:
        r"""The proxy's parameters that are not the flow's."""
        shared = {id(p) for p in self.flow.parameters()}
        return [p for p in self.proxy.parameters() if id(p) not in shared]

    def settings(self) -> dict[str, Any]:
        r"""The learning rates and the clip as set (not as a fault recovery shrank them),
        for a checkpoint's fingerprint."""
        return {
            "learning_rate": self.learning_rate,
            "proxy_learning_rate": self.proxy_learning_rate,
            "clip_max_norm": self.clip_max_norm,
        }

    def start(self) -> None:
        r"""Fresh optimisers (at the start of training)."""
        self.flow_optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.learning_rate)
        self.proxy_optimizer = torch.optim.Adam(
            self.proxy_parameters(), lr=self.proxy_learning_rate
        )

    def descend(self, loss_flow: Tensor, loss_proxy: Tensor | None) -> None:
        r"""One step of each model on its own loss (``loss_proxy=None``: the flow's only)."""
        pairs = [(self.flow_optimizer, list(self.flow.parameters()), loss_flow)]
        if loss_proxy is not None:
            pairs.append((self.proxy_optimizer, self.proxy_parameters(), loss_proxy))
        grads = [
            torch.autograd.grad(loss, params, retain_graph=i + 1 < len(pairs), allow_unused=True)
            for i, (_, params, loss) in enumerate(pairs)
        ]
        for (optimizer, params, _), g in zip(pairs, grads, strict=True):
            for p, g_p in zip(params, g, strict=True):
                p.grad = g_p
            if self.clip_max_norm is not None:
                nn.utils.clip_grad_norm_(params, self.clip_max_norm)
            optimizer.step()

    def halve(self) -> None:
        r"""Halves both learning rates (a fault recovery's smaller step)."""
        for opt in (self.flow_optimizer, self.proxy_optimizer):
            for g in opt.param_groups:
                g["lr"] *= 0.5

    def state_dict(self) -> dict[str, Any]:
        return {
            name: opt.state_dict()
            for name, opt in (
                ("flow_optimizer", self.flow_optimizer),
                ("proxy_optimizer", self.proxy_optimizer),
            )
            if opt is not None
        }

    def load_state_dict(self, state: dict[str, Any], *, proxy: bool = True) -> None:
        r"""Loads the optimisers in ``state`` (``proxy=False``: the flow's only), keeping the
        current learning rates."""
        _load(self.flow_optimizer, state.get("flow_optimizer"))
        if proxy:
            _load(self.proxy_optimizer, state.get("proxy_optimizer"))


def _load(opt: torch.optim.Optimizer | None, state: dict | None) -> None:
    if opt is None or state is None:
        return
    lrs = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, lr in zip(opt.param_groups, lrs, strict=True):  # shrunk steps survive
        g["lr"] = lr
