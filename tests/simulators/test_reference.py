r"""Reference posteriors: the closed forms, and sbibm's stored samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest, truncnorm

from jsbi.simulators import reference
from jsbi.simulators.reference import (
    BoxTruncatedNormal,
    analytic_posterior,
    reference_samples,
    sbibm_reference_samples,
)
from jsbi.simulators.tasks import get_task
from tests.simulators import knn_c2st, sliced_ks_min_pvalue

sbibm = pytest.importorskip("sbibm")


def test_gaussian_linear_closed_form():
    task = get_task("gaussian_linear")
    x = torch.randn(3, 10) * 0.5
    post = analytic_posterior(task, x)
    assert post.batch_shape == (3,) and post.event_shape == (10,)
    torch.testing.assert_close(post.mean, x / 2)  # prior var = noise var = 0.1
    torch.testing.assert_close(post.covariance_matrix[0], 0.05 * torch.eye(10))
    # log p(theta | x) - log p(theta' | x) = log p(theta) p(x | theta) - (same at theta')
    theta = task.prior.sample((2, 3))
    noise = torch.distributions.Normal(theta, math.sqrt(0.1))
    joint = task.prior.log_prob(theta) + noise.log_prob(x).sum(-1)
    torch.testing.assert_close(
        post.log_prob(theta[0]) - post.log_prob(theta[1]),
        joint[0] - joint[1],
        atol=1e-3,
        rtol=1e-5,
    )


def test_box_truncated_normal_matches_scipy():
    # far from, near and inside the box; the first needs the mirrored computation
    loc = torch.tensor([3.0, 1.2, 0.1, -2.5])
    scale, low, high = 0.3, -torch.ones(4), torch.ones(4)
    q = BoxTruncatedNormal(loc, scale, low, high)
    a, b = ((low - loc) / scale).numpy(), ((high - loc) / scale).numpy()
    theta = q.sample((4000,))
    assert ((theta >= -1) & (theta <= 1)).all()
    for j in range(4):
        ref = truncnorm(a[j], b[j], loc=loc[j].item(), scale=scale)
        assert kstest(theta[:, j].numpy(), ref.cdf).pvalue > 1e-3 / 4
        assert abs(q.mean[j].item() - ref.mean()) < 1e-5
    points = torch.tensor([[0.9, 0.9, 0.0, -0.9], [0.5, -0.5, 0.5, -0.5]])
    expected = sum(
        truncnorm.logpdf(points[:, j].numpy(), a[j], b[j], loc=loc[j].item(), scale=scale)
        for j in range(4)
    )
    np.testing.assert_allclose(q.log_prob(points).numpy(), expected, rtol=1e-5)
    assert q.log_prob(torch.tensor([1.1, 0.0, 0.0, 0.0])).item() == -math.inf


@pytest.mark.parametrize("name", ["gaussian_linear", "gaussian_linear_uniform"])
@pytest.mark.parametrize("num_observation", [1, 7])
def test_analytic_matches_sbibm_samples(name, num_observation):
    task = get_task(name)
    stored = sbibm_reference_samples(name, num_observation)
    post = analytic_posterior(task, task.observation(num_observation)[0])
    # stored mean within 5 Monte Carlo standard errors of the exact mean, per dimension
    var = 0.05 if name == "gaussian_linear" else stored.var(0)
    se = (var / len(stored)) ** 0.5
    assert ((stored.mean(0) - post.mean).abs() < 5 * se).all()
    # and the analytic sampler is indistinguishable from sbibm's samples
    samples = reference_samples(task, num_observation, 2000)
    assert samples.shape == (2000, 10)
    p, num_tests = sliced_ks_min_pvalue(samples, stored[:2000])
    assert p > 1e-3 / num_tests
    assert knn_c2st(samples, stored[:2000]) < 0.56
    if name == "gaussian_linear_uniform":
        assert torch.isfinite(post.log_prob(samples)).all()


def test_analytic_detects_wrong_posterior():
    # the check above can fail: observation 1's samples against observation 7's posterior
    stored = sbibm_reference_samples("gaussian_linear", 1)[:2000]
    wrong = reference_samples("gaussian_linear", 7, 2000)
    p, num_tests = sliced_ks_min_pvalue(wrong, stored)
    assert p < 1e-3 / num_tests


@pytest.mark.parametrize(
    "name, num_observation", [("two_moons", 1), ("slcp_distractors", 2), ("bernoulli_glm_raw", 3)]
)
def test_stored_samples_match_sbibm(name, num_observation):
    task = get_task(name)
    expected = sbibm.get_task(name).get_reference_posterior_samples(num_observation)
    samples = task.reference_samples(num_observation)
    assert samples.shape == (10_000, task.dim_theta) and samples.dtype == torch.float32
    assert torch.equal(samples, expected)
    assert torch.equal(task.reference_samples(num_observation, 10), expected[:10])
    with pytest.raises(ValueError, match="num_samples"):
        task.reference_samples(num_observation, 10_001)
    with pytest.raises(ValueError, match="num_samples"):
        task.reference_samples(num_observation, 0)


def test_analytic_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        analytic_posterior("two_moons", torch.zeros(2))
    with pytest.raises(ValueError, match=r"x must have shape \(10,\)"):
        analytic_posterior("gaussian_linear", torch.zeros(2, 3))


def test_missing_sbibm_says_how_to_install(monkeypatch):
    real = reference.importlib.util.find_spec
    monkeypatch.setattr(
        reference.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sbibm" else real(name, *a),
    )
    reference._read_sbibm_samples.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps sbibm==1\.1\.0"):
            get_task("two_moons").reference_samples(1)
        # the analytic tasks do not need sbibm
        assert reference_samples("gaussian_linear_uniform", 1, 5).shape == (5, 10)
    finally:
        reference._read_sbibm_samples.cache_clear()
