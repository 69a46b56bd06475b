r"""The method's objectives, as pure functions of tensors.

This module is the place to read the method (``docs/method.md``). Every
function takes tensors and returns tensors; nothing here owns a model, an optimiser
or a loop (that is :mod:`jsbi.training.loop`'s job).

Notation: ``q`` is the flow :math:`q_\phi(\theta \mid x)`, ``r`` the energy-based proxy
:math:`r_\psi(\theta \mid x) = e^{-E_\psi(\theta, x)} / Z_\psi(x)`. All work is done in
log space (``logsumexp``; ratios are never exponentiated).

Shape convention, used everywhere in this module: per-sample quantities for a batch
of ``B`` observations ``x`` with ``K`` flow samples each have shape ``(K, B)``,
samples first, as produced by ``flow(x).rsample((K,))`` and
``flow(x).log_prob(theta)``. Per-pair data quantities have shape ``(B,)``. Per-x
quantities (``log Z``, ESS) have shape ``(B,)``.

References:
    | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025)
    | https://arxiv.org/abs/2511.11159

    | Surprisal-Rényi Free Energy (Matsumoto, Castillo, Prada & Mali, 2026)
    | https://arxiv.org/abs/2603.03405

    | Resilient Constrained Learning (Hounie, Ribeiro & Chamon, 2023)
    | https://arxiv.org/abs/2306.02426
"""

from __future__ import annotations

__all__ = [
    "forward_kl",
    "log_normalizer",
    "proxy_fit",
    "reverse_kl",
    "forward_kl_from_proxy",
    "srfe",
    "contrastive_ratio_loss",
    "nrec_loss",
    "constraint_violation",
    "dual_update",
    "resilient_slack",
    "primal_losses",
    "coverage_penalty",
]

import math

import torch
import torch.nn.functional as F_
from torch import Tensor

from jsbi.tau import check_tau

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def _check_samples(name: str, value: Tensor) -> None:
    if not isinstance(value, Tensor) or value.ndim != 2:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a tensor of shape (K, B), got {shape}")


