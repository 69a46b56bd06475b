r"""Early stopping: the best state over all phases, and the patience that ends a phase."""

from __future__ import annotations

import math
from typing import Any

from jsbi.methods.base import TrainingStep
from jsbi.training.state import copy_state

__all__: list[str] = []


class EarlyStopping:
    r"""The early stopping of :func:`train`: the best state over all phases, and the
    patience that ends a phase.

    ``record`` keeps an epoch's state when it is selectable and its validation NLL is the
    best so far (an epoch that is not selectable, such as warm-up, restarts the patience);
    ``exhausted`` says when ``patience`` epochs passed without a better one; then
    ``next_phase`` asks the step (:meth:`TrainingStep.on_converged`) whether a new phase
    begins, with the patience it returns.

    Arguments:
        patience: Epochs without improvement before a phase ends.
    """

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict[str, Any] | None = None
        self.patience_from = 0
        self.converged = False

    def record(self, step: TrainingStep, epoch: int, loss: float) -> None:
        if not step.selectable(epoch):
            self.patience_from = epoch
        elif math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            self.best_state = copy_state(step.state_dict())

    def exhausted(self, epoch: int) -> bool:
        return epoch - max(self.best_epoch, self.patience_from) >= self.patience

    def next_phase(self, step: TrainingStep, epoch: int) -> bool:
        r"""Whether training goes on in a new phase; otherwise it has converged."""
        nxt = step.on_converged(self.best_state)
        if not nxt:
            self.converged = True
            return False
        self.patience_from = epoch
        if not isinstance(nxt, bool):
            self.patience = int(nxt)
        return True

    def state(self) -> dict[str, Any]:
        r"""What a checkpoint keeps (the keys of the checkpoint format)."""
        return {
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "patience_from": self.patience_from,
            # A phase may have changed the patience (npe-first's phase2_patience).
            "stop_after_epochs": self.patience,
        }

    def load(self, saved: dict[str, Any]) -> None:
        self.best_state, self.best_loss = saved["best_state"], saved["best_loss"]
        self.best_epoch, self.patience_from = saved["best_epoch"], saved["patience_from"]
        self.patience = int(saved.get("stop_after_epochs", self.patience))
