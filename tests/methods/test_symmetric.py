"""The adaptive Jeffreys / SRFE / reverse step (METHOD.md sections 4 and 6) end to end.

The pure math (objectives, energies) is tested in test_objectives.py and the proxies'
tests; here the step itself: histories, dual dynamics, tau schedules, warm-up, faults,
gradients.
"""

from __future__ import annotations

import math
import warnings
from unittest import mock

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import build_conditional_flow
from jsbi.flows.embeddings import MLPEmbedding
from jsbi.methods.config import SymmetricConfig
from jsbi.methods.symmetric import SymmetricStep
from jsbi.proxies.base import Proxy
from jsbi.proxies.build import ProxyConfig, build_proxy
from jsbi.training.loop import train
from tests.methods.conftest import start

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}
# These tests are of the joint schedule (METHOD.md section 4); npe-first is test_plans.py.
JOINT = {"proxy": "ratio", "schedule": "joint"}
ADAPTIVE_KEYS = ("train_F", "train_C", "train_R", "train_lambda", "train_u", "train_ess")


def _gaussian(n=300, sigma=0.5, seed=0):
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    return prior, theta, theta + sigma * torch.randn(n, 2, generator=g)


def _box(n=300, sigma=0.2, seed=0):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    return prior, theta, theta + sigma * torch.randn(n, 2, generator=g)


def _config(**kwargs):
    # The joint schedule with the ratio proxy, no warm-up and K = 4 unless said.
    options = {"schedule": "joint", "proxy": "ratio", "warmup_epochs": 0, "num_proxy_samples": 4}
    return SymmetricConfig.from_options({**options, **kwargs})


def _step(prior, theta, x, share_embedding=False, embedding_net=None, with_prior=None, **kwargs):
    torch.manual_seed(0)
    flow = build_conditional_flow(theta, x, prior, embedding_net=embedding_net, **SMALL)
    proxy_config = ProxyConfig("ratio", hidden_features=(16, 16), share_embedding=share_embedding)
    proxy = build_proxy(proxy_config, flow, prior, theta, x)
    return SymmetricStep(flow, proxy, _config(**kwargs), with_prior)


def _nan_equal(a, b) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(u) and math.isnan(v)) or u == v for u, v in zip(a, b, strict=True)
    )


# -- 1. every objective end to end ---------------------------------------------------------

CASES = [
    ("npe", {}),
    ("jeffreys", {}),
    ("srfe", {"tau": 0.3}),
    ("srfe", {"tau": 0.2, "tau_schedule": "anneal"}),
    ("reverse", {}),
    ("jeffreys", {"adaptive": False}),
    ("jeffreys", {"num_prior_samples": 4}),
]


@pytest.mark.parametrize("problem", [_gaussian, _box], ids=["gaussian", "box"])
@pytest.mark.parametrize("objective, kwargs", CASES, ids=[f"{o}-{k}" for o, k in CASES])
def test_every_objective_trains_end_to_end(problem, objective, kwargs):
    prior, theta, x = problem()
    warmup = 2
    if objective != "npe":
        kwargs = {"warmup_epochs": warmup, "num_proxy_samples": 4, "alpha": 2.0, **JOINT, **kwargs}
    est = PosteriorEstimator(prior, objective=objective, seed=0, **kwargs, **SMALL)
    post = est.fit(theta, x, max_epochs=5, learning_rate=1e-3, show_progress_bar=False)
    h = post.history
    assert h["objective"] == objective and h["epochs_trained"] == 5

    x_o = x[:3]
    samples = post.sample((50,), x=x_o[0])
    assert samples.shape == (50, 2) and torch.isfinite(samples).all()
    lp = post.log_prob(theta[:3], x=x_o[0])
    assert lp.shape == (3,) and torch.isfinite(lp).all()
    if problem is _box:
        assert (samples.abs() <= 1).all()

    if objective == "npe":
        assert not any(k in h for k in ADAPTIVE_KEYS)
        return
    post_warmup = slice(warmup, None)
    for key in ADAPTIVE_KEYS:
        values = h[key][post_warmup]
        assert len(values) == 3 and all(math.isfinite(v) for v in values), key
        assert all(math.isnan(v) for v in h[key][:warmup]) or key == "train_F", key
    assert all(math.isfinite(v) for v in h["train_contrastive"][:warmup])
    assert all(math.isnan(v) for v in h["train_contrastive"][post_warmup])
    assert all(0 < v <= 1 for v in h["train_ess"][post_warmup])
    assert ("train_tau" in h) == (objective == "srfe")

    lam, u = h["train_lambda"][post_warmup], h["train_u"][post_warmup]
    if kwargs.get("adaptive", True):
        # u = lambda / alpha per step, hence also for the epoch means.
        for lv, uv in zip(lam, u, strict=True):
            assert uv == pytest.approx(lv / 2.0, rel=1e-6)
        assert lam != [1.0] * 3  # the dual moved
    else:
        assert lam == [1.0] * 3 and u == [0.0] * 3


