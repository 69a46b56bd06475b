from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
from sbi.utils import BoxUniform
from torch.distributions import (
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
    Uniform,
)

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import FLOWS, build_conditional_flow
from jsbi.flows.embeddings import SetEmbedding
from jsbi.posteriors.io import PosteriorLoadError, load_posterior
from jsbi.posteriors.posterior import Posterior

SMALL = {"hidden_features": (16,), "num_transforms": 2, "num_bins": 4}


def _mode(bounded: bool) -> str:
    # The support mode the older bounded=True / False spelled.
    return "transform" if bounded else "truncate"


def _posterior(prior=None, flow="nsf", bounded=True, embedding_net=None, n=64, m=3):
    prior = prior if prior is not None else BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((n,))
    x = torch.cat([theta, theta.sum(1, keepdim=True)], 1)[:, :m] + 0.1 * torch.randn(n, m)
    f = build_conditional_flow(
        theta, x, prior, flow=flow, support=_mode(bounded), embedding_net=embedding_net, **SMALL
    )
    with torch.no_grad():  # an untrained flow is near N(0, I): perturb it to be non-trivial
        for p in f.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return Posterior(f, prior, history={"train_loss": [1.0]}), theta, x


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_shapes(name):
    post, theta, x = _posterior(flow=name)
    assert post.sample((5,), x=x[0]).shape == (5, 2)
    assert post.sample((2, 3), x=x[:1]).shape == (2, 3, 2)
    assert post.sample_batched((4,), x=x[:6]).shape == (4, 6, 2)
    assert post.log_prob(theta[:7], x=x[0]).shape == (7,)
    assert post.log_prob(theta[:7], x=x[:7]).shape == (7,)
    assert post.log_prob_batched(theta[:12].reshape(2, 6, 2), x[:6]).shape == (2, 6)
    s, lp = post.sample_and_log_prob((9,), x=x[0])
    assert s.shape == (9, 2) and lp.shape == (9,)
    torch.testing.assert_close(lp, post.log_prob(s, x=x[0]), atol=1e-3, rtol=1e-3)
    m = post.map(x[0], num_init_samples=50, num_iter=5)
    assert m.shape == (1, 2) and post.prior.support.check(m).all()


def test_log_prob_pairwise_equals_loop_and_batched_equals_pairwise():
    post, theta, x = _posterior()
    pair = post.log_prob(theta[:5], x=x[:5])
    loop = torch.stack([post.log_prob(theta[i], x=x[i])[0] for i in range(5)])
    torch.testing.assert_close(pair, loop, atol=1e-4, rtol=1e-4)
    t = theta[:8].reshape(2, 4, 2)
    batched = post.log_prob_batched(t, x[:4])
    torch.testing.assert_close(batched[1], post.log_prob(t[1], x=x[:4]), atol=1e-4, rtol=1e-4)


def test_sample_batched_chunking_matches_shapes_and_distribution():
    post, theta, x = _posterior()
    torch.manual_seed(1)
    a = post.sample_batched((300,), x[:5], max_sampling_batch_size=7)
    assert a.shape == (300, 5, 2) and post.max_sampling_batch_size == 100_000
    torch.manual_seed(1)
    b = post.sample_batched((300,), x[:5])
    # Same flow, different chunking: the per-x means agree within Monte Carlo error.
    assert (a.mean(0) - b.mean(0)).abs().max() < 0.2


def test_default_x_and_bad_x():
    post, theta, x = _posterior()
    with pytest.raises(ValueError, match="x is required"):
        post.sample((2,))
    post.set_default_x(x[0])
    assert post.default_x.shape == (1, 3)
    assert post.sample((2,)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"one observation of shape \(3,\)"):
        post.sample((2,), x=x[:2])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        post.sample_batched((2,), x=x[0])
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 2\)"):
        post.log_prob(torch.zeros(4, 3), x=x[0])
    with pytest.raises(ValueError, match=r"theta must have shape \(n, 6, 2\)"):
        post.log_prob_batched(torch.zeros(4, 5, 2), x[:6])


