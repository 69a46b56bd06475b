r"""The symmetric step's two schedules (METHOD.md sections 4 and 4b).

A schedule decides what :class:`~jsbi.inference.trainer.AdaptiveStep` does when: which
epochs may be kept as the best state, what the proxy fits, how strongly the reverse term
moves each model, what the validation pass measures, and what happens when early stopping
ends a phase. A schedule also holds where the run is in it (``phase``, ``symmetric_from``,
``gate_value``, the proxy's best fit, the steps taken; :meth:`Schedule.state_dict` for a
checkpoint); the step holds the models, the optimisers and the dual variable, and calls its
schedule at those points, so a new schedule is one small class here, not a branch in the
step.

- :class:`JointSchedule` (``schedule="joint"``, section 4): ``warmup_epochs`` of warm-up
  (the flow on :math:`F`, the proxy on its own fit), then each batch the flow descends
  :math:`F + \beta R`, the proxy :math:`\beta R + \lambda C`, and the dual steps
  :math:`\lambda \leftarrow [\lambda + \eta_\lambda (C - \bar F - \epsilon - u)]_+`,
  :math:`u = \lambda / \alpha`. A batch whose importance sampling collapsed (mean ESS
  fraction below ``min_ess``) moves the flow on :math:`F` only.
- :class:`NpeFirstSchedule` (``schedule="npe-first"``, section 4b): phase 1 is ``npe``
  for the flow up to its early stop, while the proxy fits its own data and keeps its best
  validation state; phase 2 starts from both best states, and the flow descends
  :math:`F + \beta \cdot \text{gate} \cdot R`, the proxy its fit (plus
  ``proxy_reverse_weight`` :math:`\cdot R`). The gate is the measured evidence that the
  proxy is the better model (:func:`~jsbi.inference.importance.proxy_minus_flow`).

Example:
    >>> from jsbi.inference.config import AdaptiveConfig
    >>> make_schedule(AdaptiveConfig(schedule="npe-first")).name
    'npe-first'
    >>> make_schedule(AdaptiveConfig(schedule="joint")).name
    'joint'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jsbi.inference.config import AdaptiveConfig
from jsbi.inference.importance import proxy_minus_flow
from jsbi.inference.objectives import constraint_violation, proxy_fit
from jsbi.inference.state import copy_state
from jsbi.inference.tau import make_tau_schedule
from jsbi.seeding import seeded

__all__ = [
    "JointSchedule",
    "NpeFirstSchedule",
    "Schedule",
    "Weights",
    "make_schedule",
    "measure_proxy",
    "own_fit",
    "own_fit_name",
]


@dataclass(frozen=True)
class Weights:
    r"""How one symmetric batch weighs its terms
    (:func:`~jsbi.inference.objectives.primal_losses`).

    Attributes:
        flow: The reverse term's weight in the flow's loss.
        proxy: The reverse term's weight in the proxy's loss.
        lam: The proxy's fit's weight.
        collapsed: Whether the batch's importance sampling collapsed.
    """

    flow: float
    proxy: float
    lam: float
    collapsed: bool = False

    def kwargs(self) -> dict[str, float]:
        r"""The weights as :func:`~jsbi.inference.objectives.primal_losses`' keywords."""
        return {"lam": self.lam, "flow_weight": self.flow, "proxy_weight": self.proxy}


def own_fit(step: Any, theta: Tensor, x: Tensor, xr: Tensor) -> Tensor:
    r"""The proxy's own data fit: its ``fit_loss`` where it has one (maximum likelihood
    for the likelihood proxy, contrastive for the ratio proxy), else :math:`C`, with
    :math:`\log Z` from fresh flow samples on ``xr``."""
    fit = getattr(step.proxy, "fit_loss", None)
    if fit is not None:
        return fit(theta, x)
    return proxy_fit(step.proxy(theta, x), step.reverse.fresh_log_normalizer(xr))


