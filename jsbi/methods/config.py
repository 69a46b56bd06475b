r"""The methods' configs: :class:`NPEConfig` and :class:`SymmetricConfig` with its presets.

A method is one frozen config object. The symmetric objectives' tuned defaults live in
the presets (:meth:`SymmetricConfig.jeffreys`, :meth:`~SymmetricConfig.srfe`,
:meth:`~SymmetricConfig.reverse`, :meth:`~SymmetricConfig.distill`); the registry
(:mod:`jsbi.methods.registry`) names them.

Example:
    >>> config = SymmetricConfig.jeffreys()
    >>> config.num_proxy_samples, config.gate_every, config.schedule
    (1, 5, 'npe-first')
    >>> config.replace(gate_sample=9)
    Traceback (most recent call last):
    ...
    ValueError: unknown method option 'gate_sample': did you mean 'gate_samples'?
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jsbi.config import Config, option
from jsbi.flows.support import DEFAULT_SUPPORT
from jsbi.proxies.build import PROXIES, ProxyConfig
from jsbi.tau import TauSchedule, make_tau_schedule

__all__ = ["MethodConfig", "NPEConfig", "SymmetricConfig"]

#: The joint schedule's dual-variable and warm-up defaults (docs/method.md);
#: ``schedule="npe-first"`` has neither, and giving one with it is an error.
JOINT_DEFAULTS: dict[str, Any] = {
    "eps": 0.0,
    "alpha": 1.0,
    "dual_lr": 0.05,
    "lambda_init": 1.0,
    "adaptive": True,
    "warmup_epochs": 10,
}

#: Each symmetric objective's reverse-side term (``kl``: reverse KL; ``renyi``: the
#: Surprisal-Renyi free energy; ``distill``: the forward KL from the proxy) and whether
#: the flow keeps the forward term F.
TERMS: dict[str, tuple[str, bool]] = {
    "jeffreys": ("kl", True),
    "srfe": ("renyi", True),
    "reverse": ("kl", False),
    "distill": ("distill", True),
}
SCHEDULES = ("npe-first", "joint")
RETURNS = ("auto", "flow", "proxy", "mixture")


@dataclasses.dataclass(frozen=True)
class NPEConfig(Config):
    r"""Neural posterior estimation: the flow on the forward KL (sbi's NPE loss), with an
    optional calibration penalty.

    Arguments:
        objective: ``"npe"``.
        calibration_weight: :math:`\gamma`: the loss is :math:`F + \gamma \cdot`
            :func:`~jsbi.objectives.coverage_penalty` on ``calibration_pairs`` pairs of each
            batch with ``calibration_samples`` flow samples each (its conservative
            variant: over-confidence only). 0 is plain NPE.
        calibration_samples: :math:`L`.
        calibration_pairs: Pairs of each batch in the penalty.
    """

    what = "method"

    objective: str = option("npe", "the objective", choices=("npe",))
    calibration_weight: float = option(
        0.0,
        "npe: the weight of a differentiable coverage penalty in the loss (Falkiewicz et al. "
        "2023; 0: off)",
        nonnegative=True,
        advanced=True,
    )
    calibration_samples: int = option(
        16, "npe: flow samples per pair of the coverage penalty", minimum=2, advanced=True
    )
    calibration_pairs: int = option(
        32, "npe: pairs of each batch in the coverage penalty", minimum=2, advanced=True
    )

    @property
    def returns(self) -> str:
        r"""What fit returns: the flow."""
        return "flow"

    def support(self, given: str | None, bounded_prior: bool) -> str:
        r"""The support mode: ``given``, else :data:`~jsbi.flows.support.DEFAULT_SUPPORT`."""
        return given or DEFAULT_SUPPORT


@dataclasses.dataclass(frozen=True)
class SymmetricConfig(Config):
    r"""A symmetric method (docs/method.md): the flow :math:`q_\phi` and an
    energy-based proxy :math:`r_\psi`, trained by :class:`~jsbi.methods.SymmetricStep`.

    Build it from a preset (:meth:`jeffreys`, :meth:`srfe`, :meth:`reverse`,
    :meth:`distill`), which holds that objective's tuned defaults; the dataclass's own
    defaults are the generic ones.

    Arguments:
        objective: ``"jeffreys"`` (forward plus reverse KL), ``"srfe"`` (forward KL plus
            the Surprisal-Renyi free energy), ``"reverse"`` (reverse KL only, an ablation)
            or ``"distill"`` (forward KL plus the forward KL from the proxy).
        schedule: ``"npe-first"`` (section 4b: ``npe`` to its early stop, then the gated
            symmetric objective from its best state, the better phase kept) or ``"joint"``
            (section 4: warm-up, then the primal-dual objective).
        proxy: The proxy family (:data:`~jsbi.proxies.PROXIES`).
        proxy_hidden_features: The energy MLP's hidden widths (ratio, residual, mlp).
        proxy_options: Further arguments of the proxy's class (see
            :class:`~jsbi.proxies.ProxyConfig`).
        share_embedding: Whether the proxy reads ``x`` through the flow's embedding net (the
            likelihood proxy then models the summaries ``s(x)``: for high-dimensional ``x``).
        posterior: What fit returns: ``"auto"`` (the proxy where it is clearly the better
            model on the validation pairs, else the equal mixture of the flow and the
            proxy, :class:`~jsbi.posteriors.MixturePosterior`, or the flow where the proxy
            was abandoned or the flow cannot propose for it:
            :func:`~jsbi.posteriors.proxy.auto_choice`), ``"flow"``, ``"proxy"`` or
            ``"mixture"`` (``None``: ``"auto"`` with the likelihood proxy, else ``"flow"``).
        gate: Whether the reverse term is on only while the proxy's validation NLL beats
            the flow's (``None``: on for ``npe-first``).
        gate_samples: Importance samples per validation ``x`` for the gate's proxy NLL.
        gate_every: In phase 2, the gate is measured on every ``gate_every``-th epoch.
        gate_pairs: The gate measures on the first ``gate_pairs`` validation pairs
            (``None``: all).
        phase2: ``npe-first``: whether phase 2 trains after the switch; ``False`` stops
            there with the state of phase 1's best epoch: npe's flow and the proxy as it
            was then (from which ``posterior="auto"`` returns one or their mixture).
        proxy_reverse_weight: ``npe-first``: the weight of :math:`R` in the proxy's loss.
        path_gradient: The path (sticking-the-landing) gradient of the reverse KL.
        phase2_patience: ``npe-first``: phase 2's early-stopping patience (``None``: the
            loop's ``stop_after_epochs``).
        tau: ``srfe``: the Renyi order in (0, 1); with ``tau_schedule="anneal"`` the value
            it anneals to (``None``: 0.5, or the schedule's own end).
        tau_schedule: ``srfe``: ``"constant"``, ``"anneal"`` (0.9 down to ``tau``),
            ``"reverse"``, ``"step"``, or a :class:`~jsbi.tau.TauSchedule`.
        tau_epochs: Epochs of the symmetric phase over which a tau schedule runs.
        eps, alpha, dual_lr, lambda_init, adaptive, warmup_epochs: ``joint`` only: the
            constraint's tolerance, the resilience cost (``math.inf``: a hard constraint),
            the dual step, the dual's initial value, ``False`` for the fixed-weight
            penalty ablation, and the warm-up epochs (``None``: :data:`JOINT_DEFAULTS`).
        reverse_weight: :math:`\beta`, the weight of :math:`R` in the flow's loss.
        num_proxy_samples: :math:`K`, flow samples per observation for the reverse term.
        num_prior_samples: :math:`M`, prior samples per observation added to the
            importance sampler of :math:`\log Z` (and of ``distill``'s proposal).
        reverse_batch_size: Observations of each batch in the reverse term (``None``: all).
        proxy_every: The proxy fits its data on every ``proxy_every``-th batch without
            the reverse term.
        reverse_every: ``npe-first``: the reverse term on every ``reverse_every``-th
            phase-2 batch only, its weights times ``reverse_every``.
        proxy_patience: ``npe-first``: the proxy's own early stopping (``None``: it fits
            to the end, its best state kept at the switch).
        probe_every: ``npe-first``: measure the proxy against the flow (the gate's
            measurement, on ``gate_pairs``) at phase-1 epochs ``probe_every``, 2 and 3
            times that, then ever sparser (:func:`~jsbi.methods.plans.probe_epoch`).
        abandon_patience: ``npe-first``: after this many probes in a row where the proxy
            trails the flow by more than a standard error without gaining on it, the proxy
            stops fitting and phase 2 is skipped: the result is npe's, at little more than
            npe's cost.
        proxy_learning_rate: The proxy's Adam learning rate (``None``: the flow's).
        min_ess: ``joint``: the ESS fraction below which a batch counts as collapsed
            (``None``: ``1.5 / (K + M)``).
        max_lambda: A dual above this counts as a blow-up.
        max_restores: Fault restores allowed before training stops.
    """

    what = "method"

    objective: str = option("jeffreys", "the symmetric objective", choices=tuple(TERMS))
    schedule: str = option(
        "npe-first",
        "npe-first: npe to its early stop, then the symmetric objective from its best state, "
        "the better phase kept; joint: warm-up, then the primal-dual objective",
        choices=SCHEDULES,
        advanced=True,
    )
    proxy: str = option(
        "likelihood",
        "the energy-based proxy: likelihood (prior x a learned likelihood flow), ratio "
        "(prior x a learned ratio), residual (the flow x a learned correction) or mlp",
        choices=PROXIES,
    )
    proxy_hidden_features: tuple[int, ...] = option(
        (64, 64), "the energy MLP's hidden widths (ratio, residual, mlp)", advanced=True
    )
    proxy_options: Mapping[str, Any] = option(
        {}, "further arguments of the proxy's class", advanced=True
    )
    share_embedding: bool = option(
        False, "the proxy reads x through the flow's embedding net", advanced=True
    )
    posterior: str | None = option(
        None,
        "what training returns: auto (the proxy where it is clearly the better model on the "
        "validation pairs, else the mixture of the flow and the proxy, half each; the flow "
        "where the proxy was abandoned or cannot be sampled, or with recalibrate), flow, "
        "proxy or mixture (default: auto with the likelihood proxy, else flow)",
        choices=(None, *RETURNS),
    )
    gate: bool | None = option(
        None,
        "npe-first: the reverse term only while the proxy's validation NLL is below the "
        "flow's (default: on)",
        optional=True,
        advanced=True,
    )
    gate_samples: int = option(
        256, "importance samples per validation x for the gate", minimum=2, advanced=True
    )
    gate_every: int = option(
        1, "npe-first: measure the gate every n-th phase-2 epoch", minimum=1, advanced=True
    )
    gate_pairs: int | None = option(
        None,
        "validation pairs the gate measures on (the first n; default: all)",
        minimum=2,
        optional=True,
        advanced=True,
    )
    phase2: bool = option(
        True,
        "npe-first: train phase 2 after the switch (off: stop there, with npe's flow and the "
        "proxy as they were at phase 1's best epoch)",
        advanced=True,
    )
    proxy_reverse_weight: float = option(
        0.0,
        "npe-first: the reverse term's weight in the proxy's loss",
        nonnegative=True,
        advanced=True,
    )
    path_gradient: bool = option(
        False, "the path (sticking-the-landing) gradient of the reverse KL", advanced=True
    )
    phase2_patience: int | None = option(
        None,
        "npe-first: phase 2's early-stopping patience (default: the loop's)",
        minimum=1,
        optional=True,
        advanced=True,
    )
    tau: float | None = option(
        None, "srfe: the Renyi order in (0, 1) (default 0.5)", open_unit=True, optional=True
    )
    tau_schedule: Any = option(
        "constant", "srfe: how tau moves: constant, anneal, reverse or step", advanced=True
    )
    tau_epochs: int = option(
        50, "srfe: epochs over which a tau schedule runs", minimum=1, advanced=True
    )
    eps: float | None = option(
        None, "joint: the constraint's tolerance", optional=True, advanced=True
    )
    alpha: float | None = option(
        None, "joint: the slack's resilience cost", optional=True, advanced=True
    )
    dual_lr: float | None = option(
        None, "joint: the dual ascent step", optional=True, advanced=True
    )
    lambda_init: float | None = option(
        None, "joint: the dual's initial value", optional=True, advanced=True
    )
    adaptive: bool | None = option(
        None,
        "joint: the adaptive primal-dual scheme (off: the fixed-weight ablation)",
        optional=True,
        advanced=True,
    )
    warmup_epochs: int | None = option(
        None,
        "joint: warm-up epochs before the reverse term",
        minimum=0,
        optional=True,
        advanced=True,
    )
    reverse_weight: float = option(
        1.0, "beta: the reverse term's weight in the flow's loss", positive=True, advanced=True
    )
    num_proxy_samples: int = option(
        8, "K: flow samples per observation for the reverse term", minimum=1, advanced=True
    )
    num_prior_samples: int = option(
        0,
        "M: prior samples per observation added to log Z's sampler",
        minimum=0,
        advanced=True,
    )
    reverse_batch_size: int | None = option(
        None,
        "observations of each batch in the reverse term (default: all)",
        minimum=1,
        optional=True,
        advanced=True,
    )
    proxy_every: int = option(
        1,
        "the proxy fits on every n-th batch without the reverse term",
        minimum=1,
        advanced=True,
    )
    reverse_every: int = option(
        1, "npe-first: the reverse term on every n-th phase-2 batch", minimum=1, advanced=True
    )
    proxy_patience: int | None = option(
        None,
        "npe-first: the proxy's own early-stopping patience (default: none)",
        minimum=1,
        optional=True,
        advanced=True,
    )
    probe_every: int | None = option(
        None,
        "npe-first: measure the proxy against the flow at phase-1 epochs n, 2n, 3n, then "
        "each half its epoch after the last (as the gate does, on gate_pairs); none: not "
        "in phase 1",
        minimum=1,
        optional=True,
        advanced=True,
    )
    abandon_patience: int | None = option(
        None,
        "npe-first: stop fitting the proxy after this many phase-1 probes in a row where "
        "it trails the flow by more than a standard error and has not gained on it; "
        "phase 2 is then skipped (default: never)",
        minimum=1,
        optional=True,
        advanced=True,
    )
    proxy_learning_rate: float | None = option(
        None,
        "the proxy's Adam learning rate (default: the flow's)",
        positive=True,
        optional=True,
        advanced=True,
    )
    min_ess: float | None = option(
        None,
        "joint: ESS fraction below which a batch counts as collapsed",
        nonnegative=True,
        optional=True,
        advanced=True,
    )
    max_lambda: float = option(
        1e4, "a dual variable above this is a blow-up", positive=True, advanced=True
    )
    max_restores: int = option(
        5, "fault restores allowed before training stops", minimum=0, advanced=True
    )

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def jeffreys(cls, **changes: Any) -> SymmetricConfig:
        r"""Forward plus reverse KL, the recommended symmetric method: the likelihood proxy,
        npe-first.

        With ``npe-first`` it takes one reparameterised sample per ``x`` with the path
        gradient (unbiased), measures the gate on every 5th phase-2 epoch, with 64
        importance samples per validation pair, and probes the proxy at phase-1 epochs 5,
        10, 15, then ever sparser, abandoning it after 3 probes in a row where it clearly
        trails the flow (see ``docs/method.md``, "The schedule ``npe-first`` and the
        gate").
        """
        tuned = {}
        if changes.get("schedule", "npe-first") == "npe-first":
            tuned = {
                "num_proxy_samples": 1,
                "path_gradient": True,
                "gate_every": 5,
                "gate_samples": 64,
                "probe_every": 5,
                "abandon_patience": 3,
            }
        return cls.from_options({"objective": "jeffreys", **tuned, **changes})

    @classmethod
    def srfe(cls, **changes: Any) -> SymmetricConfig:
        r"""Forward KL plus the Surprisal-Renyi free energy :math:`S_\tau`."""
        return cls.from_options({"objective": "srfe", **changes})

    @classmethod
    def reverse(cls, **changes: Any) -> SymmetricConfig:
        r"""Reverse KL only (an ablation): docs/method.md's reconstruction, the ratio
        proxy under the joint schedule."""
        return cls.from_options(
            {"objective": "reverse", "proxy": "ratio", "schedule": "joint", **changes}
        )

    @classmethod
    def distill(cls, **changes: Any) -> SymmetricConfig:
        r"""Forward KL plus the forward KL from the proxy, by importance sampling."""
        return cls.from_options({"objective": "distill", **changes})

    # -- what the config implies -----------------------------------------------------------
    @property
    def term(self) -> str:
        r"""The reverse-side term: ``"kl"``, ``"renyi"`` or ``"distill"``."""
        return TERMS[self.objective][0]

    @property
    def forward(self) -> bool:
        r"""Whether the flow keeps the forward term :math:`F` (not for ``reverse``)."""
        return TERMS[self.objective][1]

    @property
    def joint_schedule(self) -> bool:
        r"""Whether the schedule is ``joint`` (else ``npe-first``)."""
        return self.schedule == SCHEDULES[1]

    @property
    def gated(self) -> bool:
        r"""Whether the gate is on (``gate=None``: on for ``npe-first``)."""
        return not self.joint_schedule if self.gate is None else bool(self.gate)

    @property
    def returns(self) -> str:
        r"""What fit returns: ``"auto"``, ``"flow"``, ``"proxy"`` or ``"mixture"``."""
        if self.posterior is not None:
            return self.posterior
        return "auto" if self.proxy == "likelihood" else "flow"

    def proxy_config(self) -> ProxyConfig:
        r"""The proxy's :class:`~jsbi.proxies.ProxyConfig`."""
        return ProxyConfig(
            family=self.proxy,
            hidden_features=tuple(self.proxy_hidden_features),
            options=dict(self.proxy_options),
            share_embedding=self.share_embedding,
        )

    def tau_schedule_object(self) -> TauSchedule:
        r"""SRFE's order over the symmetric epochs."""
        tau = 0.5 if self.tau is None else self.tau
        return make_tau_schedule(self.tau_schedule, tau=tau, tau_end=self.tau)

    def joint(self) -> dict[str, Any]:
        r"""The joint schedule's options, each ``None`` replaced by its
        :data:`JOINT_DEFAULTS` value (what ``npe-first``'s unused dual is built with)."""
        given = {k: getattr(self, k) for k in JOINT_DEFAULTS}
        return {k: JOINT_DEFAULTS[k] if v is None else v for k, v in given.items()}

    def needs_prior(self) -> list[str]:
        r"""What in this config needs the prior."""
        needs = (
            (self.num_prior_samples > 0, "num_prior_samples > 0"),
            (self.term == "distill", f"objective={self.objective!r}"),
            (self.gated, "the gate (gate=True)"),
        )
        return [what for need, what in needs if need]

    def support(self, given: str | None, bounded_prior: bool) -> str:
        r"""The support mode: ``given``, else :data:`~jsbi.flows.support.DEFAULT_SUPPORT`;
        the joint schedule keeps ``"transform"`` (its importance-sampled normaliser and
        constraint assume no flow mass outside the prior), and ``"truncate"`` with it on a
        bounded prior is an error."""
        if not self.joint_schedule:
            return given or DEFAULT_SUPPORT
        if given == "truncate" and bounded_prior:
            raise ValueError(
                "schedule='joint' needs support='transform' on a bounded prior (its "
                "importance-sampled normaliser assumes no flow mass outside the support); "
                "use schedule='npe-first' for support='truncate'"
            )
        return given or "transform"

    def check(self) -> None:
        given = sorted(k for k in JOINT_DEFAULTS if getattr(self, k) is not None)
        if not self.joint_schedule and given:
            raise ValueError(
                f"{', '.join(given)} apply to schedule='joint' (the dual variable and the "
                "warm-up); schedule='npe-first' has neither"
            )
        self._check_joint()
        if self.term != "renyi" and (self.tau is not None or self.tau_schedule != "constant"):
            raise ValueError(
                f"tau and tau_schedule apply to objective='srfe', not {self.objective!r}"
            )
        if self.term == "renyi":
            self.tau_schedule_object()  # its own error names the schedule
        min_k = 2 if (self.joint_schedule or self.term == "renyi") else 1
        if self.num_proxy_samples < min_k:
            raise ValueError(
                f"num_proxy_samples must be >= {min_k} for objective={self.objective!r} "
                f"with schedule={self.schedule!r}, got {self.num_proxy_samples}"
            )
        if self.proxy_patience is not None and (self.joint_schedule or self.proxy_reverse_weight):
            raise ValueError(
                "proxy_patience applies to schedule='npe-first' with proxy_reverse_weight=0 "
                "(a proxy that shares the reverse term has no own early stopping)"
            )
        if self.abandon_patience is not None and (self.joint_schedule or not self.probe_every):
            raise ValueError(
                "abandon_patience needs schedule='npe-first' and probe_every (the probes it "
                "counts)"
            )
        if self.reverse_every != 1 and self.joint_schedule:
            raise ValueError(
                "reverse_every applies to schedule='npe-first' (the joint schedule's dual "
                "variable steps on every batch)"
            )
        self.proxy_config()  # the proxy's own checks

    def _check_joint(self) -> None:
        import math

        joint = self.joint()
        for name in ("dual_lr", "alpha"):
            value = joint[name]
            finite = name == "dual_lr"
            if math.isnan(value) or not value > 0 or (finite and math.isinf(value)):
                hint = " and finite" if finite else " (math.inf for a hard constraint)"
                raise ValueError(f"{name} must be > 0{hint}, got {value}")
        if not math.isfinite(joint["eps"]):
            raise ValueError(f"eps must be finite, got {joint['eps']}")
        if not (math.isfinite(joint["lambda_init"]) and joint["lambda_init"] >= 0):
            raise ValueError(f"lambda_init must be finite and >= 0, got {joint['lambda_init']}")


#: A method: npe's config or a symmetric one.
MethodConfig = NPEConfig | SymmetricConfig
