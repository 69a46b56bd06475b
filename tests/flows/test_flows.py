from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

from jsbi.flows.conditional import FLOWS, build_conditional_flow, build_flow
from jsbi.flows.embeddings import MLPEmbedding, SetEmbedding

SMALL = {"hidden_features": (16,), "num_transforms": 2, "num_bins": 4}


def _mode(bounded: bool) -> str:
    # The support mode the older bounded=True / False spelled.
    return "transform" if bounded else "truncate"


def _data(n=64, d=2, m=3, box=True):
    prior = (
        BoxUniform(-torch.ones(d), torch.ones(d))
        if box
        else Independent(Normal(torch.zeros(d), torch.ones(d)), 1)
    )
    theta = prior.sample((n,))
    x = torch.cat([theta, theta[:, :1]], dim=1)[:, :m] + 0.1 * torch.randn(n, m)
    return prior, theta, x


@pytest.mark.parametrize("name", sorted(FLOWS))
@pytest.mark.parametrize("bounded", [True, False])
def test_shapes_and_consistency(name, bounded):
    prior, theta, x = _data()
    flow = build_conditional_flow(theta, x, prior, flow=name, support=_mode(bounded), **SMALL)
    assert flow.log_prob(theta[:5], x[:5]).shape == (5,)
    assert flow.log_prob(theta[:5], x[0]).shape == (5,)
    assert flow.sample((7,), x[:3]).shape == (7, 3, 2)
    assert flow.sample((7,), x[0]).shape == (7, 2)
    assert flow.embed(x[:4]).shape == (4, 3)
    samples, lp = flow.rsample_and_log_prob((6,), x[:3])
    assert samples.shape == (6, 3, 2) and lp.shape == (6, 3)
    # The density returned with the samples is the density of the samples.
    inside = flow.support.contains(samples) if bounded else torch.ones(6, 3, dtype=torch.bool)
    torch.testing.assert_close(
        lp.detach()[inside], flow.log_prob(samples.detach(), x[:3])[inside], atol=1e-3, rtol=1e-3
    )


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_gradients_reach_parameters_and_samples(name):
    prior, theta, x = _data()
    flow = build_conditional_flow(theta, x, prior, flow=name, **SMALL)
    x_in = x[:3].clone().requires_grad_(True)
    samples, lp = flow.rsample_and_log_prob((4,), x_in)
    (samples.sum() + lp.sum()).backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    # Reparameterised: the samples depend on x (through the flow), so x gets a gradient.
    assert x_in.grad is not None and x_in.grad.abs().sum() > 0


def test_bounded_no_mass_outside_box_and_minus_inf():
    prior, theta, x = _data(box=True)
    flow = build_conditional_flow(theta, x, prior, support="transform", **SMALL)
    s = flow.sample((2000,), x[0])
    assert ((s >= -1) & (s <= 1)).all()
    assert flow.log_prob(torch.tensor([[1.5, 0.0], [0.0, 0.0]]), x[0])[0] == -math.inf
    assert torch.isfinite(flow.log_prob(torch.tensor([[0.2, 0.0]]), x[0])).all()


@pytest.mark.parametrize("bounded", [True, False])
def test_density_integrates_to_one_1d(bounded):
    # A 1-D box prior on [0, 2]: the change of variables (sigmoid, affine, z-scoring) must
    # keep q normalised over theta itself.
    prior = BoxUniform(torch.zeros(1), 2 * torch.ones(1))
    theta = prior.sample((200,))
    x = theta + 0.3 * torch.randn(200, 1)
    flow = build_conditional_flow(theta, x, prior, support=_mode(bounded), **SMALL)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    lo, hi = (0.0, 2.0) if bounded else (-15.0, 15.0)
    grid = torch.linspace(lo, hi, 40_001)[1:-1, None]
    dens = flow.log_prob(grid, x[0]).exp().detach()
    mass = torch.trapezoid(dens, grid[:, 0]).item()
    assert abs(mass - 1.0) < 2e-2


