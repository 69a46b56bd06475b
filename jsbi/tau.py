r"""Schedules of SRFE's :math:`\tau` over training (the SRFE paper, experiment 3).

:func:`make_tau_schedule` builds one by name; :class:`TauSchedule` is the interface
(``schedule(t)`` for the training progress ``t`` in ``[0, 1]``).

References:
    | Surprisal-Rényi Free Energy (Matsumoto, Castillo, Prada & Mali, 2026)
    | https://arxiv.org/abs/2603.03405
"""

from __future__ import annotations

__all__ = ["ConstantTau", "LinearTau", "StepTau", "TauSchedule", "make_tau_schedule"]

from collections.abc import Sequence

from torch import Tensor


def check_tau(tau: float | Tensor) -> float:
    r"""``tau`` as a float, or a :class:`ValueError` unless it lies in ``(0, 1)``."""
    value = float(tau)
    if not 0.0 < value < 1.0:
        raise ValueError(f"tau must lie in the open interval (0, 1), got {value}")
    return value


class TauSchedule:
    r"""A schedule :math:`\tau(t)` of the training progress :math:`t \in [0, 1]`.

    Call it with the progress ``t`` (e.g. ``epoch / max_epochs``) or use
    :meth:`at` with a step and a total. Every value lies in :math:`(0, 1)`.
    """

    def __call__(self, t: float) -> float:
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"progress t must lie in [0, 1], got {t}")
        return self._value(t)

    def at(self, step: int, total: int) -> float:
        r"""The value at ``step`` out of ``total`` (progress ``min(step / total, 1)``)."""
        if total <= 0:
            raise ValueError(f"total must be positive, got {total}")
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        return self(min(step / total, 1.0))

    def _value(self, t: float) -> float:
        raise NotImplementedError


class ConstantTau(TauSchedule):
    r"""A constant :math:`\tau`.

    Arguments:
        tau: The value, in :math:`(0, 1)`.

    Example:
        >>> ConstantTau(0.5)(0.7)
        0.5
    """

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = check_tau(tau)

    def _value(self, t: float) -> float:
        return self.tau

    def __repr__(self) -> str:
        return f"ConstantTau({self.tau})"


class LinearTau(TauSchedule):
    r"""A linear schedule :math:`\tau(t) = \tau_0 + t (\tau_1 - \tau_0)`.

    From near 1 to small (``start=0.9, end=0.1``) it anneals: cover the support
    first, then sharpen. From small to large it is the reverse anneal.

    Arguments:
        start: :math:`\tau_0 = \tau(0) \in (0, 1)`.
        end: :math:`\tau_1 = \tau(1) \in (0, 1)`.

    Example:
        >>> LinearTau(0.9, 0.1)(0.5)
        0.5
    """

    def __init__(self, start: float = 0.9, end: float = 0.1) -> None:
        self.start = check_tau(start)
        self.end = check_tau(end)

    def _value(self, t: float) -> float:
        return self.start + t * (self.end - self.start)

    def __repr__(self) -> str:
        return f"LinearTau(start={self.start}, end={self.end})"


class StepTau(TauSchedule):
    r"""A piecewise-constant schedule.

    :math:`\tau(t)` is the value of the last step whose fraction is :math:`\le t`
    (the first step's value before it).

    Arguments:
        steps: ``(fraction, tau)`` pairs, fractions in :math:`[0, 1]` and
            non-decreasing, values in :math:`(0, 1)`.

    Example:
        >>> s = StepTau([(0.0, 0.9), (0.5, 0.1)])
        >>> s(0.25), s(0.5)
        (0.9, 0.1)
    """

    def __init__(self, steps: Sequence[tuple[float, float]]) -> None:
        steps = [(float(f), float(v)) for f, v in steps]
        if not steps:
            raise ValueError("steps must hold at least one (fraction, tau) pair")
        for f, v in steps:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"step fractions must lie in [0, 1], got {f}")
            check_tau(v)
        fractions = [f for f, _ in steps]
        if fractions != sorted(fractions):
            raise ValueError(f"step fractions must be non-decreasing, got {fractions}")
        self.steps = steps

    def _value(self, t: float) -> float:
        value = self.steps[0][1]
        for f, v in self.steps:
            if f <= t:
                value = v
        return value

    def __repr__(self) -> str:
        return f"StepTau({self.steps})"


def make_tau_schedule(
    spec: str | float | TauSchedule,
    *,
    tau: float = 0.5,
    tau_start: float | None = None,
    tau_end: float | None = None,
    steps: Sequence[tuple[float, float]] | None = None,
) -> TauSchedule:
    r"""Builds a :class:`TauSchedule` from a name, a number or a schedule.

    ======================  ==========================================================
    ``spec``                schedule
    ======================  ==========================================================
    a float in (0, 1)       :class:`ConstantTau` at that value
    ``"constant"``          :class:`ConstantTau` at ``tau``
    ``"anneal"``            :class:`LinearTau` from ``tau_start`` (0.9) to ``tau_end`` (0.1)
    ``"reverse"``           :class:`LinearTau` from ``tau_start`` (0.1) to ``tau_end`` (0.9)
    ``"step"``              :class:`StepTau` on ``steps`` (default 0.9, 0.5, 0.1 in thirds)
    a :class:`TauSchedule`  itself
    ======================  ==========================================================

    Arguments:
        spec: The schedule's name, a constant, or a schedule.
        tau: The constant for ``"constant"``.
        tau_start: :math:`\tau(0)` of the linear schedules.
        tau_end: :math:`\tau(1)` of the linear schedules.
        steps: The ``(fraction, tau)`` pairs of ``"step"``.

    Example:
        >>> make_tau_schedule("anneal", tau_end=0.2)
        LinearTau(start=0.9, end=0.2)
    """
    if isinstance(spec, TauSchedule):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return ConstantTau(spec)
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a name, a float or a TauSchedule, got {spec!r}")
    name = spec.lower()
    if name == "constant":
        return ConstantTau(tau)
    if name == "anneal":
        return LinearTau(
            0.9 if tau_start is None else tau_start, 0.1 if tau_end is None else tau_end
        )
    if name == "reverse":
        return LinearTau(
            0.1 if tau_start is None else tau_start, 0.9 if tau_end is None else tau_end
        )
    if name == "step":
        return StepTau(steps if steps is not None else [(0.0, 0.9), (1 / 3, 0.5), (2 / 3, 0.1)])
    try:
        return ConstantTau(float(name))
    except ValueError:
        pass
    raise ValueError(
        f"unknown tau schedule {spec!r}: expected 'constant', 'anneal', 'reverse', 'step' "
        "or a number in (0, 1)"
    )
