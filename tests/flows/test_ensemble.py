"""Ensembles of flows as one batched module: a normalised mixture, the same training as
separate fits, and a posterior that samples, saves and loads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.distributions import Independent, Normal

import jsbi
from jsbi.flows import build_conditional_flow
from jsbi.flows.ensemble import FlowEnsemble
from jsbi.methods import NPEStep
from jsbi.training import train

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}


def _data(n=400, d=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, d, generator=g)
    return theta, theta + 0.5 * torch.randn(n, d, generator=g)


def _members(theta, x, k, prior=None):
    out = []
    for i in range(k):
        torch.manual_seed(100 + i)
        out.append(build_conditional_flow(theta, x, prior, **SMALL))
    return out


def test_the_mixture_integrates_to_one_on_a_grid():
    theta, x = _data()
    ensemble = FlowEnsemble(_members(theta, x, 3))
    with torch.no_grad():
        for p in ensemble.parameters():
            p.add_(0.3 * torch.randn_like(p))  # members that differ
        grid = torch.linspace(-12, 12, 6001)[:, None]
        density = ensemble.log_prob(grid, x[:1].expand(len(grid), 1)).exp()
        members = ensemble.member_log_prob(grid, x[:1].expand(len(grid), 1)).exp()
    step = grid[1, 0] - grid[0, 0]
    assert float(density.sum() * step) == pytest.approx(1.0, abs=1e-3)
    # The mixture is the members' mean, and they differ.
    torch.testing.assert_close(density, members.mean(0))
    assert (members[0] - members[1]).abs().max() > 1e-3


def test_each_draw_at_each_x_picks_its_own_member():
    theta, x = _data()
    ensemble = FlowEnsemble(_members(theta, x, 2))
    with torch.no_grad():  # member 1 lives 1,000 units away: each draw says its member
        ensemble.member__theta_loc[1].add_(1000.0)
    torch.manual_seed(0)
    samples = ensemble.sample((4000,), x[:3])  # (4000, 3, 1)
    from_one = samples[..., 0] > 500
    assert samples.shape == (4000, 3, 1)
    # Half the draws from each member at every x, chosen independently across the rows.
    assert torch.allclose(from_one.double().mean(0), torch.full((3,), 0.5).double(), atol=0.04)
    disagree = (from_one[:, 0] != from_one[:, 1]).double().mean()
    assert float(disagree) == pytest.approx(0.5, abs=0.04)
    # Each member's draws follow that member (its own standardisation).
    with torch.no_grad():
        far = ensemble.member(1).sample((4000,), x[:1])[:, 0, 0]
    assert float(samples[from_one[:, 0], 0, 0].mean()) == pytest.approx(
        float(far.mean()), abs=0.1 * float(far.std())
    )


def test_batched_members_train_as_separate_fits_from_the_same_seeds():
    theta, x = _data(n=300, d=2)
    members = _members(theta, x, 3)
    separate = [copy.deepcopy(m) for m in members]
    ensemble = FlowEnsemble(members)
    fit = {"max_epochs": 3, "batch_size": 50, "learning_rate": 1e-3, "show_progress_bar": False}
    train(NPEStep(ensemble), theta, x, seed=0, **fit)
    for flow in separate:
        train(NPEStep(flow), theta, x, seed=0, **fit)
    for k, flow in enumerate(separate):
        batched = ensemble.member(k)
        for (name, a), b in zip(
            flow.state_dict().items(), batched.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_an_ensemble_posterior_samples_saves_and_loads(tmp_path):
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    theta = prior.sample((400,))
    x = theta + 0.5 * torch.randn_like(theta)
    est = jsbi.PosteriorEstimator(prior, ensemble=3, **SMALL)
    post = est.fit(theta, x, max_epochs=3, show_progress_bar=False)
    assert isinstance(post.flow, FlowEnsemble) and post.flow.num_members == 3
    assert post.sample((20,), x=x[0]).shape == (20, 2)
    path = tmp_path / "ensemble.pt"
    post.save(path)
    loaded = jsbi.load_posterior(path)
    torch.testing.assert_close(
        loaded.log_prob(theta[:5], x=x[0]), post.log_prob(theta[:5], x=x[0])
    )
    with pytest.raises(ValueError, match="ensemble=3 applies to objective='npe'"):
        jsbi.PosteriorEstimator(prior, objective="jeffreys", ensemble=3)
    with pytest.raises(ValueError, match="ensemble must be an int >= 1"):
        jsbi.PosteriorEstimator(prior, ensemble=0)
