"""The proxy's MCMC sampler: it leaves a known target invariant, reaches it from a poor
proposal, repeats no sample, and says when its chains did not mix."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch.distributions import Independent, Normal

from jsbi.flows import build_conditional_flow
from jsbi.posteriors.mcmc import (
    MixingInfo,
    _imh,
    _known,
    _log_weight,
    _mala,
    _Target,
    check_mixing,
    sample_proxy,
)

D, S2 = 3, 0.25  # theta ~ N(0, I), x ~ N(theta, S2 I): posterior N(x / (1 + S2), S2/(1+S2) I)
VAR = S2 / (1 + S2)


def _problem(seed=0):
    torch.manual_seed(seed)
    prior = Independent(Normal(torch.zeros(D), torch.ones(D)), 1)
    theta = prior.sample((300,))
    x = theta + math.sqrt(S2) * torch.randn(300, D)
    # One transform, untrained: a poor proposal, far from the posterior.
    flow = build_conditional_flow(theta, x, prior, num_transforms=1, hidden_features=(16,))
    return prior, flow


def energy(theta, x):
    return 0.5 * (theta**2).sum(-1) + 0.5 / S2 * ((x - theta) ** 2).sum(-1)


X_O = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]])


def _exact(n, x=X_O):
    mean = x / (1 + S2)
    return mean + math.sqrt(VAR) * torch.randn(n, *x.shape)


def _moments_ok(samples, x=X_O, n_se=5.0):
    # Means and variances within n_se Monte Carlo standard errors of the closed form.
    n = samples.shape[0]
    mean_err = (samples.mean(0) - x / (1 + S2)).abs().max().item()
    var_err = (samples.var(0) - VAR).abs().max().item()
    return mean_err < n_se * math.sqrt(VAR / n), var_err < n_se * VAR * math.sqrt(2 / n)


@pytest.mark.parametrize("kernel", ["imh", "mala"])
def test_each_kernel_leaves_the_target_invariant(kernel):
    prior, flow = _problem()
    torch.manual_seed(1)
    n = 20_000
    target = _Target(energy, flow, prior, 0.1)
    xs = X_O.repeat_interleave(n, dim=0)
    theta = _exact(n).transpose(0, 1).reshape(-1, D)  # chains started at exact draws
    rates = []
    with torch.no_grad():
        v, g = target.neg_u_and_grad(theta, xs)
        log_m = target.log_m(theta, xs)
        for _ in range(5):
            if kernel == "imh":
                theta, log_m, v, g, rate = _imh(target, theta, log_m, xs, v, g)
            else:
                scale = torch.full_like(theta, math.sqrt(VAR))
                eps = torch.full((len(xs),), 1.2)
                theta, v, g, _, r = _mala(target, theta, xs, scale, eps, v, g)
                rate = float(r.mean())
            rates.append(rate)
    # Each state's -U, log m and gradient, carried along the chain, are those at the state.
    v_now, g_now = target.neg_u_and_grad(theta, xs)
    torch.testing.assert_close(v, v_now)
    torch.testing.assert_close(g, g_now)
    if kernel == "imh":
        torch.testing.assert_close(log_m, target.log_m(theta, xs))
    samples = theta.reshape(2, n, D).transpose(0, 1)
    # The chains moved (a kernel that rejected everything would keep the exact draws) ...
    assert min(rates) > (0.05 if kernel == "imh" else 0.3), rates
    # ... and stayed on the target.
    assert all(_moments_ok(samples))
    # A two-sample test per parameter against fresh exact draws: no rejection at 0.1 %.
    reference = _exact(n)
    for b in range(2):
        for k in range(D):
            assert stats.ks_2samp(samples[:, b, k], reference[:, b, k]).pvalue > 1e-3


def test_the_sampler_reaches_the_target_from_a_poor_proposal():
    prior, flow = _problem()
    torch.manual_seed(2)
    samples, info = sample_proxy(energy, flow, prior, X_O, 20_000, num_steps=20, num_mala=1)
    assert samples.shape == (20_000, 2, D)
    assert all(_moments_ok(samples))
    assert 0 < info.imh_acceptance < 1 and 0.3 < info.mala_acceptance < 0.9
    assert math.isfinite(info.rhat) and info.ess > 0
    # Reached: the population no longer moves over the second half.
    assert info.drift < 0.1


def test_the_step_size_is_found_where_the_flow_is_far_wider_than_the_target():
    # A likelihood 10^6 times sharper: the posterior's sd is about 1/2000 of the flow's
    # scale, which preconditions MALA. The step found by the pilot still accepts near
    # 0.57, at each observation (a start at d^(-1/6) adapted by a few factor-0.75
    # steps accepted almost nothing).
    prior, flow = _problem()
    torch.manual_seed(3)

    def sharp(theta, x):
        return 0.5 * (theta**2).sum(-1) + 0.5e6 / S2 * ((x - theta) ** 2).sum(-1)

    _, info = sample_proxy(sharp, flow, prior, X_O, 2_000, num_steps=6, num_mala=1)
    assert 0.3 < info.mala_acceptance < 0.85, info


def test_no_sample_repeats_while_importance_resampling_repeats_a_third_or_more():
    from jsbi.posteriors import ProxyPosterior
    from jsbi.proxies import MLPEnergy

    prior, flow = _problem()
    proxy = MLPEnergy(D, D)
    torch.manual_seed(3)
    mcmc = ProxyPosterior(flow, proxy, prior, mcmc_steps=5, mcmc_max_steps=5)
    importance = ProxyPosterior(flow, proxy, prior, sampler="importance", candidates_per_sample=1)
    x_o = X_O[0]
    draws = mcmc.sample((5000,), x=x_o)
    assert len(torch.unique(draws, dim=0)) == 5000  # one independent chain per sample
    with pytest.warns(UserWarning, match="repeat points"):
        resampled = importance.sample((5000,), x=x_o)
    assert len(torch.unique(resampled, dim=0)) < 2 / 3 * 5000
    assert isinstance(mcmc.last_mixing, MixingInfo)
    # 5 steps: R-hat over their last 4 (a second half of 3 is too short for it).
    assert math.isfinite(mcmc.last_mixing.rhat) and mcmc.last_mixing.num_steps == 5


@pytest.mark.parametrize("outside_energy", [math.inf, 3.0])
def test_a_box_prior_rejects_every_proposal_outside_its_support(outside_energy):
    # A finite outside_energy (a proxy option that keeps training losses finite) gives
    # the target no mass outside all the same: without the support's own check, 73% of
    # the samples lay outside with 3.0.
    from sbi.utils import BoxUniform

    from jsbi.proxies.importance import importance_resample, proxy_log_normalizer

    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((200,))
    x = theta + 0.3 * torch.randn(200, 2)
    # A flow without the box (no support): a share of its proposals lands outside.
    flow = build_conditional_flow(theta, x, None, num_transforms=1)
    with torch.no_grad():
        outside = (flow.sample((2000,), x[:2]).abs() > 1).any(-1).double().mean()
    assert outside > 0.05

    def box_energy(t, x):
        inside = (t.abs() <= 1).all(-1)
        e = 0.5 / 0.09 * ((x - t) ** 2).sum(-1)
        return torch.where(inside, e, torch.full_like(e, outside_energy))

    samples, _ = sample_proxy(box_energy, flow, prior, x[:2], 2000, num_steps=5)
    assert (samples.abs() <= 1).all() and torch.isfinite(samples).all()
    resampled, _ = importance_resample(box_energy, flow, prior, x[0], 500)
    assert (resampled.abs() <= 1).all()
    # The normaliser counts no point outside: the same as with +inf there (same draws).
    torch.manual_seed(3)
    log_z, _ = proxy_log_normalizer(box_energy, flow, prior, x[:2], 512)
    torch.manual_seed(3)
    exact_outside = proxy_log_normalizer(
        lambda t, x: box_energy(t, x).where((t.abs() <= 1).all(-1), torch.tensor(math.inf)),
        flow,
        prior,
        x[:2],
        512,
    )[0]
    torch.testing.assert_close(log_z, exact_outside)
    # And the proxy posterior's density is zero there.
    from jsbi.posteriors import ProxyPosterior

    class Box(torch.nn.Module):
        def forward(self, t, x):
            return box_energy(t, x)

    lp = ProxyPosterior(flow, Box(), prior).log_prob(torch.tensor([[0.5, 0.5], [1.5, 0.0]]), x[0])
    assert torch.isfinite(lp[0]) and lp[1] == -math.inf


def test_a_state_without_density_has_weight_zero_never_nan():
    # A flow draw saturated onto a uniform prior's bound: -U = -inf and log m = -inf there.
    inf = math.inf
    log_w = _log_weight(torch.tensor([-inf, -inf, 1.0]), torch.tensor([-inf, 0.0, -inf]))
    assert log_w[0] == -inf and log_w[1] == -inf and log_w[2] == inf
    assert not torch.isnan(log_w).any()
    # Such a chain leaves that state at its first proposal inside the support.
    prior, flow = _problem()
    target = _Target(energy, flow, prior, 0.1)
    xs = X_O[:1].expand(200, -1)
    start, v = torch.zeros(200, D), torch.full((200,), -inf)
    theta, log_m, v, *_ = _imh(target, start, torch.zeros(200), xs, v, None)
    assert torch.isfinite(_log_weight(v, log_m)).all() and (theta != 0).any(-1).all()


def test_check_mixing_warns_only_when_the_chains_say_so():
    with pytest.warns(
        UserWarning, match="may not have mixed: the population still moved by 0.30"
    ) as w:
        check_mixing(MixingInfo(0.3, 0.5, 1.4, 20.0, 0.3, 10))
    assert w[0].filename == __file__  # the first frame outside jsbi: this test
    with pytest.warns(UserWarning, match="IMH acceptance 0.002"):
        check_mixing(MixingInfo(0.002, 0.5, 1.01, 200.0, 0.01, 10))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Short chains: R-hat is large, but their final states no longer move.
        check_mixing(MixingInfo(0.3, 0.5, 1.4, 20.0, 0.02, 10))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sample_proxy(energy, None, None, X_O, 10, num_steps=0)


def test_the_drift_of_a_population_that_no_longer_moves_stays_below_its_noise_bound():
    # Two independent draws of the target are what a mixed run's populations are at
    # worst (a stationary run's are positively correlated): their drift is sampling noise.
    # A fixed limit of 0.1 calls most of 500-chain runs unmixed; the noise bound, about
    # 1% (DRIFT_LEVEL) or fewer, and it shrinks as 1/sqrt(n).
    from jsbi.posteriors.mcmc import DRIFT_LEVEL, _drift, drift_noise

    torch.manual_seed(0)
    n, d, runs = 500, 2, 400
    pairs = [(torch.randn(1, n, d), torch.randn(1, n, d)) for _ in range(runs)]
    drifts = torch.tensor([_drift(a, b) for a, b in pairs])
    assert float((drifts > 0.1).float().mean()) > 0.5
    assert float((drifts > drift_noise(n, d)).float().mean()) <= DRIFT_LEVEL + 0.01
    assert drift_noise(4 * n, d) == pytest.approx(drift_noise(n, d) / 2)
    # A run that has not reached its target still says so where the noise is small.
    prior, flow = _problem()
    with pytest.warns(UserWarning, match="may not have mixed: the population still moved"):
        check_mixing(sample_proxy(energy, flow, prior, X_O, 10_000, num_steps=1)[1])


def test_chains_go_on_while_their_population_still_moves():
    # From a poor proposal, 4 steps leave the population moving and off the target; the
    # chains that go on in rounds of 4 stop once it no longer moves, on the target.
    from jsbi.posteriors.mcmc import mixing_problems

    prior, flow = _problem()
    torch.manual_seed(1)
    short, info = sample_proxy(energy, flow, prior, X_O, 10_000, num_steps=4)
    torch.manual_seed(1)
    long, more = sample_proxy(energy, flow, prior, X_O, 10_000, num_steps=4, max_steps=16)
    assert info.num_steps == 4 and mixing_problems(info)
    assert 4 < more.num_steps <= 16 and more.num_steps % 4 == 0 and not mixing_problems(more)
    assert not all(_moments_ok(short)) and all(_moments_ok(long))
    with pytest.raises(ValueError, match="max_steps must be >= num_steps"):
        sample_proxy(energy, flow, prior, X_O, 10, num_steps=4, max_steps=3)


def test_the_worst_r_hat_and_ess_do_not_depend_on_where_a_nan_stands():
    # arviz gives NaN for a parameter constant over the trace; max/min of a list with a
    # NaN answer by its position. An infinite R-hat is kept: it is the worst.
    nan, inf = math.nan, math.inf
    assert _known(max, [nan, 1.2, 1.05]) == _known(max, [1.05, 1.2, nan]) == 1.2
    assert _known(min, [nan, 300.0, 40.0]) == _known(min, [40.0, 300.0, nan]) == 40.0
    assert _known(max, [1.01, inf]) == inf
    assert math.isnan(_known(min, [nan, nan]))
