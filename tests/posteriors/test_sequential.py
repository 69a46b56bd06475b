"""TSNPE's truncated proposal, and sequential rounds through simulate and the estimator."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import MultivariateNormal

import jsbi
from jsbi.estimator import PosteriorEstimator
from jsbi.posteriors.sequential import TruncatedProposal

SIGMA, Q = 0.1, 0.01
# The 1 - Q highest-density region of N(0, SIGMA^2 I) in 2-D is the disc of radius R.
R = SIGMA * math.sqrt(-2 * math.log(Q))


class GaussianAtX:
    r"""A posterior N(0, SIGMA^2 I) whatever x: its regions are known in closed form."""

    def __init__(self):
        self.dist = MultivariateNormal(torch.zeros(2), SIGMA**2 * torch.eye(2))

    def sample(self, shape, x=None):
        return self.dist.sample(shape)

    def log_prob(self, theta, x=None):
        return self.dist.log_prob(theta)


def _prior():
    return BoxUniform(-torch.ones(2), torch.ones(2))


def test_the_region_is_the_posteriors_highest_density_region():
    prior = _prior()
    proposal = TruncatedProposal(prior, GaussianAtX(), torch.zeros(2), quantile=Q, seed=0)
    # The threshold is the density at radius R, up to the quantile's Monte Carlo error.
    r_hat = math.sqrt(-2 * SIGMA**2 * (proposal.threshold + math.log(2 * math.pi * SIGMA**2)))
    assert r_hat == pytest.approx(R, rel=0.05)
    area = math.pi * R**2 / 4  # the disc's share of the box
    assert abs(proposal.prior_mass - area) < 4 * proposal.prior_mass_se + 0.05 * area
    theta = proposal.sample((500,))
    assert theta.shape == (500, 2) and (theta.norm(dim=1) <= 1.05 * R).all()
    lp = proposal.log_prob(torch.tensor([[0.0, 0.0], [0.9, 0.9]]))
    assert lp[0] == pytest.approx(math.log(0.25) - math.log(proposal.prior_mass))
    assert lp[1] == -math.inf
    assert proposal.sample().shape == (2,)


def test_the_proposal_is_seeded_and_leaves_the_global_stream_alone():
    prior = _prior()
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    a = TruncatedProposal(prior, GaussianAtX(), torch.zeros(2), seed=3)
    assert torch.equal(torch.rand(2), expected)
    b = TruncatedProposal(prior, GaussianAtX(), torch.zeros(2), seed=3)
    assert (a.threshold, a.prior_mass) == (b.threshold, b.prior_mass)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantile": 0.0}, "quantile must be in"),
        ({"quantile": 1e-4, "num_samples": 1000}, "at least 1 / quantile"),
    ],
)
def test_bad_options_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TruncatedProposal(_prior(), GaussianAtX(), torch.zeros(2), **kwargs)


def test_a_second_round_simulates_from_the_proposal_and_trains_unbiased(tmp_path):
    prior = _prior()
    sim = jsbi.wrap(lambda t: t + 0.05 * torch.randn_like(t), prior, name="noisy")
    proposal = TruncatedProposal(prior, GaussianAtX(), torch.zeros(2), quantile=Q, seed=0)
    theta, x = jsbi.simulate(sim, 120, seed=1, batch_size=50, proposal=proposal)
    assert proposal.inside(theta).all()
    again, _ = jsbi.simulate(sim, 120, seed=1, batch_size=50, n_jobs=2, proposal=proposal)
    assert torch.equal(theta, again)
    stored, _ = jsbi.simulate(sim, 120, seed=1, batch_size=50, store=tmp_path, proposal=proposal)
    resumed, _ = jsbi.simulate(sim, 120, seed=1, batch_size=50, store=tmp_path, proposal=proposal)
    assert torch.equal(stored, theta) and torch.equal(resumed, theta)
    with pytest.raises(ValueError, match="not the prior draws"):
        jsbi.simulate(sim, 120, seed=1, batch_size=50, store=tmp_path)  # the prior's draws

    small = {"hidden_features": (8, 8), "num_transforms": 1}
    est = PosteriorEstimator(prior, **small)
    post = est.fit(theta, x, max_epochs=2, proposal=proposal, show_progress_bar=False)
    assert post.history["proposal"].startswith("TruncatedProposal(")
    with pytest.raises(ValueError, match="proposal must be None, the prior, or a jsbi"):
        est.fit(theta, x, max_epochs=1, proposal=BoxUniform(-torch.ones(2), torch.ones(2)))
    sbi_style = PosteriorEstimator(prior, **small).append_simulations(theta, x, proposal=post)
    with pytest.raises(ValueError, match="NPE's loss on pairs from any other proposal"):
        sbi_style.train(max_num_epochs=1)
    with pytest.raises(ValueError, match="event shape \\(2,\\)"):
        jsbi.simulate(sim, 10, proposal=BoxUniform(-torch.ones(3), torch.ones(3)))


def test_a_proposals_draws_share_no_random_numbers_with_the_simulators_noise():
    # The same distribution as the prior, as a proposal: parameters drawn from the same
    # seed as the noise would make x a copy of theta's uniforms (correlation 1).
    prior = _prior()
    sim = jsbi.wrap(lambda t: torch.rand_like(t), prior, name="pure_noise")
    proposal = BoxUniform(-torch.ones(2), torch.ones(2))
    theta, x = jsbi.simulate(sim, 500, seed=0, proposal=proposal)
    corr = torch.corrcoef(torch.stack([theta[:, 0], x[:, 0]]))[0, 1]
    assert abs(float(corr)) < 0.2
    prior_theta, _ = jsbi.simulate(sim, 500, seed=0)
    assert not torch.equal(theta, prior_theta)  # another stream than the prior's draws


def test_pairs_from_a_proposal_are_not_the_misspecification_checks_reference():
    # The check's reference must be draws of the prior predictive: validation pairs
    # simulated from a TSNPE proposal are not, so the learned model's draws are used.
    prior = _prior()
    proposal = TruncatedProposal(prior, GaussianAtX(), torch.zeros(2), quantile=Q, seed=0)
    g = torch.Generator().manual_seed(0)
    sources = []
    for p in (None, proposal):
        theta = (p or prior).sample((1000,))
        x = theta + 0.05 * torch.randn(theta.shape, generator=g)
        est = PosteriorEstimator(
            prior, objective="jeffreys", posterior="flow", hidden_features=(8, 8), num_transforms=1
        )
        post = est.fit(theta, x, max_epochs=1, proposal=p, show_progress_bar=False)
        sources.append(post.typicality.source)
    assert sources == ["held-out", "model"]
