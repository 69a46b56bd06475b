r"""Fault recovery (docs/method.md): the last good state back, with smaller steps.

A training step raises :class:`~jsbi.methods.StepFault` where it would make a non-finite
update. The loop then asks :class:`FaultRecovery` to restore the state of the last finished
epoch and shrink the steps; after ``max_restores`` restores it says to stop, and the loop
returns its best state (never a NaN posterior).

Example:
    >>> state = {"w": 1.0}
    >>> faults = FaultRecovery(lambda: dict(state), state.update, lambda: "smaller", 1)
    >>> faults.start(); state["w"] = float("nan")
    >>> faults.restore("non-finite loss", epoch=3) is not None, state["w"]
    (True, 1.0)
    >>> faults.restore("non-finite loss", epoch=3) is None      # the second: stop
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from jsbi.training.state import copy_state

__all__: list[str] = []


class FaultRecovery:
    r"""Restores a step's last good state after a fault.

    Arguments:
        state: Returns the step's state (its ``state_dict``).
        load: Loads a state into the step.
        shrink: Makes the step's updates smaller; returns what they are now.
        max_restores: Restores allowed; the next fault stops training.
    """

    def __init__(
        self,
        state: Callable[[], dict[str, Any]],
        load: Callable[[dict[str, Any]], None],
        shrink: Callable[[], str],
        max_restores: int = 5,
    ) -> None:
        self.state, self.load, self.shrink = state, load, shrink
        self.max_restores = int(max_restores)
        self.restores = 0
        self.last_logs: dict[str, float] = {}
        self._good_state: dict[str, Any] | None = None

    def start(self) -> None:
        r"""The state now is a good one (a run or a phase starts)."""
        self._good_state = copy_state(self.state())

    def epoch_finished(self, logs: dict[str, float]) -> None:
        r"""Keeps the state after an epoch whose training side is finite (validation
        diagnostics such as the gate's proxy NLL may be infinite without anything to
        restore)."""
        trained = [v for k, v in logs.items() if k.startswith("train_") or k == "validation_loss"]
        if all(math.isfinite(v) for v in trained):
            self._good_state = copy_state(self.state())

    def restore(self, why: str, epoch: int) -> dict[str, float] | None:
        r"""Restores the last good state; returns the last finite step's logs marked
        ``faults = 1``, or ``None`` once ``max_restores`` are spent (training stops)."""
        self.restores += 1
        # Restored before stopping too: the loop falls back to these weights when no
        # selectable epoch was kept yet.
        self.load(self._good_state)
        if self.restores > self.max_restores:
            return None
        now = self.shrink()
        warnings.warn(
            f"{why} at epoch {epoch}: restored the state of the last finished epoch and "
            f"halved the step ({now})",
            stacklevel=4,
        )
        # No NaN "loss" when no batch has finished yet: the loop stops on a non-finite
        # epoch loss, and this fault has been handled.
        return {**self.last_logs, "faults": 1.0}
