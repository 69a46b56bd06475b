r"""The constrained problem's bookkeeping: the dual variable and fault recovery.

:class:`DualVariable` holds the multiplier :math:`\lambda` of the joint schedule's proxy
constraint and its resilient slack :math:`u` (METHOD.md section 4); :class:`FaultRecovery`
restores a training step's last good state after a fault (section 6). Both serve
:class:`~jsbi.inference.trainer.AdaptiveStep`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from jsbi.inference.objectives import dual_update, resilient_slack
from jsbi.inference.state import copy_state

__all__ = ["DualVariable", "FaultRecovery"]


class DualVariable:
    r"""The multiplier :math:`\lambda` of the proxy's constraint and its resilient slack.

    ``step(violation)`` makes the projected ascent :math:`\lambda \leftarrow [\lambda +
    \eta (C - \bar F - \epsilon - u)]_+` (:func:`~jsbi.inference.objectives.dual_update`)
    and :math:`u = \lambda / \alpha`; a non-adaptive dual (the fixed-weight ablation) keeps
    its initial value and ``u = 0``.

    Arguments:
        init: :math:`\lambda_0 \ge 0`.
        alpha: The slack's cost :math:`\alpha > 0`.
        lr: The ascent step :math:`\eta > 0`.
        adaptive: Whether :math:`\lambda` moves at all.
        max_value: A value above this is a blow-up (``step`` returns ``False``).

    Example:
        >>> dual = DualVariable(1.0, alpha=2.0, lr=0.5)
        >>> dual.step(1.0), dual.value, dual.slack
        (True, 1.5, 0.75)
    """

    def __init__(
        self,
        init: float = 1.0,
        alpha: float = 1.0,
        lr: float = 0.05,
        adaptive: bool = True,
        max_value: float = 1e4,
    ) -> None:
        self.init = float(init)
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.adaptive = bool(adaptive)
        self.max_value = float(max_value)
        self.value = self.init

    def reset(self) -> None:
        self.value = self.init

    @property
    def slack(self) -> float:
        return resilient_slack(self.value, self.alpha) if self.adaptive else 0.0

    def step(self, violation: float) -> bool:
        r"""One dual ascent step; ``False`` if :math:`\lambda` blew up (above ``max_value``)."""
        if self.adaptive:
            self.value = float(dual_update(self.value, violation, self.lr))
        return self.value <= self.max_value


class FaultRecovery:
    r"""Restores a step's last good state after a fault (METHOD.md section 6).

    ``epoch_finished(logs)`` records the state after every finite epoch; ``restore(why)``
    reloads it, halves both learning rates and the dual step, warns, and returns the last
    finite logs marked ``faults = 1``. After ``max_restores`` restores it raises
    ``FloatingPointError``, which ends training (the loop then returns its best state).
    """

    def __init__(self, step: Any, max_restores: int = 5) -> None:
        self.step = step
        self.max_restores = int(max_restores)
        self.restores = 0
        self.last_logs: dict[str, float] = {}
        self._good_state: dict[str, Any] | None = None

    def start(self) -> None:
        self._good_state = copy_state(self.step.state_dict())

    def epoch_finished(self, logs: dict[str, float]) -> None:
        # The training side decides (validation diagnostics such as the gate's proxy NLL
        # may be infinite without anything to restore).
        trained = [v for k, v in logs.items() if k.startswith("train_") or k == "validation_loss"]
        if all(math.isfinite(v) for v in trained):
            self._good_state = copy_state(self.step.state_dict())

    def restore(self, why: str) -> dict[str, float]:
        step = self.step
        self.restores += 1
        # Restored before stopping too: the loop falls back to these weights when no
        # selectable epoch was kept yet.
        step.load_state_dict(self._good_state)
        if self.restores > self.max_restores:
            raise FloatingPointError(
                f"{why}: {self.max_restores} restores already; stopping ({step.objective})"
            )
        step.optim.halve()
        step.dual.lr *= 0.5
        warnings.warn(
            f"{why} at epoch {step.epoch}: restored the state of the last finished epoch and "
            f"halved the step (flow lr {step.optim.flow_optimizer.param_groups[0]['lr']:.2g}, "
            f"dual lr {step.dual.lr:.2g})",
            stacklevel=3,
        )
        # No NaN "loss" when no symmetric batch has finished yet: the loop stops on a
        # non-finite epoch loss, and this fault has been handled.
        logs = dict(self.last_logs)
        logs["faults"] = 1.0
        return logs