def test_bounded_no_leakage_unbounded_rejects_and_reports():
    post, theta, x = _posterior(bounded=True)
    s = post.sample((3000,), x=x[0])
    assert post.prior.support.check(s).all() and post.last_leakage == 0.0
    assert post.leakage(x[0], 1000) == 0.0
    assert post.log_prob(torch.tensor([[3.0, 0.0]]), x=x[0])[0] == -math.inf
    # A narrow box: a flow on theta (bounded=False) has mass outside it.
    prior = BoxUniform(-0.5 * torch.ones(2), 0.5 * torch.ones(2))
    post, theta, x = _posterior(prior=prior, bounded=False)
    with torch.no_grad():
        post.flow.theta_scale.mul_(3.0)  # widen the flow so it leaks
    leak = post.leakage(x[0], 4000)
    assert 0.05 < leak < 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = post.sample((2000,), x=x[0])
        sb = post.sample_batched((500,), x[:3])
    assert prior.support.check(s).all() and prior.support.check(sb).all()
    assert post.last_leakage is not None and 0.05 < post.last_leakage < 1
    raw = post.sample((4000,), x=x[0], reject_outside_prior=False)
    assert not prior.support.check(raw).all()
    # The diagnostics' leakage is the posterior's own: the raw draws' share outside.
    outside = 1 - prior.support.check(raw).float().mean().item()
    from jsbi.diagnostics import leakage

    measured = leakage(post, x[:1], prior, 4000)
    assert measured.shape == (1,) and abs(measured.item() - outside) < 0.05
    assert post.log_prob(torch.tensor([[0.9, 0.0]]), x=x[0])[0] == -math.inf


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return torch.tanh(self.lin(x))


@pytest.mark.parametrize(
    "prior",
    [
        BoxUniform(-torch.ones(2), torch.ones(2)),
        Independent(Uniform(-torch.ones(2), 2 * torch.ones(2)), 1),
        Independent(Normal(torch.zeros(2), 2 * torch.ones(2)), 1),
        MultivariateNormal(torch.ones(2), torch.tensor([[1.0, 0.3], [0.3, 2.0]])),
    ],
    ids=["box", "indep_uniform", "indep_normal", "mvn"],
)
def test_save_load_round_trip(tmp_path, prior):
    post, theta, x = _posterior(prior=prior)
    post.set_default_x(x[1])
    path = tmp_path / "post.pt"
    post.save(path)
    loaded = load_posterior(path)
    torch.testing.assert_close(loaded.log_prob(theta, x=x), post.log_prob(theta, x=x))
    assert type(loaded.prior).__name__ == type(prior).__name__
    torch.testing.assert_close(loaded.prior.log_prob(theta), prior.log_prob(theta))
    assert loaded.history == {"train_loss": [1.0]} and torch.equal(loaded.default_x, x[1:2])


def test_save_load_embeddings_and_unsupported_prior(tmp_path):
    post, theta, x = _posterior(embedding_net=SetEmbedding(1, 4, (8,), 8))
    post.save(tmp_path / "set.pt")
    loaded = load_posterior(tmp_path / "set.pt")
    torch.testing.assert_close(loaded.log_prob(theta, x=x), post.log_prob(theta, x=x))

    post, theta, x = _posterior(embedding_net=_Custom())
    post.save(tmp_path / "custom.pt")
    with pytest.raises(ValueError, match="embedding_net="):
        load_posterior(tmp_path / "custom.pt")
    loaded = load_posterior(tmp_path / "custom.pt", embedding_net=_Custom())
    torch.testing.assert_close(loaded.log_prob(theta, x=x), post.log_prob(theta, x=x))

    prior = Independent(Gamma(2 * torch.ones(2), torch.ones(2)), 1)
    post, theta, x = _posterior(prior=prior)
    with pytest.warns(UserWarning, match="cannot be stored"):
        post.save(tmp_path / "gamma.pt")
    with pytest.raises(ValueError, match="prior="):
        load_posterior(tmp_path / "gamma.pt")
    loaded = load_posterior(tmp_path / "gamma.pt", prior=prior)
    torch.testing.assert_close(loaded.log_prob(theta, x=x), post.log_prob(theta, x=x))


def test_load_bad_files(tmp_path):
    post, theta, x = _posterior()
    good = tmp_path / "good.pt"
    post.save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name, match in [
        ("trunc.pt", "could not read"),
        ("junk.pt", "could not read"),
        ("foreign.pt", "not a jsbi posterior"),
        ("missing.pt", "no posterior file"),
    ]:
        with pytest.raises(PosteriorLoadError, match=match) as info:
            load_posterior(tmp_path / name)
        assert name in str(info.value) and isinstance(info.value, ValueError)


def test_sbi_run_sbc_and_run_tarp_accept_posterior():
    from sbi.diagnostics import run_sbc, run_tarp

    post, theta, x = _posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns that 20 pairs are few
        ranks, dap = run_sbc(
            theta[:20], x[:20], post, num_posterior_samples=50, show_progress_bar=False
        )
        assert ranks.shape == (20, 2) and dap.shape == (20, 2)
        assert ((ranks >= 0) & (ranks <= 50)).all()
        ecp, alpha = run_tarp(
            theta[:20], x[:20], post, num_posterior_samples=50, show_progress_bar=False
        )
    assert ecp.shape == alpha.shape and torch.all((ecp >= 0) & (ecp <= 1))


