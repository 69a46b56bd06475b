from __future__ import annotations

import math
import warnings

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Dirichlet, Exponential, Independent, Normal, constraints

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import build_conditional_flow
from jsbi.flows.embeddings import embedding_from_spec
from jsbi.flows.support import DEFAULT_SUPPORT, Support, support_mode
from jsbi.posteriors.posterior import Posterior

SMALL = {"hidden_features": (16,), "num_transforms": 2, "num_bins": 4}


def test_membership_kinds_and_stand_in():
    box = Support.from_prior(BoxUniform(torch.zeros(2), torch.ones(2)))
    assert box.kind == "interval" and box.is_bounded
    theta = torch.tensor([[0.5, 0.5], [1.0, 0.0], [1.5, 0.5], [math.nan, 0.5]])
    assert box.contains(theta).tolist() == [True, True, False, False]
    half = Support.from_prior(Independent(Exponential(torch.ones(2)), 1))
    assert half.kind == "greater_than"
    assert half.contains(torch.tensor([[0.1, 3.0], [-0.1, 3.0]])).tolist() == [True, False]
    real = Support.from_prior(Independent(Normal(torch.zeros(2), 1.0), 1))
    assert real.kind == "real" and not real.is_bounded
    assert real.contains(torch.tensor([[1e30, -1e30], [math.inf, 0.0]])).tolist() == [True, False]
    simplex = Support.from_prior(Dirichlet(torch.ones(3)))
    assert simplex.kind == "generic"
    assert simplex.contains(torch.tensor([[0.2, 0.3, 0.5], [0.5, 0.6, -0.1]])).tolist() == [
        True,
        False,
    ]
    for s in (box, half, real, simplex):
        assert s.contains(s.stand_in()[None]).all()
    inside, safe = box.clip_inside(theta)
    assert box.contains(safe).all() and torch.equal(safe[0], theta[0])
    assert inside.tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    "prior",
    [
        BoxUniform(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 5.0])),
        Independent(Exponential(torch.ones(2)), 1),
        Dirichlet(torch.ones(3)),
    ],
)
def test_bijection_round_trip_and_log_det(prior):
    s = Support.from_prior(prior)
    theta = prior.sample((50,))
    z, ladj = s.to_unconstrained(theta)
    back, ladj2 = s.from_unconstrained(z)
    torch.testing.assert_close(back, theta, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ladj, ladj2)
    if prior.event_shape[0] == 2:  # square Jacobian: check against autograd
        jac = torch.autograd.functional.jacobian(lambda u: s.from_unconstrained(u)[0], z[0])
        torch.testing.assert_close(ladj[0], torch.linalg.slogdet(jac).logabsdet, atol=1e-5, rtol=0)


def test_a_support_without_a_bijection_tests_membership_and_says_to_truncate():
    class Odd(constraints.Constraint):
        event_dim = 1

        def check(self, value):
            return value.sum(-1) > 0

    s = Support(Odd(), 2)
    assert s.contains(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).tolist() == [True, False]
    with pytest.raises(ValueError, match="support='truncate'"):
        s.transform()


def test_accepted_mass_is_binomial_with_its_standard_error():
    s = Support.from_prior(BoxUniform(torch.zeros(1), torch.ones(1)))
    torch.manual_seed(0)
    # Draws from N(0, 1): P(0 <= theta <= 1) = Phi(1) - Phi(0).
    exact = 0.5 * math.erf(1 / math.sqrt(2))
    est = s.accepted_mass(lambda n: torch.randn(n, 3, 1), 40_000)
    assert est.mass.shape == (3,) and est.num_samples == 40_000
    assert ((est.mass - exact).abs() < 4 * est.se).all()
    torch.testing.assert_close(est.se, (est.mass * (1 - est.mass) / 40_000).sqrt())
    torch.testing.assert_close(est.log_mass_se, est.se / est.mass)
    with pytest.raises(ValueError, match="num_samples"):
        s.accepted_mass(lambda n: torch.randn(n, 1, 1), 0)


def test_rejection_sample_fills_every_column_inside_and_reports_the_rejected_share():
    s = Support.from_prior(BoxUniform(torch.zeros(1), torch.ones(1)))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ~66% rejected: the warning is expected
        out, leaked = s.rejection_sample(lambda n, cols: torch.randn(n, len(cols), 1), 500, 4)
    assert out.shape == (500, 4, 1) and s.contains(out).all()
    exact = 1 - 0.5 * math.erf(1 / math.sqrt(2))
    assert abs(leaked - exact) < 0.03
    with pytest.raises(RuntimeError, match="gave up"):
        s.rejection_sample(lambda n, cols: 5 + torch.rand(n, len(cols), 1), 10, 1, max_rounds=3)


def test_rejection_sample_sizes_its_rounds_by_the_neediest_observation():
    # Observation 1 puts 4.7e-4 of its mass in [0, 1]: 50 samples need about 100,000
    # candidates, which rounds of at most n = 50 would not reach in 1,000 rounds.
    s = Support.from_prior(BoxUniform(torch.zeros(1), torch.ones(1)))
    shift = torch.tensor([0.0, -4.3])  # observation 1's candidates are N(4.3, 1)

    def draw(k, cols):
        return torch.randn(k, len(cols), 1) - shift[cols, None]

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = s.rejection_sample(draw, 50, 2, max_rounds=1000)
    assert out.shape == (50, 2, 1) and s.contains(out).all()
    assert out[:, 1].mean() > out[:, 0].mean() + 0.1  # observation 1's sits near 1
    # An observation with no mass inside is named, with its own acceptance.
    shift = torch.tensor([0.0, -50.0])
    with pytest.raises(RuntimeError, match=r"0.00e\+00 at observation 1 of this batch \(0 of"):
        s.rejection_sample(draw, 10, 2, max_rounds=3)


