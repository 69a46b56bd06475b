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

__all__ = ["ConditionalEnergy", "MLPEnergy", "PriorTimesRatioEnergy"]

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution


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


class ConditionalEnergy(nn.Module):
    r"""Base class: a learned function :math:`h_\psi(\theta, x)` of standardised inputs.

    Holds the standardisation buffers, the ``x`` embedding and an MLP on the
    concatenation ``[(theta - theta_mean) / theta_std, embedding((x - x_mean) / x_std)]``.
    Subclasses turn :meth:`network` into an energy in :meth:`forward`.

    Arguments:
        theta_dim: The parameter dimension ``d``.
        x_dim: The data dimension ``m``.
        hidden_features: The MLP's hidden widths.
        activation: The hidden activation's constructor (smooth by default, since the
            energy's gradient in ``theta`` may be used).
        embedding: A module mapping standardised ``x`` of shape ``(..., m)`` to features
            ``(..., f)``, e.g. the flow's embedding net to share it. Default: identity.
        embedding_features: ``f``; inferred with a dummy forward if ``None``.
        zero_init: Whether to zero the MLP's last layer (then :math:`h = 0` at init).
        theta_mean, theta_std, x_mean, x_std: Standardisation statistics (default 0 and
            1); see :meth:`fit_standardization`.
    """

    def __init__(
        self,
        theta_dim: int,
        x_dim: int,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.SiLU,
        embedding: nn.Module | None = None,
        embedding_features: int | None = None,
        zero_init: bool = False,
        theta_mean: Tensor | None = None,
        theta_std: Tensor | None = None,
        x_mean: Tensor | None = None,
        x_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        if theta_dim < 1 or x_dim < 1:
            raise ValueError(
                f"theta_dim and x_dim must be positive, got theta_dim={theta_dim}, x_dim={x_dim}"
            )
        self.theta_dim = int(theta_dim)
        self.x_dim = int(x_dim)
        self.embedding = nn.Identity() if embedding is None else embedding
        if embedding_features is None:
            if embedding is None:
                embedding_features = x_dim
            else:
                with torch.no_grad():
                    embedding_features = self.embedding(torch.zeros(1, x_dim)).shape[-1]
        self.embedding_features = int(embedding_features)
        self.network = _mlp(
            self.theta_dim + self.embedding_features, hidden_features, activation, zero_init
        )
        self.register_buffer("theta_mean", self._stat(theta_mean, 0.0, theta_dim, "theta_mean"))
        self.register_buffer("theta_std", self._stat(theta_std, 1.0, theta_dim, "theta_std"))
        self.register_buffer("x_mean", self._stat(x_mean, 0.0, x_dim, "x_mean"))
        self.register_buffer("x_std", self._stat(x_std, 1.0, x_dim, "x_std"))

    @staticmethod
    def _stat(value: Tensor | None, default: float, dim: int, name: str) -> Tensor:
        if value is None:
            return torch.full((dim,), default)
        value = torch.as_tensor(value, dtype=torch.get_default_dtype()).reshape(-1)
        if value.shape != (dim,):
            raise ValueError(f"{name} must have shape ({dim},), got {tuple(value.shape)}")
        return value.clone()

    @torch.no_grad()
    def fit_standardization(self, theta: Tensor, x: Tensor | None = None) -> ConditionalEnergy:
        r"""Sets the standardisation statistics from data (in place).

        Standard deviations below ``1e-8`` (constant columns) are set to 1.

        Arguments:
            theta: Parameters, shape ``(N, d)``.
            x: Data, shape ``(N, m)``. If ``None``, the ``x`` statistics are kept (e.g.
                when a shared embedding standardises ``x`` itself).

        Returns:
            The module itself.
        """
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise ValueError(
                f"theta must have shape (N, {self.theta_dim}), got {tuple(theta.shape)}"
            )
        self.theta_mean.copy_(theta.mean(0))
        self.theta_std.copy_(_safe_std(theta))
        if x is not None:
            if x.ndim != 2 or x.shape[1] != self.x_dim:
                raise ValueError(f"x must have shape (N, {self.x_dim}), got {tuple(x.shape)}")
            self.x_mean.copy_(x.mean(0))
            self.x_std.copy_(_safe_std(x))
        return self

    def _check(self, theta: Tensor, x: Tensor) -> None:
        if theta.ndim < 1 or theta.shape[-1] != self.theta_dim:
            raise ValueError(
                f"theta must have shape (..., B, {self.theta_dim}), got {tuple(theta.shape)}"
            )
        if x.ndim < 1 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (B, {self.x_dim}), got {tuple(x.shape)}")

    def h(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The network's scalar output :math:`h_\psi(\theta, x)`, shape ``(..., B)``.

        ``x`` is embedded once and broadcast over ``theta``'s leading sample dimensions.
        """
        self._check(theta, x)
        z = (theta - self.theta_mean) / self.theta_std
        e = self.embedding((x - self.x_mean) / self.x_std)
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
        theta_dim: The parameter dimension ``d``.
        x_dim: The data dimension ``m``.
        confinement: :math:`\kappa \ge 0`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, ``zero_init``, statistics).

    Example:
        >>> energy = MLPEnergy(2, 3)
        >>> energy(torch.randn(10, 4, 2), torch.randn(4, 3)).shape
        torch.Size([10, 4])
    """

    def __init__(self, theta_dim: int, x_dim: int, confinement: float = 0.0, **kwargs) -> None:
        super().__init__(theta_dim, x_dim, **kwargs)
        if confinement < 0:
            raise ValueError(f"confinement must be non-negative, got {confinement}")
        self.confinement = float(confinement)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`E_\psi(\theta, x)`, shape ``(..., B)``."""
        energy = self.h(theta, x)
        if self.confinement > 0:
            z = (theta - self.theta_mean) / self.theta_std
            energy = energy + 0.5 * self.confinement * z.square().sum(-1)
        return energy


class PriorTimesRatioEnergy(ConditionalEnergy):
    r"""The prior times a learned ratio: the default proxy.

    .. math:: E_\psi(\theta, x) = -\log \pi(\theta) - g_\psi(\theta, x),
        \qquad r_\psi(\theta \mid x) \propto \pi(\theta) \, e^{g_\psi(\theta, x)}

    with :math:`g_\psi` an MLP on standardised :math:`\theta` and the embedded,
    standardised :math:`x`. The proxy has exactly the prior's support, and
    :math:`g_\psi` plays the log likelihood-to-evidence ratio
    :math:`\log p(x \mid \theta) / p(x)` (for which :math:`Z_\psi = 1`), so the
    contrastive loss :func:`jsbi.inference.objectives.contrastive_ratio_loss` on
    :meth:`log_ratio` warm-starts it. By default the last layer is zeroed, so the
    proxy starts as the prior.

    Outside the prior's support the energy is ``outside_energy``, ``+inf`` by
    default (exact: zero proxy density). The prior is evaluated only at points inside
    its (closed) support, the others being replaced by a fixed inside point, so
    argument validation never raises and no ``NaN`` reaches the gradients: outside
    points have a constant energy, hence zero gradient. Points on the support's
    boundary where the prior's ``log_prob`` is not finite (torch's ``Uniform``
    excludes its upper bound) count as outside. With
    ``+inf``, a flow sample outside makes :func:`~jsbi.inference.objectives.reverse_kl`
    ``+inf`` (a leak is infinitely bad); pass a large finite ``outside_energy`` to
    keep such losses finite instead.

    Arguments:
        prior: The prior :math:`\pi(\theta)`, a torch distribution with event shape
            ``(d,)`` (or batch shape ``(d,)`` of scalars, summed).
        x_dim: The data dimension ``m``.
        outside_energy: The energy outside the support (``math.inf`` or a finite float).
        zero_init: Whether ``g = 0`` at initialisation.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, statistics).

    Example:
        >>> from torch.distributions import Independent, Uniform
        >>> prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
        >>> energy = PriorTimesRatioEnergy(prior, x_dim=3)
        >>> energy(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 3))
        tensor([1.3863,    inf], grad_fn=<WhereBackward0>)
    """

    def __init__(
        self,
        prior: Distribution,
        x_dim: int,
        outside_energy: float = math.inf,
        zero_init: bool = True,
        **kwargs,
    ) -> None:
        if not isinstance(prior, Distribution):
            raise TypeError(
                f"prior must be a torch.distributions.Distribution, got {type(prior).__name__}"
            )
        with torch.no_grad():
            # A fixed point inside the support: the prior is evaluated there instead of
            # at outside points, so neither validation nor NaN can come from them.
            safe = prior.sample().reshape(-1)
        super().__init__(safe.shape[0], x_dim, zero_init=zero_init, **kwargs)
        if math.isnan(outside_energy) or outside_energy == -math.inf:
            raise ValueError(f"outside_energy must be finite or +inf, got {outside_energy}")
        self.prior = prior
        self.outside_energy = float(outside_energy)
        self.register_buffer("_safe_theta", safe.to(torch.get_default_dtype()))

    def _inside(self, theta: Tensor) -> Tensor:
        try:
            inside = self.prior.support.check(theta)
        except NotImplementedError:
            return torch.isfinite(theta).all(-1)
        if inside.ndim == theta.ndim:
            inside = inside.all(-1)
        return inside & torch.isfinite(theta).all(-1)

    def log_prior(self, theta: Tensor) -> Tensor:
        r""":math:`\log \pi(\theta)`, ``-inf`` outside the support, shape ``(...)``.

        Arguments:
            theta: Parameters, shape ``(..., d)``.
        """
        inside = self._inside(theta)
        safe = torch.where(inside.unsqueeze(-1), theta, self._safe_theta.to(theta))
        lp = self.prior.log_prob(safe)
        if lp.ndim == theta.ndim:
            lp = lp.sum(-1)
        keep = inside & torch.isfinite(lp)
        return torch.where(keep, lp, torch.full_like(lp, -math.inf))

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
        outside = torch.isneginf(lp)
        # The double `where` keeps -inf out of the arithmetic, hence out of backward.
        energy = -torch.where(outside, torch.zeros_like(lp), lp) - g
        return torch.where(outside, torch.full_like(energy, self.outside_energy), energy)


def _safe_std(v: Tensor) -> Tensor:
    std = v.std(0) if v.shape[0] > 1 else torch.ones_like(v[0])
    return torch.where(std < 1e-8, torch.ones_like(std), std)
