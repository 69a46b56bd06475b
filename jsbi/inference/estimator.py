r"""The user-facing estimator: prior + flow + objective -> a trained :class:`Posterior`.

Example:
    >>> import torch, jsbi
    >>> from torch.distributions import Independent, Normal
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> theta = prior.sample((500,)); x = theta + 0.5 * torch.randn(500, 2)
    >>> est = jsbi.PosteriorEstimator(prior, flow="nsf", num_transforms=2)
    >>> posterior = est.fit(theta, x, max_epochs=5, show_progress_bar=False)
    >>> posterior.sample((10,), x=x[0]).shape
    torch.Size([10, 2])
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.inference.config import AdaptiveConfig, FlowConfig, TrainConfig
from jsbi.inference.ebm import (
    LikelihoodEnergy,
    MLPEnergy,
    PriorTimesRatioEnergy,
    ResidualEnergy,
)
from jsbi.inference.flows import (
    FLOWS,
    ConditionalFlow,
    build_conditional_flow,
)
from jsbi.inference.posterior import Posterior
from jsbi.inference.proxy_posterior import ProxyPosterior
from jsbi.inference.support import Support, prior_device, support_mode
from jsbi.inference.tau import TauSchedule, make_tau_schedule
from jsbi.inference.trainer import (
    AdaptiveStep,
    NPEStep,
    TrainingStep,
    check_training_data,
    split_indices,
    train,
)
from jsbi.seeding import seeded

__all__ = [
    "ADAPTIVE_NAMED",
    "OBJECTIVES",
    "PROXIES",
    "PosteriorEstimator",
    "build_proxy",
    "default_posterior",
    "estimator_support",
    "split_options",
]

#: The proxy families of METHOD.md section 4b (and the free ``mlp`` energy).
PROXIES = ("ratio", "likelihood", "residual", "mlp")

#: The symmetric objectives' options that :class:`PosteriorEstimator` takes by name (it
#: checks them against the objective and schedule); the other fields of
#: :class:`~jsbi.inference.config.AdaptiveConfig` go in its ``objective_kwargs``.
ADAPTIVE_NAMED = (
    "tau",
    "tau_schedule",
    "eps",
    "alpha",
    "dual_lr",
    "num_proxy_samples",
    "adaptive",
    "warmup_epochs",
    "proxy",
    "schedule",
    "gate",
    "posterior",
    "share_embedding",
)


#: The symmetric objectives' proxy options that are neither named by the estimator nor
#: AdaptiveConfig's: they go in ``objective_kwargs``, to the proxy's builder.
_PROXY_OPTIONS = ("proxy_hidden_features", "proxy_kwargs")

#: The flow's options by name (:func:`~jsbi.inference.flows.build_conditional_flow`);
#: zuko's own (``passes``, ...) pass through too.
_FLOW_OPTIONS = (
    "support",
    "bounded",
    "z_score_theta",
    "z_score_x",
    "hidden_features",
    "num_transforms",
    "num_bins",
    "passes",
)


def split_options(
    options: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    r"""Sorts keyword options for :class:`PosteriorEstimator` by what they configure.

    Returns:
        ``(named, objective_kwargs, other)``: the symmetric objectives' options taken by
        name (:data:`ADAPTIVE_NAMED`), the other :class:`~jsbi.inference.config.AdaptiveConfig`
        fields and the proxy's ``proxy_hidden_features`` and ``proxy_kwargs`` (for
        ``objective_kwargs``; so is a name close to one of those), and everything else (the
        flow's and the estimator's own options, for every objective).

    Example:
        >>> split_options({"proxy": "ratio", "gate_samples": 16, "passes": 2})
        ({'proxy': 'ratio'}, {'gate_samples': 16}, {'passes': 2})
        >>> split_options({"proxy_hidden_features": (128,), "gate_sample": 16})[1]
        {'proxy_hidden_features': (128,), 'gate_sample': 16}
    """
    fields = {f.name for f in dataclasses.fields(AdaptiveConfig)} - {"objective"}
    fields |= set(_PROXY_OPTIONS)
    flow_names = set(_FLOW_OPTIONS)
    named, objective_kwargs, other = {}, {}, {}
    for k, v in (options or {}).items():
        if k in ADAPTIVE_NAMED:
            named[k] = v
        elif k in fields or (
            # A typo of a symmetric objective's option (gate_sample) goes where its error
            # names the right one, not to the flow.
            k not in flow_names and difflib.get_close_matches(k, sorted(fields), n=1, cutoff=0.8)
        ):
            objective_kwargs[k] = v
        else:
            other[k] = v
    return named, objective_kwargs, other


def _npe(flow: ConditionalFlow, *, learning_rate: float, clip_max_norm: float | None, **_):
    return NPEStep(flow, learning_rate=learning_rate, clip_max_norm=clip_max_norm)


def build_proxy(
    flow: ConditionalFlow,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    *,
    proxy: str = "ratio",
    share_embedding: bool = False,
    hidden_features: tuple[int, ...] = (64, 64),
    proxy_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    r"""Builds the conditional energy :math:`E_\psi(\theta, x)`, standardised on the data.

    Arguments:
        flow: The flow, whose x-embedding the proxy may share.
        prior: The prior (the ``"ratio"`` proxy's support and base density).
        theta: Training parameters, shape ``(n, d)``.
        x: Training data, shape ``(n, m)``.
        proxy: ``"ratio"``: :math:`-\log \pi(\theta) - g_\psi(\theta, x)` (prior
            support built in); ``"likelihood"``: :math:`-\log \pi(\theta) - \log
            l_\psi(x \mid \theta)` with a conditional flow on ``x``;
            ``"residual"``: :math:`-\log q_{\bar\phi} - g_\psi`, a correction of a
            frozen copy of the flow; ``"mlp"``: a free MLP energy (see
            :mod:`jsbi.inference.ebm`).
        share_embedding: Whether the proxy reads ``x`` through the flow's embedding net
            (trained by the flow's loss only) instead of its own z-scored ``x``.
        hidden_features: The energy MLP's hidden sizes (not the likelihood flow's).
        proxy_kwargs: Further arguments of the proxy's class (e.g. ``contrastive="nrec"``
            for the ratio proxy, ``num_transforms`` for the likelihood proxy, or its
            candidate likelihoods ``alternatives=[{"flow": "maf", "num_transforms": 3}]``,
            of which ``npe-first`` keeps the best fit).

    Returns:
        The energy module.
    """
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {list(PROXIES)}, got {proxy!r}")
    d, m = theta.shape[1], x.shape[1]
    if proxy == "likelihood":
        if share_embedding:
            raise ValueError(
                "share_embedding applies to the 'ratio' and 'mlp' proxies: the likelihood "
                "proxy models x itself"
            )
        energy = LikelihoodEnergy(prior, m, **dict(proxy_kwargs or {}))
        return energy.set_standardization(theta, x).to(theta.device)
    kwargs: dict[str, Any] = {"hidden_features": tuple(hidden_features), **(proxy_kwargs or {})}
    if share_embedding:
        kwargs["embedding"] = flow.embedding_net
    if proxy == "ratio":
        energy = PriorTimesRatioEnergy(prior, m, **kwargs)
    elif proxy == "residual":
        energy = ResidualEnergy(flow, **kwargs)
    else:
        energy = MLPEnergy(d, m, confinement=1e-2, **kwargs)
    return energy.set_standardization(theta, x).to(theta.device)


def _adaptive(
    objective: str, default_proxy: str = "likelihood", default_schedule: str = "npe-first"
) -> Callable[..., TrainingStep]:
    def factory(
        flow: ConditionalFlow,
        *,
        prior: Distribution,
        theta: Tensor,
        x: Tensor,
        learning_rate: float,
        clip_max_norm: float | None,
        proxy: str | None = None,
        schedule: str | None = None,
        share_embedding: bool = False,
        proxy_hidden_features: tuple[int, ...] = (64, 64),
        proxy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TrainingStep:
        proxy = default_proxy if proxy is None else proxy
        kwargs["schedule"] = default_schedule if schedule is None else schedule
        if objective == "jeffreys" and kwargs["schedule"] == "npe-first":
            # One reparameterised sample per x with the path (sticking-the-landing)
            # gradient: unbiased, and half the cost of K = 8 per phase-2 step
            # (benchmarks/phase_cost.py); K = 1 was as accurate as K = 4 in
            # benchmarks/results/phase2_two_moons.txt.
            kwargs.setdefault("num_proxy_samples", 1)
            kwargs.setdefault("path_gradient", True)
            # The gate measured on every 5th phase-2 epoch: the same C2ST on the three
            # development tasks tried, at 56-87 % of the time
            # (benchmarks/results/gate_every_*.txt).
            kwargs.setdefault("gate_every", 5)
            # 64 importance samples per validation pair for the gate (was 256): the same
            # training on gaussian_linear_uniform, two_moons and gaussian_mixture at
            # 1,000 (benchmarks/results/cost_*.txt), one measurement 0.30-0.39x the time
            # (benchmarks/results/phase_cost_gate_samples.txt).
            kwargs.setdefault("gate_samples", 64)
        energy = build_proxy(
            flow,
            prior,
            theta,
            x,
            proxy=proxy,
            share_embedding=share_embedding,
            hidden_features=proxy_hidden_features,
            proxy_kwargs=proxy_kwargs,
        )
        return AdaptiveStep(
            flow,
            energy,
            objective=objective,
            prior=prior,
            learning_rate=learning_rate,
            clip_max_norm=clip_max_norm,
            **kwargs,
        )

    return factory


#: Objective name -> factory ``(flow, prior=..., theta=..., x=..., learning_rate=...,
#: clip_max_norm=..., **objective_kwargs) -> TrainingStep``. New objectives register here.
OBJECTIVES: dict[str, Callable[..., TrainingStep]] = {
    "npe": _npe,
    "jeffreys": _adaptive("jeffreys"),
    "srfe": _adaptive("srfe"),
    # The reverse-only ablation keeps METHOD.md section 4's reconstruction.
    "reverse": _adaptive("reverse", "ratio", "joint"),
    "distill": _adaptive("distill"),
}


class PosteriorEstimator:
    r"""Trains an amortised posterior :math:`q(\theta | x)` from simulations.

    Arguments:
        prior: The prior, a torch distribution with event shape ``(d,)``.
        flow: A flow name (``"nsf"``, ``"maf"``, ``"ncsf"``, ``"realnvp"``, ``"naf"``)
            or a zuko flow class.
        objective: ``"npe"`` (forward KL), ``"jeffreys"`` (forward plus reverse KL to an
            energy-based proxy), ``"srfe"`` (forward KL plus the Surprisal-Renyi free
            energy), ``"distill"`` (forward KL plus the forward KL from the proxy, by
            importance sampling) or ``"reverse"`` (reverse KL only, an ablation).
        embedding_net: A module mapping ``x`` (z-scored) to features, trained jointly, e.g.
            :class:`~jsbi.inference.flows.MLPEmbedding` or
            :class:`~jsbi.inference.flows.SetEmbedding`.
        bounded: The older spelling of ``support``: ``True`` is ``"transform"``,
            ``False`` is ``"truncate"``.
        device: The training device.
        seed: Seeds the initialisation, the validation split and the shuffling.
        tau: SRFE's :math:`\tau \in (0, 1)` (default 0.5); with
            ``tau_schedule="anneal"`` the value it anneals to from 0.9.
        tau_schedule: ``"constant"`` (default), ``"anneal"`` (0.9 down to ``tau``),
            ``"reverse"`` (0.1 up to 0.9), ``"step"``, or a
            :class:`~jsbi.inference.tau.TauSchedule`.
        eps: The constraint's tolerance :math:`\epsilon` (``C - F <= eps + u``).
        alpha: The resilience cost :math:`\alpha` of the slack (``u = lambda / alpha``).
        dual_lr: The dual ascent step on :math:`\lambda`.
        num_proxy_samples: :math:`K`, flow samples per observation for the reverse term
            (default 1, with path gradients, for ``jeffreys`` with ``npe-first``; 8
            otherwise).
        adaptive: ``False`` for the fixed-weight penalty ablation (:math:`\lambda` fixed,
            ``u = 0``).
        warmup_epochs: Epochs of forward-KL flow and contrastive proxy training before
            the reverse term switches on.
        proxy: ``"likelihood"`` (prior times a learned likelihood flow; the default),
            ``"ratio"`` (prior times a learned ratio; ``reverse``'s default),
            ``"residual"`` (the flow times a learned correction) or ``"mlp"``; see
            :func:`build_proxy`.
        schedule: ``"npe-first"`` (``npe`` to its early stop, then the symmetric objective
            from its best state; the best of both phases is returned; the default) or
            ``"joint"`` (warm-up, then the primal-dual objective; ``reverse``'s default).
            See :class:`~jsbi.inference.trainer.AdaptiveStep`.
        gate: Whether the reverse term is on only while the proxy's validation NLL beats
            the flow's (default: on for ``npe-first``).
        posterior: What :meth:`fit` returns: ``"flow"`` (the flow, a
            :class:`~jsbi.inference.Posterior`), ``"proxy"`` (the proxy, a
            :class:`~jsbi.inference.proxy_posterior.ProxyPosterior` sampled by importance
            resampling from the flow) or ``"auto"`` (the proxy where, measured after
            training on the validation pairs, its NLL is lower than the flow's by more than
            one standard error and its importance weights keep a mean ESS fraction of at
            least 0.02, with ``1 / ESS`` proposal draws per sample, 10 to 50;
            ``history["posterior"]`` says which, ``history["final_proxy"]`` why).
            Default: ``"auto"`` for a symmetric objective with the likelihood proxy (it
            can be saved and reloaded), else ``"flow"``.
        share_embedding: Whether the proxy reads ``x`` through the flow's embedding net.
        objective_kwargs: Further :class:`~jsbi.inference.trainer.AdaptiveStep`
            arguments (e.g. ``reverse_batch_size``, ``lambda_init``, ``tau_epochs``).
        support: How the flow respects a bounded prior: ``"truncate"`` (sbi's way, the
            default: it lives on z-scored ``theta``; the posterior rejects samples outside
            the support and renormalises ``log_prob`` by the accepted mass) or
            ``"transform"`` (it lives in the prior's unconstrained space, so no mass
            outside the support; the default, and the only choice on a bounded prior, for
            ``schedule="joint"``). See :mod:`jsbi.inference.support`.
        flow_kwargs: ``hidden_features``, ``num_transforms``, ``num_bins``, ``z_score_x``,
            ``z_score_theta`` and other zuko arguments (see
            :func:`~jsbi.inference.flows.build_conditional_flow`).
    """

    def __init__(
        self,
        prior: Distribution,
        flow: str | type = "nsf",
        objective: str = "npe",
        embedding_net: nn.Module | None = None,
        bounded: bool | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        support: str | None = None,
        tau: float | None = None,
        tau_schedule: str | TauSchedule | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        dual_lr: float | None = None,
        num_proxy_samples: int | None = None,
        adaptive: bool | None = None,
        warmup_epochs: int | None = None,
        proxy: str | None = None,
        schedule: str | None = None,
        gate: bool | None = None,
        posterior: str | None = None,
        share_embedding: bool | None = None,
        objective_kwargs: dict[str, Any] | None = None,
        **flow_kwargs: Any,
    ) -> None:
        if not isinstance(prior, Distribution):
            raise TypeError(
                f"prior must be a torch.distributions.Distribution, got {type(prior).__name__}"
            )
        if len(prior.event_shape) != 1:
            raise ValueError(f"prior must have event shape (d,), got {tuple(prior.event_shape)}")
        key = str(objective).lower()
        if key not in OBJECTIVES:
            raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
        if isinstance(flow, str) and flow.lower() not in FLOWS:
            raise ValueError(
                f"flow must be one of {sorted(FLOWS)} or a zuko flow class, got {flow!r}"
            )
        self.prior = prior
        self.flow_name = flow
        self.objective = key
        named = {
            "eps": eps,
            "alpha": alpha,
            "dual_lr": dual_lr,
            "num_proxy_samples": num_proxy_samples,
            "adaptive": adaptive,
            "warmup_epochs": warmup_epochs,
            "proxy": proxy,
            "schedule": schedule,
            "gate": gate,
            "share_embedding": share_embedding,
        }
        for name in ("adaptive", "gate", "share_embedding"):
            if named[name] is not None and not isinstance(named[name], bool):
                raise ValueError(f"{name} must be True, False or None, got {named[name]!r}")
        if posterior not in (None, "flow", "proxy", "auto"):
            raise ValueError(f"posterior must be 'flow', 'proxy' or 'auto', got {posterior!r}")
        if posterior not in (None, "flow") and key == "npe":
            raise ValueError(f"posterior={posterior!r} needs a proxy: not with objective='npe'")
        given_proxy = proxy or dict(objective_kwargs or {}).get("proxy")
        self.posterior = posterior or default_posterior(key, given_proxy)
        if proxy is not None and proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {list(PROXIES)}, got {proxy!r}")
        if schedule is not None and schedule not in ("joint", "npe-first"):
            raise ValueError(f"schedule must be 'joint' or 'npe-first', got {schedule!r}")
        if tau is not None or tau_schedule is not None:
            if key != "srfe":
                raise ValueError(f"tau and tau_schedule apply to objective='srfe', not {key!r}")
            named["tau"] = make_tau_schedule(
                tau_schedule or "constant",
                tau=0.5 if tau is None else tau,
                tau_end=tau,
            )
        named = {k: v for k, v in named.items() if v is not None}
        joint_only = sorted(
            k for k in ("eps", "alpha", "dual_lr", "adaptive", "warmup_epochs") if k in named
        )
        default_schedule = "joint" if key == "reverse" else "npe-first"
        if key != "npe" and joint_only and named.get("schedule", default_schedule) != "joint":
            raise ValueError(
                f"{', '.join(joint_only)} apply to schedule='joint' (the dual variable and the "
                f"warm-up), not to objective={key!r}'s schedule 'npe-first'; pass "
                "schedule='joint' to use them"
            )
        if key == "npe" and named:
            raise ValueError(
                f"{sorted(named)} apply to the adaptive objectives ('jeffreys', 'srfe', "
                "'reverse'), not to objective='npe'"
            )
        self.objective_kwargs = {**named, **dict(objective_kwargs or {})}
        self.embedding_net = embedding_net
        self.support = estimator_support(
            key,
            self.objective_kwargs.get("schedule"),
            support,
            bounded,
            bounded_prior=Support.from_prior(prior).is_bounded,
        )
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}"
            ) from err
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}, but CUDA is not available here")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        _check_flow_kwargs(flow, flow_kwargs)
        # The flow's options, checked in one place (FlowConfig); names it does not know
        # and _check_flow_kwargs let through go to zuko as given.
        fields = {f.name for f in dataclasses.fields(FlowConfig)} - {"flow", "support"}
        self.flow_config = FlowConfig(
            flow=flow,
            support=self.support,
            **{k: v for k, v in flow_kwargs.items() if k in fields},
        )
        self.flow_kwargs = flow_kwargs
        if key != "npe":
            self._check_objective_options()
        self.flow: ConditionalFlow | None = None
        self.history: dict[str, Any] | None = None
        self.step: TrainingStep | None = None
        self._theta: Tensor | None = None
        self._x: Tensor | None = None

    def _check_objective_options(self) -> None:
        # The adaptive step validates its options when it is built, which is at fit(),
        # after simulating. Build it once now on a few prior draws and a stand-in x (one
        # column), so a bad option (num_proxy_samples=0, gate_samples=1, ...) is an error
        # at construction. A user's embedding_net cannot be probed without the real x.
        with seeded(0, [prior_device(self.prior)]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theta = self.prior.sample((8,)).float()
            x = torch.randn(8, 1, device=theta.device)
            flow = build_conditional_flow(
                theta, x, self.prior, flow=self.flow_name, support=self.support, **self.flow_kwargs
            )
            kwargs = dict(self.objective_kwargs)
            if self.embedding_net is not None:  # the stand-in flow has none to share
                kwargs.pop("share_embedding", None)
            try:
                OBJECTIVES[self.objective](
                    flow,
                    prior=self.prior,
                    theta=theta,
                    x=x,
                    learning_rate=5e-4,
                    clip_max_norm=5.0,
                    **kwargs,
                )
            except TypeError as err:
                raise ValueError(
                    f"invalid option for objective={self.objective!r}: {err}"
                ) from err

    @property
    def dim_theta(self) -> int:
        return int(self.prior.event_shape[0])

    def append_simulations(
        self, theta: Tensor, x: Tensor, proposal: Distribution | None = None
    ) -> PosteriorEstimator:
        r"""Adds training pairs (sbi style); :meth:`train` fits on all of them.

        Arguments:
            theta: Parameters, shape ``(n, d)``.
            x: Simulations, shape ``(n, m)``.
            proposal: What ``theta`` was drawn from: ``None`` or the prior, or a
                :class:`~jsbi.inference.sequential.TruncatedProposal` (TSNPE); see
                :meth:`fit`.
        """
        if proposal is not None and proposal is not self.prior:
            self._proposal = proposal
        theta = torch.as_tensor(theta)
        x = torch.as_tensor(x)
        if self._theta is None:
            self._theta, self._x = theta, x
        else:
            self._theta = torch.cat([self._theta, theta.to(self._theta)])
            self._x = torch.cat([self._x, x.to(self._x)])
        return self

    def train(self, **training_kwargs: Any) -> Posterior:
        r"""Fits on the appended simulations; see :meth:`fit`.

        sbi's spellings are accepted: ``max_num_epochs`` (``max_epochs``) and
        ``training_batch_size`` (``batch_size``); sbi options jsbi does not have are an
        error that says so.
        """
        if self._theta is None:
            raise ValueError("no simulations: call append_simulations(theta, x) first")
        for theirs, ours in _SBI_TRAIN_NAMES.items():
            if theirs in training_kwargs:
                if ours in training_kwargs:
                    raise TypeError(f"pass {ours}= or sbi's {theirs}=, not both")
                training_kwargs[ours] = training_kwargs.pop(theirs)
        unsupported = sorted(set(training_kwargs) & _SBI_TRAIN_UNSUPPORTED)
        if unsupported:
            raise TypeError(
                f"sbi's {', '.join(unsupported)} has no jsbi equivalent: every train() builds "
                "a fresh flow on all appended simulations (checkpoint= resumes a run)"
            )
        training_kwargs.setdefault("proposal", getattr(self, "_proposal", None))
        return self.fit(self._theta, self._x, **training_kwargs)

    def fit(
        self,
        theta: Tensor,
        x: Tensor,
        *,
        learning_rate: float = 5e-4,
        batch_size: int = 200,
        validation_fraction: float = 0.1,
        stop_after_epochs: int = 20,
        max_epochs: int = 2**31 - 1,
        clip_max_norm: float | None = 5.0,
        show_progress_bar: bool | None = None,
        show_train_summary: bool = False,
        callback: Callable[[int, dict[str, float]], bool | None] | None = None,
        checkpoint: str | os.PathLike | None = None,
        proposal: Distribution | None = None,
    ) -> Posterior:
        r"""Builds a fresh flow and trains it on ``(theta, x)``.

        Arguments:
            theta: Parameters, shape ``(n, d)``; rows must lie in the prior's support.
            x: Simulations, shape ``(n, m)``; non-finite rows are dropped with a warning.
            learning_rate: Adam's learning rate.
            batch_size: Training batch size.
            validation_fraction: Held-out fraction for early stopping.
            stop_after_epochs: Early-stopping patience in epochs.
            max_epochs: Upper bound on epochs.
            clip_max_norm: Gradient norm clip (``None``: off).
            show_progress_bar: tqdm bar (``None``: only on a TTY).
            show_train_summary: Print epochs and best validation loss at the end.
            callback: ``callback(epoch, logs)``; returning ``True`` stops.
            checkpoint: A file saving the run after every epoch; rerunning ``fit`` with
                the same data, seed and file resumes where it stopped.
            proposal: Where the later rounds' parameters were drawn from: ``None`` or the
                prior (one round), or a
                :class:`~jsbi.inference.sequential.TruncatedProposal` (TSNPE: the
                pooled rounds train with the same loss, which stays unbiased). Any other
                proposal would bias the NPE loss, and is an error.

        Returns:
            The trained :class:`Posterior` (its ``history`` holds the run).
        """
        # Every training option checked at once, before anything is built.
        TrainConfig(
            learning_rate=learning_rate,
            batch_size=batch_size,
            validation_fraction=validation_fraction,
            stop_after_epochs=stop_after_epochs,
            max_epochs=max_epochs,
            clip_max_norm=clip_max_norm,
        )
        if proposal is not None and proposal is not self.prior:
            from jsbi.inference.sequential import TruncatedProposal

            if not isinstance(proposal, TruncatedProposal):
                raise ValueError(
                    "proposal must be None, the prior, or a jsbi.inference.TruncatedProposal "
                    f"(got {type(proposal).__name__}): NPE's loss on pairs from any other "
                    "proposal fits the proposal's posterior, not the prior's"
                )
            if proposal.prior is not self.prior:
                raise ValueError("proposal must truncate this estimator's prior")
        theta, x, dropped = check_training_data(theta, x, self.dim_theta)
        inside = Support.from_prior(self.prior, self.dim_theta).contains(
            theta.to(prior_device(self.prior))
        )
        outside = int((~inside.cpu()).sum())
        if outside and self.support == "transform":
            raise ValueError(
                f"{outside} of {len(theta)} rows of theta lie outside the prior's support; "
                "a flow with support='transform' gives them zero density (drop them or pass "
                "support='truncate')"
            )
        if outside:
            warnings.warn(
                f"{outside} of {len(theta)} rows of theta lie outside the prior's support: "
                "the flow fits them, the truncated posterior gives them zero density",
                stacklevel=2,
            )
        with (
            _interrupt_says("building the flow, before training started"),
            seeded(self.seed, [self.device]),
        ):
            self.flow = build_conditional_flow(
                theta.to(self.device),
                x.to(self.device),
                self.prior,
                flow=self.flow_name,
                embedding_net=self.embedding_net,
                support=self.support,
                **self.flow_kwargs,
            )
            self.step = OBJECTIVES[self.objective](
                self.flow,
                prior=self.prior,
                theta=theta.to(self.device),
                x=x.to(self.device),
                learning_rate=learning_rate,
                clip_max_norm=clip_max_norm,
                **self.objective_kwargs,
            )
        self.history = train(
            self.step,
            theta,
            x,
            batch_size=batch_size,
            validation_fraction=validation_fraction,
            stop_after_epochs=stop_after_epochs,
            max_epochs=max_epochs,
            seed=self.seed,
            device=self.device,
            show_progress_bar=show_progress_bar,
            callback=callback,
            num_dropped=dropped,
            checkpoint=checkpoint,
        )
        self.history["objective"] = self.objective
        if proposal is not None and proposal is not self.prior:
            self.history["proposal"] = repr(proposal)
        val, _ = split_indices(len(theta), validation_fraction, self.seed)
        val = val.to(theta.device)
        proxy = getattr(self.step, "proxy", None)
        if getattr(proxy, "undecided", False):
            # A run that never reached npe-first's switch: its candidate likelihoods are
            # chosen now, on the same validation pairs.
            proxy.eval()
            pairs = (theta[val].to(self.device), x[val].to(self.device))
            self.history["proxy_candidates"] = proxy.select(*pairs)
        if self.posterior == "auto":
            # The gate's measurement on the run's own validation pairs, after training,
            # with 256 importance samples per pair whatever the gate used: fewer bias
            # log Z low, so the proxy's NLL too, and this choice is final.
            measured = self.step.measure_proxy(
                theta[val].to(self.device), x[val].to(self.device), num_samples=256
            )
            self.history["final_proxy"] = measured
        if show_train_summary:
            print(self.train_summary())
        return self.build_posterior()

    def build_posterior(self) -> Posterior:
        r"""Returns the :class:`Posterior` of the last fit (the flow's, or the proxy's)."""
        if self.flow is None:
            raise RuntimeError("the estimator has not been fitted: call fit(theta, x) first")
        use_proxy = self.posterior == "proxy" or (
            self.posterior == "auto" and _proxy_wins(self.history.get("final_proxy"))
        )
        self.history["posterior"] = "proxy" if use_proxy else "flow"
        if use_proxy:
            return ProxyPosterior(
                self.flow,
                self.step.proxy,
                self.prior,
                candidates_per_sample=_candidates_per_sample(self.history.get("final_proxy")),
                history=self.history,
            )
        return Posterior(self.flow, self.prior, history=self.history)

    def train_summary(self) -> str:
        r"""A short text summary of the last fit (as sbi's ``show_train_summary``)."""
        h = self.history or {}
        if not h:
            return "not trained"
        status = (
            "interrupted"
            if h["interrupted"]
            else "converged"
            if h["converged"]
            else "stopped (max_epochs or callback)"
        )
        best = h["best_validation_loss"]
        return (
            f"Training {status} after {h['epochs_trained']} epochs "
            f"({h['num_train']} train / {h['num_validation']} validation pairs, "
            f"{h['num_dropped']} dropped).\n"
            f"Best validation -log q: {best if best is None else f'{best:.4f}'} "
            f"at epoch {h['best_epoch']}; time {sum(h['epoch_time']):.1f} s."
        )


@contextlib.contextmanager
def _interrupt_says(where: str) -> Iterator[None]:
    # Ctrl-C during set-up names where it happened and that nothing was trained.
    try:
        yield
    except KeyboardInterrupt as err:
        if err.args:
            raise
        raise KeyboardInterrupt(f"fit interrupted while {where}: nothing to return") from None


def _check_flow_kwargs(flow: str | type, flow_kwargs: dict[str, Any]) -> None:
    # A typo (num_transform) is an error now, naming the closest valid option, rather than
    # a TypeError from inside zuko at fit(). Names far from every known one pass through
    # to zuko, whose flows take more options than can be listed here.
    import inspect

    import zuko
    from zuko.flows.autoregressive import MaskedAutoregressiveTransform

    cls = FLOWS.get(flow.lower(), zuko.flows.NSF) if isinstance(flow, str) else flow
    known = set(inspect.signature(build_conditional_flow).parameters)
    for c in (*cls.__mro__, MaskedAutoregressiveTransform, zuko.nn.MLP):
        if "__init__" in vars(c):
            known |= set(inspect.signature(c.__init__).parameters)
    known -= {"self", "kwargs", "theta", "x", "prior", "features", "context", "transforms"}
    # A typo of one of the estimator's own keywords (proxi) lands here too.
    candidates = sorted(known | set(inspect.signature(PosteriorEstimator).parameters))
    for key in flow_kwargs:
        if key in known:
            continue
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.8)
        if close:
            raise ValueError(
                f"unknown option {key!r} for PosteriorEstimator: did you mean {close[0]!r}?"
            )


#: ``posterior="auto"``: the proxy is returned where its validation NLL is lower than the
#: flow's by more than this many standard errors, ...
AUTO_MARGIN_SE = 1.0
#: ... and its importance weights keep at least this mean ESS fraction (then
#: :func:`_candidates_per_sample` draws at most 1 / AUTO_MIN_ESS candidates per sample).
AUTO_MIN_ESS = 0.02


def _proxy_wins(measured: dict[str, float] | None) -> bool:
    # The proxy is returned only where it is the better model on the validation pairs
    # (its NLL lower by more than AUTO_MARGIN_SE standard errors) and importance
    # resampling from the flow can sample it (mean ESS fraction >= AUTO_MIN_ESS).
    # benchmarks/proxy_posterior.py: with two standard errors and a 0.1 ESS floor the
    # flow was kept on two_moons at 1,000 and slcp at 10,000, where the proxy's C2ST was
    # far better.
    if not measured:
        return False
    gap, se = measured["proxy_minus_flow"], measured["proxy_minus_flow_se"]
    return gap + AUTO_MARGIN_SE * se < 0 and measured["proxy_ess"] >= AUTO_MIN_ESS


def _candidates_per_sample(measured: dict[str, float] | None) -> int:
    # Enough proposal draws per returned sample that the resample's ESS is about the
    # number of samples asked (10 at least, 1 / AUTO_MIN_ESS at most).
    ess = (measured or {}).get("proxy_ess", math.nan)
    if not (isinstance(ess, float) and math.isfinite(ess) and ess > 0):
        return 10
    return int(min(round(1 / AUTO_MIN_ESS), max(10, math.ceil(1 / ess))))


def default_posterior(objective: str, proxy: str | None = None) -> str:
    r"""What :class:`PosteriorEstimator` returns by default: ``"auto"`` (the better model
    on the run's own validation pairs, flow or proxy) for a symmetric objective with the
    likelihood proxy (``proxy=None``: the objective's default; a saved posterior can
    hold that proxy), else ``"flow"``.

    Example:
        >>> default_posterior("jeffreys"), default_posterior("npe")
        ('auto', 'flow')
        >>> default_posterior("jeffreys", "ratio"), default_posterior("reverse")
        ('flow', 'flow')
    """
    default_proxy = "ratio" if objective == "reverse" else "likelihood"
    likelihood = (proxy or default_proxy) == "likelihood"
    return "auto" if objective != "npe" and likelihood else "flow"


def estimator_support(
    objective: str,
    schedule: str | None = None,
    support: str | None = None,
    bounded: bool | None = None,
    *,
    bounded_prior: bool = True,
) -> str:
    r"""The support mode :class:`PosteriorEstimator` uses for these options.

    :data:`~jsbi.inference.support.DEFAULT_SUPPORT` unless ``support`` / ``bounded`` say
    otherwise, except that the joint schedule (``reverse``'s default, or
    ``schedule="joint"``) keeps ``"transform"``: its importance-sampled normaliser and
    constraint assume a flow with no mass outside the prior, so ``"truncate"`` with it on
    a bounded prior is an error.
    """
    mode = support_mode(support, bounded)
    default_schedule = "joint" if objective == "reverse" else "npe-first"
    if objective == "npe" or (schedule or default_schedule) != "joint":
        return mode
    if support is None and bounded is None:
        return "transform"
    if mode == "truncate" and bounded_prior:
        raise ValueError(
            "schedule='joint' needs support='transform' on a bounded prior (its "
            "importance-sampled normaliser assumes no flow mass outside the support); "
            "use schedule='npe-first' for support='truncate'"
        )
    return mode


#: sbi's ``train()`` argument names -> jsbi's.
_SBI_TRAIN_NAMES = {"max_num_epochs": "max_epochs", "training_batch_size": "batch_size"}
_SBI_TRAIN_UNSUPPORTED = {
    "resume_training",
    "force_first_round_loss",
    "discard_prior_samples",
    "retrain_from_scratch",
    "dataloader_kwargs",
    "exclude_invalid_x",
    "calibration_kernel",
}
