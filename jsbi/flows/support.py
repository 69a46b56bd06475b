r"""The prior's support as one object: membership, the map to unconstrained space,
leakage and truncation.

Every part of jsbi that asks "is this ``theta`` allowed?" asks a :class:`Support`: the
flow (:class:`~jsbi.flows.conditional.ConditionalFlow`), the proxies
(:class:`~jsbi.proxies.base.PriorLogDensity`), the posterior's rejection sampler and
normaliser (:class:`~jsbi.inference.Posterior`), the estimator's data check and the
diagnostics' leakage.

A flow respects a bounded prior in one of two ways (:data:`SUPPORT_MODES`):

* ``"transform"``: the flow lives in ``z = T^{-1}(theta)``, ``T = biject_to(support)``
  (:meth:`Support.transform`), so it has no mass outside the support by construction;
  its density includes ``log |det dT^{-1}/dtheta|``.
* ``"truncate"`` (sbi's way): the flow lives on (z-scored) ``theta`` itself and may put
  mass outside the support. Samples outside are rejected
  (:meth:`Support.rejection_sample`), and the density is renormalised by the accepted
  mass :math:`P_q(\theta \in S | x)`, estimated by Monte Carlo with its standard error
  (:meth:`Support.accepted_mass`).

Example:
    >>> import torch
    >>> from sbi.utils import BoxUniform
    >>> s = Support.from_prior(BoxUniform(-torch.ones(2), torch.ones(2)))
    >>> s.kind, s.contains(torch.tensor([[0.0, 0.5], [0.0, 2.0]])).tolist()
    ('interval', [True, False])
    >>> z = torch.tensor([[0.3, -4.0]])
    >>> torch.allclose(s.transform().inv(s.transform()(z)), z, atol=1e-5)
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution, Transform, biject_to, constraints
from torch.distributions.transforms import IndependentTransform

from jsbi.progress import user_stacklevel

__all__ = ["Support"]

#: How a flow respects a bounded prior (see the module docstring).
SUPPORT_MODES = ("transform", "truncate")
#: The mode used when neither ``support`` nor ``bounded`` is given.
DEFAULT_SUPPORT = "truncate"


def support_mode(support: str | None = None, bounded: bool | None = None) -> str:
    r"""Resolves the ``support=`` option and its older spelling ``bounded=``.

    ``bounded=True`` is ``support="transform"`` and ``bounded=False`` is
    ``support="truncate"`` (the flow on ``theta``, truncated to the support). Neither
    given: :data:`DEFAULT_SUPPORT`.

    Example:
        >>> support_mode(bounded=False)
        'truncate'
    """
    if support is not None and support not in SUPPORT_MODES:
        raise ValueError(f"support must be one of {SUPPORT_MODES}, got {support!r}")
    if bounded is None:
        return DEFAULT_SUPPORT if support is None else support
    implied = "transform" if bounded else "truncate"
    if support is not None and support != implied:
        raise ValueError(
            f"support={support!r} and bounded={bounded!r} disagree (bounded=True is "
            "support='transform', bounded=False is support='truncate'); pass only support="
        )
    return implied


class SupportRejectionError(RuntimeError):
    r"""Rejection sampling inside the support gave up: the flow puts almost no mass
    there at some observation."""


class AcceptedMass(NamedTuple):
    r"""A Monte Carlo estimate of :math:`P_q(\theta \in S | x)` per observation.

    Attributes:
        mass: The accepted fraction, shape ``(B,)``.
        se: Its binomial standard error, ``sqrt(mass (1 - mass) / n)``, shape ``(B,)``.
        num_samples: The flow samples drawn per observation, ``n``.
    """

    mass: Tensor
    se: Tensor
    num_samples: int

    @property
    def log_mass(self) -> Tensor:
        r""":math:`\log P`, shape ``(B,)`` (``-inf`` where no sample was accepted)."""
        return self.mass.log()

    @property
    def log_mass_se(self) -> Tensor:
        r"""The delta-method standard error of :attr:`log_mass`, ``se / mass``."""
        return self.se / self.mass


class Support(nn.Module):
    r"""A prior's support: membership test, bijection to :math:`\mathbb{R}^d` with its
    log-determinant, leakage estimation and truncation.

    Box, half-line and real supports (possibly wrapped in ``independent``) are stored as
    tensor buffers (``lower``, ``upper``), so the module moves across devices and saves
    with the flow; any other support that :func:`torch.distributions.biject_to` handles is
    kept as a Python object (``kind = "generic"``) and must be rebuilt from the prior when
    loading.

    Arguments:
        support: A constraint, e.g. ``prior.support`` (``None``: the real line).
        dim: The parameter dimension :math:`d`.
        persistent: Whether the bounds are part of the owner's ``state_dict`` (they are
            for a flow; a proxy rebuilds them from its prior).
    """

    def __init__(
        self, support: constraints.Constraint | None, dim: int, persistent: bool = True
    ) -> None:
        super().__init__()
        base = support
        while isinstance(base, constraints.independent):
            base = base.base_constraint
        lower = torch.full((dim,), -math.inf)
        upper = torch.full((dim,), math.inf)
        self._generic: Transform | None = None
        self._support = support
        if base is None or base is constraints.real or isinstance(base, type(constraints.real)):
            kind = "real"
        elif isinstance(base, (constraints.interval, constraints.half_open_interval)):
            kind = "interval"
            lower = _bound(base.lower_bound, dim)
            upper = _bound(base.upper_bound, dim)
        elif isinstance(base, (constraints.greater_than, constraints.greater_than_eq)):
            kind = "greater_than"
            lower = _bound(base.lower_bound, dim)
        elif isinstance(base, constraints.less_than):
            kind = "less_than"
            upper = _bound(base.upper_bound, dim)
        else:
            # Membership by support.check; the bijection only where torch knows one.
            try:
                self._generic = biject_to(support)
            except NotImplementedError:
                self._generic = None
            kind = "generic"
        self.kind = kind
        self.dim = int(dim)
        self.register_buffer("lower", lower, persistent=persistent)
        self.register_buffer("upper", upper, persistent=persistent)

    @classmethod
    def from_prior(
        cls, prior: Distribution | None, dim: int | None = None, persistent: bool = True
    ) -> Support:
        r"""The support of ``prior`` (``None``: the real line, then ``dim`` is required),
        on the device of the prior's parameters."""
        if prior is None:
            if dim is None:
                raise ValueError("dim is required when there is no prior")
            return cls(None, dim, persistent)
        d = int(prior.event_shape[0]) if dim is None else int(dim)
        out = cls(getattr(prior, "support", None), d, persistent)
        return out.to(prior_device(prior))

    @property
    def is_bounded(self) -> bool:
        r"""Whether the support is not the whole of :math:`\mathbb{R}^d`."""
        return self.kind != "real"

    # -- membership ----------------------------------------------------------------------
    def contains(self, theta: Tensor) -> Tensor:
        r"""Returns whether each row of ``theta`` (..., d) lies in the (closed) support and
        is finite, shape (...)."""
        finite = torch.isfinite(theta).all(dim=-1)
        if self.kind == "generic":
            try:
                ok = self._support.check(theta)
            except NotImplementedError:
                return finite
            ok = ok if ok.shape == theta.shape[:-1] else ok.all(dim=-1)
            return ok & finite
        inside = (theta >= self.lower) & (theta <= self.upper)
        return inside.all(dim=-1) & finite

    def stand_in(self) -> Tensor:
        r"""A point inside the support (the box's centre, clipped to +-1e6), shape (d,):
        what masked rows are replaced with so that no NaN reaches a gradient."""
        if self.kind == "generic":
            if self._generic is None:
                raise ValueError(f"no point of the support {self._support} is known")
            return self.transform()(torch.zeros(self.dim, device=self.lower.device))
        lo, hi = self.lower.clamp_min(-1e6), self.upper.clamp_max(1e6)
        mid = (lo + hi) / 2
        mid = torch.where(torch.isinf(self.lower) & ~torch.isinf(self.upper), hi - 1, mid)
        return torch.where(torch.isinf(self.upper) & ~torch.isinf(self.lower), lo + 1, mid)

    def clip_inside(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns ``(inside, safe)``: the membership mask (...) and ``theta`` with the
        rows outside replaced by :meth:`stand_in` (..., d)."""
        inside = self.contains(theta)
        safe = torch.where(inside[..., None], theta, self.stand_in().expand_as(theta))
        return inside, safe

    # -- the bijection -------------------------------------------------------------------
    def transform(self) -> Transform:
        r"""Returns ``T``, from :math:`\mathbb{R}^d` onto the support (event dim 1)."""
        if self.kind == "real":
            return IndependentTransform(torch.distributions.transforms.identity_transform, 1)
        if self.kind == "generic":
            t = self._generic
            if t is None:
                raise ValueError(
                    f"cannot map the prior's support {self._support} to an unconstrained "
                    "space; pass support='truncate'"
                )
            return t if t.domain.event_dim >= 1 else IndependentTransform(t, 1)
        if self.kind == "interval":
            c = constraints.interval(self.lower, self.upper)
        elif self.kind == "greater_than":
            c = constraints.greater_than(self.lower)
        else:
            c = constraints.less_than(self.upper)
        return IndependentTransform(biject_to(c), 1)

    def to_unconstrained(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns ``z = T^{-1}(theta)`` and :math:`\log |\det dT / dz|` at ``z``, shape
        ``(..., d)`` and ``(...)``: a density over ``z`` minus it is one over ``theta``."""
        t = self.transform()
        z = t.inv(theta)
        return z, t.log_abs_det_jacobian(z, theta)

    def from_unconstrained(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns ``theta = T(z)`` and :math:`\log |\det dT / dz|`, shapes as
        :meth:`to_unconstrained`."""
        t = self.transform()
        theta = t(z)
        return theta, t.log_abs_det_jacobian(z, theta)

    # -- leakage and truncation ----------------------------------------------------------
    @torch.no_grad()
    def accepted_mass(self, draw: Callable[[int], Tensor], num_samples: int) -> AcceptedMass:
        r"""Estimates :math:`P_q(\theta \in S)` per observation by Monte Carlo.

        Arguments:
            draw: ``draw(n)`` returns ``n`` samples per observation, shape ``(n, B, d)``.
            num_samples: ``n``.

        Returns:
            The :class:`AcceptedMass` (fraction and binomial standard error per column).
        """
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        p = self.contains(draw(n)).double().mean(0)
        se = (p * (1 - p) / n).sqrt()
        return AcceptedMass(p.float(), se.float(), n)

    def rejection_sample(
        self,
        draw: Callable[[int, Tensor], Tensor],
        n: int,
        num_columns: int,
        max_rounds: int = 1000,
    ) -> tuple[Tensor, float]:
        r"""Draws ``n`` samples inside the support for each of ``B`` observations
        (:func:`rejection_rounds` with :meth:`contains`).

        Arguments:
            draw: ``draw(n, cols)`` returns ``n`` candidates for each observation index in
                ``cols`` (a long tensor), shape ``(n, len(cols), d)``.
            n: Samples wanted per observation.
            num_columns: ``B``.
            max_rounds: Rounds after which sampling gives up with an error.

        Returns:
            The samples ``(n, B, d)`` (accepted candidates in the order drawn) and the
            rejected fraction of all candidates.

        Raises:
            SupportRejectionError: If some observation still lacks samples after
                ``max_rounds`` rounds (the flow has almost no mass inside the support).
        """
        out, accepted, drawn = rejection_rounds(
            draw,
            self.contains,
            n,
            num_columns,
            self.dim,
            device=self.lower.device,
            max_rounds=max_rounds,
            hint="the flow puts almost no mass inside the prior's support there (train "
            "with support='transform')",
        )
        leaked = 1.0 - float(accepted.sum() / drawn.sum().clamp_min(1))
        if leaked > 0.2:
            warnings.warn(
                f"{100 * leaked:.1f}% of the flow's draws fell outside the prior's "
                "support and were rejected",
                stacklevel=user_stacklevel(),
            )
        return out, leaked

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dim={self.dim}"


@torch.no_grad()
def rejection_rounds(
    draw: Callable[[int, Tensor], Tensor],
    contains: Callable[[Tensor], Tensor],
    n: int,
    num_columns: int,
    dim: int,
    *,
    device: torch.device | str = "cpu",
    max_rounds: int = 1000,
    hint: str = "almost no candidate lies inside the support there",
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Rejection sampling of ``n`` accepted candidates for each of ``B`` observations, in
    rounds: each observation stops drawing once it has its samples and keeps no more than
    it asked for, and a round draws for the observations still short as many candidates
    as the neediest of them needs at its own acceptance so far (:func:`_next_round`,
    which bounds a round's size). Both of jsbi's rejection samplers run it: a truncated
    flow's (:meth:`Support.rejection_sample`) and sbi NPE's in the diagnostics
    (:func:`jsbi.diagnostics.rejection.rejection_sample`).

    Arguments:
        draw: ``draw(k, cols)`` returns ``k`` candidates for each observation index in
            ``cols`` (a long tensor), shape ``(k, len(cols), d)``.
        contains: Whether candidates are accepted: ``(k, c, d)`` to a boolean ``(k, c)``.
        n: Samples wanted per observation.
        num_columns: ``B``.
        dim: The candidates' dimension ``d``.
        device: Where the samples and the counts live (``cols`` is passed on it; the
            candidates are moved to it).
        max_rounds: Rounds after which sampling gives up with an error.
        hint: What the error says an observation without enough samples means.

    Returns:
        The samples ``(n, B, d)`` (accepted candidates in the order drawn), and per
        observation the accepted and the drawn candidates
        (float64, shape ``(B,)``).

    Raises:
        SupportRejectionError: If some observation still lacks samples after
            ``max_rounds`` rounds.
    """
    out = torch.empty(n, num_columns, dim, device=device)
    count = torch.zeros(num_columns, dtype=torch.long, device=device)
    drawn_by = torch.zeros(num_columns, dtype=torch.float64, device=device)
    accepted_by = torch.zeros(num_columns, dtype=torch.float64, device=device)
    k = n  # candidates per column this round
    for _ in range(int(max_rounds)):
        need = count < n
        if not need.any():
            break
        cols = need.nonzero().squeeze(1)
        cand = draw(k, cols).to(device)
        ok = contains(cand).to(device)
        n_ok = ok.sum(0)
        drawn_by[cols] += k
        accepted_by[cols] += n_ok.double()
        # Accepted rows first, in their original order, then scatter after `count`.
        order = torch.sort((~ok).to(torch.int8), dim=0, stable=True).indices
        cand = cand.gather(0, order[..., None].expand(-1, -1, dim))
        rows = torch.arange(k, device=device)[:, None]
        pos = count[cols] + rows
        keep = (rows < n_ok) & (pos < n)
        out[pos[keep], cols.expand(k, -1)[keep]] = cand[keep]
        count[cols] = torch.clamp(count[cols] + n_ok, max=n)
        # Next round: enough candidates for the column that needs most at its own
        # acceptance so far (and a margin); see _next_round for the bound.
        k = _next_round(n - count, accepted_by, drawn_by, n)
    else:
        if bool((count < n).any()):
            i = int(torch.argmin(torch.where(count < n, accepted_by / drawn_by, 2.0)))
            raise SupportRejectionError(
                f"rejection sampling gave up after {max_rounds} rounds: acceptance "
                f"{float(accepted_by[i] / drawn_by[i]):.2e} at observation {i} of this batch "
                f"({int(count[i])} of {n} samples); {hint}"
            )
    return out, accepted_by, drawn_by


#: A round of :meth:`Support.rejection_sample` draws more than ``n`` candidates per
#: observation only while the observations still short share at most this many in all
#: (memory: one round of 419,430 candidates of a 10-parameter spline flow did not fit in
#: 8 GB); so a round is at most max(n x short, _MAX_CANDIDATES) candidates.
_MAX_CANDIDATES = 2**14


def _next_round(missing: Tensor, accepted: Tensor, drawn: Tensor, n: int) -> int:
    # Candidates per observation for the next round: 1.2 x what the neediest observation
    # lacks over its own acceptance so far (a rule of succession: never 0), at least 16, at
    # most n, or more where a round of _MAX_CANDIDATES over the short ones allows it.
    short = missing > 0
    if not bool(short.any()):
        return n  # every observation has its samples: the loop ends
    rate = (accepted[short] + 1) / (drawn[short] + 2)
    want = math.ceil(1.2 * float((missing[short] / rate).max()))
    cap = max(n, _MAX_CANDIDATES // int(short.sum()))
    return min(cap, max(16, want))


#: The name before :class:`Support` owned leakage and truncation.
SupportTransform = Support


def prior_device(prior: Distribution) -> torch.device:
    r"""The device of a distribution's first tensor parameter (CPU if it has none)."""
    for v in vars(prior).values():
        if isinstance(v, Tensor):
            return v.device
        if isinstance(v, Distribution):
            return prior_device(v)
    return torch.device("cpu")


def prior_log_prob(
    prior: Distribution, theta: Tensor, device: torch.device | None = None
) -> Tensor:
    r""":math:`\log \pi(\theta)` on ``theta``'s device, whatever device the prior lives on.

    A torch distribution cannot be moved like a module: a prior built on the CPU meets
    ``theta`` on the GPU. The prior is evaluated on its own device and the result comes
    back to ``theta``'s. ``device``: the prior's, when the caller has it already (a loop).
    """
    device = prior_device(prior) if device is None else device
    return torch.as_tensor(prior.log_prob(theta.to(device))).to(theta.device)


def _bound(value: Tensor | float, dim: int) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float32).expand(dim).clone()