def own_fit_name(proxy: Any) -> str:
    r"""The name :func:`own_fit` is logged under."""
    if hasattr(proxy, "log_ratio"):
        return "contrastive"
    return "fit" if hasattr(proxy, "fit_loss") else "C"


@torch.no_grad()
def measure_proxy(
    step: Any, theta: Tensor, x: Tensor, num_samples: int | None = None
) -> dict[str, float]:
    r"""The gate's measurement (:meth:`~jsbi.inference.trainer.AdaptiveStep.measure_proxy`):
    sets the schedule's ``gate_value`` to 1 while the proxy is the better model on
    ``(theta, x)``."""
    num_samples = step.config.gate_samples if num_samples is None else int(num_samples)
    with seeded(0, [theta.device]):
        measured = proxy_minus_flow(step.proxy, step.flow, step.prior, theta, x, num_samples)
    # NaN compares False: an unmeasurable proxy is not trusted.
    plan = step.plan
    plan.gate_value = 1.0 if measured["proxy_minus_flow"] < 0 else 0.0
    return {**measured, "gate": plan.gate_value}


class Schedule:
    r"""Where a run is in its schedule: what the subclasses share.

    Attributes:
        phase: 0 (joint), 1 or 2 (npe-first).
        symmetric_from: The first epoch of the symmetric objective.
        gate_value: The gate, 1 (the reverse term on) or 0.
        proxy_best: The proxy's best own validation fit, ``(value, state_dict)``: in phase
            1, and in phase 2 too with ``proxy_patience``.
        proxy_stale: Epochs since ``proxy_best`` last improved.
        proxy_frozen: Whether the proxy's own early stopping has ended its fit
            (``proxy_patience``).
        validation: The last validation pairs.
        summary: What the run found (e.g. ``phase2_start``), for the history.
        steps: Batches taken without the reverse term (``proxy_every`` counts them).
        reverse_batches: Phase-2 batches with the gate on (``reverse_every`` counts them).
        tau_schedule: SRFE's order over the symmetric epochs (``None`` for the other
            objectives).
    """

    name: str
    needs_log_z: bool

    def __init__(self, config: AdaptiveConfig) -> None:
        self.config = config
        self.gate_value = 1.0
        self.steps = self.reverse_batches = 0
        self.validation: tuple[Tensor, Tensor] | None = None
        srfe = config.objective == "srfe"
        self.tau_schedule = make_tau_schedule(config.tau) if srfe else None
        self.start(None)

    def start(self, step: Any) -> None:
        r"""A run starts: its first phase, nothing found yet."""
        self.phase, self.symmetric_from = self.first_phase()
        self.proxy_best: tuple[float, dict[str, Any]] | None = None
        self.proxy_stale, self.proxy_frozen = 0, False
        self.summary: dict[str, Any] = {}

    def first_phase(self) -> tuple[int, float]:
        raise NotImplementedError

    def symmetric(self, epoch: int) -> bool:
        r"""Whether ``epoch`` runs the symmetric objective (not warm-up or phase 1)."""
        return epoch >= self.symmetric_from

    def tau(self, epoch: int) -> float | None:
        r"""SRFE's order in ``epoch``: the tau schedule at the fraction of ``tau_epochs``
        done since the symmetric objective began (its start before then); ``None`` for
        the other objectives."""
        if self.tau_schedule is None:
            return None
        done = epoch - self.symmetric_from if self.symmetric(epoch) else 0
        return float(self.tau_schedule(min(1.0, max(0, done) / self.config.tau_epochs)))

    def state_dict(self) -> dict[str, Any]:
        r"""The position in the schedule, so a checkpointed run resumes in its phase."""
        return {
            "phase": self.phase,
            "symmetric_from": self.symmetric_from,
            "gate": self.gate_value,
            "proxy_best": self.proxy_best,
            "proxy_stale": self.proxy_stale,
            "proxy_frozen": self.proxy_frozen,
            "summary": self.summary,
            "steps": self.steps,
            "reverse_batches": self.reverse_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase, self.symmetric_from = state["phase"], state["symmetric_from"]
        self.gate_value, self.proxy_best = state["gate"], state["proxy_best"]
        self.steps = int(state.get("steps", 0))
        self.reverse_batches = int(state.get("reverse_batches", 0))
        self.proxy_stale = int(state.get("proxy_stale", 0))
        self.proxy_frozen = bool(state.get("proxy_frozen", False))
        # What the run found so far outlives a restore of an earlier epoch's state.
        self.summary = {**state.get("summary", {}), **self.summary}


class JointSchedule(Schedule):
    r"""Warm-up, then the primal-dual objective on every batch (section 4)."""

    name = "joint"
    needs_log_z = True

    def __init__(self, config: AdaptiveConfig) -> None:
        joint = config.joint()
        self.eps, self.warmup_epochs = float(joint["eps"]), int(joint["warmup_epochs"])
        num_is = config.num_proxy_samples + config.num_prior_samples
        self.min_ess = 1.5 / num_is if config.min_ess is None else float(config.min_ess)
        super().__init__(config)

    def first_phase(self) -> tuple[int, float]:
        return 0, self.warmup_epochs + 1

    def selectable(self, step: Any, epoch: int) -> bool:
        return epoch > self.warmup_epochs

    def validate(self, step: Any, theta: Tensor, x: Tensor) -> dict[str, float]:
        return {}

    def converged(self, step: Any, best_state: dict[str, Any] | None) -> bool | int:
        return False

    def fit_due(self, step: Any) -> bool:
        return True

    def skips_reverse(self, step: Any) -> bool:
        return False

    def fit(self, step: Any, theta: Tensor, x: Tensor, xr: Tensor, log_z: Tensor) -> Tensor:
        # After warm-up the proxy fits C, its constraint.
        return proxy_fit(step.proxy(theta, x), log_z)

    def fit_name(self, step: Any) -> str:
        return "C"

    def weights(self, step: Any, ess: float) -> Weights:
        # A collapsed importance sampler makes R unreliable: F alone moves the flow.
        collapsed = ess < self.min_ess
        beta = self.config.reverse_weight
        return Weights(0.0 if collapsed else beta, beta, step.dual.value, collapsed)

    def finish(self, step: Any, logs: dict[str, float], fit: Tensor, F: Tensor) -> str | None:
        r"""The dual step after the primal one; a fault's reason, or ``None``."""
        violation = float(constraint_violation(fit, F, self.eps, step.dual.slack))
        logs["violation"] = violation
        if not step.dual.step(violation):
            return f"dual variable lambda={step.dual.value:.3g} > {step.dual.max_value}"
        logs["lambda"], logs["u"] = step.dual.value, step.dual.slack
        return None


class NpeFirstSchedule(Schedule):
    r"""``npe`` first, then the gated reverse term from its best state (section 4b)."""

    name = "npe-first"

    def __init__(self, config: AdaptiveConfig) -> None:
        self.needs_log_z = config.proxy_reverse_weight > 0
        super().__init__(config)

    def first_phase(self) -> tuple[int, float]:
        return 1, math.inf

    def selectable(self, step: Any, epoch: int) -> bool:
        # Phase 1 is npe itself: its epochs are candidates like npe's.
        return True

    def validate(self, step: Any, theta: Tensor, x: Tensor) -> dict[str, float]:
        self.validation = (theta, x)
        logs: dict[str, float] = {}
        fit = getattr(step.proxy, "fit_loss", None)
        # The same random numbers every epoch (comparable values), drawn off the
        # training stream.
        own = self.phase == 1 or self.config.proxy_patience is not None
        with seeded(0, [theta.device]), torch.no_grad():
            if fit is not None and own and not self.proxy_frozen:
                # The proxy's own early stopping, on the flow's validation pairs.
                logs["proxy_fit"] = value = float(fit(theta, x))
                self._record_proxy_fit(step, value)
        if step.gate and self.phase == 2:
            # Every gate_every-th phase-2 epoch (the first included); in between the
            # gate keeps its last value.
            if (step.epoch - self.symmetric_from) % self.config.gate_every == 0:
                logs.update(measure_proxy(step, theta, x))
        return logs

    def _record_proxy_fit(self, step: Any, value: float) -> None:
        best, patience = self.proxy_best, self.config.proxy_patience
        if math.isfinite(value) and (best is None or value < best[0]):
            self.proxy_best = (value, copy_state(step.proxy.state_dict()))
            self.proxy_stale = 0
        else:
            self.proxy_stale += 1
        if patience is not None and self.proxy_stale >= patience and self.proxy_best:
            # Its own early stop: back to its best state, and no more fitting.
            step.proxy.load_state_dict(self.proxy_best[1])
            self.proxy_frozen = True
            self.summary["proxy_stopped_epoch"] = step.epoch

    def converged(self, step: Any, best_state: dict[str, Any] | None) -> bool | int:
        if self.phase != 1:
            return False
        # Phase 2 starts from phase 1's best flow (and its optimiser) and the proxy's
        # own best fit.
        if best_state is not None:
            step.flow.load_state_dict(best_state["flow"])
            step.optim.load_state_dict(best_state, proxy=False)
        if self.proxy_best is not None:
            step.proxy.load_state_dict(self.proxy_best[1])
        if getattr(step.proxy, "undecided", False) and self.validation is not None:
            # The likelihood proxy's candidates: the best own validation fit is kept.
            step.proxy.eval()
            self.summary["proxy_candidates"] = step.proxy.select(*self.validation)
        if step.gate and self.validation is not None:
            # A proxy that is not the better model at the switch would be gated off
            # throughout: phase 2 is skipped, and the result is npe's.
            step.flow.eval()
            step.proxy.eval()
            measured = measure_proxy(step, *self.validation)
            self.summary["phase2_start"] = measured
            if not self.gate_value:
                self.summary["phase2_skipped"] = True
                return False
        self.phase = 2
        self.symmetric_from = step.epoch + 1
        step.faults.start()
        return True if self.config.phase2_patience is None else self.config.phase2_patience

    def fit_due(self, step: Any) -> bool:
        return not self.proxy_frozen and (self.steps - 1) % self.config.proxy_every == 0

    def skips_reverse(self, step: Any) -> bool:
        # Called once per phase-2 batch. Gated off, the reverse term moves neither model:
        # an npe step, without drawing the reverse term's samples. With the gate on, so
        # are the batches between reverse_every's.
        if self.phase != 2:
            return False
        if not self.gate_value and not self.config.proxy_reverse_weight:
            return True
        self.reverse_batches += 1
        return (self.reverse_batches - 1) % self.config.reverse_every != 0

    def fit(
        self, step: Any, theta: Tensor, x: Tensor, xr: Tensor, log_z: Tensor | None
    ) -> Tensor | None:
        # The proxy keeps its own fit (exact likelihood, contrastive, ...), until its own
        # early stopping ends it (None: the proxy does not move).
        return None if self.proxy_frozen else own_fit(step, theta, x, xr)

    def fit_name(self, step: Any) -> str:
        return own_fit_name(step.proxy)

    def weights(self, step: Any, ess: float) -> Weights:
        # reverse_every: the reverse term on one batch in n, n times as heavy.
        c, n = self.config, self.config.reverse_every
        return Weights(n * c.reverse_weight * self.gate_value, n * c.proxy_reverse_weight, 1.0)

    def finish(self, step: Any, logs: dict[str, float], fit: Tensor, F: Tensor) -> str | None:
        logs["phase"] = 2.0
        logs["gate"] = self.gate_value
        return None


def make_schedule(config: AdaptiveConfig) -> Schedule:
    r"""The schedule ``config.schedule`` names."""
    return (JointSchedule if config.schedule == "joint" else NpeFirstSchedule)(config)
