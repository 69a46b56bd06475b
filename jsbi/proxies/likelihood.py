r"""The prior times a learned likelihood flow: the ``likelihood`` proxy (NLE, section 4b)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.flows.conditional import build_flow
from jsbi.proxies.base import (
    PriorLogDensity,
    Proxy,
    _check_outside_energy,
    _energy_from_log_density,
    _safe_std,
    _Standardized,
)

__all__ = ["LikelihoodEnergy"]

#: zuko's spline bound: a rational-quadratic spline is the identity outside it.
SPLINE_BOUND = 5.0
#: The flow families whose transforms are splines with that bound.
SPLINE_FAMILIES = ("nsf",)
#: How far each training batch moves the summaries' standardisation (an exponential
#: moving average: the summaries move while the flow's embedding trains).
SUMMARY_MOMENTUM = 0.05


class LikelihoodEnergy(_Standardized, Proxy):
    r"""The prior times a learned likelihood: the ``likelihood`` proxy (NLE).

    .. math:: E_\psi(\theta, x) = -\log \pi(\theta) - \log l_\psi(x \mid \theta),
        \qquad r_\psi(\theta \mid x) \propto \pi(\theta) \, l_\psi(x \mid \theta)

    with :math:`l_\psi` a conditional zuko flow over standardised ``x`` given
    standardised ``theta`` (neural likelihood estimation). Its data fit needs no
    normaliser: maximum likelihood of ``x`` given ``theta`` (:meth:`data_loss`) is the
    NLL of the joint :math:`\pi(\theta) l_\psi(x \mid \theta)` up to a constant in
    :math:`\psi`. Its normaliser :math:`Z_\psi(x) = \int \pi \, l_\psi \, d\theta` is the
    model's evidence for ``x``, needed only to compare it with the flow (and never in the
    flow's gradient). The proxy has exactly the prior's support; outside it the energy is
    ``outside_energy``.

    With ``summary``, the likelihood is of learned summaries :math:`s(x)` instead of
    ``x`` (``ProxyConfig(share_embedding=True)``: the flow's embedding, trained by the
    flow's loss): :math:`r_\psi(\theta \mid x) \propto \pi(\theta) \, l_\psi(s(x)
    \mid \theta)` targets :math:`p(\theta \mid s(x))`, which is what the flow
    approximates too. High-dimensional ``x`` then costs the likelihood flow only the
    summaries' dimension. The summaries are read without gradient (the proxy never moves
    the embedding, and a likelihood of ``s`` would pull it to collapse); their
    standardisation follows them while they train (:data:`SUMMARY_MOMENTUM`), so
    :meth:`log_likelihood` is a density over ``s(x)``, and the evidence the evidence of
    ``s(x)``.

    Arguments:
        prior: The prior :math:`\pi(\theta)`, event shape ``(d,)``.
        dim_x: The data dimension ``m``.
        flow: A name in :data:`jsbi.flows.conditional.FLOWS`.
        hidden_features: The flow's hidden widths.
        num_transforms: The flow's number of transforms.
        num_bins: Spline bins (``nsf``).
        outside_energy: The energy outside the support.
        alternatives: Further candidate likelihoods, each a dict of this class's flow
            options that differ from the first's (e.g. ``{"flow": "maf",
            "num_transforms": 3}``). Until :meth:`select` picks one, every candidate fits
            the data (:meth:`data_loss` is the sum of their losses) and the energy is the
            first's; after, only the selected one fits and gives the energy.
        theta_loc, theta_scale, x_loc, x_scale: Standardisation statistics (default 0 and
            1); see :meth:`set_standardization`.
        summary: A module or function mapping ``x`` of shape ``(..., m)`` to summaries
            ``(..., f)`` (e.g. the flow's ``embed``); ``None``: the likelihood is of ``x``.
            Not saved with the proxy: a loaded posterior passes its flow's.
        flow_kwargs: Passed to zuko (e.g. ``passes=2`` for a coupling flow).

    Example:
        >>> from torch.distributions import Independent, Uniform
        >>> prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
        >>> energy = LikelihoodEnergy(prior, dim_x=3, num_transforms=1)
        >>> energy(torch.zeros(10, 4, 2), torch.randn(4, 3)).shape
        torch.Size([10, 4])
        >>> float(energy(torch.tensor([[2.0, 0.0]]), torch.zeros(1, 3))[0])
        inf

    References:
        | Sequential Neural Likelihood (Papamakarios, Sterratt & Murray, 2019),
          arXiv:1805.07226
    """

    fit_name = "fit"
    has_likelihood = True

    def __init__(
        self,
        prior: Distribution,
        dim_x: int,
        *,
        flow: str = "nsf",
        hidden_features: Sequence[int] = (50, 50),
        num_transforms: int = 5,
        num_bins: int = 10,
        outside_energy: float = math.inf,
        alternatives: Sequence[Mapping[str, Any]] = (),
        theta_loc: Tensor | None = None,
        theta_scale: Tensor | None = None,
        x_loc: Tensor | None = None,
        x_scale: Tensor | None = None,
        summary: Callable[[Tensor], Tensor] | None = None,
        **flow_kwargs,
    ) -> None:
        super().__init__()
        if int(dim_x) < 1:
            raise ValueError(f"dim_x must be positive, got {dim_x}")
        if summary is not None and not callable(summary):
            raise TypeError(f"summary must be a module or a function of x, got {summary!r}")
        self.prior = prior
        self.prior_density = PriorLogDensity(prior)
        self.dim_theta = self.prior_density.dim
        self.dim_x = int(dim_x)
        # Kept out of the module's registry: the summaries are the flow's, saved, moved and
        # trained with the flow.
        self.__dict__["summary"] = summary
        #: The dimension the likelihood models: ``m``, or the summaries'.
        self._dim_u = self.dim_x if summary is None else _summary_features(summary, self.dim_x)
        self.outside_energy = _check_outside_energy(outside_energy)
        if not isinstance(flow, str):
            raise TypeError(f"flow must be a name in jsbi.flows.conditional.FLOWS, got {flow!r}")
        #: What :meth:`from_config` needs to rebuild the module (weights apart).
        self.config = {
            "dim_x": self.dim_x,
            "flow": flow,
            "hidden_features": [int(h) for h in hidden_features],
            "num_transforms": int(num_transforms),
            "num_bins": int(num_bins),
            "outside_energy": self.outside_energy,
            "flow_kwargs": dict(flow_kwargs),
        }
        if summary is not None:
            self.config["summary"] = True
        first = {k: self.config[k] for k in ("flow", "hidden_features", "num_transforms")}
        first.update(num_bins=self.config["num_bins"], **flow_kwargs)
        candidates = [first] + [_candidate(first, a) for a in alternatives]
        if len(candidates) > 1:
            self.config["alternatives"] = [dict(a) for a in alternatives]
        #: Each candidate's flow family (a spline's domain is bounded: :meth:`in_domain`).
        self.families = [o["flow"] for o in candidates]
        flows = [build_flow(o.pop("flow"), self.dim_u, self.dim_theta, **o) for o in candidates]
        self.likelihood = flows[0]
        #: The other candidates (empty without ``alternatives``).
        self.alternatives = nn.ModuleList(flows[1:])
        #: The selected candidate's index; -1 until :meth:`select` (the first gives the
        #: energy, all fit). A buffer, so it is saved; ``_selected`` is the same index as
        #: an int, read on every call without a device sync.
        self._selected = -1 if len(flows) > 1 else 0
        self.register_buffer("selected", torch.tensor(self._selected))
        self._register_statistics(theta_loc, theta_scale, x_loc, x_scale)

    @property
    def dim_u(self) -> int:
        r"""The dimension the likelihood models (and its statistics standardise): ``m``,
        or the summaries'."""
        return self._dim_u

    @classmethod
    def from_config(
        cls,
        config: dict,
        prior: Distribution,
        summary: Callable[[Tensor], Tensor] | None = None,
    ) -> LikelihoodEnergy:
        r"""Rebuilds an (untrained) module from its :attr:`config` and the prior (and,
        for a likelihood of summaries, the ``summary`` function: the flow's ``embed``)."""
        config = dict(config)
        if config.pop("summary", False) and summary is None:
            raise ValueError(
                "this likelihood proxy models the flow's summaries of x: pass summary= "
                "(the flow's embed)"
            )
        return cls(
            prior, config.pop("dim_x"), **config.pop("flow_kwargs"), **config, summary=summary
        )

    @torch.no_grad()
    def set_standardization(self, theta: Tensor, x: Tensor | None = None) -> LikelihoodEnergy:
        r"""Sets the standardisation statistics from data (in place); with a summary, the
        ``x`` statistics are those of the summaries of ``x``."""
        if self.summary is None or x is None:
            super().set_standardization(theta, x)
            return self
        super().set_standardization(theta, None)
        self._check(theta[:1], x[:1])
        s = self._summaries(x).double()
        self.x_loc.copy_(s.mean(0))
        self.x_scale.copy_(_safe_std(s))
        return self

    def _summaries(self, x: Tensor) -> Tensor:
        # The summaries of x, without gradient (the proxy never moves the embedding).
        with torch.no_grad():
            return self.summary(x)

    def _follow(self, s: Tensor) -> None:
        # The summaries' standardisation follows a training batch's (they move while the
        # flow's embedding trains).
        if len(s) < 2:
            return
        with torch.no_grad():
            s = s.reshape(-1, s.shape[-1]).double()
            m = SUMMARY_MOMENTUM
            self.x_loc.lerp_(s.mean(0).to(self.x_loc), m)
            self.x_scale.lerp_(_safe_std(s).to(self.x_scale), m)

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log \pi(\theta)`, ``-inf`` outside the support, shape ``(...)``."""
        return self.prior_density(theta)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A selection, once made, outlives a restore of an earlier state (the loop's best
        # epoch, a fault recovery) whose candidates were all still fitting; a state saved
        # before there were candidates has no "selected" at all.
        key = prefix + "selected"
        if key not in state_dict or int(state_dict[key]) < 0 <= self._selected:
            state_dict[key] = self.selected.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._selected = int(self.selected)

    @property
    def domain_bound(self) -> float:
        r"""The standardised ``|x|`` beyond which the likelihood stops depending on
        ``theta``: zuko's splines (``nsf``) are the identity outside ``[-5, 5]``
        (:data:`SPLINE_BOUND`), so there the proxy is the prior; affine flows (``maf``)
        have no bound (``inf``)."""
        family = self.families[max(self._selected, 0)]
        return SPLINE_BOUND if family in SPLINE_FAMILIES else math.inf

    @torch.no_grad()
    def in_domain(self, x: Tensor) -> Tensor:
        r"""Whether each row of ``x`` (shape ``(B, m)``) lies where the likelihood depends
        on ``theta``: every standardised coordinate within :attr:`domain_bound`."""
        x = x.to(self.x_loc)
        s = x if self.summary is None else self._summaries(x)
        u = (s - self.x_loc) / self.x_scale
        return (u.abs() <= self.domain_bound).all(-1)

    @torch.no_grad()
    def simulate(self, theta: Tensor) -> Tensor:
        r"""Draws ``x ~ l_psi(x | theta)`` from the learned likelihood, one per row of
        ``theta`` (shape ``(n, d)``, inside the prior's support): shape ``(n, m)``. A
        likelihood of summaries cannot: it models ``s(x)``, not ``x``."""
        if self.summary is not None:
            raise ValueError(
                "a likelihood of summaries draws summaries, not x: it cannot simulate x"
            )
        c = (theta - self.theta_loc) / self.theta_scale
        u = self.candidates()[max(self._selected, 0)](c).sample()
        return u * self.x_scale + self.x_loc

    def candidates(self) -> list[nn.Module]:
        r"""Every candidate likelihood flow, the first (:attr:`likelihood`) first."""
        return [self.likelihood, *self.alternatives]

    def log_likelihood(self, theta: Tensor, x: Tensor, candidate: int | None = None) -> Tensor:
        r""":math:`\log l_\psi(x \mid \theta)`, a density over ``x`` itself (with a
        summary, over ``s(x)``).

        Arguments:
            theta: Parameters, shape ``(..., B, d)``.
            x: Data, shape ``(B, m)`` (broadcast over ``theta``'s sample dimensions).
            candidate: Which candidate likelihood (``None``: the selected one, or the
                first before :meth:`select`).

        Returns:
            Log-likelihoods, shape ``(..., B)``. Outside the support the value is that
            of a finite stand-in point (the energy masks it).
        """
        c, u = self._standardized(theta, x)
        if candidate is None:
            candidate = max(self._selected, 0)
        return self._log_likelihood(self.candidates()[candidate], c, u)

    def _log_likelihood(self, flow: nn.Module, c: Tensor, u: Tensor) -> Tensor:
        return flow(c).log_prob(u) - self.x_scale.log().sum()

    @property
    def undecided(self) -> bool:
        r"""Whether there are candidates and :meth:`select` has not chosen one yet."""
        return self._selected < 0

    def _standardized(
        self, theta: Tensor, x: Tensor, follow: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check(theta, x)
        inside = self.prior_density.inside(theta)
        safe = self.prior_density._safe_theta.to(theta)
        theta = torch.where(inside.unsqueeze(-1), theta, safe)
        if self.summary is not None:
            x = self._summaries(x)
            if follow:
                self._follow(x)
        batch = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        c = ((theta - self.theta_loc) / self.theta_scale).expand(*batch, self.dim_theta)
        u = ((x - self.x_loc) / self.x_scale).expand(*batch, self.dim_u)
        return c, u

    def data_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The maximum-likelihood loss :math:`-\frac{1}{B} \sum_i \log l_\psi(x_i|\theta_i)`
        (before :meth:`select` with ``alternatives``: the sum over the candidates, each
        fitted on its own)."""
        follow = self.training and torch.is_grad_enabled()  # a training batch
        nlls = self._candidate_nlls(theta, x, follow, None if self.undecided else self._selected)
        return sum(nll.mean() for nll in nlls)

    def _candidate_nlls(
        self, theta: Tensor, x: Tensor, follow: bool = False, only: int | None = None
    ) -> list[Tensor]:
        # Every candidate's NLL per pair (or candidate ``only``'s) on the same standardised
        # pairs (standardised once).
        c, u = self._standardized(theta, x, follow)
        flows = self.candidates() if only is None else [self.candidates()[only]]
        return [-self._log_likelihood(flow, c, u) for flow in flows]

    @torch.no_grad()
    def select(self, theta: Tensor, x: Tensor) -> dict[str, Any]:
        r"""Selects the candidate with the smallest NLL of ``x`` given ``theta`` on these
        (validation) pairs; all candidates are normalised densities over the same
        standardised ``x``, so their NLLs compare directly.

        Returns:
            ``{"nll": each candidate's NLL, in order, "selected": the chosen index,
            "margin": the runner-up's NLL minus the chosen one's, "margin_se": the standard
            error of that paired difference}``, the record
            ``history["proxy_candidates"]`` keeps.
        """
        per_pair = self._candidate_nlls(theta, x)
        nlls = [float(v.mean()) for v in per_pair]
        finite = [v if math.isfinite(v) else math.inf for v in nlls]  # NaN is never chosen
        order = sorted(range(len(finite)), key=finite.__getitem__)
        self._selected = order[0]
        self.selected.fill_(self._selected)
        record: dict[str, Any] = {"nll": nlls, "selected": self._selected}
        if len(order) > 1:
            diff = (per_pair[order[1]] - per_pair[order[0]]).double()
            record["margin"] = float(diff.mean())
            record["margin_se"] = (
                float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
            )
        return record

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The proxy's own data fit: :meth:`data_loss` (exact maximum likelihood)."""
        return self.data_loss(theta, x)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`-\log \pi(\theta) - \log l_\psi(x | \theta)`, shape ``(..., B)``."""
        ll = self.log_likelihood(theta, x)
        lp = self.log_prior(theta)
        lp = lp.expand_as(ll) if lp.shape != ll.shape else lp
        log_density = torch.where(torch.isneginf(lp), lp, lp + ll)
        return _energy_from_log_density(log_density, self.outside_energy)


def _summary_features(summary: Callable[[Tensor], Tensor], dim_x: int) -> int:
    # The summaries' dimension, from two rows of zeros, or an error that says what is wrong.
    owner = getattr(summary, "__self__", summary)  # a bound method's module
    tensors = [*owner.parameters(), *owner.buffers()] if isinstance(owner, nn.Module) else []
    device = tensors[0].device if tensors else None
    try:
        with torch.no_grad():
            s = summary(torch.zeros(2, dim_x, device=device))
    except Exception as e:  # noqa: BLE001 - any error of the user's function
        raise ValueError(f"summary failed on x of shape (2, {dim_x}): {e}") from e
    if not isinstance(s, Tensor) or s.ndim != 2 or s.shape[0] != 2:
        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"summary must map x of shape (n, {dim_x}) to (n, f), got {got}")
    return int(s.shape[1])


_CANDIDATE_OPTIONS = ("flow", "hidden_features", "num_transforms", "num_bins")


def _candidate(first: dict[str, Any], alternative: Mapping[str, Any]) -> dict[str, Any]:
    # One alternative's flow options: the first candidate's, with these changed.
    if not isinstance(alternative, Mapping):
        raise TypeError(
            f"each of alternatives must be a dict of flow options, got {alternative!r}"
        )
    unknown = sorted(set(alternative) - set(_CANDIDATE_OPTIONS))
    if unknown:
        raise ValueError(
            f"alternatives: unknown option {unknown[0]!r}; expected some of "
            f"{list(_CANDIDATE_OPTIONS)}"
        )
    options = {k: first[k] for k in _CANDIDATE_OPTIONS}  # not the first's zuko kwargs
    options.update(alternative)
    return options
