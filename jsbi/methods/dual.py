r"""The constrained problem's dual variable: the multiplier :math:`\lambda` of the joint
schedule's proxy constraint and its resilient slack :math:`u` (docs/method.md)."""

from __future__ import annotations

from jsbi.objectives import dual_update, resilient_slack

__all__: list[str] = []


class DualVariable:
    r"""The multiplier :math:`\lambda` of the proxy's constraint and its resilient slack.

    ``step(violation)`` makes the projected ascent :math:`\lambda \leftarrow [\lambda +
    \eta (C - \bar F - \epsilon - u)]_+` (:func:`~jsbi.objectives.dual_update`)
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
