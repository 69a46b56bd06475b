r"""The trained posterior: sampling, densities, MAP, save/load, sbi interoperability.

:class:`Posterior` follows sbi's ``DirectPosterior`` (``sample``, ``log_prob``,
``sample_batched``, ``log_prob_batched``, ``map``, ``set_default_x``), so sbi's own
diagnostics accept it by duck typing:

    >>> from sbi.diagnostics import run_sbc, run_tarp      # doctest: +SKIP
    >>> ranks, dap = run_sbc(thetas, xs, posterior, num_posterior_samples=1000)  # doctest: +SKIP

Leakage. With ``support="transform"`` the flow lives in the prior's unconstrained space and
has no mass outside the support. With ``support="truncate"`` it may; then, as sbi does,
:meth:`Posterior.sample` rejects samples outside the support (``reject_outside_prior``) and
records the fraction it rejected in :attr:`Posterior.last_leakage`, and ``log_prob`` is
``-inf`` outside the support and renormalised by the accepted mass
:math:`P_q(\theta \in S | x)` (sbi's ``norm_posterior=True``), a Monte Carlo estimate
cached per observation: :meth:`Posterior.accepted_mass` gives it with its standard error,
:meth:`Posterior.leakage` is one minus it.

Saving. :meth:`Posterior.save` writes weights, the flow's config (name, sizes, kwargs),
the standardisation buffers, the prior as data and the history; :func:`load_posterior`
reads it with ``torch.load(weights_only=True)``. Priors stored as data: sbi's
``BoxUniform``, ``Independent(Uniform)``, ``Independent(Normal)``,
``MultivariateNormal``. For any other prior, ``load_posterior(path, prior=...)`` needs the
prior. A custom (user) embedding network is saved as weights only: pass a freshly built
instance of the same module as ``load_posterior(path, embedding_net=...)``.

Example:
    >>> posterior.save("posterior.pt")                     # doctest: +SKIP
    >>> same = load_posterior("posterior.pt")              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from jsbi.files import atomic_save
from jsbi.flows.conditional import ConditionalFlow
from jsbi.flows.support import AcceptedMass, SupportRejectionError
from jsbi.posteriors.spec import FORMAT, prior_to_spec
from jsbi.posteriors.typicality import EVIDENCE_SAMPLES, THRESHOLD, Typicality
from jsbi.proxies.base import Proxy
from jsbi.proxies.importance import proxy_log_normalizer
from jsbi.seeding import seeded

__all__ = ["Posterior"]


class UnnormalisableError(RuntimeError):
    r"""A truncated flow with no draw inside the prior's support at some observation:
    its density there cannot be normalised."""


#: The temperatures :meth:`Posterior.recalibrate` tries by default: 0.5 to 4, log-spaced.
_TEMPERATURES = [round(0.5 * 8 ** (i / 24), 4) for i in range(25)]
#: Flow draws per pair that renormalise a truncated flow in recalibrate's NLL guard.
GUARD_MASS_SAMPLES = 1_000


class _Potential:
    r"""A jsbi posterior's log density in sbi's potential-function protocol."""

    def __init__(self, posterior: Posterior) -> None:
        self.posterior = posterior
        self.x_o: Tensor | None = None

    @property
    def prior(self) -> Distribution | None:
        return self.posterior.prior

    @property
    def device(self) -> torch.device:
        return self.posterior.device

    def allow_iid_x(self) -> bool:
        return False

    def set_x(self, x_o: Tensor | None, **ignored: Any) -> None:
        self.x_o = x_o

    def to(self, device: Any) -> None:
        self.posterior.flow.to(device)

    def __call__(self, theta: Tensor, track_gradients: bool = True) -> Tensor:
        return self.posterior.log_prob(theta, x=self.x_o, track_gradients=track_gradients)


#: What each kind of misspecification check reads, for its warning.
_STATISTICS = {
    "evidence": "its log evidence under the learned likelihood",
    "embedding": "its distance to the simulations in the flow's embedding",
}


class Posterior(Distribution):
    r"""An amortised posterior :math:`q(\theta | x)` with sbi's posterior interface.

    It is a :class:`torch.distributions.Distribution` (``batch_shape ()``,
    ``event_shape (d,)``, the prior's ``support``): with a default ``x``
    (:meth:`set_default_x`), ``sample(shape)`` and ``log_prob(theta)`` need nothing else,
    so sbi accepts it wherever it accepts a distribution, e.g. as the prior of a next
    round, ``sbi.inference.NPE(prior=posterior)``, and jsbi as a ``PosteriorEstimator``'s
    prior.

    Arguments:
        flow: The trained :class:`~jsbi.flows.conditional.ConditionalFlow`.
        prior: The prior (its support bounds the samples).
        history: The training history (see :func:`jsbi.training.loop.train`).
        default_x: The observation used when ``x`` is omitted.
        max_sampling_batch_size: Most ``theta`` rows pushed through the flow at once.
        num_mass_samples: Flow samples per observation for the accepted mass that
            renormalises a truncated flow's ``log_prob`` (sbi's default, 10,000).
        proxy: The proxy trained beside the flow, if any: with the likelihood proxy the
            posterior gives the evidence (:meth:`log_evidence`).
        typicality: The reference of the misspecification check
            (:meth:`observation_p_value`), fitted after training.
        num_normalizer_samples: Importance samples for the proxy's :math:`\log \hat Z(x)`.

    Example:
        >>> samples = posterior.sample((1000,), x=x_o)               # doctest: +SKIP
        >>> log_q = posterior.log_prob(samples, x=x_o)               # doctest: +SKIP
        >>> posterior.sample_batched((100,), x=xs).shape             # (100, B, d) # doctest: +SKIP
    """

    def __init__(
        self,
        flow: ConditionalFlow,
        prior: Distribution | None = None,
        *,
        history: dict[str, Any] | None = None,
        default_x: Tensor | None = None,
        max_sampling_batch_size: int = 100_000,
        num_mass_samples: int = 10_000,
        proxy: Proxy | None = None,
        typicality: Typicality | None = None,
        num_normalizer_samples: int = 4096,
    ) -> None:
        if int(num_mass_samples) < 1:
            raise ValueError(f"num_mass_samples must be >= 1, got {num_mass_samples}")
        if int(num_normalizer_samples) < 2:
            raise ValueError(f"num_normalizer_samples must be >= 2, got {num_normalizer_samples}")
        if typicality is not None and typicality.kind == "evidence" and proxy is None:
            # (Else every sample() would fail later, computing the evidence of x_o.)
            raise ValueError(
                "typicality: an 'evidence' reference needs the likelihood proxy that gives "
                "the evidence: pass proxy=, or an 'embedding' reference"
            )
        super().__init__(torch.Size(), torch.Size([flow.dim_theta]), validate_args=False)
        self.num_mass_samples = int(num_mass_samples)
        self._mass: dict[tuple[bytes, int], tuple[float, float]] = {}
        self.flow = flow.eval()
        self._prior = prior
        self.history = history if history is not None else {}
        self.max_sampling_batch_size = int(max_sampling_batch_size)
        self.last_leakage: float | None = None
        self.proxy = None if proxy is None else proxy.eval()
        self.typicality = typicality
        #: The p-value below which an observation is called atypical (``None``: no check).
        self.misspecification_threshold: float | None = THRESHOLD
        self.num_normalizer_samples = int(num_normalizer_samples)
        self._log_z: dict[bytes, tuple[float, float]] = {}
        self._p_values: dict[bytes, float] = {}
        self._x: Tensor | None = None
        if default_x is not None:
            self.set_default_x(default_x)

    # -- basics ------------------------------------------------------------------------
    arg_constraints: dict = {}  # noqa: RUF012 - torch's Distribution protocol

    @property
    def prior(self) -> Distribution | None:
        return self._prior

    @property
    def support(self) -> Any:
        r"""The prior's support (the real line without a prior)."""
        if self._prior is not None and hasattr(self._prior, "support"):
            return self._prior.support
        return constraints.independent(constraints.real, 1)

    @property
    def device(self) -> torch.device:
        return self.flow.theta_loc.device

    # -- what sbi's tools read (EnsemblePosterior, ActiveSubspace, MCMC) ---------------
    @property
    def _device(self) -> torch.device:
        return self.device

    @property
    def potential_fn(self) -> _Potential:
        r"""sbi's potential function of this posterior: ``potential_fn(theta)`` is
        :meth:`log_prob` at the ``x`` set by ``potential_fn.set_x`` (what
        ``sbi.inference.EnsemblePosterior`` combines)."""
        if getattr(self, "_potential", None) is None:
            self._potential = _Potential(self)
        return self._potential

    def potential(
        self, theta: Tensor, x: Tensor | None = None, track_gradients: bool = False
    ) -> Tensor:
        r"""sbi's name: the log density at ``theta`` (normalised here), what
        ``sbi.analysis.ActiveSubspace`` differentiates."""
        return self.log_prob(theta, x=x, track_gradients=track_gradients)

    @property
    def dim_theta(self) -> int:
        return self.flow.dim_theta

    @property
    def default_x(self) -> Tensor | None:
        return self._x

    @default_x.setter
    def default_x(self, x: Tensor | None) -> None:
        self._x = None if x is None else self._one_x(x)

    def set_default_x(self, x: Tensor) -> Posterior:
        r"""Sets the observation used when ``x`` is omitted (and checks that it is typical
        of the simulations, :meth:`check_observation`); returns ``self``."""
        self.default_x = x
        self.check_observation(self._x)
        return self

    def to(self, device: str | torch.device) -> Posterior:
        self.flow.to(device)
        if self.proxy is not None:
            self.proxy.to(device)
        self._log_z.clear()
        if self._x is not None:
            self._x = self._x.to(device)
        return self

    # -- the evidence and the misspecification check --------------------------------------
    @property
    def has_evidence(self) -> bool:
        r"""Whether the posterior carries a likelihood proxy, hence the evidence."""
        return self.proxy is not None and self.proxy.has_likelihood

    def _log_normalizer(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # The proxy's log Z(x) and its standard error, importance-sampled with the flow
        # as proposal (defensive), cached per x and seeded (the same value in any
        # instance).
        keys = [row.cpu().numpy().tobytes() for row in x]
        missing = [i for i, k in enumerate(keys) if k not in self._log_z]
        if missing:
            K = self.num_normalizer_samples
            with seeded(0, [self.device]), self._untempered():
                log_z, ess = proxy_log_normalizer(
                    self.proxy, self.flow, self._prior, x[missing], K
                )
            # Delta method: se(log Z) = sqrt((1 / ESS - 1) / K) with ESS a fraction.
            se = ((1 / ess.double().clamp_min(1e-300) - 1).clamp_min(0) / K).sqrt()
            for i, v, s in zip(missing, log_z.tolist(), se.tolist(), strict=True):
                self._log_z[keys[i]] = (v, s)
        values = torch.tensor([self._log_z[k] for k in keys], device=self.device)
        return values[:, 0], values[:, 1]

    def log_evidence(self, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""The log evidence :math:`\log p(x)` of the model the likelihood proxy learned,
        :math:`\int \pi(\theta) \, l(x \mid \theta) \, d\theta`, by defensive importance
        sampling with the flow as proposal (``num_normalizer_samples`` draws; the flow as
        trained, at temperature 1, whatever :meth:`recalibrate` kept), with its standard
        error (the delta method on the weights).

        Arguments:
            x: One observation ``(m,)`` or several ``(B, m)`` (default: ``default_x``).

        Returns:
            ``(log_evidence, se)``, each of shape ``(B,)``.
        """
        if not self.has_evidence:
            raise ValueError(
                "log_evidence needs a likelihood proxy, a model of p(x | theta): this "
                f"posterior has {'none' if self.proxy is None else type(self.proxy).__name__}"
                ". Train with a symmetric objective and proxy='likelihood' (jeffreys' default)"
            )
        x = self._one_x(x) if x is None or torch.as_tensor(x).ndim == 1 else self._many_x(x)
        with torch.no_grad():
            return self._log_normalizer(x)

    def observation_p_value(self, x: Tensor | None = None) -> float:
        r"""The prior-predictive p-value of one observation: the share of reference
        draws of the prior predictive no more typical than it
        (:mod:`jsbi.posteriors.typicality`); NaN without a fitted reference. Cached per
        ``x``."""
        if self.typicality is None:
            return math.nan
        x = self._one_x(x)
        key = x.cpu().numpy().tobytes()
        if key not in self._p_values:
            with torch.no_grad():
                embedding = self.flow.embed(x)[0] if self.typicality.partner is not None else None
                self._p_values[key] = self.typicality.p_value_of(
                    self._typicality_statistic(x), embedding
                )
        return self._p_values[key]

    def _typicality_statistic(self, x: Tensor) -> Tensor:
        if self.typicality.kind == "evidence":
            # At T = 1, as the reference was: the estimate's bias depends on its proposal.
            with seeded(0, [self.device]), self._untempered():
                log_z, _ = proxy_log_normalizer(
                    self.proxy, self.flow, self._prior, x, EVIDENCE_SAMPLES
                )
            return log_z[0]
        return self.flow.embed(x)[0]

    def check_observation(self, x: Tensor | None = None) -> float:
        r"""The observation's p-value (:meth:`observation_p_value`), with a ``UserWarning``
        when it is below :attr:`misspecification_threshold`."""
        p = self.observation_p_value(x)
        threshold = self.misspecification_threshold
        if threshold is not None and p < threshold:
            how = _STATISTICS[self.typicality.kind]
            if self.typicality.partner is not None:
                how += f" and {_STATISTICS['embedding']} (twice the smaller of their p-values)"
            warnings.warn(
                f"the observation is atypical of the simulations: prior-predictive p-value "
                f"{p:.3g} by {how} (below {threshold}). The posterior there is an "
                "extrapolation; the simulator may be misspecified for these data",
                stacklevel=3,
            )
        return p

    def __repr__(self) -> str:
        cfg = self.flow.config
        return (
            f"Posterior(flow={cfg.get('flow')!r}, dim_theta={self.dim_theta}, "
            f"dim_x={self.flow.dim_x}, support={self.flow.support_mode!r})"
        )

    def _one_x(self, x: Tensor | None) -> Tensor:
        if x is None:
            if self._x is None:
                raise ValueError("x is required: pass x=... or call set_default_x(x) first")
            return self._x
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        m = self.flow.dim_x
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape != (1, m):
            raise ValueError(
                f"x must be one observation of shape ({m},) or (1, {m}), got "
                f"{tuple(x.shape)}; use sample_batched/log_prob_batched for several"
            )
        return _finite_x(x)

    def _many_x(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        m = self.flow.dim_x
        if x.ndim != 2 or x.shape[1] != m:
            raise ValueError(f"x must have shape (B, {m}), got {tuple(x.shape)}")
        return _finite_x(x)

    def _theta(self, theta: Tensor) -> Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float32, device=self.device)
        if theta.shape[-1:] != (self.dim_theta,):
            raise ValueError(
                f"theta must have shape (..., {self.dim_theta}), got {tuple(theta.shape)}"
            )
        return theta

    def _rejects(self, reject_outside_prior: bool) -> bool:
        # A transformed flow has no mass outside by construction; only a truncated one leaks.
        return reject_outside_prior and self.flow.leaks

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def _draw(self, n: int, x: Tensor) -> Tensor:
        r"""``n`` flow samples per row of ``x`` (B, m) -> (n, B, d), chunked."""
        B = len(x)
        out = torch.empty(n, B, self.dim_theta, device=self.device)
        xb = max(1, min(B, self.max_sampling_batch_size))
        for j in range(0, B, xb):
            xs = x[j : j + xb]
            nb = max(1, self.max_sampling_batch_size // len(xs))
            for i in range(0, n, nb):
                k = min(nb, n - i)
                out[i : i + k, j : j + xb] = self.flow.sample((k,), xs)
        return out

    @torch.no_grad()
    def _sample(self, n: int, x: Tensor, reject: bool, max_rounds: int = 1000) -> Tensor:
        if not self._rejects(reject):
            self.last_leakage = None if self.flow.leaks else 0.0
            return self._draw(n, x)
        out, self.last_leakage = self.flow.support.rejection_sample(
            lambda k, cols: self._draw(k, x[cols]), n, len(x), max_rounds=max_rounds
        )
        return out

    def sample(
        self,
        sample_shape: Sequence[int] | int = (),
        x: Tensor | None = None,
        *,
        reject_outside_prior: bool = True,
        show_progress_bars: bool = False,
        **ignored: Any,
    ) -> Tensor:
        r"""Draws samples from :math:`q(\theta | x)` for one observation.

        Arguments:
            sample_shape: The sample shape ``S``.
            x: One observation, shape ``(m,)`` or ``(1, m)`` (default: ``default_x``).
            reject_outside_prior: With a truncated flow (``support="truncate"``), reject
                samples outside the prior's support (the rejected fraction goes to
                :attr:`last_leakage`).
            show_progress_bars: Accepted for sbi compatibility; sampling is one call.

        Returns:
            Samples of shape ``(*S, d)``.
        """
        shape = sample_shape_tuple(sample_shape)
        if x is not None:
            self.check_observation(x)
        x = self._one_x(x)
        n = math.prod(shape)
        return self._sample(n, x, reject_outside_prior)[:, 0].reshape(*shape, self.dim_theta)

    def sample_batched(
        self,
        sample_shape: Sequence[int] | int,
        x: Tensor,
        *,
        reject_outside_prior: bool = True,
        max_sampling_batch_size: int | None = None,
        show_progress_bars: bool = False,
        **ignored: Any,
    ) -> Tensor:
        r"""Draws samples for each of ``B`` observations in one vectorised call.

        Arguments:
            sample_shape: The sample shape ``S`` (per observation).
            x: Observations, shape ``(B, m)``.
            reject_outside_prior: See :meth:`sample`.
            max_sampling_batch_size: Overrides the chunk size (rows per flow call).

        Returns:
            Samples of shape ``(*S, B, d)``.
        """
        shape = sample_shape_tuple(sample_shape)
        x = self._many_x(x)
        if max_sampling_batch_size is not None:
            old, self.max_sampling_batch_size = (
                self.max_sampling_batch_size,
                max_sampling_batch_size,
            )
        try:
            out = self._sample(math.prod(shape), x, reject_outside_prior)
        finally:
            if max_sampling_batch_size is not None:
                self.max_sampling_batch_size = old
        return out.reshape(*shape, len(x), self.dim_theta)

    # -- densities -----------------------------------------------------------------------
    def _log_prob(
        self, theta: Tensor, x: Tensor, track_gradients: bool, normalize: bool = True
    ) -> Tensor:
        # x is (1, m) (broadcast) or one row per column of theta's last batch dimension.
        with torch.set_grad_enabled(track_gradients):
            lp = self.flow.log_prob(theta, x)
            if self.flow.leaks:
                inside = self.flow.support.contains(theta)
                lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        if self.flow.leaks and normalize:
            # The flow's own mass (a subclass's accepted_mass is its posterior's: the
            # proxy's and the mixture's have all of theirs inside the prior).
            lp = lp - Posterior.accepted_mass(self, x, many=True).log_mass
        return lp

    def accepted_mass(
        self, x: Tensor | None = None, num_samples: int | None = None, *, many: bool = False
    ) -> AcceptedMass:
        r"""The flow's mass inside the prior's support at each observation, with its
        standard error: what renormalises a truncated flow's ``log_prob``.

        A Monte Carlo estimate from ``num_samples`` flow samples per observation
        (default :attr:`num_mass_samples`), seeded (a rerun gives the same values) and
        cached per observation (a later call with the same ``x`` reuses it, so its
        ``log_prob`` stays consistent). One for a transformed flow (no estimate: se 0).

        Arguments:
            x: One observation ``(m,)`` / ``(1, m)`` (default: ``default_x``), or with
                ``many=True`` several, ``(B, m)``.
            num_samples: Flow samples per observation.

        Returns:
            An :class:`~jsbi.flows.support.AcceptedMass` with ``mass`` and ``se`` of
            shape ``(B,)`` (``log_mass``, ``log_mass_se`` for the log).
        """
        x = self._many_x(x) if many else self._one_x(x)
        n = self.num_mass_samples if num_samples is None else int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not self.flow.leaks:
            one = torch.ones(len(x), device=self.device)
            return AcceptedMass(one, torch.zeros_like(one), 0)
        keys = [(row.cpu().numpy().tobytes(), n) for row in x]
        first: dict[tuple[bytes, int], int] = {}  # each distinct x, by its first row
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        missing = [k for k in first if k not in self._mass]
        if missing:
            rows = x[torch.tensor([first[k] for k in missing], device=self.device)]
            # Chunks of observations keep the (n, chunk, d) draws near 10^7 numbers.
            chunk = max(1, 10_000_000 // (n * self.dim_theta))
            with seeded(0, [self.device]):  # a rerun gives the same masses
                for i in range(0, len(missing), chunk):
                    part = rows[i : i + chunk]
                    est = self.flow.support.accepted_mass(lambda k, p=part: self._draw(k, p), n)
                    for k, m, se in zip(
                        missing[i : i + chunk], est.mass.tolist(), est.se.tolist(), strict=True
                    ):
                        self._mass[k] = (m, se)
        mass = torch.tensor([self._mass[k][0] for k in keys], device=self.device)
        se = torch.tensor([self._mass[k][1] for k in keys], device=self.device)
        if bool((mass == 0).any()):
            raise UnnormalisableError(
                f"none of {n} flow samples fell inside the prior's support for some x: its "
                "truncated density cannot be normalised (train with support='transform')"
            )
        return AcceptedMass(mass, se, n)

    def log_prob(
        self,
        theta: Tensor,
        x: Tensor | None = None,
        *,
        track_gradients: bool = False,
        norm_posterior: bool = True,
        leakage_correction_params: dict[str, Any] | None = None,
        **ignored: Any,
    ) -> Tensor:
        r"""Returns :math:`\log q(\theta | x)`.

        Arguments:
            theta: Parameters, shape ``(n, d)`` or ``(d,)``.
            x: One observation (``(m,)`` or ``(1, m)``, broadcast over ``theta``), or
                ``n`` observations ``(n, m)`` paired row by row with ``theta`` (e.g. the
                NLTP of held-out pairs). Default: ``default_x``.
            track_gradients: Whether to keep the autograd graph.
            norm_posterior: With a truncated flow, divide by the accepted mass
                (:meth:`accepted_mass`) so the density integrates to one over the support
                (as sbi). Ranks within one observation do not need it.
            leakage_correction_params: sbi's spelling of the mass estimate's size:
                ``{"num_rejection_samples": n}`` (default :attr:`num_mass_samples`).

        Returns:
            Log-densities of shape ``(n,)``; ``-inf`` outside the prior's support.
        """
        theta = self._theta(theta)
        if theta.ndim == 1:
            theta = theta[None]
        if theta.ndim != 2:
            raise ValueError(
                f"theta must have shape (n, {self.dim_theta}), got {tuple(theta.shape)}; "
                "use log_prob_batched for (n, B, d)"
            )
        with self._mass_samples(leakage_correction_params):
            if x is not None:
                x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
                if x.ndim == 2 and x.shape[0] == len(theta) and x.shape[0] != 1:
                    return self._log_prob(theta, self._many_x(x), track_gradients, norm_posterior)
            if x is not None:
                self.check_observation(x)
            return self._log_prob(theta, self._one_x(x), track_gradients, norm_posterior)

    def log_prob_batched(
        self,
        theta: Tensor,
        x: Tensor,
        *,
        track_gradients: bool = False,
        norm_posterior: bool = True,
        leakage_correction_params: dict[str, Any] | None = None,
        **ignored: Any,
    ) -> Tensor:
        r"""Returns :math:`\log q(\theta_{ib} | x_b)` for ``theta (n, B, d)`` and ``x (B, m)``.

        ``norm_posterior`` and ``leakage_correction_params``: see :meth:`log_prob`.

        Returns:
            Log-densities of shape ``(n, B)``.
        """
        theta = self._theta(theta)
        x = self._many_x(x)
        if theta.ndim != 3 or theta.shape[1] != len(x):
            raise ValueError(
                f"theta must have shape (n, {len(x)}, {self.dim_theta}) for x of shape "
                f"{tuple(x.shape)}, got {tuple(theta.shape)}"
            )
        with self._mass_samples(leakage_correction_params):
            return self._log_prob(theta, x, track_gradients, norm_posterior)

    @contextlib.contextmanager
    def _mass_samples(self, params: dict[str, Any] | None) -> Iterator[None]:
        # sbi's leakage_correction_params -> num_mass_samples for one call.
        n = (params or {}).get("num_rejection_samples")
        old = self.num_mass_samples
        if n is not None:
            if int(n) < 1:
                raise ValueError(f"num_rejection_samples must be >= 1, got {n}")
            self.num_mass_samples = int(n)
        try:
            yield
        finally:
            self.num_mass_samples = old

    def sample_and_log_prob(
        self, sample_shape: Sequence[int] | int = (), x: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Draws samples for one observation and returns them with their log-densities.

        Returns:
            Samples ``(*S, d)`` and log-densities ``(*S,)``.
        """
        shape = sample_shape_tuple(sample_shape)
        x = self._one_x(x)
        n = math.prod(shape)
        if self._rejects(True):
            theta = self._sample(n, x, True)[:, 0]
            lp = self._log_prob(theta, x, False)
        else:
            with torch.no_grad():
                theta, lp = self.flow.rsample_and_log_prob((n,), x[0])
            self.last_leakage = 0.0
        return theta.reshape(*shape, self.dim_theta), lp.reshape(shape)

    # -- recalibration --------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        r"""The flow's base temperature (1: as trained; see :meth:`recalibrate`)."""
        return float(self.flow.temperature)

    def _set_temperature(self, value: float) -> None:
        # The flow's own buffer, or every member's of an ensemble.
        self.flow.set_temperature(value)
        self._mass.clear()

    @contextlib.contextmanager
    def _untempered(self) -> Iterator[None]:
        # The flow as trained (T = 1) while the likelihood proxy's evidence is estimated
        # with it as the proposal: log_evidence and the misspecification check (whose
        # reference was estimated at T = 1 in fit) do not move with a recalibration.
        before = self.temperature if getattr(self.flow, "temperable", True) else 1.0
        if before == 1.0:
            yield
            return
        self.flow.set_temperature(1.0)
        try:
            yield
        finally:
            self.flow.set_temperature(before)

    @torch.no_grad()
    def recalibrate(
        self,
        theta: Tensor,
        x: Tensor,
        num_samples: int = 100,
        temperatures: Sequence[float] | None = None,
        *,
        seed: int = 0,
        nll_tolerance: float | None = 1.0,
    ) -> float:
        r"""Fits the flow's base temperature :math:`T` (``z ~ N(0, T^2 I)``) on held-out
        pairs, so that its credible regions cover as often as they claim; keeps it.

        The density stays exact and normalised for any :math:`T` (only the base changes);
        :math:`T > 1` widens every credible region, :math:`T < 1` narrows them. The
        temperature with the smallest calibration error on the pairs wins: the mean
        distance between the sorted credibility levels at which the true parameters
        enter the highest-density regions and the uniform quantiles (their 1-Wasserstein
        distance to calibrated), among the temperatures that do not make the fit worse:
        whose mean negative log density of the true parameters exceeds the current
        temperature's by at most ``nll_tolerance`` standard errors of the paired
        difference. Where none qualifies, the temperature stays as it was. A candidate at
        which a truncated flow's samples cannot be drawn inside the prior's support
        (rejection gives up) is skipped.

        Arguments:
            theta: Held-out true parameters, shape ``(N, d)`` (not trained on).
            x: Their simulations, shape ``(N, m)``.
            num_samples: Posterior samples per pair.
            temperatures: The candidates (default: 25 from 0.5 to 4, log-spaced).
            seed: Seeds the samples (the same for every candidate).
            nll_tolerance: How many standard errors of the pairs' negative log density a
                temperature may add (``None``: no limit, the candidate of smallest error
                wins, even where the current temperature's is smaller: a grid of one
                temperature sets it). Where
                the error is flat in :math:`T`, its minimum is noise, and a temperature
                chosen by it alone can cost much accuracy for no calibration.

        Returns:
            The temperature kept; ``history["recalibration"]`` has the errors.
        """
        if not getattr(self.flow, "temperable", True):  # a flow of another kind
            raise ValueError(
                "recalibrate needs a flow with a Gaussian base; ncsf's base is uniform on the "
                "circle, so it has no temperature"
            )
        if nll_tolerance is not None and not (nll_tolerance >= 0 and math.isfinite(nll_tolerance)):
            raise ValueError(f"nll_tolerance must be >= 0 and finite or None, got {nll_tolerance}")
        theta = self._theta(theta)
        x = self._many_x(x)
        grid = [float(t) for t in (temperatures if temperatures is not None else _TEMPERATURES)]
        if not grid or not all(math.isfinite(t) and t > 0 for t in grid):
            raise ValueError(f"temperatures must be positive and finite, got {grid}")
        before = float(self.temperature)
        errors, refused = {}, {}
        try:
            for t in dict.fromkeys([before, *grid]):
                self._set_temperature(t)
                try:
                    errors[t] = self._calibration_error(theta, x, int(num_samples), seed)
                except SupportRejectionError:  # (the error reads unnormalised densities)
                    if t == before:
                        raise
                    # A truncated flow so wide (or narrow) at t that sampling inside the
                    # support gave up: t is out of the race, the sweep goes on.
                    errors[t] = math.inf
            if nll_tolerance is None:  # the candidates' smallest error, not the current T's
                best = min(grid, key=errors.__getitem__)
            else:
                best, refused = self._guarded(theta, x, grid, errors, before, nll_tolerance)
        except BaseException:
            self._set_temperature(before)  # a failed fit leaves the posterior as it was
            raise
        self._set_temperature(best)
        self.history["recalibration"] = {
            "temperature": best,
            "error": errors[best],
            "temperature_before": before,
            "error_before": errors[before],
            "num_pairs": len(theta),
            # Temperatures of smaller error refused: their NLL increase and its se.
            "refused": refused,
        }
        return best

    def _guarded(
        self,
        theta: Tensor,
        x: Tensor,
        grid: list[float],
        errors: dict[float, float],
        before: float,
        tolerance: float,
    ) -> tuple[float, dict[float, tuple[float, float]]]:
        # The smallest-error temperature whose paired NLL increase over the current one
        # is within the tolerance (lazily, in the order of the errors), else the current;
        # and the refused ones of smaller error, with their increase and its se.
        # A truncated flow's density is renormalised at every pair with GUARD_MASS_SAMPLES
        # draws each, not the default 10,000: with those, the guard made most of the
        # 1,106 s after the last epoch of npe-recalibrated on two_moons at 10,000.
        def nll_terms() -> Tensor:
            with self._mass_samples({"num_rejection_samples": GUARD_MASS_SAMPLES}):
                return self._log_prob(theta[None], x, False)[0]

        refused: dict[float, tuple[float, float]] = {}
        self._set_temperature(before)
        reference = nll_terms()
        for t in sorted(grid, key=errors.__getitem__):
            if t == before or errors[t] >= errors[before]:
                break
            self._set_temperature(t)
            try:
                increase = reference - nll_terms()
            except UnnormalisableError:  # no guard draw inside the support at t
                refused[t] = (math.inf, math.nan)
                continue
            mean = float(increase.mean())
            se = float(increase.std()) / math.sqrt(len(increase)) if len(increase) > 1 else 0.0
            if math.isfinite(mean) and mean <= tolerance * se:
                return t, refused
            refused[t] = (mean, se)
        return before, refused

    def _calibration_error(self, theta: Tensor, x: Tensor, n: int, seed: int) -> float:
        # The 1-Wasserstein distance between the credibility levels at which the truths
        # enter the HPD regions and the uniform distribution they follow when calibrated.
        with seeded(seed, [self.device]):
            samples = self._sample(n, x, True)
        lq = self._log_prob(torch.cat([theta[None], samples]), x, False, normalize=False)
        level = (lq[1:] > lq[:1]).double().mean(0).sort().values.cpu()
        uniform = (torch.arange(len(level), dtype=torch.float64) + 0.5) / len(level)
        return float((level - uniform).abs().mean())

    def leakage(self, x: Tensor | None = None, num_samples: int = 10_000) -> float:
        r"""Estimates the fraction of the flow's mass outside the prior's support at ``x``,
        one minus :meth:`accepted_mass`.

        Zero by construction for a transformed flow (``support="transform"``).
        """
        return 1.0 - float(self.accepted_mass(x, num_samples).mass[0])

    def map(
        self,
        x: Tensor | None = None,
        *,
        num_init_samples: int = 1000,
        num_to_optimize: int = 10,
        num_iter: int = 100,
        learning_rate: float = 0.01,
        show_progress_bars: bool = False,
        **ignored: Any,
    ) -> Tensor:
        r"""Returns the maximum a posteriori estimate, shape ``(1, d)`` (as sbi).

        The best ``num_to_optimize`` of ``num_init_samples`` posterior samples (by
        ``log_prob``) start Adam ascent on :math:`\log q(\theta | x)`, in the prior's
        unconstrained space so the iterates stay inside the support.
        """
        x = self._one_x(x)
        theta0 = self.sample((num_init_samples,), x)
        lp0 = self.log_prob(theta0, x)
        top = theta0[torch.argsort(lp0, descending=True)[:num_to_optimize]]
        t = self.flow.support.transform()
        z = t.inv(top).detach().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=learning_rate)
        best_theta, best_lp = top[:1], lp0.max()
        for _ in range(int(num_iter)):
            opt.zero_grad()
            lp = self.flow.log_prob(t(z), x)
            (-lp[torch.isfinite(lp)].sum()).backward()
            opt.step()
        with torch.no_grad():
            theta = t(z)
            lp = self._log_prob(theta, x, False)
            i = int(torch.argmax(lp))
            if lp[i] > best_lp:
                best_theta = theta[i : i + 1]
        return best_theta.detach()

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        r"""Saves the posterior for :func:`load_posterior` (see the module docstring); a
        path is written atomically (:mod:`jsbi.files`)."""
        if isinstance(path, (str, os.PathLike)):
            atomic_save(self._state(), path)
        else:  # a file object
            torch.save(self._state(), path)

    def _state(self) -> dict[str, Any]:
        # What save() writes; subclasses add their own entries.
        spec = prior_to_spec(self._prior)
        if spec is None and self._prior is not None:
            warnings.warn(
                f"prior of type {type(self._prior).__name__} cannot be stored as data; "
                "load_posterior will need prior=...",
                stacklevel=2,
            )
        state = {
            "format": FORMAT,
            "version": 1,  # 2 for a mixture only (spec.VERSION)
            "config": self.flow.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.flow.state_dict().items()},
            "prior": spec,
            "prior_type": None if self._prior is None else type(self._prior).__name__,
            "history": self.history,
            "default_x": None if self._x is None else self._x.cpu(),
            "num_mass_samples": self.num_mass_samples,
            "num_normalizer_samples": self.num_normalizer_samples,
            "typicality": None if self.typicality is None else self.typicality.state(),
        }
        if self.proxy is not None and self.proxy.config is not None:
            state["proxy"] = {
                "config": self.proxy.config,
                "state_dict": {k: v.detach().cpu() for k, v in self.proxy.state_dict().items()},
            }
        return state


def _finite_x(x: Tensor) -> Tensor:
    # A NaN or inf observation has no posterior: say so rather than return NaN samples.
    bad = ~torch.isfinite(x).all(-1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"x must be finite: row(s) {rows[:10]} of x have NaN or inf "
            "(non-finite simulations have no posterior)"
        )
    return x


def sample_shape_tuple(sample_shape: Sequence[int] | int) -> tuple[int, ...]:
    r"""A sample shape as a tuple of ints >= 0, or a :class:`ValueError` naming it."""
    try:
        shape = (
            (sample_shape,) if isinstance(sample_shape, numbers.Integral) else tuple(sample_shape)
        )
        ok = all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape
        )
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"sample_shape must be an int or a sequence of ints >= 0, got {sample_shape!r}"
        )
    return tuple(int(s) for s in shape)
