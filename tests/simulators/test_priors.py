"""Any prior sbi takes: a scipy distribution, an object with sample and log_prob, a torch
distribution without a support; and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch.distributions import Distribution, constraints

import jsbi


class Custom:
    # sbi's "custom prior": sample and log_prob, nothing else (uniform on the unit square).
    def sample(self, shape=()):
        return torch.rand(*shape, 2)

    def log_prob(self, theta):
        inside = ((theta >= 0) & (theta <= 1)).all(-1)
        return torch.where(inside, 0.0, -torch.inf)


class NoSupport(Distribution):
    def __init__(self):
        super().__init__(torch.Size(), torch.Size([2]), validate_args=False)

    def sample(self, shape=()):
        return torch.randn(*shape, 2)

    def log_prob(self, theta):
        return -0.5 * (theta**2).sum(-1)


@pytest.mark.parametrize(
    "prior",
    [
        stats.multivariate_normal(mean=[0.0, 0.0]),
        jsbi.as_prior(Custom(), support=(torch.zeros(2), torch.ones(2))),
        jsbi.as_prior(NoSupport(), support=constraints.real),
    ],
    ids=["scipy", "custom-with-bounds", "torch-without-support"],
)
def test_a_prior_sbi_takes_trains_and_samples(prior):
    sim = jsbi.wrap(lambda t: t + 0.1 * torch.randn_like(t), prior, name="shift")
    theta, x = jsbi.simulate(sim, 300)
    post = jsbi.PosteriorEstimator(prior, num_transforms=1).fit(
        theta, x, max_epochs=2, show_progress_bar=False
    )
    samples = post.sample((50,), x=x[0])
    assert samples.shape == (50, 2) and torch.isfinite(samples).all()
    # A bounded support is kept: no sample outside the unit square.
    if isinstance(prior, Distribution) and prior.support is not constraints.real:
        lower = getattr(prior.support, "base_constraint", prior.support).lower_bound
        if lower is not None and torch.isfinite(torch.as_tensor(lower)).all():
            assert ((samples >= 0) & (samples <= 1)).all()


def test_a_missing_support_names_the_fix():
    with pytest.raises(ValueError, match=r"has no \.support.*jsbi\.as_prior\(prior, support="):
        jsbi.PosteriorEstimator(NoSupport())


def test_something_that_is_no_prior_is_named():
    with pytest.raises(TypeError, match="an object with sample\\(shape\\) and log_prob"):
        jsbi.PosteriorEstimator([0.0, 1.0])
