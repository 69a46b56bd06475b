r"""The optimisers a training step is handed: one Adam per named group, each on its own loss.

The loop builds :class:`Optimizers` from the step's
:meth:`~jsbi.methods.TrainingStep.parameter_groups` (the flow's, and for a symmetric method
the proxy's parameters that are not the flow's). ``descend({"flow": loss_flow, "proxy":
loss_proxy})`` takes each group's gradient of its own loss in its own parameters, all
before any model moves, then clips and steps. ``state_dict`` / ``load_state_dict`` restore
the moments but keep the current learning rates, which a fault recovery may have shrunk.

Example:
    >>> flow, proxy = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> opt = Optimizers({"flow": (list(flow.parameters()), 0.1),
    ...                   "proxy": (list(proxy.parameters()), 0.1)})
    >>> before = proxy.weight.clone()
    >>> opt.descend({"flow": flow(torch.ones(2)).sum(), "proxy": None})  # the flow's only
    >>> torch.equal(proxy.weight, before)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__: list[str] = []


class Optimizers:
    r"""One Adam optimiser per named parameter group.

    Arguments:
        groups: ``{name: (parameters, learning_rate)}``, or ``(parameters,
            learning_rate, clip)`` with ``clip(max_norm)`` the group's own clipping (an
            ensemble clips each member as its own fit would).
        clip_max_norm: Gradient norm clip of each group (``None``: off).
    """

    def __init__(
        self,
        groups: Mapping[str, tuple[Any, ...]],
        clip_max_norm: float | None = 5.0,
    ) -> None:
        for name, (_, lr, *_clip) in groups.items():
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"the {name} learning rate must be finite and > 0, got {lr}")
        self.params = {name: list(group[0]) for name, group in groups.items()}
        self.clips = {
            name: (group[2] if len(group) > 2 else None) for name, group in groups.items()
        }
        self.optimizers = {
            name: torch.optim.Adam(self.params[name], lr=float(group[1]))
            for name, group in groups.items()
        }
        self.clip_max_norm = clip_max_norm

    def descend(self, losses: Mapping[str, Tensor | None]) -> None:
        r"""One step of each group on its own loss (a ``None`` loss: that group rests)."""
        pairs = [(name, loss) for name, loss in losses.items() if loss is not None]
        grads = [
            torch.autograd.grad(
                loss, self.params[name], retain_graph=i + 1 < len(pairs), allow_unused=True
            )
            for i, (name, loss) in enumerate(pairs)
        ]
        for (name, _), g in zip(pairs, grads, strict=True):
            params = self.params[name]
            for p, g_p in zip(params, g, strict=True):
                p.grad = g_p
            if self.clip_max_norm is not None and self.clips[name] is not None:
                self.clips[name](self.clip_max_norm)
            elif self.clip_max_norm is not None:
                nn.utils.clip_grad_norm_(params, self.clip_max_norm)
            self.optimizers[name].step()

    def learning_rate(self, group: str) -> float:
        r"""The group's current learning rate."""
        return float(self.optimizers[group].param_groups[0]["lr"])

    def halve(self) -> None:
        r"""Halves every learning rate (a fault recovery's smaller step)."""
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] *= 0.5

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any], groups: Iterable[str] | None = None):
        r"""Loads the moments of ``groups`` (default: all in ``state``), keeping the current
        learning rates."""
        for name in state if groups is None else groups:
            if name in state and name in self.optimizers:
                opt = self.optimizers[name]
                lrs = [g["lr"] for g in opt.param_groups]
                opt.load_state_dict(state[name])
                for g, lr in zip(opt.param_groups, lrs, strict=True):  # shrunk steps survive
                    g["lr"] = lr
