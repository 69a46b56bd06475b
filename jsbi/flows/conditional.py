r"""Conditional normalizing flows: zuko builders, standardisation, bounded support, embeddings.

The posterior model of jsbi is one :class:`ConditionalFlow` module, :math:`q_\phi(\theta
| x)`. It chains, from data to the flow's base:

1. ``x`` is z-scored with buffers computed from the training data, then passed through an
   embedding network (identity by default) to give the context ``c = embed(x)``;
2. with ``support="transform"`` (bounded priors), ``theta`` is mapped to an
   unconstrained ``z = T^{-1}(theta)`` where ``T = biject_to(prior.support)``; then it is
   z-scored;
3. a zuko flow (NSF by default) gives the density of the standardised parameters given
   ``c``.

``log q(theta | x)`` includes every Jacobian (standardisation and ``T``), so it is a density
over ``theta`` itself. With ``support="transform"`` the flow has no mass outside the prior's
support (``log_prob`` is ``-inf`` there); with ``support="truncate"`` it lives on ``theta``
and the posterior truncates it (see :mod:`jsbi.inference.support`). The defaults equal sbi's
``posterior_nn("zuko_nsf")``: 5 autoregressive transforms, each conditioned by an MLP with
5 hidden layers of 50 units (sbi expands ``hidden_features=50`` to one layer per transform),
and 10 spline bins, so that comparisons with sbi's NPE are like for like. zuko's
``passes=2`` (a keyword of :func:`build_conditional_flow` and of
:class:`~jsbi.inference.PosteriorEstimator`) gives coupling transforms instead: sampling
then takes two network passes instead of one per parameter, at some accuracy.

Example:
    >>> import torch
    >>> from sbi.utils import BoxUniform
    >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
    >>> theta = prior.sample((100,)); x = theta + 0.1 * torch.randn(100, 2)
    >>> flow = build_conditional_flow(theta, x, prior, flow="nsf")
    >>> flow.sample((7,), x[:3]).shape
    torch.Size([7, 3, 2])
    >>> flow.log_prob(theta[:5], x[:5]).shape
    torch.Size([5])

References:
    | Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032
    | Automatic Posterior Transformation for Likelihood-Free Inference (Greenberg et al.,
      2019), arXiv:1905.07488
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import zuko
from torch import Tensor
from torch.distributions import Distribution
from zuko.distributions import DiagNormal, NormalizingFlow
from zuko.lazy import LazyDistribution

from jsbi.flows.embeddings import embedding_from_spec, embedding_spec, qualname
from jsbi.flows.spline import NSF
from jsbi.flows.support import SUPPORT_MODES, Support, support_mode

__all__ = ["FLOWS", "ConditionalFlow", "build_conditional_flow", "build_flow"]

#: Flow names accepted by :func:`build_flow`, mapped to zuko's classes (``nsf``: zuko's,
#: with a faster softmax, :mod:`jsbi.flows.spline`).
FLOWS: dict[str, type[LazyDistribution]] = {
    "nsf": NSF,
    "maf": zuko.flows.MAF,
    "ncsf": zuko.flows.NCSF,
    "realnvp": zuko.flows.RealNVP,
    "naf": zuko.flows.NAF,
}

#: sbi's ``posterior_nn("zuko_nsf")``: ``hidden_features=50`` becomes ``[50] * num_transforms``.
DEFAULT_HIDDEN_FEATURES: tuple[int, ...] = (50,) * 5
_BINNED = ("nsf", "ncsf")


def build_flow(
    flow: str | type[LazyDistribution] | Callable[..., LazyDistribution],
    features: int,
    context: int,
    *,
    hidden_features: Sequence[int] = DEFAULT_HIDDEN_FEATURES,
    num_transforms: int = 5,
    num_bins: int = 10,
    **kwargs: Any,
) -> LazyDistribution:
    r"""Builds a conditional zuko flow by name or class.

    Arguments:
        flow: One of :data:`FLOWS` (``"nsf"``, ``"maf"``, ``"ncsf"``, ``"realnvp"``,
            ``"naf"``), or a zuko flow class (any :class:`zuko.lazy.LazyDistribution`
            subclass taking ``features``, ``context``, ``transforms``,
            ``hidden_features``).
        features: The number of parameters :math:`d`.
        context: The number of context features (the embedding's output size).
        hidden_features: The hidden layer widths of each transform's network.
        num_transforms: The number of transforms.
        num_bins: The number of spline bins (``nsf`` and ``ncsf`` only).
        kwargs: Passed to the zuko class.

    Returns:
        The lazy distribution ``c -> q(. | c)``.

    Example:
        >>> build_flow("maf", 3, 4, num_transforms=2)(torch.randn(4)).sample().shape
        torch.Size([3])
    """
    if isinstance(flow, str):
        key = flow.lower()
        if key not in FLOWS:
            raise ValueError(
                f"flow must be one of {sorted(FLOWS)} or a zuko flow class, got {flow!r}"
            )
        cls = FLOWS[key]
        if key in _BINNED:
            kwargs.setdefault("bins", num_bins)
    elif isinstance(flow, type) and issubclass(flow, LazyDistribution):
        cls = flow
    else:
        raise TypeError(
            "flow must be a name in jsbi.flows.conditional.FLOWS or a zuko LazyDistribution "
            f"subclass, got {flow!r}"
        )
    if int(num_transforms) < 1:
        raise ValueError(f"num_transforms must be >= 1, got {num_transforms}")
    return cls(
        features=int(features),
        context=int(context),
        transforms=int(num_transforms),
        hidden_features=[int(h) for h in hidden_features],
        **kwargs,
    )


def x_standardization(x: Tensor, robust: bool = False) -> tuple[Tensor, Tensor]:
    r"""The location and scale that z-score ``x`` (n, m), with checks.

    A column that is constant in the training data (a single value, or a spread below a
    millionth of its magnitude: float32 noise) keeps scale 1 (a near-zero scale would
    blow up any other value of it), with a warning; small units are not constant. A
    column whose standard deviation is dominated by a few rows (more than 10 times the
    deviation without its 0.5 % most extreme rows) gets a warning: those rows would
    squash the others' information; pass ``robust=True`` (``z_score_x="robust"``) to use
    the median and the interquartile range instead.

    Arguments:
        x: Training data, shape ``(n, m)``.
        robust: Median and interquartile range / 1.349 instead of mean and standard
            deviation.

    Returns:
        ``(loc, scale)``, each of shape ``(m,)``.

    Example:
        >>> loc, scale = x_standardization(torch.tensor([[0.0, 5.0], [2.0, 5.0]]))
        >>> loc, scale
        (tensor([1., 5.]), tensor([1.4142, 1.0000]))
    """
    if len(x) < 2:
        return x.mean(0), torch.ones_like(x[0])
    # In float64: squares of values near the float32 limit would overflow to inf.
    dtype, x = x.dtype, x.double()
    loc, scale = _x_location_scale(x, robust)
    return loc.to(dtype), scale.to(dtype)


def _x_location_scale(x: Tensor, robust: bool) -> tuple[Tensor, Tensor]:
    if robust:
        q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype), dim=0)
        loc, scale = q[1], (q[2] - q[0]) / 1.349
        scale = torch.where(scale > 0, scale, x.std(0))
    else:
        loc, scale = x.mean(0), x.std(0)
    # Constant: one value, or a spread below float32's resolution of the values
    # themselves. x in small units (1e-9 m) is not constant: its spread is z-scored.
    constant = (x.amax(0) == x.amin(0)) | ~(scale > 1e-6 * loc.abs()) | ~(scale > 0)
    if bool(constant.any()):
        cols = torch.nonzero(constant).flatten().tolist()
        warnings.warn(
            f"column(s) {cols[:10]} of x are constant in the training data: kept unscaled "
            "(scale 1) instead of dividing by a near-zero spread",
            stacklevel=4,
        )
        scale = torch.where(constant, torch.ones_like(scale), scale)
    if not robust and len(x) >= 200:
        k = max(1, math.ceil(0.005 * len(x)))
        dev = (x - x.median(0).values).abs()
        keep = dev < dev.topk(k, dim=0).values[-1]
        trimmed = torch.stack(
            [
                x[keep[:, j], j].std() if keep[:, j].sum() > 1 else scale[j]
                for j in range(x.shape[1])
            ]
        )
        # A column constant but for a few rows carries its information in them: no warning.
        dominated = (scale > 10 * trimmed) & (trimmed > 0) & ~constant
        if bool(dominated.any()):
            cols = torch.nonzero(dominated).flatten().tolist()
            warnings.warn(
                f"the scale of column(s) {cols[:10]} of x is dominated by a few extreme rows "
                f"(its {k} largest deviations make it over 10 times larger): the other rows' "
                "information is squashed. Check those simulations, or pass "
                "z_score_x='robust' (median and interquartile range)",
                stacklevel=4,
            )
    return loc, scale


class ConditionalFlow(nn.Module):
    r"""The conditional density :math:`q_\phi(\theta | x)`: standardisation, embedding,
    the prior's support and a zuko flow, in one module.

    Build it with :func:`build_conditional_flow`, which computes the standardisation from
    training data. Batch shapes of ``theta`` and ``x`` broadcast.

    How the support is respected (``support_mode``, see :mod:`jsbi.inference.support`):

    * ``"transform"``: the flow lives in ``T^{-1}(theta)`` (:attr:`maps`), so it has no
      mass outside the support and ``log_prob`` is ``-inf`` there. A circular flow
      (``ncsf``) on a box is bounded by construction instead (an affine map to
      ``[-pi, pi)``), with the same guarantees.
    * ``"truncate"``: the flow lives on ``theta`` and may put mass outside the support
      (:attr:`leaks`); ``log_prob`` is then the flow's own density on
      :math:`\mathbb{R}^d` (a proper density, what training fits), and
      :class:`~jsbi.inference.Posterior` rejects samples outside and renormalises by the
      accepted mass.

    Arguments:
        flow: The zuko lazy distribution over standardised parameters.
        dim_theta: The parameter dimension :math:`d`.
        dim_x: The data dimension :math:`m`.
        embedding_net: A module mapping ``x[..., m]`` (z-scored) to ``c[..., k]``.
        support: The prior's :class:`~jsbi.flows.support.Support` (``None``: real).
        support_mode: ``"transform"`` or ``"truncate"``.
        circular: Whether ``flow`` is circular on ``[-pi, pi)`` (``ncsf``).
        config: What :func:`jsbi.load_posterior` needs to rebuild the module.
    """

    def __init__(
        self,
        flow: LazyDistribution,
        dim_theta: int,
        dim_x: int,
        *,
        embedding_net: nn.Module | None = None,
        support: Support | None = None,
        support_mode: str = "transform",
        circular: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if support_mode not in SUPPORT_MODES:
            raise ValueError(f"support must be one of {SUPPORT_MODES}, got {support_mode!r}")
        self.flow = flow
        self.dim_theta = int(dim_theta)
        self.dim_x = int(dim_x)
        self.embedding_net = nn.Identity() if embedding_net is None else embedding_net
        self.support = Support(None, dim_theta) if support is None else support
        self.support_mode = support_mode
        bounded = self.support.is_bounded
        #: Whether the flow models ``T^{-1}(theta)`` rather than ``theta``.
        self.maps = support_mode == "transform" and bounded and not circular
        #: Whether the flow may put mass outside the support (the posterior truncates).
        self.leaks = support_mode == "truncate" and bounded and not circular
        #: Whether the base is Gaussian, so a temperature applies (not ``ncsf``'s uniform).
        self.temperable = not circular
        if self.maps:
            self.support.transform()  # fails here, not in training, if there is no map
        self.config = dict(config or {})
        self.register_buffer("theta_loc", torch.zeros(dim_theta))
        self.register_buffer("theta_scale", torch.ones(dim_theta))
        self.register_buffer("x_loc", torch.zeros(dim_x))
        self.register_buffer("x_scale", torch.ones(dim_x))
        #: The base distribution's temperature T: z ~ N(0, T^2 I). 1 is the trained flow;
        #: a recalibration (:meth:`jsbi.posteriors.Posterior.recalibrate`) sets another,
        #: widening (T > 1) or narrowing every credible region, the density still exact.
        self.register_buffer("temperature", torch.ones(()))

    def set_temperature(self, value: float) -> None:
        r"""Sets the base distribution's temperature ``T`` (``z ~ N(0, T^2 I)``)."""
        self.temperature.fill_(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Files saved before the temperature existed hold a flow at T = 1.
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _dist(self, c: Tensor) -> Any:
        # The zuko flow at context c, its base's scale times the temperature (an exact
        # no-op at T = 1, and no data-dependent branch, so vmap can batch an ensemble).
        dist = self.flow(c)
        if not self.temperable:
            return dist
        base = dist.base
        tempered = DiagNormal(base.base_dist.loc, base.base_dist.scale * self.temperature)
        return NormalizingFlow(dist.transform, tempered)

    # -- standardisation ---------------------------------------------------------------
    def to_unconstrained(self, theta: Tensor) -> Tensor:
        r"""Maps ``theta`` to the (unstandardised) space the flow models."""
        return self.support.to_unconstrained(theta)[0] if self.maps else theta

    @torch.no_grad()
    def set_standardization(
        self,
        theta: Tensor | None = None,
        x: Tensor | None = None,
        min_std: float = 1e-14,
        mode: str = "independent",
        robust_x: bool = False,
    ) -> None:
        r"""Sets the z-scoring buffers from training data (``None`` keeps them).

        ``mode="independent"`` z-scores the flow's (unconstrained) parameters by their own
        mean and standard deviation. ``mode="local"`` applies to box supports: the
        unconstrained parameters are centred at :math:`T^{-1}(\bar\theta)` and scaled by
        :math:`\mathrm{sd}(\theta) \, |dT^{-1}/d\theta|(\bar\theta)`, so near the
        prior's centre the flow sees ``theta`` exactly as plain z-scoring (sbi's) would;
        only the tails are stretched to the real line. Other supports fall back to
        ``"independent"``. ``x`` is standardised by :func:`x_standardization` (with
        ``robust_x``: median and interquartile range).
        """
        if mode not in ("independent", "local"):
            raise ValueError(f"mode must be 'independent' or 'local', got {mode!r}")
        if theta is not None:
            theta = theta.to(self.theta_loc)
            if mode == "local" and self.maps and self.support.kind == "interval":
                lo, hi = self.support.lower, self.support.upper
                m = theta.mean(0)
                u = ((m - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
                slope = 1 / ((hi - lo) * u * (1 - u))  # d logit((t - lo) / (hi - lo)) / dt
                sd = theta.std(0) if len(theta) > 1 else (hi - lo) / math.sqrt(12)
                self.theta_loc.copy_(self.to_unconstrained(m[None])[0])
                self.theta_scale.copy_((sd * slope).clamp_min(min_std))
            else:
                z = self.to_unconstrained(theta)
                self.theta_loc.copy_(z.mean(0))
                self.theta_scale.copy_(z.std(0).clamp_min(min_std) if len(z) > 1 else 1.0)
        if x is not None:
            loc, scale = x_standardization(x.to(self.x_loc), robust=robust_x)
            self.x_loc.copy_(loc)
            self.x_scale.copy_(scale)

    def embed(self, x: Tensor) -> Tensor:
        r"""Returns the context ``c = embedding_net((x - loc) / scale)``, shape (..., k)."""
        if x.shape[-1] != self.dim_x:
            raise ValueError(f"x must have shape (..., {self.dim_x}), got {tuple(x.shape)}")
        return self.embedding_net((x - self.x_loc) / self.x_scale)

    # -- densities -----------------------------------------------------------------------
    def _log_prob_context(self, theta: Tensor, c: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(theta.shape[:-1], c.shape[:-1])
        theta = theta.expand(*shape, self.dim_theta)
        c = c.expand(*shape, c.shape[-1])
        inside = None
        if self.support.is_bounded and not self.leaks:
            # Rows outside get a harmless stand-in so no NaN reaches the gradient.
            inside, theta = self.support.clip_inside(theta)
        if self.maps:
            z, ladj = self.support.to_unconstrained(theta)
        else:
            z, ladj = theta, 0.0
        u = (z - self.theta_loc) / self.theta_scale
        lp = self._dist(c).log_prob(u) - self.theta_scale.log().sum() - ladj
        if inside is not None:
            lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        return lp

    def to_base(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The whole bijection from ``theta`` to the zuko flow's base space, ``u =
        f(theta)``, and :math:`\log |\det \partial u / \partial \theta|`: the support's
        map (``transform`` mode), the z-scoring and the flow's transform.

        ``log_prob(theta, x) = base.log_prob(u) + ladj`` inside the support, with the base
        at the flow's temperature, :math:`N(0, T^2 I)` (``u`` itself does not depend on
        :math:`T`); tests check it against autograd's Jacobian.

        Arguments:
            theta: Parameters, shape ``(..., d)``, inside the support.
            x: Data, shape ``(..., m)``, broadcastable with ``theta``.

        Returns:
            ``u`` of shape ``(..., d)`` and the log-determinant of shape ``(...)``.
        """
        dist = self.flow(self.embed(x))
        if self.maps:
            z, ladj_t = self.support.to_unconstrained(theta)
        else:
            z, ladj_t = theta, 0.0
        s = (z - self.theta_loc) / self.theta_scale
        u, ladj_f = dist.transform.call_and_ladj(s)
        return u, ladj_f - ladj_t - self.theta_scale.log().sum()

    def from_base(self, u: Tensor, x: Tensor) -> Tensor:
        r"""The inverse of :meth:`to_base`: ``theta = f^{-1}(u)``, shape ``(..., d)``."""
        z = self.flow(self.embed(x)).transform.inv(u) * self.theta_scale + self.theta_loc
        return self.support.from_unconstrained(z)[0] if self.maps else z

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""Returns :math:`\log q(\theta | x)`.

        Arguments:
            theta: Parameters, shape ``(..., d)``.
            x: Data, shape ``(..., m)``, broadcastable with ``theta``'s batch shape.

        Returns:
            The log-densities, shape the broadcast batch shape; ``-inf`` outside a bounded
            support with ``support="transform"``; with ``"truncate"``, the flow's own
            density on :math:`\mathbb{R}^d` (:class:`~jsbi.inference.Posterior` masks and
            renormalises it).
        """
        return self._log_prob_context(theta, self.embed(x))

    def rsample_and_log_prob(self, shape: Sequence[int], x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Draws reparameterised samples and their log-density.

        Gradients flow from the samples to the flow's (and embedding's) parameters.

        Arguments:
            shape: The sample shape ``S``.
            x: Data, shape ``(*B, m)``.

        Returns:
            ``theta`` of shape ``(*S, *B, d)`` and :math:`\log q(\theta | x)` of shape
            ``(*S, *B)``.
        """
        c = self.embed(x)
        u, lp = self._dist(c).rsample_and_log_prob(torch.Size(shape))
        z = u * self.theta_scale + self.theta_loc
        lp = lp - self.theta_scale.log().sum()
        if self.maps:
            theta, ladj = self.support.from_unconstrained(z)
            return theta, lp - ladj
        return z, lp

    def rsample(self, shape: Sequence[int], x: Tensor) -> Tensor:
        r"""Draws reparameterised samples, shape ``(*S, *B, d)``."""
        c = self.embed(x)
        z = self._dist(c).rsample(torch.Size(shape)) * self.theta_scale + self.theta_loc
        return self.support.from_unconstrained(z)[0] if self.maps else z

    @torch.no_grad()
    def sample(self, shape: Sequence[int], x: Tensor) -> Tensor:
        r"""Draws samples without gradients, shape ``(*S, *B, d)`` for ``x`` of ``(*B, m)``."""
        return self.rsample(shape, x)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        return self.log_prob(theta, x)


def _hidden_features(hidden_features: Sequence[int] | int, num_transforms: int) -> list[int]:
    # sbi's spelling: one int is one hidden layer of that width per transform.
    given = hidden_features
    if isinstance(hidden_features, int) and not isinstance(hidden_features, bool):
        hidden_features = [int(hidden_features)] * int(num_transforms)
    try:
        widths = [int(h) for h in hidden_features]
    except (TypeError, ValueError):
        widths = []
    if not widths or any(h < 1 for h in widths):
        raise ValueError(
            "hidden_features must be a sequence of positive layer widths, e.g. (64, 64), "
            f"or one width (sbi's spelling: one layer per transform), got {given!r}"
        )
    return widths


def check_flow_options(
    *,
    num_transforms: Any = 5,
    num_bins: Any = 10,
    hidden_features: Any = DEFAULT_HIDDEN_FEATURES,
    z_score_theta: Any = True,
    z_score_x: Any = True,
) -> None:
    r"""Raises a :class:`ValueError` naming the option when one of these is out of range.

    :class:`~jsbi.inference.PosteriorEstimator` calls it at construction, so a bad value is
    an error there rather than a shape error from inside zuko at ``fit``.
    """
    for name, value in (("num_transforms", num_transforms), ("num_bins", num_bins)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _hidden_features(hidden_features, num_transforms)
    if z_score_theta not in (True, False, "independent", "local"):
        raise ValueError(
            f"z_score_theta must be True, False, 'independent' or 'local', got {z_score_theta!r}"
        )
    if z_score_x not in (True, False, "robust"):
        raise ValueError(f"z_score_x must be True, False or 'robust', got {z_score_x!r}")


def _context_features(embedding: nn.Module, x: Tensor) -> int:
    # The embedding's output size, from its first two training rows, or an error that
    # says what the user's module did wrong.
    m = x.shape[-1]
    try:
        with torch.no_grad():
            c = embedding(x[:2])
    except Exception as err:  # noqa: BLE001 - any failure of the user's module
        raise ValueError(
            f"embedding_net failed on x of shape (2, {m}) (the first two rows of the "
            f"training data): {type(err).__name__}: {err}"
        ) from err
    if c.ndim != 2 or c.shape[0] != min(2, len(x)):
        raise ValueError(
            f"embedding_net must map x of shape (n, {m}) to (n, k), got {tuple(c.shape)}"
        )
    return int(c.shape[-1])


def build_conditional_flow(
    theta: Tensor,
    x: Tensor,
    prior: Distribution | None = None,
    *,
    flow: str | type[LazyDistribution] = "nsf",
    embedding_net: nn.Module | None = None,
    support: str | None = None,
    z_score_theta: bool | str = True,
    z_score_x: bool | str = True,
    hidden_features: Sequence[int] | int = DEFAULT_HIDDEN_FEATURES,
    num_transforms: int = 5,
    num_bins: int = 10,
    **kwargs: Any,
) -> ConditionalFlow:
    r"""Builds a :class:`ConditionalFlow` whose standardisation comes from ``(theta, x)``.

    Arguments:
        theta: Training parameters, shape ``(n, d)`` (for dimensions and z-scoring).
        x: Training data, shape ``(n, m)``.
        prior: The prior; its ``support`` gives the bounded transform.
        flow: A name in :data:`FLOWS` or a zuko flow class (see :func:`build_flow`).
        embedding_net: A module for ``x`` (trained jointly); ``None`` is the identity.
        support: How a bounded prior is respected: ``"transform"`` (the flow lives in
            ``T^{-1}(theta)``, ``T = biject_to(prior.support)``: no mass outside the
            support) or ``"truncate"`` (the flow is on ``theta`` and may leak;
            :class:`~jsbi.inference.Posterior` rejects samples outside and renormalises
            ``log_prob``). Default :data:`~jsbi.flows.support.DEFAULT_SUPPORT`.
        z_score_theta: Whether to z-score the (unconstrained) parameters: ``True`` or
            ``"independent"`` (by their own statistics), ``"local"`` (box priors: the slope
            of plain z-scoring at the prior's centre, see
            :meth:`ConditionalFlow.set_standardization`), ``False`` (not at all).
        z_score_x: Whether to z-score ``x`` before the embedding: ``True`` (mean and
            standard deviation), ``"robust"`` (median and interquartile range) or
            ``False``. See :func:`x_standardization`.
        hidden_features, num_transforms, num_bins, kwargs: See :func:`build_flow`;
            ``hidden_features`` may also be one int (sbi's spelling: one hidden layer of
            that width per transform).

    Returns:
        The module, on ``theta``'s device.

    Note:
        ``ncsf`` (circular splines) models angles in ``[-pi, pi)``: with a box prior its
        support is mapped affinely onto that interval (so it never leaks, whatever
        ``support`` says); otherwise ``theta`` is
        used as is and must already be an angle. ``theta`` is never z-scored for it.
    """
    check_flow_options(
        num_transforms=num_transforms,
        num_bins=num_bins,
        hidden_features=hidden_features,
        z_score_theta=z_score_theta,
        z_score_x=z_score_x,
    )
    hidden_features = _hidden_features(hidden_features, num_transforms)
    mode = support_mode(support)
    theta = torch.as_tensor(theta, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32)
    d, m = theta.shape[-1], x.shape[-1]
    emb = (nn.Identity() if embedding_net is None else embedding_net).to(x.device)
    config = {
        "flow": flow.lower() if isinstance(flow, str) else qualname(flow),
        "dim_theta": d,
        "dim_x": m,
        "dim_context": _context_features(emb, x),
        "support": mode,
        "bounded": mode == "transform",  # what files saved before support= read
        "hidden_features": [int(h) for h in hidden_features],
        "num_transforms": int(num_transforms),
        "num_bins": int(num_bins),
        "flow_kwargs": dict(kwargs),
        "embedding": embedding_spec(embedding_net),
        "z_score_theta": z_score_theta if isinstance(z_score_theta, str) else bool(z_score_theta),
        "z_score_x": z_score_x if isinstance(z_score_x, str) else bool(z_score_x),
    }
    module = conditional_flow_from_config(
        config, prior, embedding_net=emb, flow=None if isinstance(flow, str) else flow
    ).to(theta.device)
    if config["flow"] == "ncsf":
        box = module.support
        if box.kind == "interval":
            module.theta_loc.copy_((box.lower + box.upper) / 2)
            module.theta_scale.copy_((box.upper - box.lower) / (2 * math.pi))
        module.set_standardization(None, x if z_score_x else None, robust_x=z_score_x == "robust")
    else:
        module.set_standardization(
            theta if z_score_theta else None,
            x if z_score_x else None,
            mode=z_score_theta if isinstance(z_score_theta, str) else "independent",
            robust_x=z_score_x == "robust",
        )
    return module


def conditional_flow_from_config(
    config: dict[str, Any],
    prior: Distribution | None,
    *,
    embedding_net: nn.Module | None = None,
    flow: type[LazyDistribution] | None = None,
) -> ConditionalFlow:
    r"""Rebuilds an (untrained, unstandardised) :class:`ConditionalFlow` from its config.

    Arguments:
        config: ``ConditionalFlow.config`` as built by :func:`build_conditional_flow`.
        prior: The prior (for the support transform).
        embedding_net: The embedding module; required when the config names a custom one.
        flow: The zuko class, required when the config names a non-zuko class.

    Returns:
        The module; load the saved ``state_dict`` into it for the trained weights.
    """
    d, m = int(config["dim_theta"]), int(config["dim_x"])
    if embedding_net is None:
        embedding_net = embedding_from_spec(config.get("embedding"))
        if embedding_net is None:
            raise ValueError(
                f"the posterior uses a custom embedding network "
                f"({config['embedding'].get('class')}); pass an instance of it as "
                "embedding_net="
            )
    name = config["flow"]
    flow_cls = flow if flow is not None else flow_class_from_name(name)
    net = build_flow(
        flow_cls,
        d,
        int(config["dim_context"]),
        hidden_features=config["hidden_features"],
        num_transforms=config["num_transforms"],
        num_bins=config["num_bins"],
        **config.get("flow_kwargs", {}),
    )
    return ConditionalFlow(
        net,
        d,
        m,
        embedding_net=embedding_net,
        support=Support.from_prior(prior, d),
        support_mode=config.get("support") or support_mode(bounded=bool(config["bounded"])),
        circular=name == "ncsf",
        config=config,
    )


def flow_class_from_name(name: str) -> str | type[LazyDistribution]:
    r"""Resolves a saved flow name: a key of :data:`FLOWS` or a zuko ``module:Class``."""
    if name in FLOWS:
        return name
    module, _, qual = name.partition(":")
    # Exactly zuko and its submodules: a module merely named like it (zuko_extras, planted
    # beside a posterior file) is never imported by loading one.
    if module != "zuko" and not module.startswith("zuko."):
        raise ValueError(
            f"flow class {name!r} is not a zuko class; pass it to load_posterior(flow=...)"
        )
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj
