r"""The symmetric method's two plans: pure decisions over a small :class:`RunState`.

A plan decides what :class:`~jsbi.methods.SymmetricStep` does when: which epochs may be kept
as the best state, whether a batch fits the proxy or takes the reverse term, how the terms
are weighed (:class:`Weights`), when the gate is measured and what a phase's end means
(:class:`Switch`). It reads the run's state and returns decisions; it never touches a
module or an optimiser. The step is the only code that does, and the only code that
updates the :class:`RunState`.

- :class:`JointPlan` (``schedule="joint"``, docs/method.md): ``warmup_epochs`` of
  warm-up (the flow on :math:`F`, the proxy on its own fit), then on every batch the flow
  descends :math:`F + \beta R`, the proxy :math:`\beta R + \lambda C`, and the dual steps.
  A batch whose importance sampling collapsed moves the flow on :math:`F` only.
- :class:`NpeFirstPlan` (``schedule="npe-first"``, section 4b): phase 1 is ``npe`` for the
  flow up to its early stop, while the proxy fits its own data and keeps its best
  validation state; phase 2 starts from both best states, and the flow descends
  :math:`F + \beta \cdot \text{gate} \cdot R`. The gate is the measured evidence that the
  proxy is the better model (:func:`~jsbi.proxies.importance.proxy_minus_flow`).

Example:
    >>> from jsbi.methods.config import SymmetricConfig
    >>> plan = make_plan(SymmetricConfig.jeffreys())
    >>> state = plan.init_state()
    >>> plan.name, state.phase, plan.switch(state).restore
    ('npe-first', 1, True)
    >>> make_plan(SymmetricConfig.reverse()).name
    'joint'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jsbi.methods.config import SymmetricConfig
from jsbi.tau import TauSchedule

__all__: list[str] = []


@dataclasses.dataclass
class RunState:
    r"""Where a symmetric run is: what its plan reads, and what its step updates.

    Attributes:
        epoch: The current epoch.
        phase: 0 (joint), 1 or 2 (npe-first).
        symmetric_from: The first epoch of the symmetric objective.
        gate: The gate, 1 (the reverse term on) or 0.
        steps: Batches taken without the reverse term (``proxy_every`` counts them).
        reverse_batches: Phase-2 batches with the reverse term on (``reverse_every``).
        proxy_best: The proxy's best own validation fit and its weights.
        proxy_stale: Epochs since ``proxy_best`` last improved.
        proxy_frozen: Whether the proxy's own early stopping has ended its fit.
        trailing: Phase-1 probes in a row where the proxy clearly trailed the flow
            without gaining on it.
        last_gap: The last probe's proxy-minus-flow NLL.
        summary: What the run found (``phase2_start``, ...), for the history.
    """

    epoch: int = 0
    phase: int = 1
    symmetric_from: float = math.inf
    gate: float = 1.0
    steps: int = 0
    reverse_batches: int = 0
    proxy_best: tuple[float, dict[str, Any]] | None = None
    proxy_stale: int = 0
    proxy_frozen: bool = False
    trailing: int = 0
    last_gap: float = math.inf
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        r"""What a checkpoint keeps (the epoch is the loop's)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "epoch"
        }

    def load(self, saved: dict[str, Any]) -> None:
        r"""Takes a checkpoint's or a restore point's state; what the run found so far
        outlives a restore of an earlier epoch's state."""
        summary = {**saved.get("summary", {}), **self.summary}
        for f in dataclasses.fields(self):
            if f.name in saved and f.name != "epoch":
                setattr(self, f.name, saved[f.name])
        self.summary = summary


