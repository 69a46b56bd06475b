r"""The model :math:`q_\phi(\theta \mid x)`: a conditional zuko flow, its config, embeddings
of ``x`` and the prior's :class:`Support`."""

from __future__ import annotations

from jsbi.flows.conditional import FLOWS, ConditionalFlow, build_conditional_flow, build_flow
from jsbi.flows.config import FlowConfig
from jsbi.flows.embeddings import MLPEmbedding, SetEmbedding
from jsbi.flows.support import Support

__all__ = [
    "FLOWS",
    "ConditionalFlow",
    "FlowConfig",
    "MLPEmbedding",
    "SetEmbedding",
    "Support",
    "build_conditional_flow",
    "build_flow",
]
