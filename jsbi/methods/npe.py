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

import torch
import torch.nn as nn
from torch import Tensor

from jsbi.flows.ensemble import FlowEnsemble
from jsbi.methods.base import TrainingStep
from jsbi.methods.config import NPEConfig
from jsbi.objectives import coverage_penalty, forward_kl

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

    def parameter_groups(self, learning_rate: float) -> dict[str, tuple]:
        if isinstance(self.flow, FlowEnsemble):
            # Each member clipped on its own, as its own fit would be.
            return {"flow": (list(self.flow.parameters()), learning_rate, self.flow.clip_)}
        return super().parameter_groups(learning_rate)

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        if isinstance(self.flow, FlowEnsemble):
            # Each member on its own forward KL, all in one batched pass: the same
            # gradients as K separate fits on these batches.
            per_member = -self.flow.member_log_prob(theta, x).mean(-1)
            self.optim.descend({"flow": per_member.sum()})
            return {"loss": per_member.mean().item()}
        log_q = self.flow.log_prob(theta, x)
        loss = forward_kl(log_q)
        if not self.config.calibration_weight:
            self.optim.descend({"flow": loss})
            return {"loss": loss.item()}
        penalty = self._penalty(log_q, x)
        self.optim.descend({"flow": loss + self.config.calibration_weight * penalty})
        return {"loss": loss.item(), "coverage_penalty": penalty.item()}

    def _penalty(self, log_q: Tensor, x: Tensor) -> Tensor:
        # The coverage penalty on the batch's first pairs, from fresh flow samples.
        c = self.config
        b = min(len(x), c.calibration_pairs)
        with torch.no_grad():
            samples = self.flow.sample((c.calibration_samples,), x[:b])
        return coverage_penalty(log_q[:b], self.flow.log_prob(samples, x[:b]))
