"""The likelihood proxy of learned summaries s(x) (issue 41, item 3)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Normal

import jsbi
from jsbi.flows import MLPEmbedding
from jsbi.flows.conditional import build_conditional_flow
from jsbi.posteriors.typicality import fit_typicality
from jsbi.proxies import ProxyConfig, build_proxy
from jsbi.proxies.likelihood import SUMMARY_MOMENTUM, LikelihoodEnergy
from tests.proxies.test_proxies import maximum_likelihood

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}
REPEATS = 10  # x: each of the 2 parameters observed 10 times


def _repeated(n=2000, seed=0, noise=0.5):
    # x_j = theta_(j mod 2) + noise: the two means are sufficient, s | theta ~ N(theta,
    # noise^2 / 10) per parameter.
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    x = theta.repeat(1, REPEATS) + noise * torch.randn(n, 2 * REPEATS, generator=g)
    return prior, theta, x


class _Means(torch.nn.Module):
    # A fixed summary: the mean of each parameter's repeats.
    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x.reshape(*x.shape[:-1], REPEATS, 2).mean(-2)


def test_a_likelihood_of_summaries_has_their_shape_and_the_priors_support():
    prior, theta, x = _repeated(n=200)
    embedding = MLPEmbedding(2 * REPEATS, 3, hidden_features=(8,))
    flow = build_conditional_flow(theta, x, prior, embedding_net=embedding, **SMALL)
    proxy = build_proxy(ProxyConfig(share_embedding=True, options=SMALL), flow, prior, theta, x)
    assert proxy.dim_x == 2 * REPEATS and proxy.dim_u == 3
    assert proxy.x_loc.shape == (3,) and proxy.config["summary"] is True
    # The summaries are the flow's: not the proxy's parameters, nor in its state.
    assert not any(k.startswith("summary") for k in proxy.state_dict())
    shared = {id(p) for p in embedding.parameters()}
    assert not shared & {id(p) for p in proxy.parameters()}
    # Energies of (K, B, d) samples against (B, m) data; +inf outside the prior.
    assert proxy(theta[:12].reshape(3, 4, 2), x[:4]).shape == (3, 4)
    outside = torch.tensor([[1.5, 0.0], [0.0, -3.0], [0.2, 0.1]]).requires_grad_()
    e = proxy(outside, x[:3])
    assert torch.isinf(e[:2]).all() and (e[:2] > 0).all() and torch.isfinite(e[2])
    e[2].backward()  # the gradient reaches theta, and no NaN from the infinite ones
    assert torch.isfinite(outside.grad).all() and outside.grad[2].abs().sum() > 0
    # The proxy's fit moves its likelihood, never the embedding (it would collapse it).
    proxy.train()
    proxy.fit_loss(theta, x).backward()
    assert all(p.grad is None for p in embedding.parameters())
    assert all(p.grad is not None for p in proxy.likelihood.parameters())


def test_a_likelihood_of_sufficient_summaries_reaches_their_true_nll():
    prior, theta, x = _repeated()
    torch.manual_seed(0)
    proxy = LikelihoodEnergy(prior, 2 * REPEATS, summary=_Means(), **SMALL)
    proxy.set_standardization(theta, x)
    s = _Means()(x)
    true_nll = -Normal(theta, 0.5 / math.sqrt(REPEATS)).log_prob(s).sum(-1).mean()
    # A density over s(x), in s's own units (the standardisation's Jacobian included).
    assert abs(maximum_likelihood(proxy, theta, x) - float(true_nll)) < 0.1


def test_the_summaries_standardisation_follows_them_on_training_batches_only():
    prior, theta, x = _repeated(n=500)
    means = _Means()
    proxy = LikelihoodEnergy(prior, 2 * REPEATS, summary=means, **SMALL)
    proxy.set_standardization(theta, x)
    before = proxy.x_scale.clone()
    means.scale = 3.0  # the embedding trained on: its summaries grew
    proxy.eval()
    proxy.fit_loss(theta, x)  # a validation loss: no change
    with torch.no_grad():
        proxy.train()
        proxy.fit_loss(theta, x)  # no gradient: not a training batch either
    torch.testing.assert_close(proxy.x_scale, before)
    proxy.train()
    proxy.fit_loss(theta, x)  # a training batch: one step of the moving average
    torch.testing.assert_close(proxy.x_scale, before * (1 + 2 * SUMMARY_MOMENTUM))
    # The energy (the reverse term's, the sampler's) never moves it.
    proxy(theta[:5], x[:5])
    torch.testing.assert_close(proxy.x_scale, before * (1 + 2 * SUMMARY_MOMENTUM))


def test_a_likelihood_of_summaries_cannot_simulate_x_and_checks_with_the_embedding():
    prior, theta, x = _repeated(n=200)
    flow = build_conditional_flow(theta, x, prior, embedding_net=MLPEmbedding(20, 3), **SMALL)
    proxy = build_proxy(ProxyConfig(share_embedding=True, options=SMALL), flow, prior, theta, x)
    with pytest.raises(ValueError, match="cannot simulate x"):
        proxy.simulate(theta[:3])
    # Too few held-out simulations for the evidence: the embedding's check, not model draws.
    assert fit_typicality(flow, proxy, prior, x, draws=8).kind == "embedding"
    with pytest.raises(ValueError, match="pass summary="):
        LikelihoodEnergy.from_config(proxy.config, prior)
    with pytest.raises(ValueError, match=r"summary must map x of shape \(n, 20\) to \(n, f\)"):
        LikelihoodEnergy(prior, 20, summary=lambda x: x.sum(-1))
    with pytest.raises(TypeError, match="summary must be a module or a function"):
        LikelihoodEnergy(prior, 20, summary=3)


def test_a_fit_with_shared_summaries_saves_and_loads_its_proxy_posterior(tmp_path):
    prior, theta, x = _repeated(n=400)
    est = jsbi.PosteriorEstimator(
        prior,
        objective="jeffreys",
        embedding_net=MLPEmbedding(20, 4, hidden_features=(16,)),
        share_embedding=True,
        posterior="proxy",
        num_transforms=1,
        hidden_features=(16,),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the epoch cap's warning
        post = est.fit(theta, x, max_epochs=3, show_progress_bar=False)
    assert isinstance(post, jsbi.ProxyPosterior) and post.proxy.dim_u == 4
    post.save(tmp_path / "p.pt")
    loaded = jsbi.load_posterior(tmp_path / "p.pt")
    assert loaded.proxy.summary.__self__ is loaded.flow  # the loaded flow's embedding
    x_o = x[:1]
    torch.testing.assert_close(loaded.log_prob(theta[:5], x=x_o), post.log_prob(theta[:5], x=x_o))
