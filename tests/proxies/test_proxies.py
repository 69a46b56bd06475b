"""The proxy families of METHOD.md section 4b, their losses and their importance sampling."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

from jsbi.flows.conditional import build_conditional_flow
from jsbi.objectives import (
    contrastive_ratio_loss,
    forward_kl_from_proxy,
    log_normalizer,
    nrec_loss,
    reverse_kl,
)
from jsbi.proxies.importance import (
    defensive_samples,
    importance_resample,
    proxy_log_normalizer,
    proxy_minus_flow,
    proxy_nll,
)
from jsbi.proxies.likelihood import LikelihoodEnergy
from jsbi.proxies.ratio import PriorTimesRatioEnergy
from jsbi.proxies.residual import ResidualEnergy

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}


def _box(n=200, seed=0):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    return prior, theta, theta + 0.2 * torch.randn(n, 2, generator=g)


def _proxies(prior, theta, x):
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    likelihood = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(theta, x)
    ratio = PriorTimesRatioEnergy(prior, 2, zero_init=False, hidden_features=(8,))
    residual = ResidualEnergy(flow, hidden_features=(8,), zero_init=False)
    return {"likelihood": likelihood, "ratio": ratio, "residual": residual}


@pytest.mark.parametrize("name", ["likelihood", "ratio", "residual"])
def test_every_proxy_is_infinite_outside_the_support_and_nan_free(name):
    prior, theta, x = _box()
    proxy = _proxies(prior, theta, x)[name]
    outside = torch.tensor([[1.5, 0.0], [0.0, -3.0], [0.2, 0.1]]).requires_grad_()
    e = proxy(outside, x[:3])
    assert torch.isinf(e[:2]).all() and (e[:2] > 0).all() and torch.isfinite(e[2])
    # Samples of shape (K, B, d) broadcast against x (B, m).
    assert proxy(theta[:12].reshape(3, 4, 2), x[:4]).shape == (3, 4)
    # The finite energy's gradient reaches theta; the infinite ones give no NaN.
    e[2].backward()
    assert torch.isfinite(outside.grad).all() and outside.grad[:2].abs().sum() == 0


def test_likelihood_data_fit_is_its_flows_nll_up_to_a_constant():
    prior, theta, x = _box()
    proxy = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(theta, x)
    u = (x - proxy.x_loc) / proxy.x_scale
    c = (theta - proxy.theta_loc) / proxy.theta_scale
    offset = proxy.x_scale.log().sum()  # the standardisation's Jacobian: constant in psi
    for _ in range(2):
        flow_nll = -proxy.likelihood(c).log_prob(u).mean()
        torch.testing.assert_close(proxy.data_loss(theta, x), flow_nll + offset)
        # The energy is the joint NLL: data fit minus the (psi-free) log prior.
        torch.testing.assert_close(
            proxy(theta, x).mean(), proxy.data_loss(theta, x) - prior.log_prob(theta).mean()
        )
        with torch.no_grad():  # other parameters, same identities
            for p in proxy.parameters():
                p.add_(0.1 * torch.randn_like(p))


def test_likelihood_proxy_fits_a_gaussian_likelihood():
    # x | theta ~ N(theta, 0.2^2): maximum likelihood must reach the true NLL.
    prior, theta, x = _box(n=2000)
    proxy = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(theta, x)
    true_nll = -Normal(theta, 0.2).log_prob(x).sum(-1).mean()
    assert maximum_likelihood(proxy, theta, x) < float(true_nll) + 0.1


def maximum_likelihood(proxy, theta, x, steps=300):
    # The proxy's own fit by full-batch Adam; returns its final data loss.
    opt = torch.optim.Adam(proxy.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = proxy.fit_loss(theta, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(proxy.data_loss(theta, x).detach())


MAF1 = {"flow": "maf", "num_transforms": 1}


def test_likelihood_candidates_all_fit_until_one_is_selected_by_its_nll():
    prior, theta, x = _box()
    torch.manual_seed(0)
    proxy = LikelihoodEnergy(prior, 2, alternatives=[MAF1], **SMALL).set_standardization(theta, x)
    first, other = proxy.candidates()
    assert first is proxy.likelihood and int(proxy.selected) == -1 and proxy.undecided
    nll = [-proxy.log_likelihood(theta, x, k).mean() for k in (0, 1)]
    # Undecided: every candidate fits (the sum of their losses), the first gives the energy.
    torch.testing.assert_close(proxy.data_loss(theta, x), nll[0] + nll[1])
    torch.testing.assert_close(proxy.log_likelihood(theta, x), proxy.log_likelihood(theta, x, 0))
    # Make the second candidate clearly the better model of x given theta, then select.
    opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    for _ in range(150):
        loss = -proxy.log_likelihood(theta, x, 1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    record = proxy.select(theta, x)
    nlls = record["nll"]
    assert nlls[1] < nlls[0] and int(proxy.selected) == 1 and not proxy.undecided
    # By how much: the paired difference, beyond its standard error here.
    assert record["margin"] == pytest.approx(nlls[0] - nlls[1], rel=1e-4)
    assert 0 < record["margin_se"] < record["margin"]
    # Selected: only it fits, and it gives the energy.
    torch.testing.assert_close(
        proxy.data_loss(theta, x), -proxy.log_likelihood(theta, x, 1).mean()
    )
    grads = torch.autograd.grad(
        proxy.data_loss(theta, x), list(first.parameters()), allow_unused=True
    )
    assert all(g is None for g in grads)
    expected = -prior.log_prob(theta) - proxy.log_likelihood(theta, x, 1)
    torch.testing.assert_close(proxy(theta, x), expected)


def test_a_selection_survives_restoring_an_earlier_state_and_the_config_rebuilds_it():
    prior, theta, x = _box()
    torch.manual_seed(0)
    proxy = LikelihoodEnergy(prior, 2, alternatives=[MAF1], **SMALL).set_standardization(theta, x)
    undecided = {k: v.clone() for k, v in proxy.state_dict().items()}
    chosen = proxy.select(theta, x)["selected"]
    proxy.load_state_dict(undecided)  # the loop's best epoch, from before the switch
    assert int(proxy.selected) == chosen
    # The energy is still the chosen candidate's, not the first's (the undecided default).
    expected = -prior.log_prob(theta) - proxy.log_likelihood(theta, x, chosen)
    torch.testing.assert_close(proxy(theta, x), expected)
    again = LikelihoodEnergy.from_config(proxy.config, prior)
    assert len(again.alternatives) == 1 and again.config == proxy.config
    again.load_state_dict(proxy.state_dict())
    assert int(again.selected) == chosen
    torch.testing.assert_close(again(theta, x), proxy(theta, x))
    # A state saved before there were candidates (no "selected") still loads.
    plain = LikelihoodEnergy(prior, 2, **SMALL)
    old = {k: v for k, v in plain.state_dict().items() if k != "selected"}
    plain.load_state_dict(old)
    assert int(plain.selected) == 0


@pytest.mark.parametrize(
    ("alternative", "error", "match"),
    [
        ("maf", TypeError, "each of alternatives must be a dict"),
        ({"flow": "maf", "bins": 3}, ValueError, "unknown option 'bins'"),
    ],
)
def test_likelihood_alternatives_are_checked_at_construction(alternative, error, match):
    prior, _, _ = _box()
    with pytest.raises(error, match=match):
        LikelihoodEnergy(prior, 2, alternatives=[alternative])


def test_residual_with_a_truncated_flow_is_cut_at_the_support():
    prior, theta, x = _box()
    flow = build_conditional_flow(theta, x, prior, support="truncate", **SMALL)
    proxy = ResidualEnergy(flow, hidden_features=(8,))
    torch.testing.assert_close(proxy(theta, x), -flow.log_prob(theta, x))
    outside = torch.tensor([[1.5, 0.0], [0.0, -3.0]])
    assert torch.isfinite(flow.log_prob(outside, x[:2])).all()  # the raw flow leaks there
    assert torch.isinf(proxy(outside, x[:2])).all()


def test_residual_at_zero_correction_is_the_flow():
    prior, theta, x = _box()
    flow = build_conditional_flow(theta, x, prior, support="transform", **SMALL)
    proxy = ResidualEnergy(flow, hidden_features=(8,))  # g = 0 at initialisation
    torch.testing.assert_close(proxy(theta, x), -flow.log_prob(theta, x))
    theta_k = flow.sample((16,), x[:5])
    log_z, ess = log_normalizer(-proxy(theta_k, x[:5]), flow.log_prob(theta_k, x[:5]))
    torch.testing.assert_close(log_z, torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(ess, torch.ones(5))
    # Its normalised density is the flow's, also by the defensive estimator.
    nll, _ = proxy_nll(proxy, flow, prior, theta[:5], x[:5], num_samples=4096)
    torch.testing.assert_close(nll, -flow.log_prob(theta[:5], x[:5]), atol=0.1, rtol=0)
    # Only the correction trains; sync moves the frozen copy.
    assert {id(p) for p in proxy.parameters()}.isdisjoint(id(p) for p in flow.parameters())
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05)
    proxy.sync(flow)
    torch.testing.assert_close(proxy(theta, x), -flow.log_prob(theta, x))


def test_defensive_log_normalizer_is_exact_for_the_prior():
    # g = 0: the ratio proxy is the prior, Z = 1 whatever the flow.
    prior, theta, x = _box()
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    proxy = PriorTimesRatioEnergy(prior, 2)
    log_z, ess = proxy_log_normalizer(proxy, flow, prior, x[:4], num_samples=8192)
    torch.testing.assert_close(log_z, torch.zeros(4), atol=0.05, rtol=0)
    assert ((ess > 0) & (ess <= 1)).all()


class _GaussianEnergy(torch.nn.Module):
    # r(theta | x) = N(theta; x / 2, 0.3^2 I), unnormalised by exp(1.7).
    def forward(self, theta, x):
        return 0.5 * ((theta - x / 2) / 0.3).square().sum(-1) - 1.7


def test_importance_resampling_draws_the_proxy():
    prior = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
    theta = prior.sample((300,))
    x = theta + 0.5 * torch.randn(300, 2)
    flow = build_conditional_flow(theta, x, prior, **SMALL)  # untrained: a poor proposal
    x_o = torch.tensor([0.8, -0.4])
    samples, ess = importance_resample(_GaussianEnergy(), flow, prior, x_o, 4000, 100_000)
    assert samples.shape == (4000, 2) and ess > 500
    torch.testing.assert_close(samples.mean(0), x_o / 2, atol=0.05, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.full((2,), 0.3), atol=0.03, rtol=0)
    # log Z = 1.7 + log(2 pi 0.3^2)
    log_z, _ = proxy_log_normalizer(_GaussianEnergy(), flow, prior, x_o[None], 50_000)
    assert float(log_z) == pytest.approx(1.7 + math.log(2 * math.pi * 0.09), abs=0.05)


def test_the_measurement_gives_the_proxys_and_the_mixtures_nll_against_the_flows():
    # r = N(x / 2, 0.3^2 I) is known in closed form: each pair's NLL of r, of the flow and
    # of their equal mixture is exact but for r's importance-sampled log Z.
    torch.manual_seed(0)
    prior = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
    theta = prior.sample((300,))
    x = theta + 0.5 * torch.randn(300, 2)
    flow = build_conditional_flow(theta, x, prior, **SMALL)  # untrained: far from r
    r = Independent(Normal(x[:40] / 2, 0.3 * torch.ones(40, 2)), 1)
    nll_r, nll_q = -r.log_prob(theta[:40]), -flow.log_prob(theta[:40], x[:40]).detach()
    nll_m = math.log(2) - torch.logaddexp(-nll_r, -nll_q)
    m = proxy_minus_flow(_GaussianEnergy(), flow, prior, theta[:40], x[:40], 20_000)
    assert m["proxy_minus_flow"] == pytest.approx(float((nll_r - nll_q).mean()), abs=0.05)
    assert m["mixture_minus_flow"] == pytest.approx(float((nll_m - nll_q).mean()), abs=0.05)
    se = float((nll_m - nll_q).std() / math.sqrt(40))
    assert m["mixture_minus_flow_se"] == pytest.approx(se, rel=0.1)
    # The mixture is never worse than the better member by more than log 2 per pair.
    assert m["mixture_minus_flow"] <= min(0.0, m["proxy_minus_flow"]) + math.log(2)


def test_importance_resampling_draws_more_candidates_where_the_ess_is_short():
    prior = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
    theta = prior.sample((300,))
    flow = build_conditional_flow(theta, theta + 0.5 * torch.randn(300, 2), prior, **SMALL)
    x_o = torch.tensor([0.8, -0.4])
    args = (_GaussianEnergy(), flow, prior, x_o, 2000, 2000)  # 1 candidate per sample
    torch.manual_seed(3)
    fixed, ess_fixed = importance_resample(*args)
    # Without max_candidates it is plain sampling-importance-resampling of one draw of
    # 2,000 candidates: the same points as that, by hand, from the same seed.
    torch.manual_seed(3)
    cand, log_m = defensive_samples(flow, prior, x_o[None], 2000)
    log_w = (-_GaussianEnergy()(cand, x_o[None]) - log_m)[:, 0]
    pick = torch.multinomial(torch.softmax(log_w, 0), 2000, replacement=True)
    assert torch.equal(fixed, cand[:, 0][pick])
    log_ess = float(2 * log_w.logsumexp(0) - (2 * log_w).logsumexp(0))
    assert ess_fixed == pytest.approx(math.exp(log_ess))
    assert ess_fixed < 500  # the untrained flow is a poor proposal: a short ESS
    # Extra chunks until the ESS reaches the samples asked (2,000), within the cap.
    torch.manual_seed(3)
    more, ess_more = importance_resample(*args, max_candidates=200_000)
    assert ess_more >= 2000 and more.shape == (2000, 2)
    assert len(torch.unique(more, dim=0)) > 2 * len(torch.unique(fixed, dim=0))
    torch.testing.assert_close(more.mean(0), x_o / 2, atol=0.05, rtol=0)
    # The cap holds: at most 4,000 candidates cannot reach an ESS of 2,000 here.
    torch.manual_seed(3)
    _, ess_capped = importance_resample(*args, max_candidates=4000)
    assert ess_fixed < ess_capped < 2000


def test_a_proxy_posterior_aims_at_ess_per_sample_times_the_samples_asked():
    from jsbi.posteriors.proxy import ProxyPosterior

    prior = Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1)
    theta = prior.sample((300,))
    flow = build_conditional_flow(theta, theta + 0.5 * torch.randn(300, 2), prior, **SMALL)
    x_o = torch.tensor([0.8, -0.4])
    distinct = {}
    for k in (1.0, 4.0):
        post = ProxyPosterior(
            flow,
            _GaussianEnergy(),
            prior,
            max_candidates_per_sample=1000,
            ess_per_sample=k,
            sampler="importance",
        )
        torch.manual_seed(0)
        samples = post.sample((500,), x=x_o)
        assert post.last_ess >= k * 500 and samples.shape == (500, 2)
        distinct[k] = len(torch.unique(samples, dim=0))
    # n draws with replacement from equal weights with an ESS of k n leave about
    # k (1 - exp(-1 / k)) n distinct: 0.63 n for k = 1, 0.88 n for k = 4.
    assert distinct[1.0] < 0.75 * 500 < 0.82 * 500 < distinct[4.0]
    # last_mixing describes the last draw's chains: none after a draw that ran none.
    post.sampler = "mcmc"
    post.sample((100,), x=x_o)
    assert post.last_mixing is not None
    assert post.last_mixing.num_steps == post.mcmc_steps  # no rounds by default
    post.sampler = "importance"
    post.sample((100,), x=x_o)
    assert post.last_mixing is None
    with pytest.raises(ValueError, match="ess_per_sample must be finite and >= 1"):
        ProxyPosterior(flow, _GaussianEnergy(), prior, ess_per_sample=0.5)
    with pytest.raises(ValueError, match=r"mcmc_max_steps must be >= mcmc_steps \(5\), got 4"):
        ProxyPosterior(flow, _GaussianEnergy(), prior, mcmc_steps=5, mcmc_max_steps=4)
    # Set afterwards (benchmarks/phase2.py --proxy-ess does), it is checked the same way.
    with pytest.raises(ValueError, match="ess_per_sample must be finite and >= 1"):
        post.ess_per_sample = math.nan
    assert post.ess_per_sample == 4.0


def test_nrec_reduces_to_nrea_and_pins_the_ratio():
    g_j, g_m = torch.randn(1, 7), torch.randn(1, 7)
    torch.testing.assert_close(nrec_loss(g_j, g_m), contrastive_ratio_loss(g_j[0], g_m[0]) / 2)
    # theta ~ N(0, 1), x = theta + N(0, s^2): the true log ratio minimises the loss, and
    # unlike NRE-B a constant shift does not (the class "no joint atom" fixes it).
    s, n, K = 0.5, 20_000, 5
    theta = torch.randn(n)
    x = theta + s * torch.randn(n)

    def log_ratio(th):
        return Normal(th, s).log_prob(x) - Normal(0.0, math.sqrt(1 + s * s)).log_prob(x)

    joint = torch.stack([log_ratio(theta.roll(k)) for k in range(K)])
    marginal = torch.stack([log_ratio(theta.roll(K + k)) for k in range(K)])
    best = nrec_loss(joint, marginal, gamma=1.0)
    for shift in (-0.3, 0.3):
        assert nrec_loss(joint + shift, marginal + shift) > best
    assert nrec_loss(0.8 * joint, 0.8 * marginal) > best
    with pytest.raises(ValueError, match="gamma"):
        nrec_loss(joint, marginal, gamma=0.0)


def test_ratio_proxy_nrec_fit_loss_uses_batch_atoms():
    prior, theta, x = _box()
    proxy = PriorTimesRatioEnergy(prior, 2, contrastive="nrec", num_atoms=4)
    # g = 0: loss = log(1 + gamma) + gamma / (1 + gamma) log(K / gamma), here 2 log 2.
    value = proxy.fit_loss(theta, x)
    assert float(value) == pytest.approx(2 * math.log(2.0), abs=1e-6)
    with pytest.raises(ValueError, match="contrastive"):
        PriorTimesRatioEnergy(prior, 2, contrastive="nreb")


def test_forward_kl_from_proxy_matches_the_gaussian_cross_entropy():
    # r = N(1, 0.5^2), q = N(0, 1), proposal m = N(0, 2^2): E_r[-log q] in closed form.
    m = Normal(0.0, 2.0)
    theta = m.sample((200_000, 1))
    log_q = Normal(0.0, 1.0).log_prob(theta)
    neg_energy = -0.5 * ((theta - 1.0) / 0.5) ** 2 + 3.0  # unnormalised
    value = forward_kl_from_proxy(log_q, neg_energy, m.log_prob(theta))
    exact = 0.5 * math.log(2 * math.pi) + 0.5 * (0.25 + 1.0)
    assert float(value) == pytest.approx(exact, abs=0.02)
    # No mass seen anywhere: zero, finite, with a zero gradient.
    lq = torch.zeros(3, 2, requires_grad=True)
    out = forward_kl_from_proxy(lq, torch.full((3, 2), -math.inf), torch.zeros(3, 2))
    out.backward()
    assert float(out) == 0.0 and torch.isfinite(lq.grad).all()


def test_reverse_kl_mask_leaves_out_infinite_energies():
    log_q = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    energy = torch.tensor([[1.0, math.inf], [3.0, 2.0]])
    keep = torch.isfinite(energy)
    value = reverse_kl(log_q, energy, mask=keep)
    assert float(value) == pytest.approx((0.0 + 2.0 + 0.0) / 3)
    value.backward()
    assert torch.isfinite(log_q.grad).all() and log_q.grad[0, 1] == 0
    assert math.isinf(float(reverse_kl(log_q, energy)))  # unmasked: a leak is infinite
