r"""The front door: prior + flow + method -> a trained :class:`~jsbi.posteriors.Posterior`.

:class:`PosteriorEstimator` holds three configs, each built and checked once at
construction: the flow's (:class:`~jsbi.flows.FlowConfig`), the method's (a name of
:data:`~jsbi.methods.METHODS` or a :class:`~jsbi.methods.SymmetricConfig`) and the
training's (:class:`~jsbi.training.TrainConfig`). Keyword overrides go to the config that
has the field; an unknown one is an error naming the config with the closest field.

Example:
    >>> import torch, jsbi
    >>> from torch.distributions import Independent, Normal
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> theta = prior.sample((500,)); x = theta + 0.5 * torch.randn(500, 2)
    >>> est = jsbi.PosteriorEstimator(prior, flow="nsf", num_transforms=2)
    >>> posterior = est.fit(theta, x, max_epochs=5, show_progress_bar=False)
    >>> posterior.sample((10,), x=x[0]).shape
    torch.Size([10, 2])
    >>> jsbi.PosteriorEstimator(prior, num_transfroms=2)
    Traceback (most recent call last):
    ...
    ValueError: unknown option 'num_transfroms': did you mean 'num_transforms' (FlowConfig)?
"""

from __future__ import annotations

import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.flows import ConditionalFlow, FlowConfig
from jsbi.flows.ensemble import build_flows
from jsbi.flows.support import Support
from jsbi.methods import (
    MethodConfig,
    NPEConfig,
    SymmetricConfig,
    build_step,
    method_config,
    method_overrides,
)
from jsbi.methods.base import TrainingStep
from jsbi.methods.plans import PHASE2_WORDS, phase2_outcome
from jsbi.options import (
    SBI_TRAIN_UNSUPPORTED,
    check_device,
    check_prior,
    check_proposal,
    check_recalibrate,
    check_support,
    interrupt_says,
    route,
    sbi_names,
)
from jsbi.posteriors import MixturePosterior, Posterior, ProxyPosterior
from jsbi.posteriors.proxy import auto_choice, candidates_per_sample
from jsbi.posteriors.typicality import fit_typicality
from jsbi.progress import interactive
from jsbi.seeding import seeded
from jsbi.training import TrainConfig, train
from jsbi.training.data import check_training_data, split_indices

__all__ = ["PosteriorEstimator"]


