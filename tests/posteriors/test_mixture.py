"""The equal mixture of the flow and the proxy: a normalised density that is the mean of
its members', draws split Binomial(n, 1/2) between them and shuffled, saved and loaded."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.flows.conditional import build_conditional_flow
from jsbi.posteriors import MixturePosterior, Posterior, ProxyPosterior, load_posterior
from jsbi.proxies.likelihood import LikelihoodEnergy

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}


def _members(seed=0):
    # A truncated flow standardised on a square twice the prior's side, so that about
    # half of its mass or more lies outside the box (its log_prob must be renormalised
    # by its own accepted mass), and an untrained likelihood proxy.
    torch.manual_seed(seed)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    wide = 4 * torch.rand(300, 2) - 2
    flow = build_conditional_flow(
        wide, wide + 0.2 * torch.randn(300, 2), prior, support="truncate", **SMALL
    )
    theta = 2 * torch.rand(300, 2) - 1
    proxy = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(
        theta, theta + 0.2 * torch.randn(300, 2)
    )
    return prior, flow, proxy


def test_the_density_is_the_mean_of_the_members_and_integrates_to_one(tmp_path):
    prior, flow, proxy = _members()
    mix = MixturePosterior(flow, proxy, prior)
    x_o = torch.tensor([0.3, -0.4])
    assert float(Posterior(flow, prior).accepted_mass(x_o).mass[0]) < 0.6  # the flow leaks
    g = torch.linspace(-1 + 1e-3, 1 - 1e-3, 120)
    grid = torch.cartesian_prod(g, g)
    lp = mix.log_prob(grid, x=x_o)
    members = torch.stack(
        [
            Posterior(flow, prior).log_prob(grid, x=x_o),
            ProxyPosterior(flow, proxy, prior).log_prob(grid, x=x_o),
        ]
    )
    torch.testing.assert_close(lp, members.logsumexp(0) - math.log(2))
    mass = lp.exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.05)
    # norm_posterior=False cannot mix unnormalised members: it is ignored.
    torch.testing.assert_close(mix.log_prob(grid[:5], x=x_o, norm_posterior=False), lp[:5])
    assert torch.isinf(mix.log_prob(torch.tensor([[1.5, 0.0]]), x=x_o)).all()
    torch.manual_seed(1)
    # The flow leaks: its rejected draws are named as the flow's, at the caller's line.
    with pytest.warns(UserWarning, match="of the flow's draws fell outside") as record:
        samples = mix.sample((400,), x=x_o)
    assert {w.filename for w in record if "flow's draws" in str(w.message)} == {__file__}
    assert samples.shape == (400, 2) and (samples.abs() <= 1).all()
    assert mix.sample((0,), x=x_o).shape == (0, 2)
    # Beyond the proxy's domain the flow answers, and the warning names the caller's line.
    with pytest.warns(UserWarning, match="outside the likelihood proxy's domain") as record:
        mix.sample((50,), x=torch.tensor([4.0, 0.0]))
    assert {w.filename for w in record if "domain" in str(w.message)} == {__file__}
    with pytest.raises(ValueError, match="the mixture of the flow and the proxy"):
        mix.recalibrate(torch.zeros(4, 2), torch.zeros(4, 2))
    path = tmp_path / "mixture.pt"
    mix.save(path)
    assert torch.load(path, weights_only=True)["version"] == 2
    # Its members' files stay version 1, which an older jsbi reads.
    for member, name in (
        (Posterior(flow, prior), "flow"),
        (ProxyPosterior(flow, proxy, prior), "proxy"),
    ):
        member.save(tmp_path / f"{name}.pt")
        assert torch.load(tmp_path / f"{name}.pt", weights_only=True)["version"] == 1
    loaded = load_posterior(path)
    assert type(loaded) is MixturePosterior
    torch.testing.assert_close(loaded.log_prob(grid[:50], x=x_o), lp[:50])


def test_beyond_the_proxys_domain_the_mixture_is_the_flow_computed_once(monkeypatch):
    prior, flow, proxy = _members()
    mix = MixturePosterior(flow, proxy, prior)
    xs = torch.tensor([[0.3, -0.4], [0.1, 0.4]])
    theta = prior.sample((3, 2))  # (3, 2 rows of x, d)
    inside = mix.log_prob(theta[:, 0], x=xs[0])  # row 0 alone, inside the domain
    flow_alone = Posterior(flow, prior)
    # Row 1 (second coordinate > 0) beyond the domain: there the mixture is the flow.
    monkeypatch.setattr(proxy, "in_domain", lambda x: x[:, 1] < 0)
    flow_rows, log_z_rows = [], []
    flow_log_prob, log_normalizer = Posterior._log_prob, MixturePosterior._log_normalizer

    def counted_flow(self, theta, x, *args, **kwargs):
        flow_rows.extend(x.tolist())
        return flow_log_prob(self, theta, x, *args, **kwargs)

    def counted_log_z(self, x):
        log_z_rows.extend(x.tolist())
        return log_normalizer(self, x)

    monkeypatch.setattr(Posterior, "_log_prob", counted_flow)
    monkeypatch.setattr(MixturePosterior, "_log_normalizer", counted_log_z)
    with pytest.warns(UserWarning, match="outside the likelihood proxy's domain"):
        lp = mix.log_prob_batched(theta, x=xs)
    # The flow's density once at each row, the proxy's normaliser at the inside row alone.
    assert sorted(flow_rows) == sorted(xs.tolist()) and log_z_rows == [xs[0].tolist()]
    torch.testing.assert_close(lp[:, 0], inside)
    torch.testing.assert_close(lp[:, 1], flow_alone.log_prob(theta[:, 1], x=xs[1]))


def test_each_observation_gets_binomial_n_half_proxy_draws_in_random_order(monkeypatch):
    prior, flow, proxy = _members()
    mix = MixturePosterior(flow, proxy, prior)
    d = mix.dim_theta

    def member(value):
        def draw(self, n, x, reject, max_rounds=1000):
            return torch.full((n, len(x), d), value)

        return draw

    monkeypatch.setattr(ProxyPosterior, "_sample", member(1.0))
    monkeypatch.setattr(Posterior, "_sample", member(0.0))
    n, B = 20, 4000
    torch.manual_seed(0)
    out = mix.sample_batched((n,), x=torch.zeros(B, 2))
    assert out.shape == (n, B, d) and bool((out[..., 0] == out[..., 1]).all())
    k = out[..., 0].sum(0)  # proxy draws per observation
    # Binomial(20, 1/2): mean 10 and variance 5, within 5 standard errors over 4,000.
    assert abs(float(k.mean()) - 10) < 5 * math.sqrt(5 / B)
    assert abs(float(k.var()) - 5) < 5 * 5 * math.sqrt(2 / B)
    # Shuffled: every position is the proxy's about half the time, not the first k.
    share = out[..., 0].mean(1)
    assert bool(((share - 0.5).abs() < 5 * math.sqrt(0.25 / B)).all())


def test_the_chains_record_describes_the_last_draw_alone():
    # A draw whose split gave the proxy nothing ran no chains: last_mixing says None, not
    # the previous draw's chains.
    prior, flow, proxy = _members()
    mix = MixturePosterior(flow, proxy, prior)
    x_o = torch.tensor([0.3, -0.4])
    half = torch.full((1,), 0.5)
    proxy_drew = []
    for seed in range(12):
        torch.manual_seed(seed)
        k = int(torch.distributions.Binomial(1, half).sample())  # the draw's own split
        torch.manual_seed(seed)
        mix.sample((1,), x=x_o)
        assert (mix.last_mixing is not None) == (k == 1), seed
        proxy_drew.append(k)
    assert 0 < sum(proxy_drew) < 12 and proxy_drew[0] == 1  # both ways, the proxy first
