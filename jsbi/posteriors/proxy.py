r"""The proxy as the posterior, sampled by MCMC proposed by the flow.

Where the energy-based proxy :math:`r_\psi` (e.g. the likelihood proxy :math:`\pi \,
l_\psi`) is the better model of the posterior, a :class:`ProxyPosterior` answers with it:
samples by MCMC on its energy, started from and proposed by the flow
(:func:`~jsbi.posteriors.mcmc.sample_proxy`, ``sampler="mcmc"``, the default), densities
:math:`-E_\psi(\theta, x) - \log \hat Z_\psi(x)` with :math:`\log \hat Z` by defensive
importance sampling (cached per ``x``). The flow stays the fast amortised proposal; the
proxy supplies the accuracy (docs/method.md). Every MCMC draw records its
:class:`~jsbi.posteriors.mcmc.MixingInfo` in :attr:`last_mixing`, and warns when the chains
did not mix.

``sampler="importance"`` keeps importance resampling from the defensive mixture of the
flow and the prior (:func:`jsbi.proxies.importance.importance_resample`); every draw then
records the weights' effective sample size in :attr:`last_ess`. Where the ESS of
``candidates_per_sample`` draws per sample is short of ``ess_per_sample`` times the number
of samples asked, more candidates are drawn, up to ``max_candidates_per_sample``. The
resample draws with replacement, so even at an ESS equal to the samples asked about a
third of them repeat another. Repeats are not independent draws, and a classifier
two-sample test (C2ST) recognises them. On exact reference samples at an ESS equal to
the samples asked, repeats alone raise C2ST the more the more parameters there are
(``docs/method.md``, "Defaults and why"). ``ess_per_sample`` above 1 makes them rarer, at
more proposal draws; the MCMC sampler (the default) has none.

Example:
    >>> post = estimator.fit(theta, x)            # objective="jeffreys", posterior="proxy"
    ... # doctest: +SKIP
    >>> post.sample((1000,), x=x_o); post.last_mixing              # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.flows.conditional import ConditionalFlow
from jsbi.flows.support import AcceptedMass
from jsbi.posteriors.mcmc import MixingInfo, check_mixing, sample_proxy
from jsbi.posteriors.posterior import Posterior, sample_shape_tuple
from jsbi.progress import user_stacklevel
from jsbi.proxies.base import PriorLogDensity
from jsbi.proxies.importance import importance_resample, neg_energy_inside

__all__ = ["ProxyPosterior"]


class ProxyPosterior(Posterior):
    r"""A posterior that is the proxy :math:`r_\psi(\theta \mid x)`, with the flow as proposal.

    Arguments:
        flow: The trained flow (the proposal).
        proxy: The energy :math:`E_\psi`; saving needs one with a ``config``
            (:class:`~jsbi.proxies.likelihood.LikelihoodEnergy`).
        prior: The prior (the defensive component and the support).
        candidates_per_sample: Proposal draws per returned sample.
        max_candidates_per_sample: The most draws per returned sample at an ``x`` whose
            ESS is short of the samples asked (``candidates_per_sample``: no extra draws).
        num_normalizer_samples: Importance samples for :math:`\log \hat Z_\psi(x)`.
        ess_per_sample: The ESS the extra draws aim at, as a multiple of the samples asked,
            >= 1 (more: fewer repeated samples).
        min_ess_fraction: Warn when the ESS falls below this fraction of the samples asked.
        sampler: ``"mcmc"`` (exact in the limit of steps, no repeated samples) or
            ``"importance"`` (importance resampling).
        mcmc_steps: Steps per chain (each one independence and ``mcmc_mala`` MALA steps).
        mcmc_mala: MALA steps per independence step.
        mcmc_max_steps: Steps per chain at most: where the population still moves after
            ``mcmc_steps`` (:func:`~jsbi.posteriors.mcmc.check_mixing`'s drift), the
            chains go on in rounds of ``mcmc_steps`` up to this many (``None``: no
            rounds, ``mcmc_steps`` at each draw). Not the default: on the development
            set, chains run closer to the proxy scored a worse C2ST (docs/method.md).
        kwargs: See :class:`~jsbi.posteriors.posterior.Posterior`.
    """

    def __init__(
        self,
        flow: ConditionalFlow,
        proxy: nn.Module,
        prior: Distribution,
        *,
        candidates_per_sample: int = 10,
        max_candidates_per_sample: int = 100,
        num_normalizer_samples: int = 4096,
        ess_per_sample: float = 1.0,
        min_ess_fraction: float = 0.1,
        sampler: str = "mcmc",
        mcmc_steps: int = 10,
        mcmc_mala: int = 1,
        mcmc_max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if int(mcmc_steps) < 1 or int(mcmc_mala) < 0:
            raise ValueError(
                f"mcmc_steps must be >= 1 and mcmc_mala >= 0, got {mcmc_steps}, {mcmc_mala}"
            )
        if mcmc_max_steps is not None and int(mcmc_max_steps) < int(mcmc_steps):
            raise ValueError(
                f"mcmc_max_steps must be >= mcmc_steps ({mcmc_steps}), got {mcmc_max_steps}"
            )
        if prior is None:
            raise ValueError("a ProxyPosterior needs the prior (the proposal's defensive part)")
        if int(candidates_per_sample) < 1 or int(num_normalizer_samples) < 2:
            raise ValueError(
                "candidates_per_sample must be >= 1 and num_normalizer_samples >= 2, got "
                f"{candidates_per_sample}, {num_normalizer_samples}"
            )
        if int(max_candidates_per_sample) < int(candidates_per_sample):
            raise ValueError(
                "max_candidates_per_sample must be >= candidates_per_sample "
                f"({candidates_per_sample}), got {max_candidates_per_sample}"
            )
        super().__init__(
            flow, prior, proxy=proxy, num_normalizer_samples=num_normalizer_samples, **kwargs
        )
        self.candidates_per_sample = int(candidates_per_sample)
        self.max_candidates_per_sample = int(max_candidates_per_sample)
        self.ess_per_sample = ess_per_sample  # checked by its setter
        self.min_ess_fraction = float(min_ess_fraction)
        self.sampler, self.mcmc_steps, self.mcmc_mala = sampler, int(mcmc_steps), int(mcmc_mala)
        self.mcmc_max_steps = None if mcmc_max_steps is None else int(mcmc_max_steps)
        self.last_ess: float | None = None
        self.last_mixing: MixingInfo | None = None
        self._log_prior = PriorLogDensity(prior)  # the support of log_prob

    @property
    def ess_per_sample(self) -> float:
        r"""The ESS the extra draws aim at, as a multiple of the samples asked; setting it
        checks it (finite, >= 1)."""
        return self._ess_per_sample

    @ess_per_sample.setter
    def ess_per_sample(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value >= 1):
            raise ValueError(f"ess_per_sample must be finite and >= 1, got {value}")
        self._ess_per_sample = value

    def __repr__(self) -> str:
        flow = self.flow.config.get("flow")
        return f"ProxyPosterior(proxy={type(self.proxy).__name__}, flow={flow})"

    def _outside(self, x: Tensor) -> Tensor:
        # The rows of x outside the proxy's domain (where it ignores theta and would
        # answer with the prior), with a warning: the flow answers there.
        in_domain = getattr(self.proxy, "in_domain", None)  # any energy module serves
        if in_domain is None:
            return torch.zeros(len(x), dtype=torch.bool, device=x.device)
        outside = ~in_domain(x)
        if bool(outside.any()):
            bound = getattr(self.proxy, "domain_bound", None)
            warnings.warn(
                f"{int(outside.sum())} of {len(x)} observation(s) lie outside the likelihood "
                f"proxy's domain (a standardised coordinate beyond its splines' bound "
                f"{bound}): there it no longer depends on the parameters and would return "
                "the prior, so the flow answers for them. The observation is far from the "
                "simulations: check the model (see observation_p_value)",
                stacklevel=user_stacklevel(),
            )
        return outside

    @torch.no_grad()
    def _sample(self, n: int, x: Tensor, reject: bool, max_rounds: int = 1000) -> Tensor:
        # last_mixing describes this draw's chains, or is None where it ran none (the
        # flow answered every row, or the sampler is importance resampling).
        self.last_mixing = None
        outside = self._outside(x)
        if bool(outside.any()):
            out = torch.empty(n, len(x), self.dim_theta, device=self.device)
            try:
                out[:, outside] = super()._sample(n, x[outside], reject, max_rounds)
            except RuntimeError as e:
                raise ValueError(
                    "the observation lies outside the likelihood proxy's domain, and the "
                    f"flow cannot answer there either ({e}): it is far from every "
                    "simulation. Check the model against the data (observation_p_value), "
                    "or simulate where the observation lies"
                ) from e
            if not bool(outside.all()):
                out[:, ~outside] = self._sample_proxy(n, x[~outside])
            return out
        return self._sample_proxy(n, x)

    def _sample_proxy(self, n: int, x: Tensor) -> Tensor:
        self.last_leakage = 0.0  # zero proxy density outside the prior
        if self.sampler == "mcmc":
            samples, self.last_mixing = sample_proxy(
                self.proxy,
                self.flow,
                self._prior,
                x,
                n,
                num_steps=self.mcmc_steps,
                num_mala=self.mcmc_mala,
                max_steps=self.mcmc_max_steps,
            )
            check_mixing(self.last_mixing)  # warns at the caller of sample()
            return samples
        return self._resample(n, x)

    def _resample(self, n: int, x: Tensor) -> Tensor:
        out = torch.empty(n, len(x), self.dim_theta, device=self.device)
        ess = math.inf
        for b in range(len(x)):
            samples, e = importance_resample(
                self.proxy,
                self.flow,
                self._prior,
                x[b],
                n,
                self.candidates_per_sample * n,
                max_candidates=self.max_candidates_per_sample * n,
                target_ess=self.ess_per_sample * n,
            )
            out[:, b] = samples
            ess = min(ess, e)
        self.last_ess = ess
        if ess < self.min_ess_fraction * n:
            warnings.warn(
                f"importance resampling of the proxy: ESS {ess:.0f} for {n} samples; the "
                "samples repeat points (raise max_candidates_per_sample, or use the flow)",
                stacklevel=user_stacklevel(),
            )
        return out

    def _log_prob(
        self, theta: Tensor, x: Tensor, track_gradients: bool, normalize: bool = True
    ) -> Tensor:
        def proxy(t: Tensor, rows: Tensor) -> Tensor:
            return self._proxy_log_prob(t, rows, track_gradients, normalize)

        def flow(t: Tensor, rows: Tensor) -> Tensor:
            return Posterior._log_prob(self, t, rows, track_gradients, normalize)

        return self._by_domain(theta, x, proxy, flow)

    def _by_domain(
        self,
        theta: Tensor,
        x: Tensor,
        inside: Callable[[Tensor, Tensor], Tensor],
        outside: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        # inside(theta, x) at the rows of x in the proxy's domain and outside(theta, x)
        # (the flow, which answers for the proxy there) at the others, each computed at
        # its own rows alone (the result's last dimension is x's rows).
        beyond = self._outside(x)
        if not bool(beyond.any()):
            return inside(theta, x)
        if bool(beyond.all()):
            return outside(theta, x)
        shape = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        theta = theta.expand(*shape, theta.shape[-1])
        rows_in, rows_out = (~beyond).nonzero().squeeze(-1), beyond.nonzero().squeeze(-1)
        a = inside(theta.index_select(-2, rows_in), x[rows_in])
        b = outside(theta.index_select(-2, rows_out), x[rows_out])
        return a.new_empty(shape).index_copy(-1, rows_in, a).index_copy(-1, rows_out, b)

    def _proxy_log_prob(
        self, theta: Tensor, x: Tensor, track_gradients: bool, normalize: bool
    ) -> Tensor:
        # The proxy's own log density (for rows of x in its domain: log Z is estimated
        # at every row given).
        log_z = self._log_normalizer(x)[0] if normalize else 0.0
        with torch.set_grad_enabled(track_gradients):
            return neg_energy_inside(self.proxy, theta, x, self._log_prior) - log_z

    def sample_and_log_prob(self, sample_shape=(), x: Tensor | None = None):
        shape = sample_shape_tuple(sample_shape)
        x = self._one_x(x)
        theta = self._sample(math.prod(shape), x, True)[:, 0]
        return theta.reshape(*shape, self.dim_theta), self._log_prob(theta, x, False).reshape(
            shape
        )

    def leakage(self, x: Tensor | None = None, num_samples: int = 10_000) -> float:
        # Zero: the proxy's density is zero outside the prior; the flow's, where the
        # flow answers for the proxy (an x outside its domain).
        return 1.0 - float(self.accepted_mass(x, num_samples).mass[0])

    def recalibrate(self, *args: Any, **kwargs: Any) -> float:
        r"""Not for the proxy: its samples do not depend on the flow's temperature."""
        raise ValueError(
            "recalibrate applies to a flow posterior: this one samples the proxy, which the "
            "flow only proposes for (posterior='flow' returns the flow)"
        )

    def accepted_mass(self, x=None, num_samples=None, *, many: bool = False) -> AcceptedMass:
        # The proxy has the prior's support: all of its mass is inside. Beyond its domain
        # the flow answers for it, normalised by the flow's own mass inside.
        x = self._many_x(x) if many else self._one_x(x)
        mass = torch.ones(len(x), device=self.device)
        se, n = torch.zeros_like(mass), 0
        in_domain = getattr(self.proxy, "in_domain", None)
        outside = None if in_domain is None else ~in_domain(x)
        if outside is not None and bool(outside.any()):
            flow = Posterior.accepted_mass(self, x[outside], num_samples, many=True)
            mass[outside], se[outside], n = flow.mass, flow.se, flow.num_samples
        return AcceptedMass(mass, se, n)

    def map(self, x: Tensor | None = None, *, num_init_samples: int = 1000, **ignored: Any):
        r"""The best of ``num_init_samples`` of this posterior's samples by its density,
        shape ``(1, d)``."""
        x = self._one_x(x)
        theta = self._sample(int(num_init_samples), x, True)[:, 0]
        lp = self._log_prob(theta, x, False)
        return theta[int(torch.argmax(lp))][None]

    def _state(self) -> dict[str, Any]:
        config = self.proxy.config
        if config is None:
            raise ValueError(
                f"a {type(self).__name__} with a {type(self.proxy).__name__} proxy cannot be "
                "saved (only the likelihood proxy can); save its flow posterior instead: "
                "Posterior(post.flow, post.prior).save(path)"
            )
        state = super()._state()
        state["proxy"] = {
            **state["proxy"],
            "returned": True,  # the proxy is the posterior (not only the evidence's)
            "candidates_per_sample": self.candidates_per_sample,
            "max_candidates_per_sample": self.max_candidates_per_sample,
            "ess_per_sample": self.ess_per_sample,
            "sampler": self.sampler,
            "mcmc_steps": self.mcmc_steps,
            "mcmc_mala": self.mcmc_mala,
            "mcmc_max_steps": self.mcmc_max_steps,
        }
        return state


#: How a proxy posterior draws its samples.
SAMPLERS = ("mcmc", "importance")

#: ``posterior="auto"``: the proxy is returned where its validation NLL is lower than the
#: flow's by more than this many standard errors (else the mixture of the two), ...
AUTO_MARGIN_SE = 1.0
#: ... in both cases only where the proxy's importance weights keep at least this mean
#: ESS fraction (then :func:`candidates_per_sample` draws at most 1 / AUTO_MIN_ESS
#: candidates per sample).
AUTO_MIN_ESS = 0.02


def auto_choice(measured: dict[str, float] | None, mixture: bool = True) -> str:
    r"""What ``posterior="auto"`` returns, ``"proxy"``, ``"mixture"`` or ``"flow"``, from
    the proxy's measurement against the flow on the validation pairs (``None``: none,
    e.g. a proxy abandoned in phase 1); with ``mixture=False`` (a flow to recalibrate),
    the flow where the mixture would be returned."""
    # The proxy alone where it is the better model on the validation pairs (its NLL
    # lower by more than AUTO_MARGIN_SE standard errors); else the equal mixture of both,
    # which on the development set was as good as the flow or better where the flow was
    # ahead too (docs/method.md, "Defaults and why"). The proxy's share needs the flow to
    # propose where it has mass (mean ESS fraction >= AUTO_MIN_ESS), which both of its
    # samplers do: importance resampling, and the independence steps of the MCMC chains;
    # the flow alone where it cannot, or where the proxy was never measured (abandoned).
    if not measured or not measured["proxy_ess"] >= AUTO_MIN_ESS:
        return "flow"
    gap, se = measured["proxy_minus_flow"], measured["proxy_minus_flow_se"]
    if not (math.isfinite(gap) and math.isfinite(se)):
        return "flow"
    if gap + AUTO_MARGIN_SE * se < 0:
        return "proxy"
    return "mixture" if mixture else "flow"


def candidates_per_sample(measured: dict[str, float] | None) -> int:
    r"""Proposal draws per returned sample for importance resampling."""
    # Enough proposal draws per returned sample that the resample's ESS is about the
    # number of samples asked (10 at least, 1 / AUTO_MIN_ESS at most).
    ess = (measured or {}).get("proxy_ess", math.nan)
    if not (isinstance(ess, float) and math.isfinite(ess) and ess > 0):
        return 10
    return int(min(round(1 / AUTO_MIN_ESS), max(10, math.ceil(1 / ess))))
