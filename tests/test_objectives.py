r"""Tests of jsbi.objectives against exact values.

Monte Carlo estimators are compared with closed forms for two Gaussians, within a
stated number of Monte Carlo standard errors (estimated from the same samples).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from jsbi.objectives import (
    constraint_violation,
    contrastive_ratio_loss,
    defensive_log_proposal,
    dual_update,
    flow_loss,
    forward_kl,
    lagrangian,
    log_normalizer,
    proxy_fit,
    proxy_loss,
    resilient_slack,
    reverse_kl,
    srfe,
)
from jsbi.tau import ConstantTau, LinearTau, StepTau, make_tau_schedule
from tests.closed_forms import gaussian_kl, gaussian_log_chernoff, gaussian_srfe

DTYPE = torch.float64
K = 200_000  # flow samples per x for the Monte Carlo checks
N_SE = 5.0  # tolerance, in Monte Carlo standard errors


def _pair():
    r"""A flow q and a narrower proxy r (2-D Gaussians; r / q is bounded, so every
    importance weight has finite variance)."""
    m_q = torch.tensor([0.0, 0.0], dtype=DTYPE)
    S_q = torch.tensor([[2.0, 0.3], [0.3, 2.5]], dtype=DTYPE)
    m_r = torch.tensor([0.5, -0.3], dtype=DTYPE)
    S_r = torch.tensor([[0.8, -0.2], [-0.2, 1.0]], dtype=DTYPE)
    return m_q, S_q, m_r, S_r


def _energy(theta, m_r, S_r, c=0.0):
    r""":math:`E = -\log N(\theta; m_r, S_r) + c`, so that :math:`\log Z = -c`."""
    return -MultivariateNormal(m_r, S_r).log_prob(theta) + c


def _draw(m_q, S_q, k=K):
    q = MultivariateNormal(m_q, S_q)
    theta = q.rsample((k, 1))  # (K, B=1, d)
    return theta, q.log_prob(theta)  # (K, 1, d), (K, 1)


# ---------------------------------------------------------------------------
# Estimators vs closed forms
# ---------------------------------------------------------------------------


def test_forward_kl_is_mean_nll():
    log_q = torch.tensor([-1.0, -2.0, -6.0])
    assert forward_kl(log_q).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"log_q_data must have shape \(B,\)"):
        forward_kl(torch.zeros(2, 3))


def test_log_normalizer_recovers_known_normaliser():
    m_q, S_q, m_r, S_r = _pair()
    theta, log_q = _draw(m_q, S_q)
    for c in (0.0, 3.0, -7.5):
        log_z, ess = log_normalizer(-_energy(theta, m_r, S_r, c), log_q)
        assert log_z.shape == ess.shape == (1,)
        # Delta method: SE(log Z_hat) = sqrt((1/ESS_fraction - 1) / K).
        se = math.sqrt((1 / ess.item() - 1) / K)
        assert abs(log_z.item() - (-c)) < N_SE * se + 1e-9
    # Shifting the energy by a constant shifts log Z_hat by exactly minus it.
    log_z0, _ = log_normalizer(-_energy(theta, m_r, S_r), log_q)
    log_z1, _ = log_normalizer(-_energy(theta, m_r, S_r, 2.0), log_q)
    assert torch.allclose(log_z1, log_z0 - 2.0, atol=1e-10)


def test_defensive_proposal_recovers_the_normaliser_of_a_wider_proxy():
    # The proxy is wider than the flow (r / q unbounded): with flow samples alone the
    # estimate misses r's tails and is biased low; with half the samples from a wide
    # "prior" pi and the mixture density, it is unbiased again.
    m_q, S_q = torch.zeros(2, dtype=DTYPE), 0.25 * torch.eye(2, dtype=DTYPE)
    m_r, S_r = torch.zeros(2, dtype=DTYPE), 4.0 * torch.eye(2, dtype=DTYPE)
    pi = MultivariateNormal(torch.zeros(2, dtype=DTYPE), 9.0 * torch.eye(2, dtype=DTYPE))
    c = 1.5  # log Z = -c
    torch.manual_seed(0)
    theta_q, log_q = _draw(m_q, S_q, 1_000)
    biased, _ = log_normalizer(-_energy(theta_q, m_r, S_r, c), log_q)
    assert biased.item() < -c - 1.0  # flow samples see under e^-1 of r's mass

    k = K // 2
    theta_q, _ = _draw(m_q, S_q, k)
    theta = torch.cat([theta_q, pi.sample((k, 1))])
    q = MultivariateNormal(m_q, S_q)
    log_m = defensive_log_proposal(q.log_prob(theta), pi.log_prob(theta), 0.5)
    log_z, ess = log_normalizer(-_energy(theta, m_r, S_r, c), log_m)
    se = math.sqrt((1 / ess.item() - 1) / (2 * k))
    assert abs(log_z.item() - (-c)) < N_SE * se + 1e-9
    # The weights are bounded by 1 / a times r / pi: no collapse.
    assert ess.item() > 0.1


def test_defensive_proposal_is_the_mixture_density():
    log_q, log_pi = torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -2.0])
    expected = torch.log(0.75 * log_q.exp() + 0.25 * log_pi.exp())
    assert torch.allclose(defensive_log_proposal(log_q, log_pi, 0.25), expected)
    assert torch.equal(defensive_log_proposal(log_q, log_pi, 0.0), log_q)
    # -inf prior density (a flow sample on the support's boundary) leaves q's share.
    out = defensive_log_proposal(log_q, torch.full((2,), -math.inf), 0.5)
    assert torch.allclose(out, log_q + math.log(0.5))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"prior_fraction must be in \[0, 1\)"):
            defensive_log_proposal(log_q, log_pi, bad)


def test_log_normalizer_ess():
    m_q, S_q, _, _ = _pair()
    theta, log_q = _draw(m_q, S_q, 5_000)
    # Proxy equal to the flow: all weights equal, ESS fraction 1.
    _, ess = log_normalizer(-_energy(theta, m_q, S_q), log_q)
    assert ess.item() == pytest.approx(1.0, abs=1e-9)
    # Proxy far from the flow: importance-sampling collapse.
    far_m = torch.tensor([6.0, 6.0], dtype=DTYPE)
    _, ess = log_normalizer(-_energy(theta, far_m, 0.1 * torch.eye(2, dtype=DTYPE)), log_q)
    assert 1 / 5_000 <= ess.item() < 0.01


def test_log_normalizer_gradient_is_self_normalised_weights():
    psi = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    log_q = torch.tensor([[-1.0], [-2.0], [-0.5]])
    log_z, _ = log_normalizer((-psi).unsqueeze(-1), log_q)
    log_z.sum().backward()
    # d log Z / d E_k = -w_k with w = softmax(-E - log q).
    w = torch.softmax(-psi.detach() - log_q.squeeze(-1), 0)
    assert torch.allclose(psi.grad, -w)


def test_log_normalizer_detaches_log_q_and_handles_empty_support():
    log_q = torch.zeros(4, 2, requires_grad=True)
    psi = torch.zeros(4, 2, requires_grad=True)
    # -inf reached arithmetically (not by a `where`), so a NaN would reach psi.
    neg_energy = torch.tensor([[-math.inf, 0.0]] * 4) - psi
    log_z, ess = log_normalizer(neg_energy, log_q)
    assert torch.isneginf(log_z[0]) and log_z[1].item() == pytest.approx(0.0, abs=1e-7)
    assert ess.tolist() == [0.0, 1.0]
    log_z.sum().backward()
    assert log_q.grad is None  # log Z_hat is constant in the flow
    assert torch.isfinite(psi.grad).all()
    # S_tau of an x whose samples all have zero proxy density: +inf, finite gradient.
    log_q = torch.zeros(4, 2, requires_grad=True)
    value = srfe(log_q, -neg_energy.detach(), 0.5)
    assert torch.isposinf(value)
    value.backward()
    assert torch.isfinite(log_q.grad).all()


def test_log_normalizer_shape_errors():
    with pytest.raises(ValueError, match=r"\(K, B\)"):
        log_normalizer(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        log_normalizer(torch.zeros(3, 2), torch.zeros(2, 3))


def test_proxy_fit_is_proxy_nll():
    # C = E_D[E] + E_x log Z: for E = -log r + c and log Z = -c, C = E_D[-log r].
    m_q, S_q, m_r, S_r = _pair()
    theta = MultivariateNormal(m_q, S_q).sample((10,))
    C = proxy_fit(_energy(theta, m_r, S_r, 4.0), torch.full((10,), -4.0, dtype=DTYPE))
    exact = -MultivariateNormal(m_r, S_r).log_prob(theta).mean()
    assert C.item() == pytest.approx(exact.item(), abs=1e-10)


def test_reverse_kl_matches_closed_form():
    m_q, S_q, m_r, S_r = _pair()
    theta, log_q = _draw(m_q, S_q)
    c = 1.7
    energy = _energy(theta, m_r, S_r, c)
    estimate = reverse_kl(log_q, energy, torch.tensor([-c], dtype=DTYPE))
    exact = gaussian_kl(m_q, S_q, m_r, S_r)
    se = (log_q + energy).std().item() / math.sqrt(K)
    assert abs(estimate.item() - exact.item()) < N_SE * se
    # Without log Z the value is shifted by E_x log Z.
    assert reverse_kl(log_q, energy).item() == pytest.approx(estimate.item() + c, abs=1e-9)


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.8])
def test_srfe_matches_closed_form(tau):
    m_q, S_q, m_r, S_r = _pair()
    theta, log_q = _draw(m_q, S_q)
    c = -2.0
    energy = _energy(theta, m_r, S_r, c)
    estimate = srfe(log_q, energy, tau, torch.tensor([-c], dtype=DTYPE))
    # The proxy r is the one raised to tau: SRFE_tau(r || q).
    exact = gaussian_srfe(m_r, S_r, m_q, S_q, tau)
    # Delta method on log mean exp(tau l), l = log r - log q.
    a = torch.exp(tau * (-energy - c - log_q))
    se = (a.std() / (a.mean() * math.sqrt(K))).item() / (tau * (1 - tau))
    assert abs(estimate.item() - exact.item()) < N_SE * se
    # And it is not the other direction (SRFE_tau(q || r) = SRFE_{1-tau}(r || q),
    # the same at tau = 0.5).
    if tau != 0.5:
        assert abs(exact - gaussian_srfe(m_q, S_q, m_r, S_r, tau)).item() > 4 * N_SE * se


def test_srfe_batches_over_x():
    m_q, S_q, m_r, S_r = _pair()
    q = MultivariateNormal(torch.stack([m_q, m_q + 1]), S_q)
    theta = q.sample((K,))  # (K, 2, d)
    log_q = q.log_prob(theta)
    estimate = srfe(log_q, _energy(theta, m_r, S_r), 0.5, torch.zeros(2, dtype=DTYPE))
    exact = (
        gaussian_srfe(m_r, S_r, m_q, S_q, 0.5) + gaussian_srfe(m_r, S_r, m_q + 1, S_q, 0.5)
    ) / 2
    assert estimate.item() == pytest.approx(exact.item(), abs=0.02)


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 1.5])
def test_srfe_rejects_tau_outside_open_interval(tau):
    with pytest.raises(ValueError, match=r"tau must lie in the open interval \(0, 1\)"):
        srfe(torch.zeros(3, 2), torch.zeros(3, 2), tau)


# ---------------------------------------------------------------------------
# Gradients: the flow never sees log Z; the proxy's gradient is the divergence's
# ---------------------------------------------------------------------------


def _flow_gradients(objective, c, tau=0.5):
    m_q, S_q, m_r, S_r = _pair()
    mean = m_q.clone().requires_grad_()
    scale = torch.linalg.cholesky(S_q).requires_grad_()
    torch.manual_seed(1)
    eps = torch.randn(4_000, 3, 2, dtype=DTYPE)
    theta = mean + eps @ scale.T  # reparameterised, (K, B, d)
    log_q = MultivariateNormal(mean, scale_tril=scale).log_prob(theta)
    # log Z_hat on detached samples, as the trainer computes it.
    log_z, _ = log_normalizer(-_energy(theta.detach(), m_r, S_r, c), log_q)
    energy = _energy(theta, m_r, S_r, c)
    if objective == "reverse":
        value = reverse_kl(log_q, energy, log_z)
    else:
        value = srfe(log_q, energy, tau, log_z)
    g_mean, g_scale = torch.autograd.grad(value, (mean, scale))
    return value, g_mean, g_scale


@pytest.mark.parametrize("objective", ["reverse", "srfe"])
def test_flow_gradient_does_not_depend_on_log_z(objective):
    v0, gm0, gs0 = _flow_gradients(objective, 0.0)
    v1, gm1, gs1 = _flow_gradients(objective, 5.0)
    assert gm0.abs().sum() > 0.1  # the gradient is not trivially zero
    assert torch.allclose(gm0, gm1, atol=1e-10) and torch.allclose(gs0, gs1, atol=1e-10)
    assert v0.item() == pytest.approx(v1.item(), abs=1e-8)


@pytest.mark.parametrize("objective,tau", [("reverse", None), ("srfe", 0.3), ("srfe", 0.7)])
def test_proxy_gradient_matches_closed_form(objective, tau):
    # log Z_hat carries the proxy's gradient -E_r[grad E]: with it, grad_psi of the
    # estimator is the gradient of the exact divergence in the proxy's mean.
    m_q, S_q, m_r, S_r = _pair()
    theta, log_q = _draw(m_q, S_q)
    theta = theta.detach()
    mu = m_r.clone().requires_grad_()
    energy = _energy(theta, mu, S_r)
    log_z, _ = log_normalizer(-energy, log_q)
    if objective == "reverse":
        value = reverse_kl(log_q, energy, log_z)
        exact = gaussian_kl(m_q, S_q, mu, S_r)
    else:
        value = srfe(log_q, energy, tau, log_z)
        exact = gaussian_srfe(mu, S_r, m_q, S_q, tau)
    (g,) = torch.autograd.grad(value, mu)
    (g_exact,) = torch.autograd.grad(exact, mu)
    assert g_exact.abs().max() > 0.2
    # Monte Carlo error of a self-normalised mean with K = 2e5 is ~5e-3 here.
    assert torch.allclose(g, g_exact, atol=0.03)


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------


def _random_gaussian(d, generator):
    A = torch.randn(d, d, generator=generator, dtype=DTYPE)
    return torch.randn(d, generator=generator, dtype=DTYPE), A @ A.T + 0.5 * torch.eye(
        d, dtype=DTYPE
    )


def test_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    for d in (1, 3):
        m1, S1 = _random_gaussian(d, g)
        m2, S2 = _random_gaussian(d, g)
        exact = kl_divergence(MultivariateNormal(m1, S1), MultivariateNormal(m2, S2))
        assert gaussian_kl(m1, S1, m2, S2).item() == pytest.approx(exact.item(), rel=1e-10)


def test_gaussian_log_chernoff_matches_quadrature():
    # 1-D and 2-D grids: log of the integral of p^tau q^(1-tau).
    tau = 0.3
    m1, S1 = torch.tensor([0.4], dtype=DTYPE), torch.tensor([[0.5]], dtype=DTYPE)
    m2, S2 = torch.tensor([-1.0], dtype=DTYPE), torch.tensor([[2.0]], dtype=DTYPE)
    t = torch.linspace(-20, 20, 40_001, dtype=DTYPE).unsqueeze(-1)
    f = torch.exp(
        tau * MultivariateNormal(m1, S1).log_prob(t)
        + (1 - tau) * MultivariateNormal(m2, S2).log_prob(t)
    )
    numeric = torch.trapezoid(f, t.squeeze(-1)).log()
    assert gaussian_log_chernoff(m1, S1, m2, S2, tau).item() == pytest.approx(
        numeric.item(), abs=1e-8
    )

    tau = 0.65
    m_q, S_q, m_r, S_r = _pair()
    u = torch.linspace(-12, 12, 601, dtype=DTYPE)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1)
    f = torch.exp(
        tau * MultivariateNormal(m_r, S_r).log_prob(grid)
        + (1 - tau) * MultivariateNormal(m_q, S_q).log_prob(grid)
    )
    numeric = torch.trapezoid(torch.trapezoid(f, u, dim=-1), u).log()
    assert gaussian_log_chernoff(m_r, S_r, m_q, S_q, tau).item() == pytest.approx(
        numeric.item(), abs=1e-6
    )


def test_gaussian_srfe_limits_are_the_two_kls():
    # SRFE_tau(p || q), p raised to tau: tau -> 1 gives the forward KL(p || q),
    # tau -> 0 the reverse KL(q || p).
    m_q, S_q, m_r, S_r = _pair()
    kl_pq = gaussian_kl(m_r, S_r, m_q, S_q).item()
    kl_qp = gaussian_kl(m_q, S_q, m_r, S_r).item()
    assert abs(kl_pq - kl_qp) > 0.05  # the two directions differ here
    assert gaussian_srfe(m_r, S_r, m_q, S_q, 1 - 1e-4).item() == pytest.approx(kl_pq, rel=1e-2)
    assert gaussian_srfe(m_r, S_r, m_q, S_q, 1e-4).item() == pytest.approx(kl_qp, rel=1e-2)


def test_gaussian_srfe_properties():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        m1, S1 = _random_gaussian(3, g)
        m2, S2 = _random_gaussian(3, g)
        kl_pq = gaussian_kl(m1, S1, m2, S2)
        kl_qp = gaussian_kl(m2, S2, m1, S1)
        for tau in (0.05, 0.3, 0.5, 0.9):
            s = gaussian_srfe(m1, S1, m2, S2, tau)
            # Non-negative, bounded by min(KL(p||q) / tau, KL(q||p) / (1 - tau))
            # (SRFE paper, corollary 3.18), and SRFE_tau(p||q) = SRFE_{1-tau}(q||p).
            assert s > 0
            assert s <= torch.minimum(kl_pq / tau, kl_qp / (1 - tau)) + 1e-10
            assert s.item() == pytest.approx(
                gaussian_srfe(m2, S2, m1, S1, 1 - tau).item(), rel=1e-10
            )
        # Zero iff equal.
        assert gaussian_srfe(m1, S1, m1, S1, 0.4).abs().item() < 1e-10
    with pytest.raises(ValueError, match="tau"):
        gaussian_srfe(m1, S1, m2, S2, 1.0)


def test_gaussian_closed_forms_shape_errors():
    with pytest.raises(ValueError, match="S2 must have shape"):
        gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))


# ---------------------------------------------------------------------------
# Contrastive ratio loss
# ---------------------------------------------------------------------------


def test_contrastive_ratio_loss_minimiser_is_log_ratio():
    # theta ~ N(0, 1), x | theta ~ N(theta, s^2): log p(x|theta) / p(x) is quadratic,
    # so logistic regression on (1, x theta, theta^2, x^2) must recover its coefficients.
    s2 = 0.25
    n = 50_000
    theta = torch.randn(n, dtype=DTYPE)
    x = theta + math.sqrt(s2) * torch.randn(n, dtype=DTYPE)
    theta_m = torch.randn(n, dtype=DTYPE)
    x_m = x[torch.randperm(n)]

    def features(t, y):
        return torch.stack([torch.ones_like(t), y * t, t**2, y**2], -1)

    w = torch.zeros(4, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = contrastive_ratio_loss(features(theta, x) @ w, features(theta_m, x_m) @ w)
        loss.backward()
        return loss

    opt.step(closure)
    exact = torch.tensor(
        [0.5 * math.log((1 + s2) / s2), 1 / s2, -0.5 / s2, -0.5 / s2 + 0.5 / (1 + s2)],
        dtype=DTYPE,
    )
    # Logistic-regression standard errors at n = 5e4 are ~0.03-0.06 here.
    assert torch.allclose(w.detach(), exact, atol=0.25)
    assert contrastive_ratio_loss(torch.zeros(2), torch.zeros(5)).item() == pytest.approx(
        2 * math.log(2)
    )


# ---------------------------------------------------------------------------
# tau schedules
# ---------------------------------------------------------------------------


def test_tau_schedules_values():
    assert ConstantTau(0.3)(0.0) == ConstantTau(0.3)(1.0) == 0.3
    anneal = make_tau_schedule("anneal", tau_end=0.1)
    assert isinstance(anneal, LinearTau)
    assert anneal(0.0) == pytest.approx(0.9)
    assert anneal(0.5) == pytest.approx(0.5)
    assert anneal(1.0) == pytest.approx(0.1)
    assert anneal.at(25, 100) == pytest.approx(0.7)
    assert anneal.at(500, 100) == pytest.approx(0.1)  # clipped at the end
    reverse = make_tau_schedule("reverse")
    assert reverse(0.0) == pytest.approx(0.1) and reverse(1.0) == pytest.approx(0.9)
    step = make_tau_schedule("step", steps=[(0.0, 0.8), (0.5, 0.4), (0.75, 0.2)])
    assert isinstance(step, StepTau)
    assert [step(t) for t in (0.0, 0.49, 0.5, 0.8, 1.0)] == [0.8, 0.8, 0.4, 0.2, 0.2]
    assert StepTau([(0.5, 0.3)])(0.1) == 0.3  # before the first step: its value
    assert make_tau_schedule(0.25)(0.6) == 0.25
    assert make_tau_schedule("0.4")(0.6) == 0.4
    assert make_tau_schedule("constant", tau=0.6)(0.1) == 0.6
    assert make_tau_schedule(step) is step


def test_tau_schedules_errors():
    with pytest.raises(ValueError, match="tau must lie"):
        ConstantTau(1.0)
    with pytest.raises(ValueError, match="tau must lie"):
        make_tau_schedule("anneal", tau_start=1.2)
    with pytest.raises(ValueError, match="tau must lie"):
        make_tau_schedule(0.0)
    with pytest.raises(ValueError, match="fractions must be non-decreasing"):
        StepTau([(0.5, 0.3), (0.2, 0.4)])
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        StepTau([(1.5, 0.3)])
    with pytest.raises(ValueError, match="unknown tau schedule"):
        make_tau_schedule("cosine")
    with pytest.raises(ValueError, match=r"progress t must lie in \[0, 1\]"):
        LinearTau()(1.1)
    with pytest.raises(ValueError, match="total must be positive"):
        LinearTau().at(1, 0)


# ---------------------------------------------------------------------------
# Primal-dual pieces
# ---------------------------------------------------------------------------


def test_dual_update_rises_then_decays_to_zero():
    lam, F_bar, eps, alpha, lr = 0.0, 2.0, 0.1, 10.0, 0.5
    history = []
    for C in [3.0] * 5 + [1.0] * 20:  # violated, then slack
        u = resilient_slack(lam, alpha)
        assert u == pytest.approx(lam / alpha)
        lam = dual_update(lam, constraint_violation(C, F_bar, eps, u), lr)
        history.append(lam)
    assert all(b > a for a, b in zip(history[:4], history[1:5], strict=True))
    assert all(b <= a for a, b in zip(history[4:-1], history[5:], strict=True))
    assert history[-1] == 0.0 and min(history) == 0.0  # clipped, never negative


def test_resilient_dual_fixed_point():
    # With a constant violation v0 = C - F_bar - eps > 0, lambda <- lambda +
    # lr (v0 - lambda / alpha) converges to lambda* = alpha v0, i.e. u* = v0.
    lam, alpha, v0 = torch.tensor(0.0), 4.0, 0.3
    for _ in range(200):
        lam = dual_update(lam, constraint_violation(1.0 + v0, 1.0, 0.0, lam / alpha), lr=0.5)
    assert lam.item() == pytest.approx(alpha * v0, rel=1e-6)
    assert resilient_slack(lam, alpha).item() == pytest.approx(v0, rel=1e-6)


def test_primal_dual_errors_and_losses():
    with pytest.raises(ValueError, match="lr must be positive"):
        dual_update(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        resilient_slack(1.0, 0.0)
    assert resilient_slack(3.0, math.inf) == 0.0
    C = torch.tensor(2.0, requires_grad=True)
    assert not constraint_violation(C, 1.0).requires_grad
    lam = torch.tensor(0.5, requires_grad=True)
    loss = proxy_loss(torch.tensor(1.0), C, lam)
    loss.backward()
    assert loss.item() == 2.0 and C.grad.item() == 0.5 and lam.grad is None
    assert flow_loss(torch.tensor(1.0), torch.tensor(2.0)).item() == 3.0
    # The skewed variant weights R by beta in both primal losses.
    assert flow_loss(torch.tensor(1.0), torch.tensor(2.0), 0.25).item() == 1.5
    assert proxy_loss(torch.tensor(2.0), torch.tensor(2.0), 0.5, 0.25).item() == 1.5
    with pytest.raises(ValueError, match="weight must be >= 0"):
        flow_loss(torch.tensor(1.0), torch.tensor(2.0), -1.0)
    # L = F + R + alpha/2 u^2 + lambda (C - F_bar - eps - u)
    assert lagrangian(1.0, 2.0, 3.0, 1.5, 2.0, u=0.5, alpha=4.0, eps=0.25) == pytest.approx(
        1.0 + 2.0 + 0.5 + 2.0 * 0.75
    )


@pytest.mark.parametrize("tau", [None, 0.5])
def test_reverse_terms_split_the_gradients_and_leave_outside_samples_out(tau):
    from jsbi.objectives import reverse_terms, srfe

    torch.manual_seed(0)
    log_q = torch.randn(6, 3, requires_grad=True)
    energy = torch.randn(6, 3).abs().requires_grad_(True)
    log_z = torch.randn(3, requires_grad=True)
    R_flow, R_proxy, outside = reverse_terms(log_q, energy, log_z, tau=tau)
    assert outside == 0
    expected = reverse_kl(log_q, energy, log_z) if tau is None else srfe(log_q, energy, tau, log_z)
    assert torch.allclose(R_flow, expected) and torch.allclose(R_proxy, expected)
    # The flow's copy has no log Z gradient; the proxy's none through log q.
    assert torch.autograd.grad(R_flow, log_z, allow_unused=True)[0] is None
    assert torch.autograd.grad(R_proxy, log_q, allow_unused=True)[0] is None
    assert torch.autograd.grad(R_proxy, log_z)[0].abs().sum() > 0
    # Infinite energies: left out (a masked mean, or no term for an x all outside).
    e = energy.detach().clone()
    e[:, 0] = math.inf
    e[0, 1] = math.inf
    R_flow, R_proxy, outside = reverse_terms(log_q, e, None, tau=tau)
    assert outside == 7 and R_proxy is None and torch.isfinite(R_flow)
    if tau is None:
        keep = torch.isfinite(e)
        assert torch.allclose(R_flow, (log_q + e)[keep].mean())


def test_primal_losses_weigh_each_term_and_a_stopped_proxy_gets_no_loss():
    from jsbi.objectives import primal_losses

    F, R, fit, R_proxy = (torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0))
    flow, proxy = primal_losses(F, R, fit, R_proxy, lam=0.5, flow_weight=0.25, proxy_weight=2)
    assert (float(flow), float(proxy)) == (1.0 + 0.25 * 2.0, 0.5 * 3.0 + 2 * 4.0)
    flow, proxy = primal_losses(F, R, fit, forward=False)  # objective "reverse": R alone
    assert (float(flow), float(proxy)) == (2.0, 3.0)
    # fit None (proxy_patience ended it): no proxy loss, unless it shares the reverse term.
    assert primal_losses(F, R, None, R_proxy)[1] is None
    with pytest.raises(ValueError, match="needs its fit"):
        primal_losses(F, R, None, R_proxy, proxy_weight=1.0)
