r"""What the training loop drives: a :class:`TrainingStep` per method.

The loop (:func:`jsbi.training.train`) owns what every method shares: the data, the epochs,
early stopping, checkpoints, fault recovery and the optimisers it builds from the step's
:meth:`TrainingStep.parameter_groups`. The step owns the models and acts on them: one update
per batch with the optimisers it is handed (:meth:`TrainingStep.start`). The loop calls::

    step.to(device); step.start(optimizers, info)
    for epoch in 1, 2, ...:
        step.on_epoch_start(epoch)
        for each batch: logs = step.step(theta, x)     # raises StepFault on a fault
        logs |= step.validate(theta_val, x_val); step.on_epoch_end(epoch, logs)
        if early stopping ends a phase: step.on_converged(best_state)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["StepFault", "TrainingStep"]


class StepFault(Exception):
    r"""A step's non-finite loss or blown-up dual variable (docs/method.md): the loop
    restores the last good state with a smaller step, or stops with the best state."""


class Optimizers(Protocol):
    r"""What a step is handed to update its models (built by the loop:
    :class:`jsbi.training.optimizers.Optimizers`)."""

    def descend(self, losses: dict[str, Tensor | None]) -> None: ...

    def halve(self) -> None: ...

    def learning_rate(self, group: str) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], groups: Iterable[str] | None = None): ...


class TrainingStep:
    r"""One optimisation step per batch: the method-specific part of training.

    Subclasses set ``self.flow`` (the :class:`~jsbi.flows.ConditionalFlow`, whose
    validation NLL drives early stopping), implement :meth:`step`, and override the hooks
    they need. :meth:`modules` lists every module the step trains (moved to the device,
    switched between train and eval, saved in :meth:`state_dict`).

    Attributes:
        config: The method's config (its fields are the checkpoint's fingerprint).
        max_restores: Faults the loop recovers from before it stops training.
    """

    flow: nn.Module
    config: Any = None
    optim: Optimizers | None = None
    max_restores: int = 0

    def modules(self) -> dict[str, nn.Module]:
        r"""The trained modules by name (default: ``{"flow": self.flow}``)."""
        return {"flow": self.flow}

    def parameter_groups(self, learning_rate: float) -> dict[str, tuple[list, float]]:
        r"""Each optimiser's parameters and learning rate, by name (default: the flow's)."""
        return {"flow": (list(self.flow.parameters()), learning_rate)}

    def to(self, device: torch.device) -> TrainingStep:
        for m in self.modules().values():
            m.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def eval(self) -> None:
        self.train(False)

    def start(self, optimizers: Optimizers, info: dict[str, Any] | None = None) -> None:
        r"""A run starts, with the optimisers built from :meth:`parameter_groups` (``info``:
        the numbers of training and validation pairs, the device, the seed)."""
        self.optim = optimizers

    def on_epoch_start(self, epoch: int) -> None:
        r"""Called before each epoch (1-based)."""

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        r"""Makes one update on a training batch and returns scalars to log; raises
        :class:`StepFault` instead of making a non-finite one."""
        raise NotImplementedError

    def validate(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        r"""Extra validation scalars (no grad); the flow's NLL is the loop's."""
        return {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        r"""Called after validation with the epoch's averaged logs."""

    def selectable(self, epoch: int) -> bool:
        r"""Whether ``epoch`` may be kept as the best state (``False`` during warm-up)."""
        return True

    def on_converged(self, best_state: dict[str, Any] | None) -> bool | int:
        r"""Called when early stopping ends a phase, with the best state so far.

        Return ``True`` to go on with a new phase (the patience restarts; the best state
        is still kept over all phases), an integer to go on with that patience, ``False``
        to stop (default).
        """
        return False

    def shrink(self) -> str:
        r"""Makes the steps smaller after a fault; says what they are now."""
        self.optim.halve()
        return f"flow lr {self.optim.learning_rate('flow'):.2g}"

    def summary(self) -> dict[str, Any]:
        r"""What the run found, added to the history at the end (default: nothing)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        r"""The settings that make this step's run this run, for the checkpoint: its
        config's fields (an object in one, such as a tau schedule, by its class and
        settings, never by its address)."""
        if self.config is None:
            return {}
        config = self.config
        return {f.name: _setting(getattr(config, f.name)) for f in dataclasses.fields(config)}

    def state_dict(self) -> dict[str, Any]:
        r"""Everything restored with the best epoch: the modules' weights and the
        optimisers' moments."""
        state: dict[str, Any] = {name: m.state_dict() for name, m in self.modules().items()}
        if self.optim is not None:
            state["optimizers"] = self.optim.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        if self.optim is not None and "optimizers" in state:
            self.optim.load_state_dict(state["optimizers"])


_SCALAR = (int, float, str, bool, type(None))


def _setting(value: Any) -> Any:
    # A value as the fingerprint sees it: scalars (and tuples of them) as they are, a
    # mapping by its items, an object as its class and its scalar attributes.
    if isinstance(value, _SCALAR) or (
        isinstance(value, tuple) and all(isinstance(v, _SCALAR) for v in value)
    ):
        return value
    if isinstance(value, dict):
        return sorted((str(k), repr(v)) for k, v in value.items())
    attributes = sorted(getattr(value, "__dict__", {}).items())
    return type(value).__qualname__, {k: v for k, v in attributes if isinstance(v, _SCALAR)}
