r"""The prior times a learned likelihood flow: the ``likelihood`` proxy (NLE, section 4b)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    _Standardized,
)

__all__ = ["LikelihoodEnergy"]

#: zuko's spline bound: a rational-quadratic spline is the identity outside it.
SPLINE_BOUND = 5.0
#: The flow families whose transforms are splines with that bound.
SPLINE_FAMILIES = ("nsf",)


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
        **flow_kwargs,
    ) -> None:
        super().__init__()
        if int(dim_x) < 1:
            raise ValueError(f"dim_x must be positive, got {dim_x}")
        self.prior = prior
        self.prior_density = PriorLogDensity(prior)
        self.dim_theta = self.prior_density.dim
        self.dim_x = int(dim_x)
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
        first = {k: self.config[k] for k in ("flow", "hidden_features", "num_transforms")}
        first.update(num_bins=self.config["num_bins"], **flow_kwargs)
        candidates = [first] + [_candidate(first, a) for a in alternatives]
        if len(candidates) > 1:
            self.config["alternatives"] = [dict(a) for a in alternatives]
        #: Each candidate's flow family (a spline's domain is bounded: :meth:`in_domain`).
        self.families = [o["flow"] for o in candidates]
        flows = [build_flow(o.pop("flow"), self.dim_x, self.dim_theta, **o) for o in candidates]
        self.likelihood = flows[0]
        #: The other candidates (empty without ``alternatives``).
        self.alternatives = nn.ModuleList(flows[1:])
        #: The selected candidate's index; -1 until :meth:`select` (the first gives the
        #: energy, all fit). A buffer, so it is saved; ``_selected`` is the same index as
        #: an int, read on every call without a device sync.
        self._selected = -1 if len(flows) > 1 else 0
        self.register_buffer("selected", torch.tensor(self._selected))
        self._register_statistics(theta_loc, theta_scale, x_loc, x_scale)

    @classmethod
    def from_config(cls, config: dict, prior: Distribution) -> LikelihoodEnergy:
        r"""Rebuilds an (untrained) module from its :attr:`config` and the prior."""
        config = dict(config)
        return cls(prior, config.pop("dim_x"), **config.pop("flow_kwargs"), **config)

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
        u = (x.to(self.x_loc) - self.x_loc) / self.x_scale
        return (u.abs() <= self.domain_bound).all(-1)

    @torch.no_grad()
    def simulate(self, theta: Tensor) -> Tensor:
        r"""Draws ``x ~ l_psi(x | theta)`` from the learned likelihood, one per row of
        ``theta`` (shape ``(n, d)``, inside the prior's support): shape ``(n, m)``."""
        c = (theta - self.theta_loc) / self.theta_scale
        u = self.candidates()[max(self._selected, 0)](c).sample()
        return u * self.x_scale + self.x_loc

    def candidates(self) -> list[nn.Module]:
        r"""Every candidate likelihood flow, the first (:attr:`likelihood`) first."""
        return [self.likelihood, *self.alternatives]

    def log_likelihood(self, theta: Tensor, x: Tensor, candidate: int | None = None) -> Tensor:
        r""":math:`\log l_\psi(x \mid \theta)`, a density over ``x`` itself.

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

    def _standardized(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(theta, x)
        inside = self.prior_density.inside(theta)
        safe = self.prior_density._safe_theta.to(theta)
        theta = torch.where(inside.unsqueeze(-1), theta, safe)
        batch = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-1])
        c = ((theta - self.theta_loc) / self.theta_scale).expand(*batch, self.dim_theta)
        u = ((x - self.x_loc) / self.x_scale).expand(*batch, self.dim_x)
        return c, u

    def data_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The maximum-likelihood loss :math:`-\frac{1}{B} \sum_i \log l_\psi(x_i|\theta_i)`
        (before :meth:`select` with ``alternatives``: the sum over the candidates, each
        fitted on its own)."""
        if not self.undecided:
            return -self.log_likelihood(theta, x).mean()
        return sum(nll.mean() for nll in self._candidate_nlls(theta, x))

    def _candidate_nlls(self, theta: Tensor, x: Tensor) -> list[Tensor]:
        # Every candidate's NLL per pair on the same standardised pairs (standardised once).
        c, u = self._standardized(theta, x)
        return [-self._log_likelihood(flow, c, u) for flow in self.candidates()]

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