class PosteriorEstimator:
    r"""Trains an amortised posterior :math:`q(\theta \mid x)` from simulations.

    Arguments:
        prior: The prior, a torch distribution with event shape ``(d,)``.
        flow: A flow name (``"nsf"``, ``"maf"``, ``"ncsf"``, ``"realnvp"``, ``"naf"``), a
            zuko flow class or a :class:`~jsbi.flows.FlowConfig`.
        objective: A method's name (``"npe"``, ``"jeffreys"``, ``"srfe"``, ``"distill"``,
            ``"reverse"``, or another of :data:`~jsbi.methods.METHODS`) or a method config.
        embedding_net: A module mapping ``x`` (z-scored) to features, trained jointly, e.g.
            :class:`~jsbi.flows.MLPEmbedding` or :class:`~jsbi.flows.SetEmbedding`.
        device: The training device.
        seed: Seeds the initialisation, the validation split and the shuffling.
        overrides: Fields of the flow's config (``num_transforms``, ``support``, ...), the
            method's (``proxy``, ``posterior``, ``tau``, ...) or the training's
            (``learning_rate``, ``max_epochs``, ...; :meth:`fit`'s defaults).
    """

    def __init__(
        self,
        prior: Distribution,
        flow: str | type | FlowConfig = "nsf",
        objective: str | MethodConfig = "npe",
        *,
        embedding_net: nn.Module | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        prior = check_prior(prior)
        self.prior = prior
        self.embedding_net = embedding_net
        self.device = check_device(device)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        flow_config = flow if isinstance(flow, FlowConfig) else FlowConfig(flow=flow)
        overrides = {**method_overrides(objective), **overrides}
        parts = route(overrides, method_config(objective))
        self.method: MethodConfig = method_config(objective, **parts["method"])
        self.train_config = TrainConfig.from_options(parts["train"])
        flow_config = flow_config.replace(**parts["flow"])
        bounded = Support.from_prior(prior).is_bounded
        support = self.method.support(flow_config.support, bounded)
        self.flow_config = flow_config.replace(support=support)
        if self.flow_config.ensemble > 1 and not isinstance(self.method, NPEConfig):
            raise ValueError(
                f"ensemble={self.flow_config.ensemble} applies to objective='npe' for now: a "
                "symmetric method trains one flow and one proxy"
            )
        check_recalibrate(self.train_config, self.flow_config, self.method.returns)
        self._recalibrate = self.train_config.recalibrate
        self.flow: ConditionalFlow | None = None
        self.step: TrainingStep | None = None
        self.history: dict[str, Any] | None = None
        self._theta: Tensor | None = None
        self._x: Tensor | None = None
        self._proposal: Distribution | None = None
        self._typicality: Any = None

    @property
    def objective(self) -> str:
        r"""The method's objective (``"npe"``, ``"jeffreys"``, ...)."""
        return self.method.objective

    @property
    def support(self) -> str:
        r"""How the flow respects a bounded prior: ``"truncate"`` or ``"transform"``."""
        return self.flow_config.support

    @property
    def dim_theta(self) -> int:
        return int(self.prior.event_shape[0])

    def append_simulations(
        self, theta: Tensor, x: Tensor, proposal: Distribution | None = None
    ) -> PosteriorEstimator:
        r"""Adds training pairs (sbi's habit); :meth:`train` fits on all of them.
        ``proposal``: what ``theta`` was drawn from (see :meth:`fit`)."""
        if proposal is not None and proposal is not self.prior:
            self._proposal = proposal
        theta, x = torch.as_tensor(theta), torch.as_tensor(x)
        if self._theta is None:
            self._theta, self._x = theta, x
        else:
            self._theta = torch.cat([self._theta, theta.to(self._theta)])
            self._x = torch.cat([self._x, x.to(self._x)])
        return self

    def train(self, **training_kwargs: Any) -> Posterior:
        r"""Fits on the appended simulations (sbi's habit); see :meth:`fit`. sbi options
        jsbi does not have are an error that says so."""
        if self._theta is None:
            raise ValueError("no simulations: call append_simulations(theta, x) first")
        unsupported = sorted(set(training_kwargs) & SBI_TRAIN_UNSUPPORTED)
        if unsupported:
            raise TypeError(
                f"sbi's {', '.join(unsupported)} has no jsbi equivalent: every train() builds "
                "a fresh flow on all appended simulations (checkpoint= resumes a run)"
            )
        training_kwargs.setdefault("proposal", self._proposal)
        return self.fit(self._theta, self._x, **training_kwargs)

    def fit(
        self,
        theta: Tensor,
        x: Tensor,
        train_config: TrainConfig | None = None,
        *,
        show_progress_bar: bool | None = None,
        show_train_summary: bool | None = None,
        callback: Callable[[int, dict[str, float]], bool | None] | None = None,
        checkpoint: str | os.PathLike | None = None,
        proposal: Distribution | None = None,
        **train_overrides: Any,
    ) -> Posterior:
        r"""Builds a fresh flow (and proxy) and trains it on ``(theta, x)``.

        Arguments:
            theta: Parameters, shape ``(n, d)``; rows should lie in the prior's support.
            x: Simulations, shape ``(n, m)``; non-finite rows are dropped with a warning.
            train_config: The :class:`~jsbi.training.TrainConfig` (default: the
                estimator's).
            show_progress_bar: tqdm bar (``None``: in a terminal or a notebook).
            show_train_summary: Print a one-line summary at the end (``None``: where the
                progress bar shows).
            callback: ``callback(epoch, logs)``; returning ``True`` stops.
            checkpoint: A file saving the run after every epoch; rerunning ``fit`` with the
                same data, seed and file resumes where it stopped.
            proposal: What ``theta`` was drawn from: ``None`` or the prior, or a
                :class:`~jsbi.posteriors.TruncatedProposal` (TSNPE). Any other proposal would
                bias the NPE loss, and is an error.
            train_overrides: :class:`~jsbi.training.TrainConfig` fields (``max_epochs``,
                ``learning_rate``, ...; sbi's ``max_num_epochs`` too).

        Returns:
            The trained posterior (its ``history`` holds the run).
        """
        config = (train_config or self.train_config).replace(**sbi_names(train_overrides))
        check_recalibrate(config, self.flow_config, self.method.returns)
        self._recalibrate = config.recalibrate  # auto then returns the proxy or the flow
        check_proposal(proposal, self.prior)
        theta, x, dropped = check_training_data(theta, x, self.dim_theta)
        check_support(theta, self.prior, self.support)
        device = self.device
        # The split train() makes: the standardisation reads the training pairs only, so
        # the validation pairs (early stopping, the choice, the misspecification check's
        # reference, recalibration) stay held out.
        val, tr = split_indices(len(theta), config.validation_fraction, self.seed)
        theta_tr, x_tr = theta[tr.to(theta.device)].to(device), x[tr.to(x.device)].to(device)
        with interrupt_says("building the flow, before training started"):
            with seeded(self.seed, [device]):
                self.flow = build_flows(
                    self.flow_config, theta_tr, x_tr, self.prior, self.embedding_net, self.seed
                )
                self.step = build_step(self.method, self.flow, self.prior, theta_tr, x_tr)
        del theta_tr, x_tr  # (train() indexes its own: no second copy held through the fit)
        self.history = train(
            self.step,
            theta,
            x,
            config,
            seed=self.seed,
            device=device,
            show_progress_bar=show_progress_bar,
            callback=callback,
            num_dropped=dropped,
            checkpoint=checkpoint,
        )
        self.history["objective"] = self.objective
        if proposal is not None and proposal is not self.prior:
            self.history["proposal"] = repr(proposal)
        start = time.perf_counter()
        theta_val, x_val = theta[val.to(theta.device)].to(device), x[val.to(x.device)].to(device)
        # (Pairs drawn from a proposal are not the prior predictive's: no held-out reference.)
        from_prior = proposal is None or proposal is self.prior
        self._decide(theta_val, x_val, x.to(device), from_prior)
        posterior = self.build_posterior()
        if config.recalibrate and not isinstance(posterior, ProxyPosterior):
            posterior.recalibrate(theta_val, x_val)
        # The work after the last epoch (the choice, the misspecification check's
        # reference, the recalibration) is part of the fit's cost, outside every epoch's.
        self.history["decide_time"] = time.perf_counter() - start
        self._warn_capped()
        if show_train_summary is None:  # with the bar: in a terminal or a notebook
            show_train_summary = interactive() if show_progress_bar is None else show_progress_bar
        if show_train_summary:
            print(self.train_summary(), file=sys.stderr)
        return posterior

    def _warn_capped(self) -> None:
        h = self.history
        if h["stopped_by"] != "the epoch cap":
            return
        never = phase2_outcome(h) == "never"
        warnings.warn(
            f"training hit the epoch cap (max_epochs={h['epochs_trained']}) before early "
            "stopping: the posterior may be under-trained"
            + (f"; {PHASE2_WORDS['never']}" if never else "")
            + ". Raise max_epochs (or leave it unset) for a converged fit",
            stacklevel=3,
        )

    def _decide(self, theta_val: Tensor, x_val: Tensor, x_all: Tensor, from_prior: bool) -> None:
        # After training, on the run's own validation pairs: the proxy's candidate
        # likelihoods chosen (if the run never reached npe-first's switch), the reference
        # of the misspecification check, and for posterior="auto" the proxy measured
        # against the flow, with 256 importance samples per pair whatever the gate used
        # (fewer bias log Z low, and this choice is final). A proxy abandoned in phase 1
        # stopped training early: its model of x is not the check's reference (its own
        # draws, not the data, would be "typical"), nor worth its cost; the flow's
        # embedding is.
        abandoned = "proxy_abandoned_epoch" in self.history
        if isinstance(self.method, SymmetricConfig) and not abandoned:
            chosen = self.step.choose_candidates((theta_val, x_val))
            if chosen is not None:
                self.history["proxy_candidates"] = chosen
        proxy = None if abandoned else self._finite_proxy()
        held_out = x_val if from_prior else None
        self._typicality = fit_typicality(self.flow, proxy, self.prior, x_all, held_out=held_out)
        self.history["typicality"] = f"{self._typicality.kind} ({self._typicality.source})"
        if not isinstance(self.method, SymmetricConfig):
            return
        if self.method.returns == "auto" and not abandoned:
            # (An abandoned proxy lost already: the flow is returned, unmeasured.)
            measured = self.step.measure_proxy(theta_val, x_val, num_samples=256)
            self.history["final_proxy"] = measured

    def _finite_proxy(self) -> Any:
        # The step's proxy, or None where it has none or its weights are not finite.
        proxy = getattr(self.step, "proxy", None)
        if proxy is None or all(bool(torch.isfinite(p).all()) for p in proxy.parameters()):
            return proxy
        self.history["proxy_not_finite"] = True
        return None

    def build_posterior(
        self, density_estimator: Any = None, prior: Distribution | None = None
    ) -> Posterior:
        r"""The posterior of the last fit: the flow's, the proxy's, or their mixture's.

        ``density_estimator`` and ``prior`` are sbi's arguments: the last fit's flow and
        the estimator's prior are the only ones a jsbi posterior can have, so anything
        else is an error (``None`` or those two are accepted)."""
        if self.flow is None:
            raise RuntimeError("the estimator has not been fitted: call fit(theta, x) first")
        if density_estimator is not None and density_estimator is not self.flow:
            raise ValueError(
                "build_posterior(density_estimator=) must be the last fit's flow (or None): "
                "a jsbi posterior is built from what fit trained"
            )
        if prior is not None and prior is not self.prior:
            raise ValueError(
                "build_posterior(prior=) must be the estimator's prior (or None): the flow "
                "was trained under it; build a PosteriorEstimator with the other prior"
            )
        returns = self.method.returns
        measured = self.history.get("final_proxy")
        # (The mixture cannot be recalibrated: with recalibrate=True, auto returns the
        # proxy where it is ahead, else the flow, recalibrated.)
        choice = auto_choice(measured, not self._recalibrate) if returns == "auto" else returns
        proxy = self._finite_proxy()
        if proxy is None and getattr(self.step, "proxy", None) is not None:
            if returns in ("proxy", "mixture"):
                raise RuntimeError(
                    "the proxy's weights are not finite after training (a learning rate too "
                    f"large for it?): posterior={returns!r} cannot be built; fit again with a "
                    "smaller proxy_learning_rate, or posterior='flow'"
                )
            choice = "flow"  # never a NaN proxy, nor its evidence
        self.history["posterior"] = choice
        common = {"history": self.history, "typicality": self._typicality}
        if choice in ("proxy", "mixture"):
            return (MixturePosterior if choice == "mixture" else ProxyPosterior)(
                self.flow,
                proxy,
                self.prior,
                candidates_per_sample=candidates_per_sample(measured),
                **common,
            )
        # The flow's posterior keeps a likelihood proxy for the evidence.
        keep = proxy if proxy is not None and proxy.has_likelihood else None
        return Posterior(self.flow, self.prior, proxy=keep, **common)

    def train_summary(self) -> str:
        r"""A short text summary of the last fit (as sbi's ``show_train_summary``)."""
        h = self.history or {}
        if not h:
            return "not trained"
        status = {"the epoch cap": "hit the epoch cap", "an interrupt": "was interrupted"}
        status = status.get(h["stopped_by"], "converged" if h["converged"] else "stopped")
        best = h["best_validation_loss"]
        best = "none" if best is None else f"{best:.4g}"
        line = (
            f"Training {status} after {h['epochs_trained']} epochs (best {h['best_epoch']}, "
            f"validation -log q {best}; {h['num_train']}/{h['num_validation']} pairs"
            + (f", {h['num_dropped']} dropped" if h["num_dropped"] else "")
            + f"; {sum(h['epoch_time']):.1f} s)"
        )
        phase2 = PHASE2_WORDS.get(phase2_outcome(h), "")
        return line + (f"; {phase2}" if phase2 else "") + f"; returns the {h['posterior']}."