# -- 2. dual dynamics ----------------------------------------------------------------------


def _run_steps(step, theta, x, n_steps, batch_size=50):
    start(step)
    step.on_epoch_start(1)
    step.train()
    lams = []
    for i in range(n_steps):
        j = (i * batch_size) % len(theta)
        step.last_logs = logs = step.step(theta[j : j + batch_size], x[j : j + batch_size])
        assert logs["lambda"] == step.dual.value
        lams.append(step.dual.value)
    return lams


def test_dual_rises_when_violated_and_decays_when_slack():
    prior, theta, x = _gaussian()
    # eps = -50: C - F - eps - u is about 50 - u > 0, so lambda climbs towards ~alpha * 50.
    step = _step(prior, theta, x, eps=-50.0, dual_lr=0.01, alpha=10.0, lambda_init=0.0)
    lams = _run_steps(step, theta, x, 8)
    assert all(b > a for a, b in zip([0.0, *lams], lams, strict=False)), lams
    assert lams[-1] > 8 * 0.01 * 40  # each step adds about dual_lr * 50

    step = _step(prior, theta, x, eps=5.0, dual_lr=0.05, lambda_init=1.0)
    lams = _run_steps(step, theta, x, 8)
    assert lams[0] < 1.0 and all(b <= a for a, b in zip(lams, lams[1:], strict=False)), lams
    assert lams[-1] == 0.0

    # Hard constraint (alpha = inf): no slack, u = 0.
    step = _step(prior, theta, x, eps=-50.0, alpha=math.inf)
    _run_steps(step, theta, x, 2)
    assert step.dual.slack == 0.0 and step.dual.value > 1.0


def test_fixed_weight_ablation_keeps_lambda():
    prior, theta, x = _gaussian()
    step = _step(prior, theta, x, eps=-50.0, adaptive=False, lambda_init=0.7)
    assert _run_steps(step, theta, x, 4) == [0.7] * 4 and step.dual.slack == 0.0


def test_reverse_weight_scales_the_reverse_term():
    prior, theta, x = _gaussian()
    with pytest.raises(ValueError, match="reverse_weight must be finite and > 0"):
        _step(prior, theta, x, reverse_weight=0.0)
    step = _step(prior, theta, x, reverse_weight=0.25)
    start(step)
    step.on_epoch_start(1)
    logs = step.step(theta[:64], x[:64])
    assert logs["loss"] == pytest.approx(logs["F"] + 0.25 * logs["R"], rel=1e-5)


# -- 3. tau schedule -----------------------------------------------------------------------


def test_tau_schedules():
    prior, theta, x = _gaussian(n=200)
    common = {"objective": "srfe", "warmup_epochs": 1, "num_proxy_samples": 4, "seed": 0, **JOINT}
    est = PosteriorEstimator(
        prior,
        tau=0.2,
        tau_schedule="anneal",
        tau_epochs=4,
        **common,
        **SMALL,
    )
    tau = est.fit(theta, x, max_epochs=7, show_progress_bar=False).history["train_tau"]
    assert math.isnan(tau[0])  # warm-up: no reverse term
    # Epochs 2..6 run the schedule from 0.9 to 0.2 in 4 steps, then it stays at the end.
    torch.testing.assert_close(
        torch.tensor(tau[1:]), torch.tensor([0.9, 0.725, 0.55, 0.375, 0.2, 0.2]), rtol=0, atol=1e-6
    )
    est = PosteriorEstimator(prior, tau=0.3, **common, **SMALL)
    tau = est.fit(theta, x, max_epochs=4, show_progress_bar=False).history["train_tau"]
    assert tau[1:] == pytest.approx([0.3] * 3)