@dataclasses.dataclass(frozen=True)
class Weights:
    r"""How one symmetric batch weighs its terms
    (:func:`~jsbi.objectives.primal_losses`' keywords).

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
        return {"lam": self.lam, "flow_weight": self.flow, "proxy_weight": self.proxy}


@dataclasses.dataclass(frozen=True)
class Switch:
    r"""What the step does when early stopping ends a phase.

    Attributes:
        go_on: Whether a new phase may start at all.
        restore: Reload the best flow (and its optimiser) and the proxy's best own fit,
            and let the proxy choose among its candidates.
        measure: Measure the gate first: a shut gate ends training instead.
        patience: The new phase's early-stopping patience (``None``: the loop's).
    """

    go_on: bool
    restore: bool = False
    measure: bool = False
    patience: int | None = None


class Plan:
    r"""What the two plans share: SRFE's order over the symmetric epochs.

    Attributes:
        name: The schedule's name.
        needs_log_z: Whether the reverse estimate needs :math:`\log \hat Z`.
        dual_steps: Whether the dual variable steps after each symmetric batch.
    """

    name: str
    needs_log_z: bool
    dual_steps: bool = False

    def __init__(self, config: SymmetricConfig) -> None:
        self.config = config
        uses_tau = config.term == "renyi"
        self.tau_schedule: TauSchedule | None = config.tau_schedule_object() if uses_tau else None

    def init_state(self) -> RunState:
        raise NotImplementedError

    def symmetric(self, state: RunState) -> bool:
        r"""Whether the current epoch runs the symmetric objective."""
        return state.epoch >= state.symmetric_from

    def tau(self, state: RunState) -> float | None:
        r"""SRFE's order in the current epoch: the schedule at the fraction of
        ``tau_epochs`` done since the symmetric objective began; ``None`` otherwise."""
        if self.tau_schedule is None:
            return None
        done = state.epoch - state.symmetric_from if self.symmetric(state) else 0
        return float(self.tau_schedule(min(1.0, max(0, done) / self.config.tau_epochs)))

    def proxy_fit(self, state: RunState, value: float) -> tuple[bool, bool]:
        r"""Whether the proxy's own validation fit ``value`` is its best so far, and whether
        its own early stopping ends its fit now."""
        improved = math.isfinite(value) and (
            state.proxy_best is None or value < state.proxy_best[0]
        )
        stale = 0 if improved else state.proxy_stale + 1
        patience = self.config.proxy_patience
        best = improved or state.proxy_best is not None
        return improved, patience is not None and stale >= patience and best

    def probe_due(self, state: RunState) -> bool:
        r"""Whether this epoch probes the proxy against the flow (``npe-first`` only)."""
        return False

    def gate_from(self, measured: dict[str, float]) -> float:
        r"""The gate after a measurement: 1 while the proxy is the better model (a NaN,
        an unmeasurable proxy, is not trusted)."""
        return 1.0 if measured["proxy_minus_flow"] < 0 else 0.0


class JointPlan(Plan):
    r"""Warm-up, then the primal-dual objective on every batch (section 4)."""

    name = "joint"
    needs_log_z = True
    dual_steps = True

    def __init__(self, config: SymmetricConfig) -> None:
        super().__init__(config)
        joint = config.joint()
        self.eps, self.warmup_epochs = float(joint["eps"]), int(joint["warmup_epochs"])
        num_is = config.num_proxy_samples + config.num_prior_samples
        self.min_ess = 1.5 / num_is if config.min_ess is None else float(config.min_ess)

    def init_state(self) -> RunState:
        return RunState(phase=0, symmetric_from=self.warmup_epochs + 1)

    def selectable(self, state: RunState, epoch: int) -> bool:
        return epoch > self.warmup_epochs

    def fit_due(self, state: RunState) -> bool:
        return True

    def reverse_due(self, state: RunState) -> bool | None:
        r"""Every symmetric batch takes the reverse term."""
        return True

    def fits_constraint(self, state: RunState) -> bool | None:
        r"""After warm-up the proxy fits :math:`C`, its constraint."""
        return True

    def own_fit_due(self, state: RunState) -> bool:
        return False

    def gate_due(self, state: RunState) -> bool:
        return False

    def weights(self, state: RunState, ess: float, lam: float) -> Weights:
        # A collapsed importance sampler makes R unreliable: F alone moves the flow.
        collapsed = ess < self.min_ess
        beta = self.config.reverse_weight
        return Weights(0.0 if collapsed else beta, beta, lam, collapsed)

    def switch(self, state: RunState) -> Switch:
        return Switch(go_on=False)


class NpeFirstPlan(Plan):
    r"""``npe`` first, then the gated reverse term from its best state (section 4b)."""

    name = "npe-first"

    def __init__(self, config: SymmetricConfig) -> None:
        super().__init__(config)
        self.needs_log_z = config.proxy_reverse_weight > 0

    def init_state(self) -> RunState:
        return RunState(phase=1, symmetric_from=math.inf)

    def selectable(self, state: RunState, epoch: int) -> bool:
        # Phase 1 is npe itself: its epochs are candidates like npe's.
        return True

    def fit_due(self, state: RunState) -> bool:
        r"""Whether this batch without the reverse term fits the proxy (``proxy_every``;
        ``state.steps`` counts this batch)."""
        return not state.proxy_frozen and (state.steps - 1) % self.config.proxy_every == 0

    def reverse_due(self, state: RunState) -> bool | None:
        r"""Whether this phase-2 batch takes the reverse term: ``None`` while the gate is
        shut and the proxy has no share (the batch does not count), else whether it is
        ``reverse_every``'s (``state.reverse_batches`` counts this batch)."""
        if not state.gate and not self.config.proxy_reverse_weight:
            return None
        return (state.reverse_batches - 1) % self.config.reverse_every == 0

    def fits_constraint(self, state: RunState) -> bool | None:
        r"""The proxy keeps its own fit (``False``) until its own early stopping ends it
        (``None``: the proxy does not move)."""
        return None if state.proxy_frozen else False

    def own_fit_due(self, state: RunState) -> bool:
        r"""Whether validation measures the proxy's own fit (its early stopping): in
        phase 1, and in phase 2 with ``proxy_patience``, until it is frozen."""
        own = state.phase == 1 or self.config.proxy_patience is not None
        return own and not state.proxy_frozen

    def probe_due(self, state: RunState) -> bool:
        r"""Whether this phase-1 epoch measures the proxy against the flow, while the proxy
        still fits (:func:`probe_epoch`); never without the gate (``gate=False`` runs phase
        2 whatever the proxy's fit)."""
        every = self.config.probe_every
        return (
            every is not None
            and self.config.gated
            and state.phase == 1
            and not state.proxy_frozen
            and probe_epoch(state.epoch, every)
        )

    def probed(self, state: RunState, gap: float, se: float) -> tuple[int, bool]:
        r"""After a phase-1 probe of gap (proxy minus flow NLL) with standard error ``se``:
        the count of probes in a row where the proxy trailed by more than ``se`` and
        did not gain on the flow by more than ``se`` since the last probe, and whether
        that count abandons the proxy (``abandon_patience``)."""
        trails = not gap - se < 0  # NaN: not the better model
        gaining = math.isfinite(state.last_gap) and gap < state.last_gap - se
        count = state.trailing + 1 if trails and not gaining else 0
        patience = self.config.abandon_patience
        return count, patience is not None and count >= patience

    def gate_due(self, state: RunState) -> bool:
        r"""Whether this phase-2 epoch measures the gate (every ``gate_every``-th, the
        first included); in between the gate keeps its last value."""
        due = (state.epoch - state.symmetric_from) % self.config.gate_every == 0
        return self.config.gated and state.phase == 2 and due

    def weights(self, state: RunState, ess: float, lam: float) -> Weights:
        # reverse_every: the reverse term on one batch in n, n times as heavy.
        c, n = self.config, self.config.reverse_every
        return Weights(n * c.reverse_weight * state.gate, n * c.proxy_reverse_weight, 1.0)

    def switch(self, state: RunState) -> Switch:
        r"""Phase 1's end: phase 2 from both best states, if the gate opens (never after
        the proxy was abandoned)."""
        if state.phase != 1 or "proxy_abandoned_epoch" in state.summary:
            return Switch(go_on=False)
        return Switch(
            go_on=True,
            restore=True,
            measure=self.config.gated,
            patience=self.config.phase2_patience,
        )


