"""Helpers of the methods' tests: a step started as the loop starts it."""

from __future__ import annotations

from jsbi.training.optimizers import Optimizers


def start(step, learning_rate=5e-4, clip_max_norm=5.0):
    """Starts ``step`` with the optimisers the loop would build, as the loop does."""
    step.start(Optimizers(step.parameter_groups(learning_rate), clip_max_norm))
    return step