def test_standardisation_stored_as_buffers():
    prior, theta, x = _data(n=500, box=False)
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    buffers = dict(flow.named_buffers())
    torch.testing.assert_close(buffers["theta_loc"], theta.mean(0))
    torch.testing.assert_close(buffers["theta_scale"], theta.std(0))
    torch.testing.assert_close(buffers["x_loc"], x.mean(0))
    torch.testing.assert_close(buffers["x_scale"], x.std(0))
    # Transformed: standardised in the unconstrained (logit) space.
    prior, theta, x = _data(n=500, box=True)
    flow = build_conditional_flow(theta, x, prior, support="transform", **SMALL)
    z = torch.logit((theta + 1) / 2)
    torch.testing.assert_close(flow.theta_loc, z.mean(0), atol=1e-4, rtol=1e-4)
    assert set(flow.state_dict()) >= {"theta_loc", "theta_scale", "x_loc", "x_scale"}


def test_local_standardisation_matches_plain_z_scoring_at_the_centre():
    # Box prior on [0, 2]^2: with z_score_theta="local" the map theta -> standardised
    # unconstrained value has slope 1 / sd(theta) at the mean of theta (plain z-scoring's),
    # while the default (independent) one is flatter (logit's spread is heavy-tailed).
    prior = BoxUniform(torch.zeros(2), 2 * torch.ones(2))
    theta = prior.sample((2000,))
    x = theta + 0.1 * torch.randn(2000, 2)
    m, sd, h = theta.mean(0), theta.std(0), 1e-3
    slopes = {}
    for mode in (True, "local"):
        flow = build_conditional_flow(
            theta, x, prior, z_score_theta=mode, support="transform", **SMALL
        )
        z = flow.to_unconstrained(torch.stack([m - h, m + h])) - flow.theta_loc
        slopes[mode] = (z[1] - z[0]) / flow.theta_scale / (2 * h)
        assert flow.config["z_score_theta"] == mode
    torch.testing.assert_close(slopes["local"], 1 / sd, rtol=1e-2, atol=0)
    assert (slopes[True] < 0.8 / sd).all()
    with pytest.raises(ValueError, match="mode must be 'independent' or 'local'"):
        flow.set_standardization(theta, mode="robust")


def test_set_embedding_permutation_invariant_and_mlp():
    emb = SetEmbedding(item_dim=2, out_features=5, hidden_features=(8,))
    x = torch.randn(4, 10 * 2)
    perm = torch.randperm(10)
    x_perm = x.reshape(4, 10, 2)[:, perm].reshape(4, 20)
    torch.testing.assert_close(emb(x), emb(x_perm), atol=1e-5, rtol=1e-5)
    # 5 learned features, then the mean and standard deviation of each item dimension.
    out = emb(x)
    assert out.shape == (4, 5 + 2 * 2)
    items = x.reshape(4, 10, 2)
    torch.testing.assert_close(out[:, 5:7], items.mean(1))
    torch.testing.assert_close(out[:, 7:], items.std(1, correction=0))
    assert SetEmbedding(2, 5, (8,), moments=False)(x).shape == (4, 5)
    with pytest.raises(ValueError, match="n_set"):
        emb(torch.randn(4, 7))
    assert MLPEmbedding(20, 6, (8,))(x).shape == (4, 6)


def test_embedding_is_used_and_trained():
    prior, theta, x = _data()
    emb = MLPEmbedding(3, 4, (8,))
    flow = build_conditional_flow(theta, x, prior, embedding_net=emb, **SMALL)
    assert flow.embed(x[:2]).shape == (2, 4)
    (-flow.log_prob(theta, x).mean()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in emb.parameters())
    bad = nn.Linear(3, 4)
    with pytest.raises(ValueError, match="embedding_net"):
        build_conditional_flow(theta, x, prior, embedding_net=nn.Sequential(bad, nn.Flatten(0)))


def test_flow_by_class_and_bad_names():
    import zuko

    prior, theta, x = _data()
    flow = build_conditional_flow(theta, x, prior, flow=zuko.flows.MAF, **SMALL)
    assert flow.sample((3,), x[0]).shape == (3, 2)
    with pytest.raises(ValueError, match="flow must be one of"):
        build_flow("nope", 2, 3)
    with pytest.raises(TypeError, match="flow must be"):
        build_flow(42, 2, 3)


