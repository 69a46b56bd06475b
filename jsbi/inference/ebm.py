r"""Conditional energy-based models, the proxy of the adaptive symmetrization.

An energy :math:`E_\psi(\theta, x)` defines the proxy
:math:`r_\psi(\theta \mid x) = e^{-E_\psi(\theta, x)} / Z_\psi(x)`: lower energy is
more probable. The normaliser :math:`Z_\psi(x)` is never computed here; see
:func:`jsbi.inference.objectives.log_normalizer`.

Shapes: ``energy(theta, x)`` takes ``theta`` of shape ``(..., B, d)`` and ``x`` of shape
``(B, m)`` (or any shape broadcastable with ``theta``'s leading dimensions) and returns
energies of shape ``(..., B)``; e.g. ``(K, B, d)`` flow samples with ``(B, m)``
observations give ``(K, B)``.

References:
    | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025)
    | https://arxiv.org/abs/2511.11159
"""

from __future__ import annotations

__all__ = [
    "ConditionalEnergy",
    "LikelihoodEnergy",
    "MLPEnergy",
    "PriorLogDensity",
    "PriorTimesRatioEnergy",
    "ResidualEnergy",
]

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.inference.flows import build_flow
from jsbi.inference.objectives import (
    contrastive_ratio_loss,
    log_normalizer,
    nrec_loss,
    proxy_fit,
)
from jsbi.inference.support import Support, prior_device, prior_log_prob


