r"""The symmetric step: the flow and its energy-based proxy, one update per batch.

The flow :math:`q_\phi` and the proxy :math:`r_\psi` solve (docs/method.md)

.. math:: \min_{\phi, \psi, u \ge 0} F(\phi) + R(\phi, \psi) + \tfrac{\alpha}{2} u^2
    \quad \text{s.t.} \quad C(\psi) - \bar F \le \epsilon + u

with :math:`R` the reverse KL (``jeffreys``, ``reverse``), :math:`S_\tau` (``srfe``) or
the forward KL from the proxy (``distill``). The method is in four places, each one concept:
what each model descends is :func:`~jsbi.objectives.primal_losses`; the reverse term's
estimate from the flow's samples is :class:`~jsbi.methods.reverse.ReverseEstimator`; when
the reverse term is on, and how strongly, is the plan (:mod:`jsbi.methods.plans`); the dual
variable is :class:`~jsbi.methods.dual.DualVariable`. This step acts on their decisions.

A reverse-term sample outside the prior's support has infinite energy: it is left out of
the term (never a NaN), and counted in ``history["train_outside"]``. A non-finite loss or a
dual above ``max_lambda`` is a :class:`~jsbi.methods.base.StepFault`: the loop restores the
last finished epoch with smaller steps, and stops after ``max_restores``.

References:
    | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025), arXiv:2511.11159
    | Resilient Constrained Learning (Hounie, Ribeiro & Chamon, 2023), arXiv:2306.02426
    | Sticking the Landing (Roeder, Wu & Duvenaud, 2017), arXiv:1703.09194
"""

from __future__ import annotations

import collections
import copy
import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.methods.base import Optimizers, StepFault, TrainingStep
from jsbi.methods.config import SymmetricConfig
from jsbi.methods.dual import DualVariable
from jsbi.methods.plans import make_plan
from jsbi.methods.reverse import ReverseEstimate, ReverseEstimator
from jsbi.objectives import constraint_violation, forward_kl, primal_losses, proxy_fit
from jsbi.proxies.base import Proxy
from jsbi.proxies.importance import proxy_minus_flow
from jsbi.seeding import seeded

__all__ = ["SymmetricStep"]


#: Validation pairs a phase-1 probe measures the proxy on (the first ones, fixed).
PROBE_PAIRS = 200