def test_support_option_and_its_older_spelling():
    assert support_mode() == DEFAULT_SUPPORT
    assert support_mode(bounded=True) == "transform"
    assert support_mode(bounded=False) == "truncate"
    assert support_mode("truncate", bounded=False) == "truncate"
    with pytest.raises(ValueError, match="disagree"):
        support_mode("truncate", bounded=True)
    with pytest.raises(ValueError, match="support must be one of"):
        support_mode("clip")
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="support must be one of"):
        PosteriorEstimator(prior, support="clip")
    assert PosteriorEstimator(prior, support="truncate").support == "truncate"


def _leaky_posterior(num_mass_samples=20_000):
    torch.manual_seed(0)
    prior = BoxUniform(-0.5 * torch.ones(2), 0.5 * torch.ones(2))
    theta = prior.sample((100,))
    x = theta + 0.1 * torch.randn(100, 2)
    flow = build_conditional_flow(theta, x, prior, support="truncate", **SMALL)
    with torch.no_grad():
        flow.theta_scale.mul_(3.0)  # wide: it leaks
    return Posterior(flow, prior, num_mass_samples=num_mass_samples), theta, x


def test_truncated_log_prob_is_renormalised_by_the_cached_accepted_mass():
    post, theta, x = _leaky_posterior()
    mass = post.accepted_mass(x[0])
    assert 0.01 < float(mass.mass[0]) < 0.95 and float(mass.se[0]) > 0
    # Deterministic and cached: the same x gives the same mass in a fresh posterior.
    again, _, _ = _leaky_posterior()
    torch.testing.assert_close(again.accepted_mass(x[0]).mass, mass.mass)
    raw = post.log_prob(theta[:5], x[0], norm_posterior=False)
    torch.testing.assert_close(post.log_prob(theta[:5], x[0]), raw - mass.log_mass)
    # Batched and paired x use each row's own mass.
    lp_b = post.log_prob_batched(theta[:4, None].expand(4, 3, 2), x[:3])
    masses = post.accepted_mass(x[:3], many=True).log_mass
    raw_b = post.log_prob_batched(theta[:4, None].expand(4, 3, 2), x[:3], norm_posterior=False)
    torch.testing.assert_close(lp_b, raw_b - masses)
    torch.testing.assert_close(
        post.log_prob(theta[:3], x[:3]), post.flow.log_prob(theta[:3], x[:3]) - masses
    )
    assert post.leakage(x[0], 20_000) == pytest.approx(1 - float(mass.mass[0]))
    # sbi's spelling of the estimate's size.
    small = post.log_prob(
        theta[:2], x[0], leakage_correction_params={"num_rejection_samples": 100}
    )
    assert torch.isfinite(small).all() and post.num_mass_samples == 20_000
    # A transformed flow needs no estimate.
    flow = build_conditional_flow(theta, x, post.prior, support="transform", **SMALL)
    exact = Posterior(flow, post.prior).accepted_mass(x[0])
    assert float(exact.mass[0]) == 1.0 and float(exact.se[0]) == 0.0


def test_training_rows_outside_the_support():
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta = prior.sample((50,))
    theta[0] = 2.0
    x = theta + 0.1
    with pytest.raises(ValueError, match="support='truncate'"):
        PosteriorEstimator(prior, support="transform", **SMALL).fit(theta, x, max_epochs=1)
    with pytest.warns(UserWarning, match="outside the prior's support"):
        PosteriorEstimator(prior, support="truncate", **SMALL).fit(
            theta, x, max_epochs=1, show_progress_bar=False
        )


def test_old_set_embedding_specs_load_without_moments():
    spec = {
        "type": "SetEmbedding",
        "kwargs": {"item_dim": 1, "out_features": 4, "hidden_features": [8], "latent_features": 8},
    }
    emb = embedding_from_spec(spec)
    assert not emb.moments and emb(torch.randn(3, 10)).shape == (3, 4)


def test_the_joint_schedule_keeps_the_transformed_flow():
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    assert PosteriorEstimator(prior).support == DEFAULT_SUPPORT
    assert PosteriorEstimator(prior, objective="jeffreys").support == DEFAULT_SUPPORT
    assert PosteriorEstimator(prior, objective="jeffreys", schedule="joint").support == (
        "transform"
    )
    assert PosteriorEstimator(prior, objective="reverse").support == "transform"
    with pytest.raises(ValueError, match="schedule='joint' needs support='transform'"):
        PosteriorEstimator(prior, objective="jeffreys", schedule="joint", support="truncate")
    # On the real line there is nothing to truncate: any support is fine.
    real = Independent(Normal(torch.zeros(2), 1.0), 1)
    PosteriorEstimator(real, objective="reverse", support="truncate")
    # The benchmark labels its rows the same way.
    import jsbi
    from jsbi.benchmark import method_columns

    task = jsbi.get_task("two_moons")

    def method_support(method, options=None):
        return method_columns(method, task, options)["support"]

    assert method_support("npe") == DEFAULT_SUPPORT
    assert method_support("jeffreys-joint") == method_support("jeffreys-fixed") == "transform"
    assert method_support("npe", {"support": "transform"}) == "transform"
    assert method_support("sbi-npe") == "sbi"