def _mlp(
    in_features: int,
    hidden_features: Sequence[int],
    activation: Callable[[], nn.Module],
    zero_init: bool,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden_features:
        layers += [nn.Linear(in_features, h), activation()]
        in_features = h
    last = nn.Linear(in_features, 1)
    if zero_init:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


_OLD_BUFFER_NAMES = {
    "theta_mean": "theta_loc",
    "theta_std": "theta_scale",
    "x_mean": "x_loc",
    "x_std": "x_scale",
}


class _Standardized:
    r"""Standardisation buffers ``theta_loc``, ``theta_scale``, ``x_loc``, ``x_scale`` and
    the shape check shared by the energies (the subclass sets ``dim_theta``, ``dim_x``
    and calls :meth:`_register_statistics`)."""

    dim_theta: int
    dim_x: int

    def _register_statistics(self, theta_loc, theta_scale, x_loc, x_scale) -> None:
        d, m = self.dim_theta, self.dim_x
        self.register_buffer("theta_loc", self._stat(theta_loc, 0.0, d, "theta_loc"))
        self.register_buffer("theta_scale", self._stat(theta_scale, 1.0, d, "theta_scale"))
        self.register_buffer("x_loc", self._stat(x_loc, 0.0, m, "x_loc"))
        self.register_buffer("x_scale", self._stat(x_scale, 1.0, m, "x_scale"))

    @staticmethod
    def _stat(value: Tensor | None, default: float, dim: int, name: str) -> Tensor:
        if value is None:
            return torch.full((dim,), default)
        value = torch.as_tensor(value, dtype=torch.get_default_dtype()).reshape(-1)
        if value.shape != (dim,):
            raise ValueError(f"{name} must have shape ({dim},), got {tuple(value.shape)}")
        return value.clone()

    @torch.no_grad()
    def set_standardization(self, theta: Tensor, x: Tensor | None = None) -> _Standardized:
        r"""Sets the standardisation statistics from data (in place).

        Standard deviations below ``1e-8`` (constant columns) are set to 1.

        Arguments:
            theta: Parameters, shape ``(N, d)``.
            x: Data, shape ``(N, m)``. If ``None``, the ``x`` statistics are kept (e.g.
                when a shared embedding standardises ``x`` itself).

        Returns:
            The module itself.
        """
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(
                f"theta must have shape (N, {self.dim_theta}), got {tuple(theta.shape)}"
            )
        self.theta_loc.copy_(theta.mean(0))
        self.theta_scale.copy_(_safe_std(theta))
        if x is not None:
            if x.ndim != 2 or x.shape[1] != self.dim_x:
                raise ValueError(f"x must have shape (N, {self.dim_x}), got {tuple(x.shape)}")
            self.x_loc.copy_(x.mean(0))
            self.x_scale.copy_(_safe_std(x))
        return self

    def fit_standardization(self, theta: Tensor, x: Tensor | None = None) -> _Standardized:
        r"""The earlier name of :meth:`set_standardization` (the flow's name), kept."""
        return self.set_standardization(theta, x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # Files saved before the buffers took the flow's names (theta_mean, theta_std,
        # x_mean, x_std) still load.
        for old, new in _OLD_BUFFER_NAMES.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check(self, theta: Tensor, x: Tensor) -> None:
        if theta.ndim < 1 or theta.shape[-1] != self.dim_theta:
            raise ValueError(
                f"theta must have shape (..., B, {self.dim_theta}), got {tuple(theta.shape)}"
            )
        if x.ndim < 1 or x.shape[-1] != self.dim_x:
            raise ValueError(f"x must have shape (B, {self.dim_x}), got {tuple(x.shape)}")


class ConditionalEnergy(_Standardized, nn.Module):
    r"""Base class: a learned function :math:`h_\psi(\theta, x)` of standardised inputs.

    Holds the standardisation buffers, the ``x`` embedding and an MLP on the
    concatenation ``[(theta - theta_loc) / theta_scale, embedding((x - x_loc) / x_scale)]``.
    Subclasses turn :meth:`network` into an energy in :meth:`forward`.

    Arguments:
        dim_theta: The parameter dimension ``d``.
        dim_x: The data dimension ``m``.
        hidden_features: The MLP's hidden widths.
        activation: The hidden activation's constructor (smooth by default, since the
            energy's gradient in ``theta`` may be used).
        embedding: A module mapping standardised ``x`` of shape ``(..., m)`` to features
            ``(..., f)``, e.g. the flow's embedding net to share it. Default: identity.
        embedding_features: ``f``; inferred with a dummy forward if ``None``.
        zero_init: Whether to zero the MLP's last layer (then :math:`h = 0` at init).
        theta_loc, theta_scale, x_loc, x_scale: Standardisation statistics (default 0 and
            1); see :meth:`set_standardization`.
    """

    def __init__(
        self,
        dim_theta: int,
        dim_x: int,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.SiLU,
        embedding: nn.Module | None = None,
        embedding_features: int | None = None,
        zero_init: bool = False,
        theta_loc: Tensor | None = None,
        theta_scale: Tensor | None = None,
        x_loc: Tensor | None = None,
        x_scale: Tensor | None = None,
    ) -> None:
        super().__init__()
        if dim_theta < 1 or dim_x < 1:
            raise ValueError(
                f"dim_theta and dim_x must be positive, got dim_theta={dim_theta}, dim_x={dim_x}"
            )
        self.dim_theta = int(dim_theta)
        self.dim_x = int(dim_x)
        self.embedding = nn.Identity() if embedding is None else embedding
        if embedding_features is None:
            if embedding is None:
                embedding_features = dim_x
            else:
                with torch.no_grad():
                    embedding_features = self.embedding(torch.zeros(1, dim_x)).shape[-1]
        self.embedding_features = int(embedding_features)
        self.network = _mlp(
            self.dim_theta + self.embedding_features, hidden_features, activation, zero_init
        )
        self._register_statistics(theta_loc, theta_scale, x_loc, x_scale)

    def h(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The network's scalar output :math:`h_\psi(\theta, x)`, shape ``(..., B)``.

        ``x`` is embedded once and broadcast over ``theta``'s leading sample dimensions.
        """
        self._check(theta, x)
        z = (theta - self.theta_loc) / self.theta_scale
        e = self.embedding((x - self.x_loc) / self.x_scale)
        try:
            batch = torch.broadcast_shapes(z.shape[:-1], e.shape[:-1])
        except RuntimeError as error:
            raise ValueError(
                f"theta of shape {tuple(theta.shape)} and x of shape {tuple(x.shape)} "
                "do not broadcast: expected theta (..., B, d) and x (B, m)"
            ) from error
        z = z.expand(*batch, z.shape[-1])
        e = e.expand(*batch, e.shape[-1])
        return self.network(torch.cat((z, e), dim=-1)).squeeze(-1)


class MLPEnergy(ConditionalEnergy):
    r"""A free MLP energy.

    .. math:: E_\psi(\theta, x) = h_\psi(\tilde\theta, \mathrm{embed}(\tilde x))
        + \frac{\kappa}{2} \|\tilde\theta\|^2

    with :math:`\tilde\theta, \tilde x` standardised. The optional confinement
    :math:`\kappa \ge 0` keeps :math:`e^{-E}` integrable on an unbounded domain (an MLP
    alone need not be); there is no prior term.

    Arguments:
        dim_theta: The parameter dimension ``d``.
        dim_x: The data dimension ``m``.
        confinement: :math:`\kappa \ge 0`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, ``zero_init``, statistics).

    Example:
        >>> energy = MLPEnergy(2, 3)
        >>> energy(torch.randn(10, 4, 2), torch.randn(4, 3)).shape
        torch.Size([10, 4])
    """

    def __init__(self, dim_theta: int, dim_x: int, confinement: float = 0.0, **kwargs) -> None:
        super().__init__(dim_theta, dim_x, **kwargs)
        if confinement < 0:
            raise ValueError(f"confinement must be non-negative, got {confinement}")
        self.confinement = float(confinement)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`E_\psi(\theta, x)`, shape ``(..., B)``."""
        energy = self.h(theta, x)
        if self.confinement > 0:
            z = (theta - self.theta_loc) / self.theta_scale
            energy = energy + 0.5 * self.confinement * z.square().sum(-1)
        return energy


class PriorLogDensity(nn.Module):
    r"""The prior's log density, :math:`-\infty` outside its support, safe for autograd.

    The prior is evaluated only at points inside its (closed) support, the others being
    replaced by a fixed inside point, so argument validation never raises and no ``NaN``
    reaches the gradients. Points on the support's boundary where the prior's
    ``log_prob`` is not finite (torch's ``Uniform`` excludes its upper bound) count as
    outside.

    Arguments:
        prior: A torch distribution with event shape ``(d,)`` (or batch shape ``(d,)``
            of scalars, summed).

    Example:
        >>> from torch.distributions import Independent, Uniform
        >>> log_prior = PriorLogDensity(Independent(Uniform(-torch.ones(2), torch.ones(2)), 1))
        >>> log_prior(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
        tensor([-1.3863,    -inf])
    """

    def __init__(self, prior: Distribution) -> None:
        super().__init__()
        if not isinstance(prior, Distribution):
            raise TypeError(
                f"prior must be a torch.distributions.Distribution, got {type(prior).__name__}"
            )
        self.prior = prior
        # A draw off the caller's random stream: building this must not shift it.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            safe = prior.sample().reshape(-1)
        self.dim = int(safe.shape[0])
        self.register_buffer("_safe_theta", safe.to(torch.get_default_dtype()))
        self.support = Support.from_prior(prior, self.dim, persistent=False)
        self._prior_device = prior_device(prior)  # looked up once, not per call

    def inside(self, theta: Tensor) -> Tensor:
        r"""Whether each row of ``theta`` (..., d) lies in the support, shape (...)."""
        return self.support.contains(theta)

    def forward(self, theta: Tensor) -> Tensor:
        r""":math:`\log \pi(\theta)`, ``-inf`` outside the support, shape ``(...)``."""
        inside = self.inside(theta)
        safe = torch.where(inside.unsqueeze(-1), theta, self._safe_theta.to(theta))
        lp = prior_log_prob(self.prior, safe, self._prior_device)
        if lp.ndim == theta.ndim:
            lp = lp.sum(-1)
        keep = inside & torch.isfinite(lp)
        return torch.where(keep, lp, torch.full_like(lp, -math.inf))


def _energy_from_log_density(log_density: Tensor, outside_energy: float) -> Tensor:
    # -log density, with `outside_energy` where the density is zero. The double `where`
    # keeps -inf out of the arithmetic, hence out of backward.
    outside = torch.isneginf(log_density)
    energy = -torch.where(outside, torch.zeros_like(log_density), log_density)
    return torch.where(outside, torch.full_like(energy, outside_energy), energy)


def _check_outside_energy(outside_energy: float) -> float:
    if math.isnan(outside_energy) or outside_energy == -math.inf:
        raise ValueError(f"outside_energy must be finite or +inf, got {outside_energy}")
    return float(outside_energy)


class PriorTimesRatioEnergy(ConditionalEnergy):
    r"""The prior times a learned ratio: the ``ratio`` proxy.

    .. math:: E_\psi(\theta, x) = -\log \pi(\theta) - g_\psi(\theta, x),
        \qquad r_\psi(\theta \mid x) \propto \pi(\theta) \, e^{g_\psi(\theta, x)}

    with :math:`g_\psi` an MLP on standardised :math:`\theta` and the embedded,
    standardised :math:`x`. The proxy has exactly the prior's support, and
    :math:`g_\psi` plays the log likelihood-to-evidence ratio
    :math:`\log p(x \mid \theta) / p(x)` (for which :math:`Z_\psi = 1`), so the
    contrastive losses :func:`jsbi.inference.objectives.contrastive_ratio_loss` (NRE-A)
    and :func:`jsbi.inference.objectives.nrec_loss` (NRE-C) on :meth:`log_ratio`
    warm-start it. By default the last layer is zeroed, so the proxy starts as the prior.

    Outside the prior's support the energy is ``outside_energy``, ``+inf`` by
    default (exact: zero proxy density); see :class:`PriorLogDensity` for how the prior
    is evaluated safely. Outside points have a constant energy, hence zero gradient. With
    ``+inf``, a flow sample outside makes :func:`~jsbi.inference.objectives.reverse_kl`
    ``+inf`` (a leak is infinitely bad); pass a large finite ``outside_energy`` to
    keep such losses finite instead.

    Arguments:
        prior: The prior :math:`\pi(\theta)`, a torch distribution with event shape
            ``(d,)`` (or batch shape ``(d,)`` of scalars, summed).
        dim_x: The data dimension ``m``.
        outside_energy: The energy outside the support (``math.inf`` or a finite float).
        zero_init: Whether ``g = 0`` at initialisation.
        contrastive: The loss of :meth:`fit_loss`: ``"nrea"`` (one negative per pair)
            or ``"nrec"`` (NRE-C with ``num_atoms`` atoms and odds ``gamma``).
        num_atoms: NRE-C's :math:`K`.
        gamma: NRE-C's :math:`\gamma`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, statistics).

    Example:
        >>> from torch.distributions import Independent, Uniform
        >>> prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
        >>> energy = PriorTimesRatioEnergy(prior, dim_x=3)
        >>> energy(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 3))
        tensor([1.3863,    inf], grad_fn=<WhereBackward0>)
    """

    def __init__(
        self,
        prior: Distribution,
        dim_x: int,
        outside_energy: float = math.inf,
        zero_init: bool = True,
        contrastive: str = "nrea",
        num_atoms: int = 10,
        gamma: float = 1.0,
        **kwargs,
    ) -> None:
        log_prior = PriorLogDensity(prior)
        super().__init__(log_prior.dim, dim_x, zero_init=zero_init, **kwargs)
        if contrastive not in ("nrea", "nrec"):
            raise ValueError(f"contrastive must be 'nrea' or 'nrec', got {contrastive!r}")
        if int(num_atoms) < 2:
            raise ValueError(f"num_atoms must be >= 2, got {num_atoms}")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.outside_energy = _check_outside_energy(outside_energy)
        self.prior = prior
        self.prior_density = log_prior
        self.contrastive = contrastive
        self.num_atoms = int(num_atoms)
        self.gamma = float(gamma)

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The contrastive loss of :math:`g` on a batch of joint pairs.

        ``"nrea"``: :func:`~jsbi.inference.objectives.contrastive_ratio_loss` with one
        negative per pair (``theta`` permuted in the batch); ``"nrec"``:
        :func:`~jsbi.inference.objectives.nrec_loss` with ``num_atoms`` atoms taken from
        the batch's other parameters.
        """
        if self.contrastive == "nrea":
            perm = torch.randperm(len(theta), device=theta.device)
            return contrastive_ratio_loss(self.log_ratio(theta, x), self.log_ratio(theta[perm], x))
        K = min(self.num_atoms, len(theta) // 2)
        if K < 1:
            raise ValueError(f"NRE-C needs a batch of at least 2 pairs, got {len(theta)}")
        joint = torch.stack([theta.roll(k, dims=0) for k in range(K)])
        marginal = torch.stack([theta.roll(K + k, dims=0) for k in range(K)])
        return nrec_loss(self.log_ratio(joint, x), self.log_ratio(marginal, x), self.gamma)

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log \pi(\theta)`, ``-inf`` outside the support, shape ``(...)``.

        Arguments:
            theta: Parameters, shape ``(..., d)``.
        """
        return self.prior_density(theta)

    def log_ratio(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The learned log ratio :math:`g_\psi(\theta, x)`, shape ``(..., B)``."""
        return self.h(theta, x)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`E_\psi(\theta, x) = -\log \pi(\theta) - g_\psi(\theta, x)`.

        Arguments:
            theta: Parameters, shape ``(..., B, d)``.
            x: Data, shape ``(B, m)``.

        Returns:
            Energies, shape ``(..., B)``; ``outside_energy`` outside the prior's support.
        """
        g = self.log_ratio(theta, x)
        lp = self.log_prior(theta)
        lp = lp.expand_as(g) if lp.shape != g.shape else lp
        log_density = torch.where(torch.isneginf(lp), lp, lp + g)
        return _energy_from_log_density(log_density, self.outside_energy)


class LikelihoodEnergy(_Standardized, nn.Module):
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
        flow: A name in :data:`jsbi.inference.flows.FLOWS`.
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
            raise TypeError(f"flow must be a name in jsbi.inference.flows.FLOWS, got {flow!r}")
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
        return sum(self._candidate_nlls(theta, x))

    def _candidate_nlls(self, theta: Tensor, x: Tensor) -> list[Tensor]:
        # Every candidate's mean NLL on the same standardised pairs (standardised once).
        c, u = self._standardized(theta, x)
        return [-self._log_likelihood(flow, c, u).mean() for flow in self.candidates()]

    @torch.no_grad()
    def select(self, theta: Tensor, x: Tensor) -> dict[str, Any]:
        r"""Selects the candidate with the smallest NLL of ``x`` given ``theta`` on these
        (validation) pairs; all candidates are normalised densities over the same
        standardised ``x``, so their NLLs compare directly.

        Returns:
            ``{"nll": each candidate's NLL, in order, "selected": the chosen index}``, the
            record ``history["proxy_candidates"]`` keeps.
        """
        nlls = [float(v) for v in self._candidate_nlls(theta, x)]
        finite = [v if math.isfinite(v) else math.inf for v in nlls]  # NaN is never chosen
        self._selected = min(range(len(finite)), key=finite.__getitem__)
        self.selected.fill_(self._selected)
        return {"nll": nlls, "selected": self._selected}

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


class ResidualEnergy(ConditionalEnergy):
    r"""The flow times a learned correction: the ``residual`` proxy.

    .. math:: E_\psi(\theta, x) = -\log q_{\bar\phi}(\theta \mid x) - g_\psi(\theta, x),
        \qquad r_\psi \propto q_{\bar\phi} \, e^{g_\psi}

    with :math:`q_{\bar\phi}` a frozen copy of the flow (:meth:`sync` refreshes it, fully
    or as an exponential moving average) and :math:`g_\psi` an MLP whose last layer is
    zeroed, so at initialisation the proxy *is* the flow (:math:`Z_\psi = 1`). Its
    normaliser :math:`Z_\psi(x) = \mathbb{E}_{q_{\bar\phi}}[e^{g_\psi}]` is
    importance-sampled from the flow itself, with an ESS near 1 while ``g`` is small. The
    support is the prior's: the energy is ``outside_energy`` outside it, whether the flow
    is transformed (no mass there) or truncated (its mass there is cut).

    Arguments:
        flow: The flow :math:`q_\phi` to copy (a
            :class:`~jsbi.inference.flows.ConditionalFlow`).
        outside_energy: The energy where the frozen flow has zero density.
        num_samples: Samples of the frozen flow per ``x`` for :math:`\log Z` in
            :meth:`fit_loss`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, statistics); ``dim_theta`` and ``dim_x`` come from the flow.

    References:
        | Simulation-based Inference with the Generalized Kullback-Leibler Divergence
          (Miller, Federici, Weniger & Forre, 2023), arXiv:2310.01808
    """

    def __init__(
        self,
        flow: nn.Module,
        outside_energy: float = math.inf,
        num_samples: int = 16,
        **kwargs,
    ) -> None:
        kwargs.setdefault("zero_init", True)
        super().__init__(flow.dim_theta, flow.dim_x, **kwargs)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.outside_energy = _check_outside_energy(outside_energy)
        self.num_samples = int(num_samples)
        self.base = copy.deepcopy(flow)
        self.base.requires_grad_(False)
        self.base.eval()

    def parameters(self, recurse: bool = True):
        # The frozen copy is not the proxy's to train.
        return (p for p in super().parameters(recurse) if p.requires_grad)

    def train(self, mode: bool = True) -> ResidualEnergy:
        super().train(mode)
        self.base.eval()
        return self

    @torch.no_grad()
    def sync(self, flow: nn.Module, decay: float = 0.0) -> None:
        r"""Moves the frozen copy: :math:`\bar\phi \leftarrow d \bar\phi + (1 - d) \phi`.

        Arguments:
            flow: The flow whose weights to take.
            decay: :math:`d \in [0, 1)`; ``0`` copies.
        """
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        target = dict(self.base.state_dict())
        for name, value in flow.state_dict().items():
            if value.is_floating_point() and decay > 0:
                target[name].mul_(decay).add_(value.to(target[name]), alpha=1 - decay)
            else:
                target[name].copy_(value)

    def correction(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The learned correction :math:`g_\psi(\theta, x)`, shape ``(..., B)``."""
        return self.h(theta, x)

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The proxy's fit :math:`C = \mathbb{E}_D[E] + \mathbb{E}_x \log Z`, with
        :math:`\log Z = \log \mathbb{E}_{q_{\bar\phi}}[e^{g}]` from ``num_samples`` draws of
        the frozen flow."""
        with torch.no_grad():
            theta_k = self.base.sample((self.num_samples,), x)
            log_q = self.base.log_prob(theta_k, x)
        log_z, _ = log_normalizer(-self(theta_k, x), log_q)
        return proxy_fit(self(theta, x), log_z)

    def base_log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log q_{\bar\phi}(\theta \mid x)`, shape ``(..., B)``; ``-inf`` outside
        the prior's support (also for a flow that leaks: the proxy never does)."""
        lq = self.base.log_prob(theta, x)
        if self.base.leaks:
            inside = self.base.support.contains(theta)
            lq = torch.where(inside.expand_as(lq), lq, torch.full_like(lq, -math.inf))
        return lq

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`-\log q_{\bar\phi}(\theta \mid x) - g_\psi(\theta, x)`."""
        g = self.correction(theta, x)
        lq = self.base_log_prob(theta, x)
        lq = lq.expand_as(g) if lq.shape != g.shape else lq
        log_density = torch.where(torch.isneginf(lq), lq, lq + g)
        return _energy_from_log_density(log_density, self.outside_energy)


def _safe_std(v: Tensor) -> Tensor:
    std = v.std(0) if v.shape[0] > 1 else torch.ones_like(v[0])
    return torch.where(std < 1e-8, torch.ones_like(std), std)