def _check_same(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (K, B), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_log_z(log_z: Tensor | None, batch: int) -> None:
    if log_z is not None and (log_z.ndim != 1 or log_z.shape[0] != batch):
        raise ValueError(f"log_z must have shape (B,) = ({batch},), got {tuple(log_z.shape)}")


def _safe_logsumexp(a: Tensor, dim: int = 0) -> Tensor:
    r"""``logsumexp`` whose gradient is zero, not NaN, where a slice is all ``-inf``.

    A slice of ``-inf`` log-weights (every flow sample outside the proxy's support)
    gives ``-inf``, as it should; torch's own backward would give ``NaN`` there.
    """
    empty = torch.isneginf(a).all(dim=dim, keepdim=True)
    out = torch.logsumexp(torch.where(empty, torch.zeros_like(a), a), dim=dim)
    return torch.where(empty.squeeze(dim), torch.full_like(out, -math.inf), out)


# ---------------------------------------------------------------------------
# The terms (docs/method.md)
# ---------------------------------------------------------------------------


def forward_kl(log_q_data: Tensor) -> Tensor:
    r"""The flow's forward KL up to the data entropy, :math:`F(\phi)` (the NPE loss).

    .. math:: F(\phi) = \mathbb{E}_{(\theta, x) \sim D}[-\log q_\phi(\theta \mid x)]
        \approx -\frac{1}{B} \sum_i \log q_\phi(\theta_i \mid x_i)

    Arguments:
        log_q_data: :math:`\log q_\phi(\theta_i \mid x_i)` on data pairs, shape ``(B,)``.

    Returns:
        The scalar :math:`F`.

    Example:
        >>> forward_kl(torch.tensor([-1.0, -3.0]))
        tensor(2.)
    """
    if log_q_data.ndim != 1:
        raise ValueError(f"log_q_data must have shape (B,), got {tuple(log_q_data.shape)}")
    return -log_q_data.mean()


def log_normalizer(neg_energy: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor]:
    r"""Importance-sampling estimate of the proxy's log normaliser, and its ESS.

    With :math:`K` flow samples :math:`\theta_k \sim q_\phi(\cdot \mid x)` as proposal,

    .. math:: \log \hat Z_\psi(x) = \operatorname{logsumexp}_k
        \big(-E_\psi(\theta_k, x) - \log q_\phi(\theta_k \mid x)\big) - \log K .

    Its gradient in :math:`\psi` is :math:`-\sum_k w_k \nabla_\psi E_\psi(\theta_k, x)`
    with self-normalised weights :math:`w = \operatorname{softmax}_k(-E - \log q)`,
    which autograd gives directly. The effective sample size fraction

    .. math:: \mathrm{ESS}(x) = \frac{1}{K \sum_k w_k^2} \in [1/K, 1]

    says how well flow and proxy agree (near :math:`1/K`: importance-sampling collapse,
    ``log Z_hat`` is unreliable). It is ``0`` where every sample has zero proxy density.

    ``log_q`` is detached here so that :math:`\log \hat Z` is constant in :math:`\phi`.
    The caller must also evaluate the energies on *detached* samples
    (``theta.detach()``), otherwise gradient reaches the flow through
    :math:`\theta_k`.

    Arguments:
        neg_energy: :math:`-E_\psi(\theta_k, x)` on flow samples, shape ``(K, B)``
            (``-inf`` allowed: zero proxy density).
        log_q: :math:`\log q_\phi(\theta_k \mid x)` of the same samples, shape ``(K, B)``.

    Returns:
        ``(log_z, ess)``: :math:`\log \hat Z(x)` with gradient in :math:`\psi`, and the
        ESS fraction (no gradient), both of shape ``(B,)``.

    Example:
        >>> log_z, ess = log_normalizer(torch.zeros(4, 3), torch.zeros(4, 3))
        >>> log_z, ess
        (tensor([0., 0., 0.]), tensor([1., 1., 1.]))
    """
    _check_samples("neg_energy", neg_energy)
    _check_samples("log_q", log_q)
    _check_same("neg_energy", neg_energy, "log_q", log_q)
    K = neg_energy.shape[0]
    log_w = neg_energy - log_q.detach()
    log_z = _safe_logsumexp(log_w, dim=0) - math.log(K)
    with torch.no_grad():
        log_w = log_w.detach().double()  # float32 loses the ratio's last digits
        # ESS = (sum w)^2 / sum w^2 on unnormalised weights, in log space.
        log_ess = 2 * _safe_logsumexp(log_w, 0) - _safe_logsumexp(2 * log_w, 0)
        ess = (torch.exp(log_ess) / K).to(log_z.dtype)
        ess = torch.where(torch.isneginf(log_w).all(0), torch.zeros_like(ess), ess)
    return log_z, ess


def defensive_log_proposal(log_q: Tensor, log_prior: Tensor, prior_fraction: float) -> Tensor:
    r"""Log-density of the defensive proposal :math:`m = (1 - a) q_\phi + a \pi`.

    With flow samples alone, :func:`log_normalizer` never sees the proxy's mass where
    the flow puts none, so :math:`\log \hat Z` misses it (it is biased low) and the
    proxy's fit :math:`C` cannot push it down. Drawing a fraction :math:`a` of the
    importance samples from the prior, and weighting every sample by the mixture,
    :math:`w = e^{-E_\psi} / m`, keeps the estimator unbiased for :math:`Z_\psi` while
    bounding the weights of the proxy's mass anywhere in the prior's support. Pass the
    result as ``log_q`` of :func:`log_normalizer`, with the samples of both components.
    (Why it is on by default: ``docs/method.md``, "Defaults and why".)

    Arguments:
        log_q: :math:`\log q_\phi(\theta_k \mid x)` at the samples, any shape.
        log_prior: :math:`\log \pi(\theta_k)` at the same samples.
        prior_fraction: :math:`a \in [0, 1)`, the share of samples drawn from the prior
            (with :math:`K` flow and :math:`M` prior samples, :math:`a = M / (K + M)`).

    Returns:
        :math:`\log m(\theta_k)`, the shape of the inputs.

    References:
        | Safe and effective importance sampling (Owen & Zhou, 2000), JASA 95(449)

    Example:
        >>> defensive_log_proposal(torch.tensor([0.0]), torch.tensor([0.0]), 0.5)
        tensor([0.])
    """
    if not 0 <= prior_fraction < 1:
        raise ValueError(f"prior_fraction must be in [0, 1), got {prior_fraction}")
    if prior_fraction == 0:
        return log_q
    return torch.logaddexp(
        log_q + math.log1p(-prior_fraction), log_prior + math.log(prior_fraction)
    )


def proxy_fit(energy_data: Tensor, log_z: Tensor) -> Tensor:
    r"""The proxy's fit to the data (its NLL up to the data entropy), :math:`C(\psi)`.

    .. math:: C(\psi) = \mathbb{E}_D[E_\psi(\theta, x)] + \mathbb{E}_x[\log Z_\psi(x)]
        \approx \frac{1}{B} \sum_i E_\psi(\theta_i, x_i)
        + \frac{1}{B} \sum_i \log \hat Z_\psi(x_i)

    with :math:`\log \hat Z` from :func:`log_normalizer` at the same ``x``. Its gradient
    is the contrastive-divergence gradient :math:`\mathbb{E}_D[\nabla E] -
    \mathbb{E}_x \mathbb{E}_{r}[\nabla E]`, with :math:`r` reached by importance weights.

    Arguments:
        energy_data: :math:`E_\psi(\theta_i, x_i)` on data pairs, shape ``(B,)``.
        log_z: :math:`\log \hat Z_\psi(x)`, shape ``(B',)`` (usually ``B' = B``).

    Returns:
        The scalar :math:`C`.

    Example:
        >>> proxy_fit(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]))
        tensor(2.)
    """
    if energy_data.ndim != 1:
        raise ValueError(f"energy_data must have shape (B,), got {tuple(energy_data.shape)}")
    if log_z.ndim != 1:
        raise ValueError(f"log_z must have shape (B,), got {tuple(log_z.shape)}")
    return energy_data.mean() + log_z.mean()


def reverse_kl(
    log_q_samples: Tensor,
    energy_samples: Tensor,
    log_z: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Reverse KL from the flow to the proxy, :math:`R_{KL}(\phi, \psi)`.

    .. math:: R_{KL} = \mathbb{E}_x \mathbb{E}_{\theta \sim q_\phi(\cdot \mid x)}
        \big[\log q_\phi(\theta \mid x) + E_\psi(\theta, x)\big]
        + \mathbb{E}_x \log Z_\psi(x)
        = \mathbb{E}_x \, \mathrm{KL}\big(q_\phi(\cdot \mid x) \,\|\, r_\psi(\cdot \mid x)\big)

    estimated with :math:`K` reparameterised samples per ``x``. ``log Z`` is constant in
    :math:`\phi` (pass the output of :func:`log_normalizer`, computed on detached
    samples); it is *not* detached here because its :math:`\psi`-gradient
    (:math:`-\mathbb{E}_r[\nabla_\psi E]`) is what makes :math:`R` a divergence for
    the proxy too. Without ``log_z`` the value is :math:`R_{KL} - \mathbb{E}_x \log Z`:
    same flow gradient, but no longer a KL.

    Arguments:
        log_q_samples: :math:`\log q_\phi(\theta_k \mid x)`, shape ``(K, B)``.
        energy_samples: :math:`E_\psi(\theta_k, x)`, shape ``(K, B)``.
        log_z: :math:`\log \hat Z_\psi(x)`, shape ``(B,)``, or ``None``.
        mask: Which samples enter the mean, shape ``(K, B)`` (``None``: all). Samples
            outside the proxy's support (infinite energy) are left out this way, so the
            term stays finite and NaN-free; the flow's forward term keeps it inside.

    Returns:
        The scalar :math:`R_{KL}`.

    Example:
        >>> reverse_kl(torch.full((8, 2), -1.0), torch.full((8, 2), 1.0), torch.zeros(2))
        tensor(0.)
    """
    _check_samples("log_q_samples", log_q_samples)
    _check_samples("energy_samples", energy_samples)
    _check_same("log_q_samples", log_q_samples, "energy_samples", energy_samples)
    _check_log_z(log_z, log_q_samples.shape[1])
    if mask is None:
        value = (log_q_samples + energy_samples).mean()
    else:
        _check_same("log_q_samples", log_q_samples, "mask", mask)
        terms = torch.where(mask, log_q_samples + energy_samples, torch.zeros_like(log_q_samples))
        value = terms.sum() / mask.sum().clamp_min(1)
    if log_z is not None:
        value = value + log_z.mean()
    return value


def forward_kl_from_proxy(log_q: Tensor, neg_energy: Tensor, log_proposal: Tensor) -> Tensor:
    r"""The forward KL from the proxy to the flow, :math:`\mathrm{KL}(r_\psi \| q_\phi)`, by
    self-normalised importance sampling (SRFE's :math:`\tau \to 1` end).

    With :math:`\theta_k` drawn from a proposal :math:`m` (detached: the defensive mixture of
    the flow and the prior, :func:`defensive_log_proposal`) and self-normalised weights
    :math:`w = \operatorname{softmax}_k(-E_\psi(\theta_k, x) - \log m(\theta_k))`,

    .. math:: \mathbb{E}_x \mathbb{E}_{r_\psi}[-\log q_\phi(\theta \mid x)] \approx
        -\frac{1}{B} \sum_x \sum_k w_k \log q_\phi(\theta_k \mid x),

    which is :math:`\mathrm{KL}(r \| q)` up to the proxy's entropy (constant in
    :math:`\phi`). It distils the proxy into the flow as if each ``x`` came with many more
    posterior draws. The weights carry no gradient; an ``x`` whose samples all have zero
    proxy density is left out.

    Arguments:
        log_q: :math:`\log q_\phi(\theta_k \mid x)` with gradient in :math:`\phi`,
            shape ``(K, B)``.
        neg_energy: :math:`-E_\psi(\theta_k, x)`, shape ``(K, B)`` (``-inf`` allowed).
        log_proposal: :math:`\log m(\theta_k \mid x)`, shape ``(K, B)``.

    Returns:
        The scalar cross-entropy.

    Example:
        >>> forward_kl_from_proxy(torch.full((4, 2), -1.0), torch.zeros(4, 2), torch.zeros(4, 2))
        tensor(1.)
    """
    _check_samples("log_q", log_q)
    _check_same("log_q", log_q, "neg_energy", neg_energy)
    _check_same("log_q", log_q, "log_proposal", log_proposal)
    with torch.no_grad():
        log_w = (neg_energy - log_proposal).detach()
        seen = ~torch.isneginf(log_w).all(0)
        w = torch.softmax(torch.where(seen, log_w, torch.zeros_like(log_w)), dim=0)
        w = torch.where(torch.isneginf(log_w), torch.zeros_like(w), w)
    if not bool(seen.any()):
        return log_q.sum() * 0.0
    safe = torch.where(w > 0, log_q, torch.zeros_like(log_q))  # no -inf * 0
    return -(w * safe).sum(0)[seen].mean()


def srfe(
    log_q_samples: Tensor,
    energy_samples: Tensor,
    tau: float,
    log_z: Tensor | None = None,
    columns: Tensor | None = None,
) -> Tensor:
    r"""Surprisal-Rényi free energy between the proxy and the flow, :math:`S_\tau`.

    With the Chernoff coefficient :math:`c_\tau(x) = \int r_\psi^\tau
    q_\phi^{1-\tau} \, d\theta = \mathbb{E}_{q_\phi}[(r_\psi / q_\phi)^\tau]`,

    .. math:: S_\tau(\phi, \psi) = -\frac{1}{\tau (1 - \tau)} \mathbb{E}_x
        \log c_\tau(x) \approx -\frac{1}{\tau (1 - \tau)} \frac{1}{B} \sum_x
        \Big[\operatorname{logsumexp}_k(\tau l_k) - \log K - \tau \log Z_\psi(x)\Big]

    with :math:`l_k = -E_\psi(\theta_k, x) - \log q_\phi(\theta_k \mid x)` and
    :math:`\theta_k \sim q_\phi(\cdot \mid x)` reparameterised. The proxy :math:`r`
    is the distribution raised to :math:`\tau`: as :math:`\tau \to 1` this tends to
    the forward :math:`\mathrm{KL}(r \| q)`, as :math:`\tau \to 0` to the reverse
    :math:`\mathrm{KL}(q \| r)` (see :func:`gaussian_srfe`). The estimator is the log
    of a mean, biased upwards by :math:`O(1/K)`. Near :math:`\tau = 1` its flow
    gradient vanishes (:math:`\mathbb{E}_q[r/q] = 1`), so useful values lie in
    :math:`(0, \sim 0.9]`. An ``x`` with every sample at zero proxy density gives
    ``+inf`` (with zero gradient).

    ``log_z`` is treated as for :func:`reverse_kl`: constant in :math:`\phi`, kept
    (not detached) for its :math:`\psi`-gradient; without it the value is shifted by
    :math:`\mathbb{E}_x \log Z / (1 - \tau)`.

    Arguments:
        log_q_samples: :math:`\log q_\phi(\theta_k \mid x)`, shape ``(K, B)``.
        energy_samples: :math:`E_\psi(\theta_k, x)`, shape ``(K, B)``.
        tau: The interpolation :math:`\tau \in (0, 1)`.
        log_z: :math:`\log \hat Z_\psi(x)`, shape ``(B,)``, or ``None``.
        columns: Which ``x`` enter the mean, shape ``(B,)`` (``None``: all), e.g. those
            with at least one sample inside the proxy's support (a flow that leaks);
            none selected gives 0 (with zero gradient).

    Returns:
        The scalar :math:`S_\tau`.

    Example:
        >>> srfe(torch.zeros(8, 2), torch.ones(8, 2), 0.5, torch.zeros(2))
        tensor(2.)

    References:
        | Surprisal-Rényi Free Energy (Matsumoto et al., 2026)
        | https://arxiv.org/abs/2603.03405
    """
    tau = check_tau(tau)
    _check_samples("log_q_samples", log_q_samples)
    _check_samples("energy_samples", energy_samples)
    _check_same("log_q_samples", log_q_samples, "energy_samples", energy_samples)
    _check_log_z(log_z, log_q_samples.shape[1])
    K = log_q_samples.shape[0]
    l = -energy_samples - log_q_samples  # noqa: E741
    log_c = _safe_logsumexp(tau * l, dim=0) - math.log(K)
    if log_z is not None:
        log_c = log_c - tau * log_z
    if columns is not None:
        if columns.shape != log_c.shape:
            raise ValueError(
                f"columns must have shape {tuple(log_c.shape)}, got {tuple(columns.shape)}"
            )
        kept = torch.where(columns, log_c, torch.zeros_like(log_c))
        return -kept.sum() / columns.sum().clamp_min(1) / (tau * (1.0 - tau))
    return -log_c.mean() / (tau * (1.0 - tau))


def reverse_terms(
    log_q_samples: Tensor,
    energy_samples: Tensor,
    log_z: Tensor | None = None,
    *,
    tau: float | None = None,
) -> tuple[Tensor, Tensor | None, int]:
    r"""The reverse-side term :math:`R` from :math:`K` flow samples per ``x``, split by
    which model's gradient it carries.

    :math:`R` is :func:`srfe` at ``tau`` when one is given, else :func:`reverse_kl`.
    Samples outside the proxy's support (energy :math:`+\infty`) are left out, never a
    NaN: :func:`reverse_kl` masks them, and an ``x`` whose samples all fell outside has no
    :func:`srfe` term.

    Arguments:
        log_q_samples: :math:`\log q_\phi(\theta_k \mid x)` of reparameterised samples,
            shape ``(K, B)``, with the flow's gradient.
        energy_samples: :math:`E_\psi(\theta_k, x)`, shape ``(K, B)``, with the proxy's
            gradient (and, through the samples, the flow's).
        log_z: :math:`\log \hat Z_\psi(x)`, shape ``(B,)``, with the proxy's gradient
            (:func:`log_normalizer` on detached samples), or ``None``.
        tau: SRFE's :math:`\tau \in (0, 1)`; ``None`` for the reverse KL.

    Returns:
        ``(R_flow, R_proxy, outside)``: ``R_flow`` for the flow's loss (``log_z``
        detached), ``R_proxy`` for the proxy's (``log q`` detached; ``None`` without
        ``log_z``), and how many samples fell outside the support.

    Example:
        >>> log_q, energy = torch.full((4, 2), -1.0), torch.tensor([[1.0, math.inf]] * 4)
        >>> reverse_terms(log_q, energy)
        (tensor(0.), None, 4)
    """
    outside = torch.isinf(energy_samples) & (energy_samples > 0)
    n_outside = int(outside.sum())
    detached_z = None if log_z is None else log_z.detach()
    R_proxy = None
    if tau is not None:
        cols = ~outside.all(0) if n_outside else None
        R_flow = srfe(log_q_samples, energy_samples, tau, detached_z, cols)
        if log_z is not None:
            R_proxy = srfe(log_q_samples.detach(), energy_samples, tau, log_z, cols)
    else:
        keep = ~outside if n_outside else None
        R_flow = reverse_kl(log_q_samples, energy_samples, detached_z, mask=keep)
        if log_z is not None:
            R_proxy = reverse_kl(log_q_samples.detach(), energy_samples, log_z, mask=keep)
    return R_flow, R_proxy, n_outside


def contrastive_ratio_loss(g_joint: Tensor, g_marginal: Tensor) -> Tensor:
    r"""Contrastive (NRE-A) loss for a log-ratio :math:`g_\psi(\theta, x)`.

    Binary cross-entropy of a classifier with logit :math:`g` between joint pairs
    :math:`(\theta, x) \sim p(\theta, x)` (label 1) and marginal pairs
    :math:`\theta \sim p(\theta), x \sim p(x)` (label 0, e.g. ``x`` shuffled in the batch):

    .. math:: \ell = -\frac{1}{B} \sum \log \sigma(g_\text{joint})
        - \frac{1}{B'} \sum \log \sigma(-g_\text{marginal}) .

    Its minimiser is :math:`g^* = \log p(x \mid \theta) - \log p(x)`, the log
    likelihood-to-evidence ratio: a warm start for the ``g`` of
    :class:`jsbi.proxies.ratio.PriorTimesRatioEnergy`, whose proxy then equals the
    posterior :math:`\pi(\theta) e^{g^*}`. At :math:`g = 0` the loss is :math:`2 \log 2`.

    Arguments:
        g_joint: :math:`g` on joint pairs, any shape.
        g_marginal: :math:`g` on marginal pairs, any shape.

    Returns:
        The scalar loss.

    Example:
        >>> contrastive_ratio_loss(torch.zeros(3), torch.zeros(3))
        tensor(1.3863)

    References:
        | Likelihood-free MCMC with Amortized Approximate Ratio Estimators
        | (Hermans, Begy & Louppe, 2020) https://arxiv.org/abs/1903.04057
    """
    return F_.softplus(-g_joint).mean() + F_.softplus(g_marginal).mean()


def nrec_loss(g_joint: Tensor, g_marginal: Tensor, gamma: float = 1.0) -> Tensor:
    r"""Contrastive NRE-C loss for a log-ratio :math:`g_\psi(\theta, x)`, with many atoms.

    For each ``x``, a classifier sees :math:`K` parameter atoms and decides whether one of
    them (and which) was drawn jointly with ``x`` (class :math:`k \ge 1`) or none was
    (class 0, prior odds :math:`1 : \gamma`). With :math:`r = e^{g}` its probabilities are

    .. math:: q(k \mid x, \theta_{1:K}) = \frac{(\gamma / K) r_k}
        {1 + (\gamma / K) \sum_j r_j}, \qquad
        q(0 \mid x, \theta_{1:K}) = \frac{1}{1 + (\gamma / K) \sum_j r_j}

    and the loss is the cross-entropy
    :math:`\frac{\gamma}{1 + \gamma} \mathbb{E}[-\log q(1 \mid \text{joint set})] +
    \frac{1}{1 + \gamma} \mathbb{E}[-\log q(0 \mid \text{marginal set})]`. Unlike NRE-B,
    the class 0 pins the normalisation: the minimiser is the log likelihood-to-evidence
    ratio itself (so :math:`Z = 1` for :math:`\pi e^{g}`). With :math:`K = 1`,
    :math:`\gamma = 1` it is NRE-A's loss (:func:`contrastive_ratio_loss`) halved.

    Arguments:
        g_joint: :math:`g` on a joint set, shape ``(K, B)``: row 0 at the pair's own
            :math:`\theta`, rows 1.. at other parameters (e.g. of other pairs in the batch)
            with the same ``x``.
        g_marginal: :math:`g` on a marginal set, shape ``(K, B)``: ``K`` parameters drawn
            independently of ``x``.
        gamma: :math:`\gamma > 0`, the odds of a joint set.

    Returns:
        The scalar loss.

    Example:
        >>> nrec_loss(torch.zeros(1, 3), torch.zeros(1, 3))
        tensor(0.6931)

    References:
        | Contrastive Neural Ratio Estimation (Miller, Weniger & Forre, 2022),
          arXiv:2210.06170
    """
    _check_samples("g_joint", g_joint)
    _check_same("g_joint", g_joint, "g_marginal", g_marginal)
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be finite and > 0, got {gamma}")
    K = g_joint.shape[0]
    log_odds = math.log(gamma / K)

    def log_denominator(g: Tensor) -> Tensor:
        zero = torch.zeros_like(g[:1])
        return torch.logsumexp(torch.cat([zero, log_odds + g]), dim=0)

    nll_joint = log_denominator(g_joint) - (log_odds + g_joint[0])
    nll_marginal = log_denominator(g_marginal)
    return (gamma * nll_joint.mean() + nll_marginal.mean()) / (1 + gamma)


# ---------------------------------------------------------------------------
# Primal-dual pieces (docs/method.md)
# ---------------------------------------------------------------------------
#
#   minimise_{phi, psi, u >= 0}  F(phi) + R(phi, psi) + (alpha / 2) u^2
#   subject to                   C(psi) - F_bar <= eps + u
#
#   L = F + R + (alpha / 2) u^2 + lambda (C - F_bar - eps - u)


def constraint_violation(
    C: Tensor | float, F_bar: Tensor | float, eps: float = 0.0, u: Tensor | float = 0.0
) -> Tensor | float:
    r"""The constraint's violation :math:`C(\psi) - \bar F - \epsilon - u`.

    Positive: the proxy fits the data worse than the flow by more than
    :math:`\epsilon + u`. ``C - F_bar`` equals :math:`\mathrm{KL}(p \| r) -
    \mathrm{KL}(p \| q)` (the data entropy cancels). Tensors are detached: the
    violation only drives the dual step.

    Arguments:
        C: The proxy fit :math:`C` (:func:`proxy_fit`).
        F_bar: The flow's forward NLL :math:`\bar F` (:func:`forward_kl`).
        eps: The tolerance :math:`\epsilon`.
        u: The resilient slack :math:`u \ge 0` (:func:`resilient_slack`).

    Returns:
        :math:`C - \bar F - \epsilon - u`.

    Example:
        >>> constraint_violation(3.0, 2.0, eps=0.5, u=0.25)
        0.25
    """
    value = C - F_bar - eps - u
    return value.detach() if isinstance(value, Tensor) else value


def dual_update(lam: Tensor | float, violation: Tensor | float, lr: float) -> Tensor | float:
    r"""Projected dual ascent :math:`\lambda \leftarrow \max(0, \lambda + \eta_\lambda v)`.

    :math:`\lambda` rises while the constraint is violated (:math:`v > 0`) and decays
    to 0 once it is slack: the adaptive weight of the proxy's data fit.

    Arguments:
        lam: The multiplier :math:`\lambda \ge 0`.
        violation: :math:`v` from :func:`constraint_violation`.
        lr: The dual step :math:`\eta_\lambda > 0`.

    Returns:
        The new :math:`\lambda` (a float for float inputs, else a detached tensor).

    Example:
        >>> dual_update(0.5, -2.0, lr=0.1), dual_update(0.5, -10.0, lr=0.1)
        (0.3, 0.0)
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    value = lam + lr * violation
    if isinstance(value, Tensor):
        return value.detach().clamp(min=0.0)
    return max(0.0, float(value))


def resilient_slack(lam: Tensor | float, alpha: float) -> Tensor | float:
    r"""The resilient slack :math:`u = \lambda / \alpha`.

    The minimiser in :math:`u` of :math:`\frac{\alpha}{2} u^2 - \lambda u`. With
    ``alpha = inf`` there is no relaxation (:math:`u = 0`).

    Arguments:
        lam: The multiplier :math:`\lambda \ge 0`.
        alpha: The slack's cost :math:`\alpha > 0`.

    Returns:
        :math:`u \ge 0`.

    Example:
        >>> resilient_slack(2.0, alpha=4.0)
        0.5

    References:
        | Resilient Constrained Learning (Hounie et al., 2023)
        | https://arxiv.org/abs/2306.02426
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return lam / alpha


def flow_loss(F: Tensor, R: Tensor, weight: float = 1.0) -> Tensor:
    r"""The flow's primal loss :math:`F(\phi) + \beta R(\phi, \psi)`.

    ``R`` is :func:`reverse_kl` (objective ``jeffreys``) or :func:`srfe` (``srfe``).
    The flow's optimiser steps on this; only :math:`\phi` should receive its gradient.
    ``weight`` is :math:`\beta`: 1 is the symmetric objective, a smaller value
    a skewed one (the forward side dominates).

    Example:
        >>> flow_loss(torch.tensor(1.0), torch.tensor(2.0))
        tensor(3.)
        >>> flow_loss(torch.tensor(1.0), torch.tensor(2.0), weight=0.25)
        tensor(1.5000)
    """
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    return F + weight * R


def proxy_loss(R: Tensor, C: Tensor, lam: Tensor | float, weight: float = 1.0) -> Tensor:
    r"""The proxy's primal loss :math:`\beta R(\phi, \psi) + \lambda \, C(\psi)`.

    Through :math:`R` the proxy is pulled towards the flow, through :math:`C`
    towards the data, with the adaptive weight :math:`\lambda` (a constant in the
    fixed-penalty ablation). The proxy's optimiser steps on this; only :math:`\psi`
    should receive its gradient. ``lam`` is detached. ``weight`` is :math:`\beta`, the
    same as in :func:`flow_loss` (both are the gradients of one Lagrangian).

    Example:
        >>> proxy_loss(torch.tensor(1.0), torch.tensor(2.0), 0.5)
        tensor(2.)
    """
    if isinstance(lam, Tensor):
        lam = lam.detach()
    return weight * R + lam * C


def primal_losses(
    F: Tensor,
    R_flow: Tensor,
    fit: Tensor | None,
    R_proxy: Tensor | None = None,
    *,
    lam: float = 1.0,
    flow_weight: float = 1.0,
    proxy_weight: float = 0.0,
    forward: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""The whole method in one place: what each model descends, each step.

    .. math:: \mathcal{L}_\phi = F(\phi) + w_\phi R(\phi, \psi), \qquad
        \mathcal{L}_\psi = \lambda \, \mathrm{fit}(\psi) + w_\psi R(\phi, \psi)

    - :math:`R` is the reverse-side term (:func:`reverse_kl`, :func:`srfe`, or
      :func:`forward_kl_from_proxy`); ``R_flow`` carries the flow's gradient (samples
      reparameterised, :math:`\log Z` detached), ``R_proxy`` the proxy's (samples
      detached, :math:`\log Z` with its gradient).
    - ``fit`` is the proxy's data fit: :math:`C` (:func:`proxy_fit`), a contrastive loss,
      or the likelihood proxy's exact maximum likelihood. ``None`` (its own early stopping
      ended it, ``npe-first``'s ``proxy_patience``) with no reverse share: the proxy's loss
      is ``None``, and the proxy does not move.
    - Schedule ``joint`` (docs/method.md): :math:`w_\phi = w_\psi = \beta`,
      :math:`\lambda` the dual variable. Schedule ``npe-first`` (section 4b, phase 2):
      :math:`w_\phi = \beta \cdot \text{gate}` (0 while the proxy's validation NLL is worse
      than the flow's), :math:`\lambda = 1`, :math:`w_\psi` = the proxy's share (0 by
      default: a proxy that is the better model is not pulled towards the worse one).
    - ``forward=False`` drops :math:`F` from the flow's loss (objective ``reverse``).

    Each optimiser must take the gradient of its own loss in its own parameters only.

    Example:
        >>> one = torch.tensor(1.0)
        >>> primal_losses(one, 2 * one, 3 * one, 4 * one, lam=0.5, proxy_weight=1.0)
        (tensor(3.), tensor(5.5000))
    """
    loss_flow = flow_loss(F, R_flow, flow_weight) if forward else R_flow
    if R_proxy is None or proxy_weight == 0:
        return loss_flow, None if fit is None else lam * fit
    if fit is None:
        raise ValueError("a proxy with a share of the reverse term needs its fit")
    return loss_flow, proxy_loss(R_proxy, fit, lam, proxy_weight)


def lagrangian(
    F: Tensor | float,
    R: Tensor | float,
    C: Tensor | float,
    F_bar: Tensor | float,
    lam: Tensor | float,
    u: Tensor | float = 0.0,
    alpha: float = math.inf,
    eps: float = 0.0,
) -> Tensor | float:
    r"""The Lagrangian, for logging.

    .. math:: L = F + R + \frac{\alpha}{2} u^2 + \lambda (C - \bar F - \epsilon - u)

    With ``alpha = inf`` (no slack), ``u`` must be 0 and its cost is 0.

    Example:
        >>> lagrangian(1.0, 2.0, 3.0, 1.0, lam=0.5, u=0.5, alpha=2.0)
        4.0
    """
    cost = 0.0 if math.isinf(alpha) else 0.5 * alpha * u**2
    return F + R + cost + lam * (C - F_bar - eps - u)


# ---------------------------------------------------------------------------
# Calibration (docs/method.md)
# ---------------------------------------------------------------------------


def coverage_penalty(
    log_q_true: Tensor,
    log_q_samples: Tensor,
    *,
    sharpness: float = 0.1,
    conservative: bool = True,
) -> Tensor:
    r"""A differentiable expected-coverage error of a batch (Falkiewicz et al., 2023).

    For each pair :math:`i`, the credibility level at which its true parameter enters the
    highest-density regions of :math:`q(\cdot \mid x_i)`,

    .. math:: \alpha_i = \mathbb{E}_{\theta \sim q}\big[\sigma\big((\log q(\theta)
        - \log q(\theta^*_i)) / \kappa\big)\big],

    is estimated from :math:`L` samples with self-normalised importance weights
    :math:`w_l = q_\phi(\theta_l) / q_{\bar\phi}(\theta_l)` (1 in value; their gradient
    carries the samples' dependence on :math:`\phi`), the indicator relaxed to a sigmoid.
    A calibrated posterior has :math:`\alpha \sim U(0, 1)`: the penalty is the mean squared
    gap between the sorted :math:`\alpha` and the uniform quantiles, over-confidence only
    (``conservative``: where the truths fall in less dense regions than claimed).

    Arguments:
        log_q_true: :math:`\log q(\theta^*_i \mid x_i)`, shape ``(B,)``.
        log_q_samples: :math:`\log q(\theta_l \mid x_i)` of samples drawn without
            gradient, with the flow's gradient, shape ``(L, B)``.
        sharpness: :math:`\kappa`, the sigmoid's scale in nats.
        conservative: Penalise over-confidence only.

    Returns:
        The scalar penalty.

    Example:
        >>> log_q = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
        >>> coverage_penalty(torch.tensor([5.0, -5.0]), log_q, conservative=False)
        tensor(0.0625)

    References:
        | Calibrating Neural Simulation-Based Inference with Differentiable Coverage
          Probability (Falkiewicz et al., 2023), arXiv:2310.13402
    """
    _check_samples("log_q_samples", log_q_samples)
    if log_q_true.shape != log_q_samples.shape[1:]:
        raise ValueError(
            f"log_q_true must have shape (B,) = {tuple(log_q_samples.shape[1:])}, got "
            f"{tuple(log_q_true.shape)}"
        )
    weights = torch.exp(log_q_samples - log_q_samples.detach())
    level = (weights * torch.sigmoid((log_q_samples - log_q_true) / sharpness)).mean(0)
    b = level.shape[0]
    uniform = (torch.arange(b, device=level.device, dtype=level.dtype) + 0.5) / b
    gap = level.sort().values - uniform
    if conservative:
        gap = F_.relu(gap)
    return gap.square().mean()
