r"""Neural posterior estimation: the flow on the forward KL alone (sbi's NPE loss).

Example:
    >>> import torch
    >>> from jsbi.flows import build_conditional_flow
    >>> from jsbi.training import train
    >>> theta = torch.randn(256, 2); x = theta + 0.1 * torch.randn(256, 2)
    >>> flow = build_conditional_flow(theta, x, None, num_transforms=1)
    >>> history = train(NPEStep(flow), theta, x, max_epochs=2, show_progress_bar=False)
    >>> len(history["validation_loss"])
    2

References:
    | Automatic Posterior Transformation for Likelihood-Free Inference (Greenberg et al.,
      2019), arXiv:1905.07488
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from jsbi.methods.base import TrainingStep
from jsbi.methods.config import NPEConfig
from jsbi.objectives import forward_kl

__all__ = ["NPEStep"]


class NPEStep(TrainingStep):
    r"""Minimises the forward KL ``F = mean(-log q(theta | x))``.

    Arguments:
        flow: The conditional flow.
        config: The method's config.
    """

    def __init__(self, flow: nn.Module, config: NPEConfig | None = None) -> None:
        self.flow = flow
        self.config = NPEConfig() if config is None else config

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        loss = forward_kl(self.flow.log_prob(theta, x))
        self.optim.descend({"flow": loss})
        return {"loss": loss.item()}
