r"""The loop every method trains in: its :class:`TrainConfig`, early stopping, checkpoints,
fault recovery and the optimisers."""

from __future__ import annotations

from jsbi.training.config import NO_EPOCH_CAP, TrainConfig
from jsbi.training.loop import train

__all__ = ["NO_EPOCH_CAP", "TrainConfig", "train"]