# -- 4. warm-up is never the best state -----------------------------------------------------


class _Worsening(SymmetricStep):
    """Spoils the flow when the reverse term switches on, so warm-up has the best NLL."""

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        if epoch == self.plan.warmup_epochs + 1:
            with torch.no_grad():
                for p in self.flow.parameters():
                    p.add_(torch.randn_like(p))


def test_warmup_epochs_are_not_selected():
    prior, theta, x = _gaussian()
    base = _step(prior, theta, x, warmup_epochs=3)
    step = _Worsening(base.flow, base.proxy, _config(warmup_epochs=3))
    h = train(step, theta, x, max_epochs=5, show_progress_bar=False)
    assert min(h["validation_loss"][:3]) < min(h["validation_loss"][3:])  # the trap is set
    assert h["best_epoch"] > 3
    assert h["best_validation_loss"] == min(h["validation_loss"][3:])


# -- 5. faults -----------------------------------------------------------------------------


class _NaNProxy(Proxy):
    """Returns NaN energies on the calls listed in ``bad`` (counted after warm-up)."""

    fit_name = "contrastive"

    def __init__(self, proxy, bad):
        super().__init__()
        self.inner = proxy
        self.bad = bad
        self.calls = 0
        self.armed = False

    def fit_loss(self, theta, x):
        return self.inner.fit_loss(theta, x)

    def forward(self, theta, x):
        energy = self.inner(theta, x)
        if self.armed:
            self.calls += 1
            if self.bad(self.calls):
                return energy * math.nan
        return energy


class _Arming(SymmetricStep):
    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self.proxy.armed = epoch > self.plan.warmup_epochs


def _faulty(prior, theta, x, bad, **kwargs):
    base = _step(prior, theta, x)
    return _Arming(base.flow, _NaNProxy(base.proxy, bad), _config(warmup_epochs=1, **kwargs))


@pytest.mark.parametrize("call", [1, 7], ids=["first-batch", "later-batch"])
def test_nonfinite_loss_restores_and_halves_the_step(call):
    prior, theta, x = _gaussian()
    step = _faulty(prior, theta, x, lambda c: c == call)
    with pytest.warns(UserWarning, match="restored the state.*halved the step") as caught:
        h = train(
            step,
            theta,
            x,
            max_epochs=4,
            batch_size=50,
            learning_rate=1e-3,
            show_progress_bar=False,
        )
    assert h["epochs_trained"] == 4  # one fault does not end training
    assert h["train_faults"][1] > 0 and h["train_faults"][2:] == [0.0, 0.0]
    assert sum("restored the state" in str(w.message) for w in caught) == 1
    assert step.optim.learning_rate("flow") == pytest.approx(5e-4)
    assert step.optim.learning_rate("proxy") == pytest.approx(5e-4)
    assert step.dual.lr == pytest.approx(0.025)
    assert all(math.isfinite(v) for v in h["validation_loss"])
    assert torch.isfinite(step.flow.log_prob(theta, x)).all()


