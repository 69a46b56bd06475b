r"""Bounded rejection sampling of sbi's direct posteriors: sbi's target, sbi's leakage
factor, in the diagnostics' paths, and a clear error where the support is all but missed."""

from __future__ import annotations

import os

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.diagnostics import nltp, train_sbi_npe
from jsbi.diagnostics.rejection import is_sbi_direct, rejection_sample
from jsbi.diagnostics.sbc import draw_samples, log_prob_batched


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    # A box prior and a flow trained two epochs: much of its mass leaks out of the box.
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        prior = BoxUniform(-torch.ones(2), torch.ones(2))
        torch.manual_seed(0)
        theta = prior.sample((300,))
        x = theta + 0.5 * torch.randn_like(theta)
        post, _ = train_sbi_npe(
            theta, x, prior, seed=0, hidden_features=16, num_transforms=1, max_num_epochs=2
        )
    finally:
        os.chdir(cwd)
    return prior, post, x[:6]


def test_sbis_target_and_leakage_factor(leaky):
    prior, post, x = leaky
    assert is_sbi_direct(post) and not is_sbi_direct(object())
    torch.manual_seed(1)
    samples, accept = rejection_sample(post, x, 2000)
    assert samples.shape == (2000, 6, 2) and accept.shape == (6,)
    assert prior.support.check(samples).all()
    assert (accept > 0).all() and (accept < 1).all()  # the flow leaks: rejection matters
    # The same law as sbi's own sampler at one observation: means within 5 standard errors.
    ours = samples[:, 0]
    theirs = post.sample((2000,), x=x[0], show_progress_bars=False)
    se = (ours.var(0) / 2000 + theirs.var(0) / 2000).sqrt()
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 5 * se).all()
    # The acceptance is sbi's leakage factor: within 5 binomial standard errors.
    torch.manual_seed(2)
    sbi_factor = float(post.leakage_correction(x=x[:1], num_rejection_samples=2000))
    p = float(accept[0])
    assert abs(p - sbi_factor) < 5 * (p * (1 - p) / 2000) ** 0.5 + 1e-3


def test_the_diagnostics_use_it(leaky, monkeypatch):
    prior, post, x = leaky

    def refused(*args, **kwargs):
        raise AssertionError("sbi's own batched sampler was called")

    # The diagnostics draw through jsbi's rejection, never through sbi's batched paths.
    monkeypatch.setattr(post, "sample_batched", refused)
    monkeypatch.setattr(post, "leakage_correction", refused)
    s = draw_samples(post, x, 100, batch_size=4, seed=0)
    assert s.shape == (100, 6, 2) and prior.support.check(s).all()
    assert torch.equal(s, draw_samples(post, x, 100, batch_size=4, seed=0))  # seeded
    # Normalised log densities: the unnormalised ones minus log(acceptance), which makes
    # them larger than sbi's unnormalised ones by the leaked mass.
    theta = prior.sample((3, 6))
    raw = log_prob_batched(post, theta, x, normalize=False)
    normed = log_prob_batched(post, theta, x, normalize=True, num_leakage_samples=500)
    gap = normed - raw
    assert (gap > 0).all() and torch.allclose(gap, gap[:1].expand_as(gap))
    assert torch.isfinite(torch.tensor(nltp(post, theta[0], x, num_leakage_samples=200).mean))


def test_the_flow_draws_at_most_max_candidates_per_call(leaky, monkeypatch):
    _, post, x = leaky
    calls = []
    original = post.posterior_estimator.sample

    def recording(shape, condition):
        calls.append((shape[0], len(condition)))
        return original(shape, condition=condition)

    monkeypatch.setattr(post.posterior_estimator, "sample", recording)
    torch.manual_seed(0)
    samples, _ = rejection_sample(post, x, 50, max_candidates=120)
    assert samples.shape == (50, 6, 2)
    # Round 1 (50 per observation) in calls of two observations; a call over several
    # observations never exceeds the bound.
    assert calls[:3] == [(50, 2)] * 3
    assert all(k * c <= 120 or c == 1 for k, c in calls)


def test_a_posterior_outside_the_support_is_an_error(leaky):
    _, post, x = leaky
    # One round of 1,000 candidates (in flow calls of 100) at an acceptance below 1:
    # 1,000 samples cannot be had, and the error names the observation and its count.
    with pytest.raises(RuntimeError, match=r"observation 0 of this batch \(\d+ of 1000 samples\)"):
        rejection_sample(post, x[:1], 1000, max_candidates=100, max_rounds=1)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        rejection_sample(post, x[:1], 0)