def test_hidden_features_takes_sbis_single_width_and_rejects_nonsense():
    from jsbi.flows.conditional import _hidden_features

    assert _hidden_features(50, 5) == [50] * 5  # sbi's posterior_nn(hidden_features=50)
    assert _hidden_features((16, 8), 3) == [16, 8]
    for bad in ("wide", (0, 4), ()):
        with pytest.raises(ValueError, match="hidden_features must be a sequence of positive"):
            _hidden_features(bad, 2)


def _passes(flow) -> list[int]:
    return [t.passes for t in flow.flow.transform.transforms if hasattr(t, "passes")]


def test_passes_gives_coupling_transforms_recorded_in_the_config():
    from jsbi.flows.conditional import conditional_flow_from_config

    prior, theta, x = _data(d=5)
    # The default is sbi's: fully autoregressive, one pass per parameter.
    ar = build_conditional_flow(theta, x, prior, **SMALL)
    assert ar.config["flow_kwargs"] == {} and _passes(ar) == [5, 5]
    flow = build_conditional_flow(theta, x, prior, passes=2, **SMALL)
    assert flow.config["flow_kwargs"] == {"passes": 2} and _passes(flow) == [2, 2]
    # The config rebuilds the flow it was trained as, so its weights give the same density.
    rebuilt = conditional_flow_from_config(flow.config, prior)
    assert _passes(rebuilt) == [2, 2]
    rebuilt.load_state_dict(flow.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(theta[:8], x[:8]), flow.log_prob(theta[:8], x[:8]))
    # The coupling flow's samples have the density it reports.
    samples, lp = flow.rsample_and_log_prob((6,), x[:3])
    inside = flow.support.contains(samples)
    torch.testing.assert_close(
        lp.detach()[inside], flow.log_prob(samples.detach(), x[:3])[inside], atol=1e-3, rtol=1e-3
    )


@pytest.mark.parametrize("bins", [2, 10, 15])  # from 16 on it is torch's own
def test_the_splines_softmax_is_torchs(bins):
    from jsbi.flows.spline import softmax

    t = torch.randn(50, 4, bins) * torch.tensor([1.0, 10.0, 100.0, 1e4])[:, None]
    assert torch.allclose(softmax(t), torch.softmax(t, -1), atol=1e-6)
    assert torch.allclose(softmax(t).sum(-1), torch.ones(50, 4), atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"passes": 2}, {"randperm": True}])
def test_jsbis_nsf_is_zukos_with_the_same_weights(options):
    # Same modules, same log_prob, same draws, the same log density with a draw and the
    # same gradient of both, whether the inverse settles one parameter per pass (fully
    # autoregressive, or a random order) or one half (a coupling flow).
    import zuko

    from jsbi.flows.spline import NSF, _RankedInverse

    kwargs = {"features": 5, "context": 2, "bins": 10, "transforms": 3, **options}
    theirs = zuko.flows.NSF(**kwargs, hidden_features=(16, 16))
    ours = NSF(**kwargs, hidden_features=(16, 16))
    ours.load_state_dict(theirs.state_dict())  # the same modules: a saved flow loads
    assert FLOWS["nsf"] is NSF and isinstance(ours, zuko.flows.NSF)
    c, theta = torch.randn(100, 2), torch.randn(100, 5)
    assert torch.allclose(ours(c).log_prob(theta), theirs(c).log_prob(theta), atol=1e-4)
    assert all(isinstance(t, _RankedInverse) for t in ours(c).transform.transforms)
    draws, grads, log_qs = [], [], []
    for flow in (ours, theirs):
        context = c.clone().requires_grad_(True)
        torch.manual_seed(1)
        draw, log_q = flow(context).rsample_and_log_prob()
        ((draw**2).sum() + log_q.sum()).backward()
        draws.append(draw.detach())
        grads.append(context.grad)
        log_qs.append(log_q.detach())
    assert torch.allclose(draws[0], draws[1], atol=1e-4)
    # The log density that comes with a draw (from the inverse's own passes) is the flow's.
    assert torch.allclose(log_qs[0], log_qs[1], atol=1e-4)
    assert torch.allclose(log_qs[0], ours(c).log_prob(draws[0]), atol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-3, rtol=1e-3)
    # The inverse is the forward's: a draw maps back to its base point.
    z = ours(c).transform(draws[0])
    assert torch.allclose(ours(c).transform.inv(z), draws[0], atol=1e-4)
