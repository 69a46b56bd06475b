r"""The methods: one file each (``npe``, the symmetric step), their configs with named
presets, the plans that decide and the one registry of named methods."""

from __future__ import annotations

from jsbi.methods.base import StepFault, TrainingStep
from jsbi.methods.config import MethodConfig, NPEConfig, SymmetricConfig
from jsbi.methods.npe import NPEStep
from jsbi.methods.registry import (
    BASELINE,
    METHODS,
    build_step,
    method_config,
    method_names,
    method_overrides,
)
from jsbi.methods.symmetric import SymmetricStep

__all__ = [
    "BASELINE",
    "METHODS",
    "MethodConfig",
    "NPEConfig",
    "NPEStep",
    "StepFault",
    "SymmetricConfig",
    "SymmetricStep",
    "TrainingStep",
    "build_step",
    "method_config",
    "method_names",
    "method_overrides",
]
