r"""What every proxy shares: the :class:`Proxy` protocol, standardisation, the energy MLP
and the prior's safe log density.

An energy :math:`E_\psi(\theta, x)` defines the proxy
:math:`r_\psi(\theta \mid x) = e^{-E_\psi(\theta, x)} / Z_\psi(x)`: lower energy is
more probable. The normaliser :math:`Z_\psi(x)` is never computed here; see
:func:`jsbi.objectives.log_normalizer`.

Shapes: ``energy(theta, x)`` takes ``theta`` of shape ``(..., B, d)`` and ``x`` of shape
``(B, m)`` (or any shape broadcastable with ``theta``'s leading dimensions) and returns
energies of shape ``(..., B)``; e.g. ``(K, B, d)`` flow samples with ``(B, m)``
observations give ``(K, B)``.

References:
    | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025)
    | https://arxiv.org/abs/2511.11159
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.flows.conditional import x_standardization
from jsbi.flows.support import Support, prior_device, prior_log_prob

__all__ = ["ConditionalEnergy", "Proxy"]


class Proxy(nn.Module):
    r"""The protocol every proxy follows: an energy :math:`E_\psi(\theta, x)` (``forward``)
    and what the training step and the posterior ask of it. The defaults are those of a
    proxy without an own data fit (the :class:`~jsbi.proxies.MLPEnergy`): it then fits
    :math:`C`, with :math:`\log Z` importance-sampled from the flow.

    Attributes:
        fit_name: The name its own fit is logged under (``"C"``, ``"fit"``,
            ``"contrastive"``).
        config: What rebuilds it when a posterior is loaded (``None``: it cannot be saved).
    """

    fit_name: str = "C"
    config: dict[str, Any] | None = None

    def fit_loss(self, theta: Tensor, x: Tensor) -> Tensor | None:
        r"""Its own data fit on a batch of pairs (``None``: it has none, and fits
        :math:`C`)."""
        return None

    @property
    def undecided(self) -> bool:
        r"""Whether it holds candidates that :meth:`select` has not chosen among yet."""
        return False

    def select(self, theta: Tensor, x: Tensor) -> dict[str, Any]:
        r"""Chooses among its candidates on these (validation) pairs; returns the record
        of the choice (empty: nothing to choose)."""
        return {}

    def in_domain(self, x: Tensor) -> Tensor:
        r"""Whether each row of ``x`` (shape ``(B, m)``) lies where the energy depends on
        ``theta`` as trained (default: everywhere)."""
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)

    @property
    def has_likelihood(self) -> bool:
        r"""Whether it is the prior times a normalised likelihood of ``x`` (then it gives
        the evidence :math:`p(x)`)."""
        return False


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

    @property
    def dim_u(self) -> int:
        r"""The dimension the ``x`` statistics standardise: ``x``'s (a likelihood of
        summaries standardises the summaries)."""
        return self.dim_x

    def _register_statistics(self, theta_loc, theta_scale, x_loc, x_scale) -> None:
        d, m = self.dim_theta, self.dim_u
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

        Computed in float64; ``x``'s as the flow's
        (:func:`~jsbi.flows.conditional.x_standardization`: constant columns keep scale 1).

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
        # In float64, as the flow's: squares of large finite values overflow float32.
        theta64 = theta.double()
        self.theta_loc.copy_(theta64.mean(0))
        self.theta_scale.copy_(_safe_std(theta64))
        if x is not None:
            if x.ndim != 2 or x.shape[1] != self.dim_x:
                raise ValueError(f"x must have shape (N, {self.dim_x}), got {tuple(x.shape)}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the flow's standardisation said it
                loc, scale = x_standardization(x)
            self.x_loc.copy_(loc)
            self.x_scale.copy_(scale)
        for name in ("theta_loc", "theta_scale", "x_loc", "x_scale"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(
                    f"the proxy's {name} is not finite: theta and x must be finite and "
                    "below float32's range"
                )
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


class ConditionalEnergy(_Standardized, Proxy):
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


def _safe_std(v: Tensor) -> Tensor:
    std = v.std(0) if v.shape[0] > 1 else torch.ones_like(v[0])
    return torch.where(std < 1e-8, torch.ones_like(std), std)
