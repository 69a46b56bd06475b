r"""Tests of the proxies (jsbi.proxies): shapes, the exact prior term, support handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Independent, LogNormal, MultivariateNormal, Normal, Uniform

from jsbi.objectives import log_normalizer, proxy_fit, reverse_kl, srfe
from jsbi.proxies.mlp import MLPEnergy
from jsbi.proxies.ratio import PriorTimesRatioEnergy

D, M, B, K = 3, 4, 5, 7


def _box(validate: bool = True):
    low, high = -torch.ones(D), 2 * torch.ones(D)
    return Independent(Uniform(low, high, validate_args=validate), 1, validate_args=validate)


PRIORS = {
    "box": _box,
    "normal": lambda: Independent(Normal(torch.zeros(D), torch.ones(D)), 1),
    "mvn": lambda: MultivariateNormal(torch.zeros(D), 2 * torch.eye(D)),
    "lognormal": lambda: Independent(
        LogNormal(torch.zeros(D), torch.ones(D), validate_args=True), 1, validate_args=True
    ),
}


def _energies():
    return {
        "mlp": MLPEnergy(D, M, hidden_features=(16, 16)),
        "prior-ratio": PriorTimesRatioEnergy(_box(), M, hidden_features=(16, 16), zero_init=False),
        "embedded": PriorTimesRatioEnergy(
            _box(),
            M,
            hidden_features=(16,),
            embedding=nn.Sequential(nn.Linear(M, 6), nn.Tanh()),
            zero_init=False,
        ),
    }


@pytest.mark.parametrize("name", ["mlp", "prior-ratio", "embedded"])
@pytest.mark.parametrize(
    "theta_shape,x_shape,out_shape",
    [
        ((B, D), (B, M), (B,)),
        ((K, B, D), (B, M), (K, B)),
        ((2, K, B, D), (B, M), (2, K, B)),
        ((K, B, D), (K, B, M), (K, B)),
        ((K, 1, D), (B, M), (K, B)),
        ((D,), (M,), ()),
    ],
)
def test_energy_shapes_and_gradients(name, theta_shape, x_shape, out_shape):
    energy = _energies()[name]
    theta = (0.5 * torch.rand(theta_shape)).requires_grad_()  # inside the box
    x = torch.randn(x_shape)
    e = energy(theta, x)
    assert e.shape == out_shape
    assert torch.isfinite(e).all()
    e.sum().backward()
    assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0
    grads = [p.grad for p in energy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sample_broadcasting_matches_loop():
    energy = _energies()["prior-ratio"]
    theta, x = 0.5 * torch.rand(K, B, D), torch.randn(B, M)
    batched = energy(theta, x)
    looped = torch.stack([energy(theta[k], x) for k in range(K)])
    assert torch.allclose(batched, looped, atol=1e-6)


def test_embedding_features_are_inferred():
    energy = _energies()["embedded"]
    assert energy.embedding_features == 6
    assert energy.network[0].in_features == D + 6


def test_shape_errors():
    energy = MLPEnergy(D, M)
    with pytest.raises(ValueError, match=rf"theta must have shape \(\.\.\., B, {D}\)"):
        energy(torch.zeros(B, D + 1), torch.zeros(B, M))
    with pytest.raises(ValueError, match=rf"x must have shape \(B, {M}\)"):
        energy(torch.zeros(B, D), torch.zeros(B, M + 1))
    with pytest.raises(ValueError, match="do not broadcast"):
        energy(torch.zeros(K, B, D), torch.zeros(B + 1, M))
    with pytest.raises(ValueError, match="theta_loc must have shape"):
        MLPEnergy(D, M, theta_loc=torch.zeros(D + 1))
    with pytest.raises(TypeError, match="prior must be a torch.distributions"):
        PriorTimesRatioEnergy("uniform", M)


@pytest.mark.parametrize("prior_name", list(PRIORS))
def test_prior_term_is_exact(prior_name):
    prior = PRIORS[prior_name]()
    energy = PriorTimesRatioEnergy(prior, M, zero_init=False)
    theta = prior.sample((K, B))
    x = torch.randn(B, M)
    log_prior = prior.log_prob(theta)
    # E + g = -log prior for any g.
    e, g = energy(theta, x), energy.log_ratio(theta, x)
    assert g.abs().max() > 0
    assert torch.allclose(e + g, -log_prior, atol=1e-5)
    # With the last layer zeroed (the default init), g = 0 and E = -log prior.
    with torch.no_grad():
        energy.network[-1].weight.zero_()
        energy.network[-1].bias.zero_()
    assert torch.allclose(energy(theta, x), -log_prior, atol=1e-6)
    fresh = PriorTimesRatioEnergy(prior, M)
    assert torch.allclose(fresh(theta, x), -log_prior, atol=1e-6)


def test_outside_support_is_inf_without_errors_or_nans():
    # Validating priors would raise on these points; the energy must not.
    for prior in (_box(validate=True), PRIORS["lognormal"]()):
        energy = PriorTimesRatioEnergy(prior, M, zero_init=False)
        theta = prior.sample((K, B))
        theta[0, :, 0] = -5.0  # outside both supports
        theta[1, 0, 1] = math.nan
        e = energy(theta, torch.randn(B, M))
        assert torch.isposinf(e[:2]).sum() == B + 1
        assert torch.isfinite(e[2:]).all()
    # The box's upper face: torch's Uniform gives -inf there, so it counts as outside;
    # its lower face is inside.
    energy = PriorTimesRatioEnergy(_box(), M)
    on_face = torch.tensor([[2.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    e = energy(on_face, torch.zeros(2, M))
    assert torch.isposinf(e[0]) and e[1].item() == pytest.approx(math.log(27.0))


def test_finite_outside_energy():
    energy = PriorTimesRatioEnergy(_box(), M, outside_energy=1e4, zero_init=False)
    theta = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    e = energy(theta, torch.zeros(2, M))
    assert e[0].item() == 1e4 and e[1].item() < 100
    e.sum().backward()
    assert theta.grad[0].abs().sum() == 0 and torch.isfinite(theta.grad).all()
    with pytest.raises(ValueError, match="outside_energy"):
        PriorTimesRatioEnergy(_box(), M, outside_energy=-math.inf)


def test_objectives_have_finite_gradients_with_samples_outside_support():
    # A flow leaking outside the prior's box: weights of outside samples are zero, and
    # no gradient (flow's or proxy's) may become NaN.
    energy = PriorTimesRatioEnergy(_box(), M, zero_init=False)
    mean = torch.zeros(D, requires_grad=True)
    scale = torch.ones(D, requires_grad=True)
    q = Independent(Normal(mean, scale), 1)
    theta = q.rsample((64, B))  # (K, B, D), part of it outside [-1, 2]^3
    log_q = q.log_prob(theta)
    x = torch.randn(B, M)
    e_detached = energy(theta.detach(), x)
    assert torch.isposinf(e_detached).any() and torch.isfinite(e_detached).any()
    log_z, ess = log_normalizer(-e_detached, log_q)
    assert torch.isfinite(log_z).all() and (ess > 0).all() and (ess <= 1).all()
    theta_data = _box().sample((B,))
    loss = srfe(log_q, energy(theta, x), 0.5, log_z) + proxy_fit(energy(theta_data, x), log_z)
    assert torch.isfinite(loss)
    loss.backward()
    for p in [mean, scale, *energy.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # The reverse KL is +inf (a leak is infinitely bad) but its gradients stay finite.
    mean.grad, scale.grad = None, None
    theta = q.rsample((64, B))
    r = reverse_kl(q.log_prob(theta), energy(theta, x), log_z.detach())
    assert torch.isposinf(r)
    r.backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(scale.grad).all()


def test_fit_standardization_and_state_dict():
    energy = MLPEnergy(D, M)
    theta = 10 + 3 * torch.randn(1000, D)
    x = -5 + 0.1 * torch.randn(1000, M)
    x[:, 0] = 1.0  # constant column: std set to 1
    assert energy.set_standardization(theta, x) is energy
    assert torch.allclose(energy.theta_loc, theta.mean(0))
    assert torch.allclose(energy.theta_scale, theta.std(0))
    assert energy.x_scale[0].item() == 1.0 and torch.allclose(energy.x_scale[1:], x[:, 1:].std(0))
    # The network sees standardised inputs: h(theta, x) = h0(z(theta), z(x)).
    plain = MLPEnergy(D, M)
    plain.network.load_state_dict(energy.network.state_dict())
    z_theta = (theta[:B] - energy.theta_loc) / energy.theta_scale
    z_x = (x[:B] - energy.x_loc) / energy.x_scale
    assert torch.allclose(energy(theta[:B], x[:B]), plain(z_theta, z_x), atol=1e-5)
    # Statistics travel with the state dict.
    clone = MLPEnergy(D, M)
    clone.load_state_dict(energy.state_dict())
    assert torch.allclose(clone(theta[:B], x[:B]), energy(theta[:B], x[:B]))
    # x statistics are kept when only theta is given.
    energy.set_standardization(theta[:10])
    assert torch.allclose(energy.x_loc, x.mean(0))
    with pytest.raises(ValueError, match=rf"theta must have shape \(N, {D}\)"):
        energy.set_standardization(torch.zeros(10, D + 1))


def test_mlp_energy_confinement():
    energy = MLPEnergy(D, M, confinement=2.0, zero_init=True)
    theta = torch.randn(K, B, D)
    assert torch.allclose(energy(theta, torch.randn(B, M)), theta.square().sum(-1))
    with pytest.raises(ValueError, match="confinement"):
        MLPEnergy(D, M, confinement=-1.0)


def test_the_standardisation_has_the_flows_names_and_old_files_load():
    prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
    theta, x = prior.sample((50,)), torch.randn(50, 3)
    energy = PriorTimesRatioEnergy(prior, dim_x=3).set_standardization(theta, x)
    assert torch.allclose(energy.x_loc, x.mean(0)) and energy.dim_theta == 2
    old = {
        k.replace("theta_loc", "theta_mean")
        .replace("theta_scale", "theta_std")
        .replace("x_loc", "x_mean")
        .replace("x_scale", "x_std"): v
        for k, v in energy.state_dict().items()
    }
    assert "x_mean" in old  # a state saved under the earlier buffer names
    again = PriorTimesRatioEnergy(prior, dim_x=3)
    again.load_state_dict(old)
    assert torch.equal(again.x_scale, energy.x_scale)
    assert torch.equal(again.fit_standardization(theta, x).theta_loc, energy.theta_loc)
