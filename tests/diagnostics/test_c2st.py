r"""C2ST, NLTP and leakage against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Uniform

from jsbi.diagnostics.c2st import c2st, leakage, nltp
from tests.diagnostics.analytic import GaussianPosterior, pairs


def test_c2st_identical_and_separated():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    assert abs(c2st(a, b) - 0.5) < 0.08
    assert c2st(a + 4.0, b) > 0.97
    assert c2st(a, b, seed=3) == c2st(a, b, seed=3)


def test_c2st_folds_in_processes_give_the_same_score(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 2, generator=g), 0.3 + torch.randn(300, 2, generator=g)
    assert c2st(a, b, n_jobs=2) == c2st(a, b, n_jobs=1)
    # sbi's c2st leaves cross_val_score's n_jobs unset: the workers come from joblib's
    # configuration, which n_jobs sets.
    import joblib
    import sbi.utils.metrics

    workers = []

    def fake(*args, **kwargs):
        workers.append(joblib.Parallel().n_jobs)
        return torch.tensor(0.5)

    monkeypatch.setattr(sbi.utils.metrics, "c2st", fake)
    c2st(a, b, n_jobs=2)
    c2st(a, b)
    assert workers == [2, 1]


def test_c2st_bad_input():
    with pytest.raises(ValueError, match="n_jobs"):
        c2st(torch.zeros(10, 2), torch.zeros(10, 2), n_jobs=0)
    with pytest.raises(ValueError, match="same d"):
        c2st(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="finite"):
        c2st(torch.full((10, 2), float("nan")), torch.zeros(10, 2))


def test_nltp_matches_entropy():
    # For the exact posterior E[-log q(theta* | x*)] is the posterior entropy.
    theta, x = pairs(4000, seed=2)
    post = GaussianPosterior()
    res = nltp(post, theta, x, batch_size=1500)
    assert res.values.shape == (4000,)
    assert abs(res.mean - post.entropy()) < 4 * res.stderr
    assert nltp(GaussianPosterior(scale=0.5), theta, x).mean > res.mean + 0.5


class Leaky(GaussianPosterior):
    r"""Takes ``reject_outside_prior`` like sbi's posteriors and records it."""

    def sample_batched(self, sample_shape, x, reject_outside_prior=True):
        self.rejected = reject_outside_prior
        return super().sample_batched(sample_shape, x)


def test_leakage_fraction():
    # Posterior N(0, std^2) per dim in 1-D boxes [0, 10]: half the mass is outside.
    prior = Independent(Uniform(torch.zeros(1), 10 * torch.ones(1)), 1)
    post = Leaky(dim=1)
    out = leakage(post, torch.zeros(2, 1), prior, 4000)
    assert post.rejected is False
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), 0.5), atol=0.03)
    box = Independent(Uniform(-100 * torch.ones(1), 100 * torch.ones(1)), 1)
    assert leakage(post, torch.zeros(1, 1), box, 100).item() == 0.0
    assert math.isclose(
        float(leakage(post, torch.zeros(1, 1), prior, 10, seed=1)[0]),
        float(leakage(post, torch.zeros(1, 1), prior, 10, seed=1)[0]),
    )
