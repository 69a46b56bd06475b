r"""What turns ``(theta, x)`` pairs into a posterior: flows, training, the posterior."""

from __future__ import annotations

from jsbi.inference.config import AdaptiveConfig, FlowConfig, TrainConfig
from jsbi.inference.density import Density, DensityEstimator
from jsbi.inference.estimator import OBJECTIVES, PosteriorEstimator
from jsbi.inference.flows import (
    FLOWS,
    ConditionalFlow,
    MLPEmbedding,
    SetEmbedding,
    build_conditional_flow,
    build_flow,
)
from jsbi.inference.posterior import Posterior, PosteriorLoadError, load_posterior
from jsbi.inference.proxy_posterior import ProxyPosterior
from jsbi.inference.sequential import TruncatedProposal
from jsbi.inference.support import SUPPORT_MODES, Support
from jsbi.inference.trainer import NPEStep, TrainingStep, train

__all__ = [
    "FLOWS",
    "OBJECTIVES",
    "SUPPORT_MODES",
    "ConditionalFlow",
    "Density",
    "DensityEstimator",
    "MLPEmbedding",
    "NPEStep",
    "Posterior",
    "PosteriorEstimator",
    "PosteriorLoadError",
    "ProxyPosterior",
    "SetEmbedding",
    "Support",
    "FlowConfig",
    "TrainConfig",
    "AdaptiveConfig",
    "TrainingStep",
    "TruncatedProposal",
    "build_conditional_flow",
    "build_flow",
    "load_posterior",
    "train",
]
