"""The evidence of the likelihood proxy, the misspecification check, and model comparison,
against closed forms."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

import jsbi
from jsbi.diagnostics import compare_models
from jsbi.diagnostics.evidence import ModelComparison

SMALL = {"hidden_features": (32, 32), "num_transforms": 2}


def _fit(objective):
    # theta ~ N(0, I), x ~ N(theta, 0.25 I): p(x) = N(0, 1.25 I) in closed form.
    torch.manual_seed(0)
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    theta = prior.sample((2000,))
    x = theta + 0.5 * torch.randn_like(theta)
    # The likelihood proxy in the model's own family (x | theta is affine-Gaussian: one
    # affine autoregressive transform): what is tested is the evidence's estimator, not
    # a flow's fit (the default spline likelihood's error is in benchmarks, not here).
    proxy = {"proxy_options": {"flow": "maf", "num_transforms": 1}} if objective != "npe" else {}
    est = jsbi.PosteriorEstimator(prior, objective=objective, seed=0, **SMALL, **proxy)
    return est.fit(theta, x, max_epochs=30, learning_rate=2e-3, show_progress_bar=False)


@pytest.fixture(scope="module")
def fits():
    return {}


def _posterior(fits, objective):
    if objective not in fits:
        fits[objective] = _fit(objective)
    return fits[objective]


def test_the_evidence_is_the_closed_form_within_015_nats_on_average(fits):
    post = _posterior(fits, "jeffreys")
    exact = MultivariateNormal(torch.zeros(2), covariance_matrix=1.25 * torch.eye(2))
    torch.manual_seed(7)
    xs = exact.sample((6,))
    log_z, se = post.log_evidence(xs)
    assert log_z.shape == se.shape == (6,) and (se > 0).all() and (se < 0.05).all()
    # The Monte Carlo error is the se (< 0.05); the rest is the fit's: a 2,000-pair fit
    # misjudges the predictive variance by a few percent, which costs about 0.15 nats at
    # |x| = 2 (2 standard deviations): 0.15 on average, 0.25 at any of the six.
    err = (log_z - exact.log_prob(xs)).abs()
    assert err.mean() < 0.15 and err.max() < 0.25, err
    # One observation, the same value (cached and seeded).
    one, _ = post.log_evidence(xs[0])
    assert torch.equal(one, log_z[:1])


def test_without_a_likelihood_proxy_the_evidence_is_a_clear_error():
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    theta = prior.sample((300,))
    post = jsbi.PosteriorEstimator(prior, num_transforms=1).fit(
        theta, theta + 0.3 * torch.randn_like(theta), max_epochs=2, show_progress_bar=False
    )
    with pytest.raises(ValueError, match="log_evidence needs a likelihood proxy"):
        post.log_evidence(theta[0])


@pytest.mark.parametrize("objective", ["npe", "jeffreys"])
def test_an_atypical_observation_warns_and_a_typical_one_does_not(fits, objective):
    # At x = (5, 5) the prior-predictive p-value is P(chi2_2 >= 40) = exp(-20): below
    # any reference.
    post = _posterior(fits, objective)
    assert post.typicality.kind == ("evidence" if objective == "jeffreys" else "embedding")
    far = torch.tensor([5.0, 5.0])
    with pytest.warns(UserWarning, match="atypical of the simulations: prior-predictive p-value"):
        post.sample((10,), x=far)
    # Below every reference: 1 / (n + 1), or with the embedding check beside the evidence,
    # twice the smaller of the two.
    t = post.typicality
    expected = 1 / (len(t.reference) + 1)
    if t.partner is not None:
        expected = 2 * min(expected, 1 / (len(t.partner.reference) + 1))
    assert post.observation_p_value(far) == pytest.approx(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post.set_default_x(torch.tensor([0.3, -0.2]))
        post.sample((10,))
    assert post.observation_p_value() > 0.1
    # Off: no check.
    threshold, post.misspecification_threshold = post.misspecification_threshold, None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post.sample((10,), x=far)
    post.misspecification_threshold = threshold


def test_a_saved_posterior_keeps_its_reference_and_its_evidence(tmp_path, fits):
    post = _posterior(fits, "jeffreys")
    path = tmp_path / "post.pt"
    post.save(path)
    loaded = jsbi.load_posterior(path)
    x_o = torch.tensor([0.4, -1.1])
    assert loaded.observation_p_value(x_o) == post.observation_p_value(x_o)
    assert loaded.typicality.source == post.typicality.source == "held-out"
    assert torch.equal(loaded.log_evidence(x_o)[0], post.log_evidence(x_o)[0])


def test_a_recalibrated_temperature_moves_neither_the_evidence_nor_the_check(fits):
    # Both are importance-sampled with the flow as proposal, and the check's reference was
    # estimated at T = 1 when the fit ended: at another temperature the same proposal
    # (the flow as trained) must serve, or the statistic and its reference disagree.
    post = _posterior(fits, "jeffreys")
    x_o = torch.tensor([[0.4, -1.1], [1.5, 0.2]])

    def fresh():
        post._log_z.clear()
        post._p_values.clear()
        p = [post.observation_p_value(x) for x in x_o]
        return post.log_evidence(x_o)[0], [post._typicality_statistic(x[None]) for x in x_o], p

    log_z, statistic, p = fresh()
    try:
        post.flow.set_temperature(1.7)
        tempered = fresh()
        assert post.temperature == pytest.approx(1.7)  # restored after each estimate
    finally:
        post.flow.set_temperature(1.0)
    assert torch.equal(tempered[0], log_z) and tempered[2] == p
    assert all(torch.equal(a, b) for a, b in zip(tempered[1], statistic, strict=True))


def test_the_check_reads_held_out_simulations_and_its_p_values_are_uniform_there(fits):
    # 2,000 pairs leave 200 validation pairs, never trained on: the reference. Under the
    # simulator an observation is exchangeable with them, so its p-value is uniform on
    # {1, ..., 201} / 201 whatever the proxy learned: at 400 fresh draws of p(x), the
    # share below 0.1 and below 0.5 within 3.5 binomial standard errors (0.052, 0.088).
    # The combined check (twice the smaller of it and the embedding's) is then valid:
    # it flags no more than its level, within the same error.
    post = _posterior(fits, "jeffreys")
    t = post.typicality
    assert t.source == "held-out" and len(t.reference) == 200 and t.partner.kind == "embedding"
    assert post.history["typicality"] == "evidence (held-out)"
    exact = MultivariateNormal(torch.zeros(2), covariance_matrix=1.25 * torch.eye(2))
    torch.manual_seed(11)
    xs = exact.sample((400,))
    own = torch.tensor([t._own_p_value(post._typicality_statistic(x[None])) for x in xs])
    combined = torch.tensor([post.observation_p_value(x) for x in xs])
    for level in (0.1, 0.5):
        se = (level * (1 - level) / 400) ** 0.5
        assert abs(float((own < level).float().mean()) - level) < 3.5 * se, (level, own)
        assert float((combined < level).float().mean()) < level + 3.5 * se, (level, combined)


def test_a_combined_check_is_twice_the_smaller_p_value_and_is_saved_whole():
    from jsbi.posteriors.typicality import Typicality

    embedding = Typicality(
        "embedding", torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    )
    check = Typicality("evidence", torch.linspace(-3, 3, 99), partner=embedding)
    typical, far = torch.zeros(2), torch.full((2,), 8.0)
    assert check.p_value_of(torch.tensor(-4.0), typical) == pytest.approx(2 / 100)
    assert check.p_value_of(torch.tensor(0.0), far) == pytest.approx(2 / 201)
    assert check.p_value_of(torch.tensor(9.0), typical) == 1.0  # (capped)
    with pytest.raises(ValueError, match="needs the observation's embedding"):
        check.p_value_of(torch.tensor(0.0))
    with pytest.raises(ValueError, match="partner"):
        Typicality("embedding", torch.randn(20, 2), partner=embedding)
    again = Typicality.from_state(check.state())
    assert again.partner.kind == "embedding"
    assert again.p_value_of(torch.tensor(0.0), far) == check.p_value_of(torch.tensor(0.0), far)


def test_an_evidence_reference_without_the_proxy_is_an_error_at_construction():
    # Else the posterior is built, and every sample() fails later with a TypeError.
    from jsbi.flows import build_conditional_flow
    from jsbi.posteriors import Posterior
    from jsbi.posteriors.typicality import Typicality

    theta = torch.randn(50, 2)
    flow = build_conditional_flow(theta, theta, None, num_transforms=1)
    evidence = Typicality("evidence", torch.linspace(-3, 3, 99))
    with pytest.raises(ValueError, match="typicality: an 'evidence' reference needs"):
        Posterior(flow, typicality=evidence)
    embedding = Typicality("embedding", torch.randn(20, 2))
    assert Posterior(flow, typicality=embedding).typicality is embedding


def test_a_saved_evidence_check_whose_proxy_was_not_saved_loads_as_its_embedding_check(
    tmp_path,
):
    # A proxy without a config is not saved; the loaded posterior keeps the embedding
    # half of the combined check, not an evidence reference it cannot compute.
    from jsbi.flows import build_conditional_flow
    from jsbi.posteriors import Posterior
    from jsbi.posteriors.typicality import Typicality
    from jsbi.proxies.likelihood import LikelihoodEnergy

    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    theta = prior.sample((50,))
    flow = build_conditional_flow(theta, theta, prior, num_transforms=1)
    proxy = LikelihoodEnergy(prior, 2, hidden_features=(8,), num_transforms=1)
    proxy.set_standardization(theta, theta)
    proxy.config = None  # a custom proxy: not saved
    embedding = Typicality("embedding", torch.randn(20, 2))
    check = Typicality("evidence", torch.linspace(-3, 3, 99), partner=embedding)
    Posterior(flow, prior, proxy=proxy, typicality=check).save(tmp_path / "p.pt")
    loaded = jsbi.load_posterior(tmp_path / "p.pt")
    assert loaded.proxy is None and loaded.typicality.kind == "embedding"
    torch.testing.assert_close(loaded.typicality.reference, embedding.reference)


class _Fixed:
    # A stand-in posterior whose evidence is known.
    def __init__(self, value, se):
        self.value, self.se = value, se

    def log_evidence(self, x):
        return torch.tensor([self.value]), torch.tensor([self.se])


def test_log_bayes_factors_and_their_errors():
    bf = compare_models({"A": _Fixed(-3.0, 0.3), "B": _Fixed(-5.0, 0.4)}, torch.zeros(2))
    assert isinstance(bf, ModelComparison) and bf.best == "A"
    value, se = bf.log_bayes_factor("A", "B")
    assert value == pytest.approx(2.0) and se == pytest.approx(0.5)
    assert "log BF vs best" in bf.table()
    with pytest.raises(ValueError, match="at least two models"):
        compare_models({"A": _Fixed(0.0, 0.1)}, torch.zeros(2))
    with pytest.raises(KeyError, match="no model 'C'"):
        bf.log_bayes_factor("A", "C")
    assert bf.log_evidence["B"] == pytest.approx(-5.0)