def test_too_many_faults_stop_training_with_a_finite_flow():
    prior, theta, x = _gaussian()
    step = _faulty(prior, theta, x, lambda c: True, max_restores=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = train(step, theta, x, max_epochs=5, batch_size=50, show_progress_bar=False)
    messages = [str(w.message) for w in caught]
    assert sum("restored the state" in m for m in messages) == 2
    assert any("training stopped" in m and "2 restores" in m for m in messages), messages
    assert h["epochs_trained"] < 5
    assert torch.isfinite(step.flow.log_prob(theta, x)).all()


def test_dual_blow_up_stops_with_the_warm_up_state():
    # eps = -1000 drives lambda past max_lambda on the first adaptive batch, twice: one
    # restore, then a stop before any post-warm-up epoch finished. The flow returned must
    # be the last good (end of warm-up) state, not the one the blown-up step moved.
    prior, theta, x = _gaussian()

    def fit(max_epochs):
        est = PosteriorEstimator(
            prior,
            objective="jeffreys",
            **JOINT,
            warmup_epochs=1,
            num_proxy_samples=4,
            eps=-1000.0,
            max_restores=1,
            max_lambda=5.0,
            seed=0,
            **SMALL,
        )
        # Two batches per epoch, so both blow-ups fall in the first adaptive epoch.
        return est.fit(
            theta,
            x,
            max_epochs=max_epochs,
            batch_size=100,
            learning_rate=1e-3,
            show_progress_bar=False,
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = fit(4)
    messages = [str(w.message) for w in caught]
    assert any("dual variable lambda" in m and "restored the state" in m for m in messages)
    assert any("training stopped" in m for m in messages), messages
    assert post.history["epochs_trained"] == 1 and post.history["best_epoch"] == 0
    warm = fit(1)
    for (k, p), q in zip(
        post.flow.state_dict().items(), warm.flow.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), k
    assert torch.isfinite(post.log_prob(theta[:10], x=x[0])).all()
    assert torch.isfinite(post.sample((20,), x=x[0])).all()


def test_ess_collapse_is_counted():
    prior, theta, x = _gaussian(n=200)
    est = PosteriorEstimator(
        prior,
        objective="jeffreys",
        **JOINT,
        warmup_epochs=1,
        num_proxy_samples=4,
        min_ess=1.01,
        seed=0,
        **SMALL,
    )
    h = est.fit(theta, x, max_epochs=3, show_progress_bar=False).history
    assert math.isnan(h["train_collapsed"][0]) and h["train_collapsed"][1:] == [1.0, 1.0]


# -- 6. the flow's gradient does not see log Z ----------------------------------------------


class _Shifted(Proxy):
    """The same energy plus a parameter-free shift c(x): log Z moves by -c(x)."""

    fit_name = "contrastive"

    def __init__(self, proxy):
        super().__init__()
        self.inner = proxy

    def fit_loss(self, theta, x):
        return self.inner.fit_loss(theta, x)

    def forward(self, theta, x):
        return self.inner(theta, x) + 100.0 + 10.0 * x.sum(-1)


def _flow_grads(step, theta, x):
    start(step, clip_max_norm=None)
    step.on_epoch_start(1)
    torch.manual_seed(5)
    step.step(theta, x)
    return [p.grad.clone() for p in step.flow.parameters()]


def test_flow_gradient_does_not_depend_on_log_z():
    prior, theta, x = _gaussian(n=64)
    a = _step(prior, theta, x)
    b = _step(prior, theta, x)
    b.proxy = b.reverse.proxy = _Shifted(b.proxy)
    # A trained-looking proxy: random last layer (zero-init would make the ratio trivial).
    with torch.no_grad():
        for p, q in zip(a.proxy.parameters(), b.proxy.parameters(), strict=True):
            p.normal_(0, 0.3)
            q.copy_(p)

    # Expected: grad of F + mean(log q + E) on the same samples, with no log Z at all.
    torch.manual_seed(5)
    F = -a.flow.log_prob(theta, x).mean()
    theta_k, log_q_k = a.flow.rsample_and_log_prob((4,), x)
    R = (log_q_k + a.proxy(theta_k, x)).mean()
    expected = torch.autograd.grad(F + R, list(a.flow.parameters()), allow_unused=True)

    ga, gb = _flow_grads(a, theta, x), _flow_grads(b, theta, x)
    assert any(g.abs().sum() > 0 for g in ga)
    for e, u, v in zip(expected, ga, gb, strict=True):
        torch.testing.assert_close(u, torch.zeros_like(u) if e is None else e)
        torch.testing.assert_close(u, v)


# -- 7. a shared embedding belongs to the flow ---------------------------------------------


def test_shared_embedding_is_not_in_the_proxy_optimizer():
    prior, theta, x = _gaussian()
    embedding = MLPEmbedding(2, 4, hidden_features=(8,))
    step = _step(prior, theta, x, share_embedding=True, embedding_net=embedding, warmup_epochs=1)
    assert step.proxy.embedding is step.flow.embedding_net is embedding
    start(step)
    shared = {id(p) for p in embedding.parameters()}
    in_proxy = {id(p) for p in step.proxy.parameters()}
    optimizers = step.optim.optimizers
    in_proxy_opt = {id(p) for g in optimizers["proxy"].param_groups for p in g["params"]}
    in_flow_opt = {id(p) for g in optimizers["flow"].param_groups for p in g["params"]}
    assert shared <= in_proxy and shared <= in_flow_opt
    assert not shared & in_proxy_opt and in_proxy_opt == in_proxy - shared

    # With the flow's optimiser frozen, no step (warm-up or adaptive) moves the embedding.
    for g in optimizers["flow"].param_groups:
        g["lr"] = 0.0
    before = [p.clone() for p in embedding.parameters()]
    for epoch in (1, 2):  # warm-up, then adaptive
        step.on_epoch_start(epoch)
        step.step(theta[:100], x[:100])
    for p, q in zip(before, embedding.parameters(), strict=True):
        assert torch.equal(p, q)


# -- 8. determinism ------------------------------------------------------------------------


def _jeffreys_history(seed, global_seed):
    prior, theta, x = _gaussian(n=200)
    if global_seed is not None:
        torch.manual_seed(global_seed)
    est = PosteriorEstimator(
        prior,
        objective="jeffreys",
        warmup_epochs=1,
        num_proxy_samples=4,
        seed=seed,
        **JOINT,
        **SMALL,
    )
    return est.fit(theta, x, max_epochs=3, show_progress_bar=False).history


def test_same_seed_same_history():
    run = lambda seed: _jeffreys_history(seed, global_seed=0)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    keys = [k for k in a if k.startswith(("train_", "validation_"))]
    assert "train_lambda" in keys
    for k in keys:
        assert _nan_equal(a[k], b[k]), k
    assert not _nan_equal(a["train_R"], c["train_R"])


def test_seed_alone_fixes_the_history():
    a = _jeffreys_history(1, global_seed=None)
    b = _jeffreys_history(1, global_seed=None)  # the global RNG has moved on
    assert _nan_equal(a["train_loss"], b["train_loss"])


# -- 9. a bimodal posterior ----------------------------------------------------------------


def _bimodal(n, seed=0):
    """theta ~ U(-2, 2), x = theta^2 + 0.1 noise: p(theta | x = 1) has modes at +-1."""
    prior = BoxUniform(-2 * torch.ones(1), 2 * torch.ones(1))
    g = torch.Generator().manual_seed(seed)
    theta = 4 * torch.rand(n, 1, generator=g) - 2
    return prior, theta, theta**2 + 0.1 * torch.randn(n, 1, generator=g)


def _mode_balance(objective, n, epochs, **kwargs):
    prior, theta, x = _bimodal(n)
    est = PosteriorEstimator(
        prior,
        objective=objective,
        **(JOINT if objective != "npe" else {}),
        seed=0,
        hidden_features=(32, 32),
        num_transforms=2,
        num_bins=8,
        **kwargs,
    )
    post = est.fit(
        theta, x, max_epochs=epochs, learning_rate=2e-3, batch_size=100, show_progress_bar=False
    )
    s = post.sample((2000,), x=torch.tensor([1.0]))
    near = ((s.abs() - 1).abs() < 0.3).float().mean().item()
    return (s > 0).float().mean().item(), near


def test_jeffreys_covers_both_modes():
    positive, near = _mode_balance("jeffreys", 1000, 25, warmup_epochs=5)
    assert 0.2 < positive < 0.8
    assert near > 0.6


def test_prior_samples_need_the_prior():
    prior, theta, x = _box()
    with pytest.raises(ValueError, match="num_prior_samples > 0 needs the prior"):
        _step(prior, theta, x, num_prior_samples=2)
    step = _step(prior, theta, x)
    with pytest.raises(ValueError, match="num_prior_samples must be an int >= 0"):
        _config(num_prior_samples=-1)
    # With M prior samples the ESS fraction is over K + M samples, and so is its floor.
    step = SymmetricStep(step.flow, step.proxy, _config(num_prior_samples=4), prior)
    assert step.plan.min_ess == pytest.approx(1.5 / 8)
    # The M prior draws per observation really enter every step's importance sampler.
    with mock.patch.object(prior, "sample", wraps=prior.sample) as draw:
        _run_steps(step, theta, x, 2)
    assert [c.args for c in draw.call_args_list] == [((4, 50),)] * 2
    assert 1 / 8 <= step.last_logs["ess"] <= 1
