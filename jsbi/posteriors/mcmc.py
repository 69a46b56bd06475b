r"""Sampling the proxy posterior exactly: MCMC on its energy, proposed by the flow
(docs/method.md).

The proxy :math:`r(\theta \mid x) \propto e^{-U(\theta)}`, :math:`U = E_\psi(\cdot, x)`, is
known up to its normaliser. :func:`sample_proxy` runs one Markov chain per returned sample,
all observations at once, each leaving :math:`r` invariant:

1. **Independence Metropolis-Hastings** with the defensive proposal
   :math:`m = (1 - a) q_\phi(\cdot \mid x) + a \pi`: accept :math:`\theta' \sim m` with
   probability :math:`\min(1, w(\theta') / w(\theta))`, :math:`w = e^{-U} / m`. Its acceptance
   rate says how well the flow and the proxy agree (1 when :math:`q = r`).
2. **MALA** steps with :math:`\nabla_\theta U` by autograd, preconditioned by the flow's
   scale at that ``x``, to decorrelate. Each observation's step size is first searched
   on a pilot of its chains (a factor-10 bracket, then bisection in its logarithm,
   towards acceptance 0.57), then adapted in the first half of the run and fixed in the
   second.

Every chain starts at its own draw of :math:`m`, so the returned samples are independent
draws whose distribution tends to :math:`r` with the steps, and no two of them are the
same point (importance resampling repeats about a third of its samples at an ESS equal to
the samples asked). On a box prior :math:`U = +\infty` outside the support: such proposals
are rejected, the likelihood never evaluated there.

The run reports the acceptance rates; over the trajectories of the first
``diagnostic_chains`` chains per observation (their second half, or their last 4 steps
where that is shorter), arviz's rank-normalised
split :math:`\hat R` and bulk ESS; and the population's drift over the second half.
With ``max_steps``, a run whose population still drifts goes on in rounds of
``num_steps`` until it no longer does (then :math:`\hat R`, the ESS and the drift are
the last round's, the acceptance rates over every step).
Each returned sample is the last state of its own chain, so what decides whether the
samples follow :math:`r` is whether the population still moves, not whether each short
chain forgets its start: :math:`\hat R` of 10-step trajectories is large even when their
final states are distributed as :math:`r`. :func:`check_mixing` therefore warns on the
drift and the acceptance, and quotes :math:`\hat R` and the ESS beside them.

Example:
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> from jsbi.flows import build_conditional_flow
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> theta = prior.sample((200,)); x = theta + 0.5 * torch.randn(200, 2)
    >>> flow = build_conditional_flow(theta, x, prior, num_transforms=1)
    >>> def energy(t, x):  # the exact posterior of this model, up to a constant
    ...     return 0.5 * (t ** 2).sum(-1) + 2.0 * ((x - t) ** 2).sum(-1)
    >>> samples, info = sample_proxy(energy, flow, prior, x[:3], 500, num_steps=8)
    >>> samples.shape, 0 < info.imh_acceptance <= 1
    (torch.Size([500, 3, 2]), True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution

from jsbi.objectives import defensive_log_proposal
from jsbi.progress import user_stacklevel
from jsbi.proxies.base import PriorLogDensity
from jsbi.proxies.importance import neg_energy_inside

__all__ = ["MixingInfo", "check_mixing", "sample_proxy"]

Energy = Callable[[Tensor, Tensor], Tensor]


@dataclass
class MixingInfo:
    r"""How a run of :func:`sample_proxy` mixed.

    Attributes:
        imh_acceptance: The independence sampler's acceptance rate over all chains and
            steps (the flow's agreement with the proxy).
        mala_acceptance: MALA's acceptance rate (NaN without MALA steps).
        rhat: The largest split :math:`\hat R` over parameters and observations.
        ess: The smallest bulk ESS over parameters and observations, per
            ``diagnostic_chains`` chains' traced steps (as ``rhat``).
        drift: How far the population of all chains moved over the second half of the
            run: the largest, over parameters and observations, of the change in its mean
            in units of its standard deviation plus the change in its log standard
            deviation. Near 0 when the chains have reached the proxy (or never leave
            their start: see ``imh_acceptance``). Where the chains went on in rounds
            (``max_steps``), the last round's: below the warning's limit unless the
            rounds reached ``max_steps``.
        num_steps: Steps per chain (each an IMH step and ``num_mala`` MALA steps).
        drift_noise: The drift that sampling noise alone stays below, with probability
            ``1 - DRIFT_LEVEL`` over all parameters and observations, for populations of
            this many chains (:func:`drift_noise`); 0 where not computed.
    """

    imh_acceptance: float
    mala_acceptance: float
    rhat: float
    ess: float
    drift: float
    num_steps: int
    drift_noise: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


class _Target:
    r"""The proxy at a set of chains: :math:`U`, the defensive proposal's log density, and
    their gradients in :math:`\theta`, each chain reading its own row of ``x``."""

    def __init__(self, energy: Energy, flow: nn.Module, prior: Distribution, a: float) -> None:
        self.energy, self.flow, self.a = energy, flow, a
        self.log_prior = PriorLogDensity(prior)
        self.prior = prior

    def log_m(self, theta: Tensor, x: Tensor) -> Tensor:
        log_q = self.flow.log_prob(theta, x)
        return defensive_log_proposal(log_q, self.log_prior.to(theta.device)(theta), self.a)

    def propose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # One draw of m per chain (the flow's, or with probability a the prior's) and its
        # log m: the flow's log q comes with its draw, the prior's draws need their own.
        theta, log_q = self.flow.rsample_and_log_prob((1,), x)
        theta, log_q = theta[0], log_q[0]
        from_prior = torch.rand(len(x), device=x.device) < self.a
        if bool(from_prior.any()):
            drawn = self.prior.sample((int(from_prior.sum()),)).to(theta)
            theta, log_q = theta.clone(), log_q.clone()
            theta[from_prior] = drawn
            log_q[from_prior] = self.flow.log_prob(drawn, x[from_prior])
        log_pi = self.log_prior.to(theta.device)(theta)
        return theta, defensive_log_proposal(log_q, log_pi, self.a)

    def neg_u(self, theta: Tensor, x: Tensor) -> Tensor:
        # -U; -inf outside the prior's support (the energy's outside_energy may be
        # finite: the target has no mass there all the same) and wherever U is +inf.
        v = neg_energy_inside(self.energy, theta, x, self.log_prior)
        return torch.where(torch.isfinite(v), v, torch.full_like(v, -math.inf))

    def neg_u_and_grad(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            v = self.neg_u(theta, x)
            finite = torch.isfinite(v)
            total = torch.where(finite, v, torch.zeros_like(v)).sum()
            (grad,) = torch.autograd.grad(total, theta)
        return v.detach(), torch.where(finite[:, None], grad, torch.zeros_like(grad))


@torch.no_grad()
def sample_proxy(
    energy: Energy,
    flow: nn.Module,
    prior: Distribution,
    x: Tensor,
    num_samples: int,
    *,
    num_steps: int = 20,
    num_mala: int = 1,
    prior_fraction: float = 0.1,
    diagnostic_chains: int = 32,
    max_chains: int = 100_000,
    max_steps: int | None = None,
) -> tuple[Tensor, MixingInfo]:
    r"""Draws ``num_samples`` samples of the proxy at each row of ``x``, one chain each.

    Arguments:
        energy: :math:`E(\theta, x)`, ``theta (N, d)`` and ``x (N, m)`` to ``(N,)``
            (``+inf`` outside the prior's support).
        flow: The proposal flow :math:`q_\phi` (``sample``, ``log_prob``).
        prior: The prior (the defensive component and the support).
        x: Observations, shape ``(B, m)``.
        num_samples: Samples (chains) per observation.
        num_steps: Steps per chain, each one IMH step and ``num_mala`` MALA steps.
        num_mala: MALA steps after each IMH step (0: IMH alone).
        prior_fraction: The prior's share :math:`a` of the IMH proposal.
        diagnostic_chains: Chains per observation whose trajectories give
            :math:`\hat R` and the ESS.
        max_chains: Chains run at once (memory): observations are chunked to stay below.
        max_steps: Steps per chain at most. Where the population still moved by more than
            :func:`check_mixing` allows over the second half of the last ``num_steps``,
            the chains go on for another ``num_steps``, while that stays true and the
            total stays within ``max_steps`` (``None``: ``num_steps``, no more).

    Returns:
        Samples of shape ``(num_samples, B, d)`` and the run's :class:`MixingInfo`
        (``num_steps``: the most steps a chunk of observations ran).
    """
    max_steps = int(num_steps) if max_steps is None else int(max_steps)
    if int(num_samples) < 1 or int(num_steps) < 1 or int(num_mala) < 0:
        raise ValueError(
            f"num_samples and num_steps must be >= 1 and num_mala >= 0, got {num_samples}, "
            f"{num_steps}, {num_mala}"
        )
    if max_steps < int(num_steps):
        raise ValueError(f"max_steps must be >= num_steps ({num_steps}), got {max_steps}")
    n, B = int(num_samples), len(x)
    target = _Target(energy, flow, prior, prior_fraction)
    per_chunk = max(1, int(max_chains) // n)
    chunks, stats = [], []
    for i in range(0, B, per_chunk):
        rounds = (int(num_steps), max_steps)
        samples, info = _run(
            target, x[i : i + per_chunk], n, rounds, num_mala, diagnostic_chains, B
        )
        chunks.append(samples)
        stats.append((info, len(x[i : i + per_chunk])))
    weights = [b for _, b in stats]
    imh = np.average([s[0] for s, _ in stats], weights=weights)
    mala = np.average([s[1] for s, _ in stats], weights=weights) if num_mala else math.nan
    rhat = _known(max, [s[2] for s, _ in stats])
    ess = _known(min, [s[3] for s, _ in stats])
    drift = max(s[4] for s, _ in stats)
    steps = max(s[5] for s, _ in stats)
    noise = drift_noise(n, chunks[0].shape[-1], B)
    info = MixingInfo(float(imh), float(mala), rhat, ess, drift, steps, noise)
    return torch.cat(chunks, dim=1), info


def _run(
    target: _Target,
    x: Tensor,
    n: int,
    rounds: tuple[int, int],
    num_mala: int,
    diagnostic_chains: int,
    observations: int,
) -> tuple[Tensor, tuple[float, float, float, float, float, int]]:
    # The chains of a chunk of observations: chain j of observation b is row b * n + j.
    # They run in rounds of num_steps steps, and go on while the population still moved
    # by more than check_mixing's limit over the last round's second half (for all
    # ``observations`` of the draw), up to max_steps in all.
    num_steps, max_steps = rounds
    B = len(x)
    xs = x.repeat_interleave(n, dim=0)
    theta, log_m = target.propose(xs)
    # Every state carries its -U, its log m and, with MALA, its gradient: each is
    # computed where a state is new (an accepted proposal), never again.
    v, g = target.neg_u_and_grad(theta, xs) if num_mala else (target.neg_u(theta, xs), None)
    scale = _scale(target.flow, x).repeat_interleave(n, dim=0)
    d = theta.shape[1]
    limit = max(MAX_DRIFT, drift_noise(n, d, observations))
    eps = None
    keep = min(n, diagnostic_chains)
    imh_acc = mala_acc = 0.0
    # The diagnostics' trajectories: the last round's second half, or its last 4 steps
    # where that is shorter (split R-hat needs 4 states).
    traced_from = min(num_steps // 2, max(0, num_steps - 4))
    t = 0
    while True:
        start, trace, half = t, [], theta
        for t in range(start, start + num_steps):
            if t == start + num_steps // 2:
                half = theta
            theta, log_m, v, g, acc = _imh(target, theta, log_m, xs, v, g)
            imh_acc += acc
            if num_mala:
                if eps is None:  # from the states after the first independence step
                    eps = _initial_step(target, theta, xs, scale, B, n)
                moved = torch.zeros(len(xs), dtype=torch.bool, device=xs.device)
                for _ in range(num_mala):
                    step = eps.repeat_interleave(n)
                    theta, v, g, accept, rate = _mala(target, theta, xs, scale, step, v, g)
                    moved |= accept
                    mala_acc += float(rate.mean())
                    if t < num_steps // 2:  # adapted in the first half, fixed after
                        eps = eps * torch.exp(0.5 * (rate.reshape(B, n).mean(1) - MALA_TARGET))
                log_m = _at(log_m, moved, target.log_m, theta, xs)
            if t >= start + traced_from:
                trace.append(theta.reshape(B, n, d)[:, :keep].cpu())
        t += 1
        drift = _drift(half.reshape(B, n, d), theta.reshape(B, n, d))
        if not drift > limit or t + num_steps > max_steps:
            break
    rhat, ess = _diagnostics(torch.stack(trace, dim=2)) if len(trace) >= 4 else (math.nan,) * 2
    stats = (imh_acc / t, mala_acc / max(1, t * num_mala), rhat, ess, drift, t)
    return theta.reshape(B, n, d).transpose(0, 1), stats


def _log_weight(neg_u: Tensor, log_m: Tensor) -> Tensor:
    # log w = -U - log m, and -inf (never NaN) where -U is -inf: a state outside the
    # support has no weight even where the proposal's density is -inf too (a flow draw
    # saturated onto the bound of a uniform prior).
    return torch.where(torch.isfinite(neg_u), neg_u - log_m, torch.full_like(neg_u, -math.inf))


def _at(values: Tensor, rows: Tensor, compute: Callable[..., Tensor], *args: Tensor) -> Tensor:
    # ``values`` with its ``rows`` (a mask) replaced by ``compute`` of those rows of
    # ``args``, computed only there (and not at all where no row is).
    if not bool(rows.any()):
        return values
    values = values.clone()
    values[rows] = compute(*(a[rows] for a in args))
    return values


def _imh(
    target: _Target, theta: Tensor, log_m: Tensor, xs: Tensor, v: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, float]:
    # One independence step from states with -U ``v``, log m ``log_m`` and (where given)
    # gradient ``g``; returns the new states with theirs, and the acceptance rate.
    proposal, log_m_new = target.propose(xs)
    v_new = target.neg_u(proposal, xs)
    log_w, log_w_new = _log_weight(v, log_m), _log_weight(v_new, log_m_new)
    # Accept with probability min(1, w' / w); a proposal outside the support has w' = 0.
    accept = torch.log(torch.rand_like(log_w)) < (log_w_new - log_w)
    accept &= torch.isfinite(log_w_new)
    theta = torch.where(accept[:, None], proposal, theta)
    if g is not None:  # the gradient where a proposal was accepted only
        g = _at(g, accept, lambda *a: target.neg_u_and_grad(*a)[1], proposal, xs)
    v = torch.where(accept, v_new, v)
    log_m = torch.where(accept, log_m_new, log_m)
    return theta, log_m, v, g, float(accept.float().mean())


def _mala(
    target: _Target,
    theta: Tensor,
    xs: Tensor,
    scale: Tensor,
    eps: Tensor,
    v: Tensor | None = None,
    g: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    # One preconditioned MALA step per chain (``v``, ``g``: -U and its gradient at the
    # states, computed here if not given); returns the new states, their -U and gradient,
    # which chains moved, and each chain's acceptance probability.
    e = eps[:, None] * scale
    if v is None or g is None:
        v, g = target.neg_u_and_grad(theta, xs)
    mean = theta + 0.5 * e**2 * g
    proposal = mean + e * torch.randn_like(theta)
    v_new, g_new = target.neg_u_and_grad(proposal, xs)
    back = proposal + 0.5 * e**2 * g_new
    log_fwd = -0.5 * (((proposal - mean) / e) ** 2).sum(-1)
    log_bwd = -0.5 * (((theta - back) / e) ** 2).sum(-1)
    log_alpha = (v_new - v) + (log_bwd - log_fwd)
    # A proposal outside the support, or one whose gradient is not finite, is rejected.
    log_alpha = torch.where(
        torch.isfinite(v_new) & ~torch.isnan(log_alpha),
        log_alpha,
        torch.full_like(log_alpha, -math.inf),
    )
    rate = torch.exp(torch.clamp(log_alpha, max=0.0))
    accept = torch.rand_like(rate) < rate
    theta = torch.where(accept[:, None], proposal, theta)
    g = torch.where(accept[:, None], g_new, g)
    return theta, torch.where(accept, v_new, v), g, accept, rate


#: MALA's target acceptance rate, and the pilot that finds each observation's step size.
MALA_TARGET = 0.57
PILOT_CHAINS = 64
PILOT_ITERATIONS = 8


def _initial_step(
    target: _Target,
    theta: Tensor,
    xs: Tensor,
    scale: Tensor,
    B: int,
    n: int,
    pilot: int = PILOT_CHAINS,
    iters: int = PILOT_ITERATIONS,
) -> Tensor:
    # Each observation's MALA step size (in units of the flow's scale) whose mean
    # acceptance probability over its first `pilot` chains is near 0.57: from
    # d^(-1/6), steps of a factor 10 until the target is bracketed, then bisection in
    # log eps. The marginal scale can be far wider than the posterior is locally (a
    # crescent): a fixed start adapted by a few small steps then accepted almost nothing.
    k = min(n, pilot)
    rows = torch.arange(B, device=xs.device)[:, None] * n + torch.arange(k, device=xs.device)
    rows = rows.reshape(-1)
    th, xx, sc = theta[rows], xs[rows], scale[rows]
    live = torch.isfinite(target.neg_u(th, xx)).reshape(B, k).float()
    count = live.sum(1).clamp_min(1.0)
    log_eps = torch.full((B,), -math.log(th.shape[1]) / 6, device=xs.device)
    lo = torch.full_like(log_eps, -math.inf)
    hi = torch.full_like(log_eps, math.inf)
    for _ in range(iters):
        *_, rate = _mala(target, th, xx, sc, log_eps.exp().repeat_interleave(k))
        too_big = (rate.reshape(B, k) * live).sum(1) / count < MALA_TARGET
        hi = torch.where(too_big, log_eps, hi)
        lo = torch.where(too_big, lo, log_eps)
        bracketed = torch.isfinite(lo) & torch.isfinite(hi)
        step = torch.where(too_big, -math.log(10.0), math.log(10.0))
        log_eps = torch.where(bracketed, 0.5 * (lo + hi), log_eps + step)
    # An observation without a live pilot chain keeps the fixed start.
    return torch.where(live.sum(1) > 0, log_eps, -math.log(th.shape[1]) / 6).exp()


def _scale(flow: nn.Module, x: Tensor, n: int = 256) -> Tensor:
    # The flow's standard deviation per parameter at each x: MALA's preconditioner.
    draws = flow.sample((n,), x)
    return draws.std(0).clamp_min(1e-6)


def _drift(before: Tensor, after: Tensor) -> float:
    # (B, n, d) populations: max |change of mean| / sd + |change of log sd|.
    if before.shape[1] < 2:
        return math.nan
    sd_before, sd_after = before.std(1).clamp_min(1e-12), after.std(1).clamp_min(1e-12)
    moved = (after.mean(1) - before.mean(1)).abs() / sd_after
    spread = (sd_after.log() - sd_before.log()).abs()
    return float((moved + spread).max())


#: The drift (see :class:`MixingInfo`) beyond which chains are not taken to have mixed,
#: where sampling noise alone does not reach it (:func:`drift_noise`).
MAX_DRIFT = 0.1

#: The family-wise level (over parameters and observations) at which a population's drift
#: is told from sampling noise (:func:`drift_noise`).
DRIFT_LEVEL = 0.01


def drift_noise(n: int, d: int, b: int = 1) -> float:
    r"""The drift (as in :class:`MixingInfo`) that sampling noise alone stays below with
    probability at least ``1 - DRIFT_LEVEL``, for populations of ``n`` chains in ``d``
    parameters at ``b`` observations.

    Two independent populations of ``n`` draws of Gaussian-like marginals differ in mean
    by about :math:`\sqrt{2/n}` standard deviations and in log standard deviation by about
    :math:`\sqrt{1/n}` (heavier tails spread the log standard deviation more); a
    stationary population at two times of one run is positively correlated, so it
    differs less. The bound is
    :math:`z (\sqrt 2 + 1) / \sqrt n` with :math:`z` the normal quantile at
    ``1 - DRIFT_LEVEL / (4 d b)`` (Bonferroni over the ``2 d b`` terms, each two-sided).
    With 1,000 chains in 2 parameters it is 0.23; with 10,000, 0.07.
    """
    if n < 2:
        return math.inf
    z = NormalDist().inv_cdf(1 - DRIFT_LEVEL / (4 * d * b))
    return z * (math.sqrt(2) + 1) / math.sqrt(n)


def _diagnostics(trace: Tensor) -> tuple[float, float]:
    # trace: (B, chains, draws, d). arviz's rank-normalised split R-hat and bulk ESS.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz's notices on import
        import arviz as az

    rhat, ess = [], []
    for b in range(trace.shape[0]):
        data = trace[b].numpy()
        for k in range(data.shape[-1]):
            rhat.append(float(az.rhat(data[..., k])))
            ess.append(float(az.ess(data[..., k])))
    return _known(max, rhat), _known(min, ess)


def _known(pick: Callable[[list[float]], float], values: list[float]) -> float:
    # The worst of the values that are not NaN (arviz's answer for a parameter constant
    # over the trace), whatever their order; NaN where all are. (min and max of a list
    # with a NaN depend on where it stands; an infinite R-hat is kept: it says much.)
    known = [v for v in values if not math.isnan(v)]
    return float(pick(known)) if known else math.nan


def mixing_problems(
    info: MixingInfo, *, max_drift: float = MAX_DRIFT, min_acceptance: float = 0.01
) -> list[str]:
    r"""What says the chains did not mix, one phrase each (empty when nothing does): a
    population that still drifted over the second half of the run (see
    :class:`MixingInfo`) by more than ``max_drift`` and more than sampling noise alone
    reaches (``info.drift_noise``), or an independence sampler that almost never
    accepts."""
    bad = []
    limit = max(max_drift, info.drift_noise)
    if math.isfinite(info.drift) and info.drift > limit:
        bad.append(
            f"the population still moved by {info.drift:.2f} > {limit:.2g} standard "
            f"deviations over the second half (split R-hat {info.rhat:.2f}, bulk ESS "
            f"{info.ess:.0f})"
        )
    if info.imh_acceptance < min_acceptance:
        bad.append(
            f"IMH acceptance {info.imh_acceptance:.3f} (the flow rarely proposes where "
            "the proxy has mass)"
        )
    return bad


def check_mixing(
    info: MixingInfo,
    *,
    max_drift: float = MAX_DRIFT,
    min_acceptance: float = 0.01,
    stacklevel: int | None = None,
) -> None:
    r"""Warns when the chains say they did not mix (:func:`mixing_problems`), at the first
    frame outside jsbi (``stacklevel=None``) or at ``stacklevel``."""
    bad = mixing_problems(info, max_drift=max_drift, min_acceptance=min_acceptance)
    if bad:
        warnings.warn(
            "the proxy's chains may not have mixed: " + "; ".join(bad) + f" after "
            f"{info.num_steps} steps. Draw with more steps (mcmc_steps=, "
            "mcmc_max_steps=), or use the flow (posterior='flow')",
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
        )