#: After the first probes, the next one is this share of the epochs done later (at least
#: ``probe_every``): a long phase 1 pays for a few probes, not one per ``probe_every``.
PROBE_SPACING = 0.5


def probe_epoch(epoch: int, every: int) -> bool:
    r"""Whether phase-1 epoch ``epoch`` (1-based) is a probe's: ``every``, ``2 every``,
    ``3 every``, then each one :data:`PROBE_SPACING` of its epoch after the last
    (``every = 5``: epochs 5, 10, 15, 22, 33, 49, 73, 109, ...).

    Example:
        >>> [e for e in range(1, 120) if probe_epoch(e, 5)]
        [5, 10, 15, 22, 33, 49, 73, 109]
    """
    due = every
    while due < epoch:
        due += max(every, int(due * PROBE_SPACING))
    return due == epoch


#: What a symmetric run's phase 2 did (:func:`phase2_outcome`), in words.
PHASE2_WORDS = {
    "abandoned": "phase 2 skipped: the proxy kept trailing the flow in phase 1 (npe's result)",
    "off": "phase 2 off (phase2=False): the result is phase 1's",
    "skipped": "phase 2 skipped: the proxy was not the better model at the switch (npe's result)",
    "ran": "phase 2 ran",
    "never": "phase 2 never started (phase 1 did not converge): the result is npe's",
}


def phase2_outcome(history: dict[str, Any]) -> str:
    r"""What a symmetric run's phase 2 did, from its history: ``"ran"``, ``"skipped"`` (the
    gate shut at the switch), ``"abandoned"`` (the proxy left in phase 1), ``"off"``
    (``phase2=False``), ``"never"`` (phase 1 never ended), or ``""`` (no phases: npe, the
    joint schedule, sbi's NPE)."""
    if "train_phase" not in history:
        return ""
    skipped = history.get("phase2_skipped")
    if history.get("proxy_abandoned_epoch") is not None:
        return "abandoned"
    if skipped == "phase2=False":
        return "off"
    if skipped:
        return "skipped"
    return "ran" if "phase2_start" in history else "never"


def make_plan(config: SymmetricConfig) -> Plan:
    r"""The plan ``config.schedule`` names."""
    return (JointPlan if config.joint_schedule else NpeFirstPlan)(config)