class SymmetricStep(TrainingStep):
    r"""The step of ``jeffreys``, ``srfe``, ``reverse`` and ``distill``.

    Arguments:
        flow: The conditional flow :math:`q_\phi`.
        proxy: The proxy :math:`E_\psi` (:class:`~jsbi.proxies.Proxy`).
        config: The method's :class:`~jsbi.methods.SymmetricConfig`.
        prior: The prior :math:`\pi` (for ``num_prior_samples > 0``, ``distill`` and the
            gate).
    """

    def __init__(
        self,
        flow: nn.Module,
        proxy: Proxy,
        config: SymmetricConfig,
        prior: Distribution | None = None,
    ) -> None:
        if prior is None and (needs := config.needs_prior()):
            raise ValueError(f"{needs[0]} needs the prior: pass prior=")
        self.flow, self.proxy, self.prior, self.config = flow, proxy, prior, config
        self.max_restores = config.max_restores
        self.reverse = ReverseEstimator(flow, proxy, prior, config)
        self.plan = make_plan(config)
        self.state = self.plan.init_state()
        joint = config.joint()
        self.dual = DualVariable(
            joint["lambda_init"],
            joint["alpha"],
            joint["dual_lr"],
            joint["adaptive"],
            config.max_lambda,
        )
        self.tau: float | None = None
        self._validation: tuple[Tensor, Tensor] | None = None

    # -- bookkeeping -------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"flow": self.flow, "proxy": self.proxy}

    def parameter_groups(self, learning_rate: float) -> dict[str, tuple[list, float]]:
        shared = {id(p) for p in self.flow.parameters()}
        # A shared embedding belongs to the flow: the proxy's step never moves it.
        own = [p for p in self.proxy.parameters() if id(p) not in shared]
        proxy_lr = self.config.proxy_learning_rate or learning_rate
        return {"flow": (list(self.flow.parameters()), learning_rate), "proxy": (own, proxy_lr)}

    def start(self, optimizers: Optimizers, info: dict[str, Any] | None = None) -> None:
        super().start(optimizers, info)
        self.dual.reset()
        self.state = self.plan.init_state()

    def shrink(self) -> str:
        self.optim.halve()
        self.dual.lr *= 0.5
        return f"flow lr {self.optim.learning_rate('flow'):.2g}, dual lr {self.dual.lr:.2g}"

    def on_epoch_start(self, epoch: int) -> None:
        self.state.epoch = epoch
        self.tau = self.plan.tau(self.state)

    def selectable(self, epoch: int) -> bool:
        return self.plan.selectable(self.state, epoch)

    def summary(self) -> dict[str, Any]:
        return dict(self.state.summary)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        return {**state, "lambda": self.dual.value, "run": self.state.as_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.dual.value = float(state.get("lambda", self.dual.value))
        if "run" in state:
            self.state.load(state["run"])

    # -- the update ----------------------------------------------------------------------
    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        plan, state = self.plan, self.state
        if not plan.symmetric(state):
            return self._npe_step(theta, x)
        if state.phase == 2:
            due = plan.reverse_due(state) if self._counts_reverse() else None
            if not due:
                return {**self._npe_step(theta, x), "phase": 2.0, "gate": state.gate}
        F = forward_kl(self.flow.log_prob(theta, x))
        xr = self.reverse.batch(x)
        r = self.reverse(xr, tau=self.tau, needs_log_z=plan.needs_log_z)
        fit = self._fit(theta, x, xr, r.log_z, plan.fits_constraint(state))
        ess = math.nan if r.ess is None else float(r.ess.mean())
        w = plan.weights(state, ess, self.dual.value)
        loss_flow, loss_proxy = primal_losses(
            F, r.flow, fit, r.proxy, forward=self.config.forward, **w.kwargs()
        )
        if not all(torch.isfinite(v) for v in (loss_flow, loss_proxy) if v is not None):
            raise StepFault("non-finite loss")
        self.optim.descend({"flow": loss_flow, "proxy": loss_proxy})
        logs = self._logs(loss_flow, F, r, fit, w.collapsed, ess)
        if plan.dual_steps:
            violation = float(constraint_violation(fit, F, plan.eps, self.dual.slack))
            logs["violation"] = violation
            if not self.dual.step(violation):
                raise StepFault(
                    f"dual variable lambda={self.dual.value:.3g} > {self.dual.max_value}"
                )
            logs["lambda"], logs["u"] = self.dual.value, self.dual.slack
        else:
            logs["phase"], logs["gate"] = 2.0, state.gate
        return logs

    def _counts_reverse(self) -> bool:
        # A phase-2 batch counts towards reverse_every while the reverse term is on.
        on = self.plan.reverse_due(self.state) is not None
        if on:
            self.state.reverse_batches += 1
        return on

    def _npe_step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        # The flow on F, the proxy on its own fit when due (warm-up, phase 1, gated off).
        F = forward_kl(self.flow.log_prob(theta, x))
        self.state.steps += 1
        fit = None
        if self.plan.fit_due(self.state):
            fit = self._fit(theta, x, self.reverse.batch(x), None, False)
        if not all(torch.isfinite(v) for v in (F, fit) if v is not None):
            raise StepFault("non-finite loss")  # the proxy's own fit too, in phase 1
        self.optim.descend({"flow": F, "proxy": fit})
        logs = {"loss": F.item(), "F": F.item()}
        if fit is not None:
            logs[self.proxy.fit_name] = fit.item()
        if self.state.phase:
            logs["phase"] = float(self.state.phase)
        return logs

    def _fit(
        self, theta: Tensor, x: Tensor, xr: Tensor, log_z: Tensor | None, constraint: bool | None
    ) -> Tensor | None:
        # The proxy's data fit: C with this batch's log Z (constraint=True), its own fit
        # (False: maximum likelihood, contrastive, or C with log Z from fresh flow
        # samples for a proxy without one), or nothing (None: it does not move).
        if constraint is None:
            return None
        if constraint:
            return proxy_fit(self.proxy(theta, x), log_z)
        own = self.proxy.fit_loss(theta, x)
        if own is not None:
            return own
        return proxy_fit(self.proxy(theta, x), self.reverse.fresh_log_normalizer(xr))

    def _logs(
        self,
        loss: Tensor,
        F: Tensor,
        r: ReverseEstimate,
        fit: Tensor | None,
        collapsed: bool,
        ess: float,
    ) -> dict[str, float]:
        # One symmetric step's scalars: what the flow descended (loss), its terms, the
        # dual, the faults seen and, where the term has importance weights, their ESS.
        logs = {
            "loss": loss.item(),
            "F": F.item(),
            "R": r.flow.item(),
            "lambda": self.dual.value,
            "u": self.dual.slack,
            "collapsed": float(collapsed),
            "outside": float(r.outside),
            "faults": 0.0,
        }
        if fit is not None:  # None: the proxy's own early stopping ended its fit
            logs["C" if self.plan.dual_steps else self.proxy.fit_name] = fit.item()
        if r.ess is not None:
            logs["ess"] = ess
        if self.tau is not None:
            logs["tau"] = self.tau
        return logs

    # -- validation and the phases ---------------------------------------------------------
    def validate(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        self._validation = (theta, x)
        logs: dict[str, float] = {}
        if self.plan.own_fit_due(self.state):
            # The same random numbers every epoch (comparable values), off the training
            # stream.
            with seeded(0, [theta.device]), torch.no_grad():
                value = self.proxy.fit_loss(theta, x)
            if value is not None:
                logs["proxy_fit"] = float(value)
                self._record_proxy_fit(float(value))
        if self.plan.gate_due(self.state):
            logs.update(self.measure_proxy(theta, x))
        if self.plan.probe_due(self.state):
            logs.update(self._probe(theta, x))
        return logs

    def _probe(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        # Phase 1: the proxy measured against the flow; a proxy that keeps trailing is
        # abandoned (its best state kept, no more fitting, no phase 2).
        state = self.state
        self.flow.eval()
        self.proxy.eval()
        n = PROBE_PAIRS
        m = self.measure_proxy(theta[:n], x[:n])
        gap, se = m["proxy_minus_flow"], m["proxy_minus_flow_se"]
        state.trailing, abandon = self.plan.probed(state, gap, se)
        state.last_gap = gap
        probes = state.summary.setdefault("probes", [])
        probes.append([state.epoch, gap, se])
        if abandon:
            state.proxy_frozen = True
            state.summary["proxy_abandoned_epoch"] = state.epoch
            if state.proxy_best is not None:
                self.proxy.load_state_dict(state.proxy_best[1])
        return {"probe_gap": gap, "probe_se": se}

    def _record_proxy_fit(self, value: float) -> None:
        state = self.state
        improved, stop = self.plan.proxy_fit(state, value)
        if improved:
            state.proxy_best, state.proxy_stale = (value, _clone(self.proxy)), 0
        else:
            state.proxy_stale += 1
        if stop:
            # Its own early stop: back to its best state, and no more fitting.
            self.proxy.load_state_dict(state.proxy_best[1])
            state.proxy_frozen = True
            state.summary["proxy_stopped_epoch"] = state.epoch

    @torch.no_grad()
    def measure_proxy(
        self, theta: Tensor, x: Tensor, num_samples: int | None = None
    ) -> dict[str, float]:
        r"""The gate's measurement on pairs (:func:`~jsbi.proxies.importance.proxy_minus_flow`,
        ``gate_samples`` importance samples per pair unless ``num_samples``); the gate
        opens while the proxy is the better model."""
        n = self.config.gate_samples if num_samples is None else int(num_samples)
        if num_samples is None and self.config.gate_pairs is not None:
            theta, x = theta[: self.config.gate_pairs], x[: self.config.gate_pairs]
        with seeded(0, [theta.device]):
            measured = proxy_minus_flow(self.proxy, self.flow, self.prior, theta, x, n)
        self.state.gate = self.plan.gate_from(measured)
        return {**measured, "gate": self.state.gate}

    def on_converged(self, best_state: dict[str, Any] | None) -> bool | int:
        state, switch = self.state, self.plan.switch(self.state)
        if not switch.go_on:
            return False
        if switch.restore:
            # Phase 2 starts from phase 1's best flow (and its optimiser) and the proxy's
            # own best fit.
            if best_state is not None:
                self.flow.load_state_dict(best_state["flow"])
                self.optim.load_state_dict(best_state["optimizers"], groups=["flow"])
            if state.proxy_best is not None:
                self.proxy.load_state_dict(state.proxy_best[1])
            self.choose_candidates()
        if switch.measure and self._validation is not None:
            # A proxy that is not the better model at the switch would be gated off
            # throughout: phase 2 is skipped, and the result is npe's.
            self.flow.eval()
            self.proxy.eval()
            state.summary["phase2_start"] = self.measure_proxy(*self._validation)
            if not state.gate:
                state.summary["phase2_skipped"] = True
                return False
        if not self.config.phase2:
            state.summary["phase2_skipped"] = "phase2=False"
            return False
        state.phase, state.symmetric_from = 2, state.epoch + 1
        return True if switch.patience is None else switch.patience

    def choose_candidates(
        self, pairs: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, Any] | None:
        r"""Lets the proxy choose among its candidate likelihoods on the validation pairs,
        once; returns the record of the choice (``None``: nothing to choose)."""
        pairs = self._validation if pairs is None else pairs
        if not self.proxy.undecided or pairs is None:
            return None
        self.proxy.eval()
        self.state.summary["proxy_candidates"] = chosen = self.proxy.select(*pairs)
        return chosen


def _clone(module: nn.Module) -> dict[str, Any]:
    # A copy of the module's weights, detached from training (its metadata kept).
    state = module.state_dict()
    out = collections.OrderedDict((k, v.detach().clone()) for k, v in state.items())
    out._metadata = copy.deepcopy(getattr(state, "_metadata", {}))  # type: ignore[attr-defined]
    return out