def test_jsbis_diagnostics_called_sbis_way_are_sbis():
    import sbi.diagnostics as sbi_diag

    import jsbi.diagnostics as diag

    post, theta, x = _posterior()
    kw = {"num_posterior_samples": 30, "show_progress_bar": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns that 20 pairs are few
        torch.manual_seed(5)
        ranks, dap = diag.run_sbc(theta[:20], x[:20], post, **kw)
        torch.manual_seed(5)
        ranks_sbi, dap_sbi = sbi_diag.run_sbc(theta[:20], x[:20], post, **kw)
        stats = diag.check_sbc(ranks, theta[:20], dap, 30)
        torch.manual_seed(5)
        ecp, alpha = diag.run_tarp(theta[:20], x[:20], post, **kw)
    assert torch.equal(ranks, ranks_sbi) and torch.equal(dap, dap_sbi)
    assert {"ks_pvals", "c2st_ranks", "c2st_dap"} <= set(stats)
    assert ecp.shape == alpha.shape
    # jsbi's order still gives jsbi's results; sbi's options there are an error.
    assert diag.run_sbc(post, theta[:20], x[:20], 30, seed=0).shape == (20, 2)
    with pytest.raises(TypeError, match=r"sbi's argument order, run_sbc\(thetas, xs"):
        diag.run_sbc(post, theta[:20], x[:20], 30, show_progress_bar=False)
    with pytest.raises(TypeError, match="sbi's order is check_sbc"):
        diag.check_sbc(ranks, 30, 5)


def test_a_posterior_with_a_default_x_is_a_distribution_sbi_accepts():
    from sbi.inference import NPE
    from sbi.utils.user_input_checks import process_prior
    from torch.distributions import Distribution

    from jsbi.diagnostics.baselines import NullTracker

    post, theta, x = _posterior()
    with pytest.raises(ValueError, match="x is required"):
        post.sample((3,))
    post.set_default_x(x[0])
    assert isinstance(post, Distribution)
    assert post.batch_shape == () and post.event_shape == (2,)
    assert post.support.check(theta).all() and not post.support.check(3 + theta).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained flow leaks
        assert post.sample((5,)).shape == (5, 2)
        assert post.log_prob(theta[:3]).shape == (3,)
        _, num_params, _ = process_prior(post)  # sbi's own check of a prior
        assert num_params == 2
        NPE(prior=post, logging_level="ERROR", tracker=NullTracker())
        # ... and jsbi's: the posterior as the next round's prior.
        again = PosteriorEstimator(post, **SMALL).fit(theta, x, max_epochs=1)
    assert again.prior is post


def test_sbis_ensemble_active_subspace_and_tarp_plot_take_jsbi_posteriors():
    import matplotlib

    matplotlib.use("Agg")
    from sbi.analysis import ActiveSubspace
    from sbi.inference.posteriors import EnsemblePosterior

    import jsbi.diagnostics as diag

    (a, theta, x), (b, _, _) = _posterior(), _posterior()
    x_o = x[0]
    ens = EnsemblePosterior([a, b])
    ens.set_default_x(x_o)
    # sbi's equal-weight mixture is the mean of the two densities.
    lp = ens.log_prob(theta[:4])
    mixture = torch.stack([a.log_prob(theta[:4], x=x_o), b.log_prob(theta[:4], x=x_o)])
    torch.testing.assert_close(lp, mixture.exp().mean(0).log(), rtol=1e-4, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ens.sample((10,)).shape == (10, 2)
        a.set_default_x(x_o)
        values, vectors = ActiveSubspace(a).find_directions(posterior_log_prob_as_property=True)
    assert values.shape == (2,) and vectors.shape == (2, 2)
    # sbi's plot_tarp(ecp, alpha) form.
    ecp = torch.linspace(0, 1, 11)
    fig, ax = diag.plot_tarp(ecp, ecp)
    assert len(ax.lines) >= 1


def test_build_posterior_takes_sbis_arguments():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((200,))
    est = PosteriorEstimator(prior, **SMALL)
    est.fit(theta, theta + 0.1 * torch.randn_like(theta), max_epochs=1, show_progress_bar=False)
    assert isinstance(est.build_posterior(prior=prior), Posterior)
    assert isinstance(est.build_posterior(density_estimator=est.flow), Posterior)
    with pytest.raises(ValueError, match="must be the estimator's prior"):
        est.build_posterior(prior=BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2)))
