from __future__ import annotations

import json
import warnings

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

import jsbi
from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import build_conditional_flow
from jsbi.methods.base import TrainingStep
from jsbi.methods.npe import NPEStep
from jsbi.simulators.base import wrap
from jsbi.training.loop import train

SMALL = {"hidden_features": (16,), "num_transforms": 1, "num_bins": 4}


def _gaussian_linear(n=300, sigma=0.5, seed=0):
    """theta ~ N(0, I_2), x = theta + sigma * eps; posterior N(x / (1 + sigma^2), ...)."""
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    sim = wrap(lambda t: t + sigma * torch.randn_like(t), prior)
    torch.manual_seed(seed)
    theta = prior.sample((n,))
    return prior, theta, sim(theta)


def _fit(prior, theta, x, seed=0, **kw):
    kw.setdefault("max_epochs", 3)
    est = PosteriorEstimator(prior, seed=seed, **SMALL)
    return est.fit(theta, x, show_progress_bar=False, **kw)


def test_history_json_and_fields():
    prior, theta, x = _gaussian_linear()
    post = _fit(prior, theta, x)
    h = post.history
    assert h["epoch"] == [1, 2, 3] and len(h["train_loss"]) == len(h["validation_loss"]) == 3
    assert h["num_train"] == 270 and h["num_validation"] == 30 and not h["interrupted"]
    assert h["best_validation_loss"] == min(h["validation_loss"])
    json.loads(json.dumps(h))


def test_determinism_same_seed_same_weights():
    prior, theta, x = _gaussian_linear()
    a, b = _fit(prior, theta, x, seed=3), _fit(prior, theta, x, seed=3)
    assert a.history["train_loss"] == b.history["train_loss"]
    for (k, p), q in zip(a.flow.state_dict().items(), b.flow.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    c = _fit(prior, theta, x, seed=4)
    assert c.history["train_loss"] != a.history["train_loss"]


def test_npe_learns_gaussian_linear_posterior_mean():
    # Analytic posterior: N(x / (1 + sigma^2), sigma^2 / (1 + sigma^2) I) = N(0.8 x, 0.2 I).
    prior, theta, x = _gaussian_linear(n=2000)
    est = PosteriorEstimator(prior, hidden_features=(32, 32), num_transforms=2, num_bins=8)
    post = est.fit(theta, x, max_epochs=40, learning_rate=2e-3, show_progress_bar=False)
    for x_o in (torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.5])):
        s = post.sample((4000,), x=x_o)
        # Tolerance 0.1 on the mean (posterior sd 0.45), 25% on the sd.
        torch.testing.assert_close(s.mean(0), 0.8 * x_o, atol=0.1, rtol=0)
        torch.testing.assert_close(s.std(0), torch.full((2,), 0.2**0.5), atol=0.11, rtol=0)


def test_bad_inputs():
    prior, theta, x = _gaussian_linear(n=100)
    est = PosteriorEstimator(prior, **SMALL)
    fit = lambda t, xx, **kw: est.fit(t, xx, max_epochs=1, show_progress_bar=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="same number of rows"):
        fit(theta, x[:50])
    with pytest.raises(ValueError, match=r"theta must have shape \(n, 2\)"):
        fit(torch.randn(100, 3), x)
    with pytest.raises(ValueError, match="x must have shape"):
        fit(theta, torch.randn(100, 2, 2))
    with pytest.raises(ValueError, match="too few training pairs"):
        fit(theta[:5], x[:5])
    with pytest.raises(ValueError, match="validation_fraction"):
        fit(theta, x, validation_fraction=1.5)
    with pytest.warns(UserWarning, match="x has dtype torch.int64"):
        fit(theta, x.round().long())
    x_bad = x.clone()
    x_bad[:7, 0] = float("nan")
    x_bad[7, 1] = float("inf")
    with pytest.warns(UserWarning, match="dropped 8 of 100"):
        post = fit(theta, x_bad)
    assert post.history["num_dropped"] == 8 and post.history["num_train"] == 83
    with pytest.raises(ValueError, match="apply to objective='srfe'"):
        PosteriorEstimator(prior, objective="jeffreys", tau=0.3)
    with pytest.raises(ValueError, match="not to objective='npe'"):
        PosteriorEstimator(prior, objective="npe", eps=0.1)
    with pytest.raises(ValueError, match="unknown method 'nope': did you mean 'npe'"):
        PosteriorEstimator(prior, objective="nope")


def test_theta_outside_box_prior_is_an_error():
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta = prior.sample((100,))
    theta[3] = 2.0
    with pytest.raises(ValueError, match="1 of 100 rows of theta lie outside"):
        PosteriorEstimator(prior, support="transform", **SMALL).fit(theta, theta, max_epochs=1)


def test_keyboard_interrupt_returns_best_posterior(monkeypatch):
    prior, theta, x = _gaussian_linear()
    calls = {"n": 0}
    original = NPEStep.step

    def step(self, t, xx):
        calls["n"] += 1
        if calls["n"] == 4:  # second batch of epoch 2 (270 pairs, batch 100: 2 per epoch)
            raise KeyboardInterrupt
        return original(self, t, xx)

    monkeypatch.setattr(NPEStep, "step", step)
    est = PosteriorEstimator(prior, **SMALL)
    with pytest.warns(UserWarning, match="interrupted at epoch 2"):
        post = est.fit(theta, x, batch_size=100, max_epochs=10, show_progress_bar=False)
    h = post.history
    assert h["interrupted"] and h["epoch"] == [1] and len(h["validation_loss"]) == 1
    assert post.sample((3,), x=x[0]).shape == (3, 2)


class _FrozenStep(TrainingStep):
    """Never updates: exercises the extension point, early stopping and logging."""

    def __init__(self, flow):
        self.flow = flow
        self.events = []

    def start(self, optimizers, info=None):
        super().start(optimizers, info)
        self.events.append(("start", info["num_train"]))

    def on_epoch_start(self, epoch):
        self.events.append(("epoch_start", epoch))

    def step(self, theta, x):
        return {"loss": 1.0, "foo": 2.0}

    def validate(self, theta, x):
        return {"bar": 3.0}

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch_end", epoch, logs["train_foo"]))


def test_extension_point_hooks_logging_and_early_stopping():
    prior, theta, x = _gaussian_linear(n=100)
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    step = _FrozenStep(flow)
    h = train(step, theta, x, stop_after_epochs=3, show_progress_bar=False)
    # The validation loss never improves after epoch 1: stop at 1 + patience.
    assert h["epochs_trained"] == 4 and h["converged"] and h["best_epoch"] == 1
    assert h["train_foo"] == [2.0] * 4 and h["validation_bar"] == [3.0] * 4
    assert step.events[:3] == [("start", 90), ("epoch_start", 1), ("epoch_end", 1, 2.0)]


def test_best_state_restored():
    prior, theta, x = _gaussian_linear(n=200)
    flow = build_conditional_flow(theta, x, prior, **SMALL)

    class Step(NPEStep):
        def on_epoch_start(self, epoch):
            if epoch > 1:
                with torch.no_grad():
                    for p in self.flow.parameters():
                        p.add_(2.0 * torch.randn_like(p))

        def step(self, t, xx):
            return {"loss": 0.0}

    h = train(Step(flow), theta, x, stop_after_epochs=3, show_progress_bar=False)
    assert h["best_epoch"] == 1 and min(h["validation_loss"][1:]) > h["validation_loss"][0]
    from jsbi.training.data import validation_nll

    g = torch.Generator().manual_seed(0)
    val = torch.randperm(200, generator=g)[:20]
    assert validation_nll(flow, theta[val], x[val]) == pytest.approx(h["validation_loss"][0])


def test_public_api_reexports():
    assert jsbi.PosteriorEstimator is PosteriorEstimator
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert callable(jsbi.load_posterior)


def test_train_accepts_sbi_names_and_names_what_it_lacks():
    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta = prior.sample((60,))
    est = PosteriorEstimator(prior, **SMALL).append_simulations(theta, theta + 0.1)
    post = est.train(max_num_epochs=2, training_batch_size=20, show_progress_bar=False)
    assert post.history["epochs_trained"] == 2
    with pytest.raises(TypeError, match="not both"):
        est.train(max_num_epochs=2, max_epochs=3)
    with pytest.raises(TypeError, match="retrain_from_scratch has no jsbi equivalent"):
        est.train(retrain_from_scratch=True)


def test_the_progress_bar_has_its_total_and_a_closing_summary(capsys):
    from jsbi.estimator import PosteriorEstimator

    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((60,))
    x = theta + 0.1 * torch.randn_like(theta)
    est = PosteriorEstimator(prior, hidden_features=(8,), num_transforms=1)
    with pytest.warns(UserWarning, match=r"training hit the epoch cap \(max_epochs=3\)"):
        est.fit(theta, x, max_epochs=3, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "/3 " in err  # the bar's total is the epoch cap
    # One summary line, after the bar.
    assert err.count("Training hit the epoch cap after 3 epochs (best ") == 1
    assert err.rstrip().endswith("returns the flow.")


def test_copy_state_is_an_independent_deep_copy_like_deepcopy():
    import copy

    from jsbi.training.state import copy_state

    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(8, 2)).sum().backward()
    opt.step()
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "best": (1.5, [2, "a"])}
    fast, slow = copy_state(state), copy.deepcopy(state)
    # The same structure and values as deepcopy's, the module's version metadata included.
    assert fast["net"]._metadata == state["net"]._metadata
    assert fast["best"] == slow["best"]
    assert fast["opt"]["param_groups"] == slow["opt"]["param_groups"]
    for key in state["net"]:
        assert torch.equal(fast["net"][key], slow["net"][key]), key
    for i, moments in state["opt"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(fast["opt"]["state"][i][name], value), (i, name)
    # Independent of the live weights: a later update does not reach the copy.
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert torch.equal(fast["net"]["0.weight"] + 1.0, net[0].weight)
    net.load_state_dict(fast["net"])
    opt.load_state_dict(fast["opt"])
    assert torch.equal(net[0].weight, slow["net"]["0.weight"])


@pytest.mark.parametrize("objective", ["npe", "jeffreys"])
def test_the_standardisation_reads_the_training_pairs_only(objective):
    # The validation pairs (early stopping, the choice) are held out of the z-scoring too,
    # as in sbi: shifted far off, they would move an all-pairs mean by 10.
    from jsbi.training.data import split_indices

    prior, theta, x = _gaussian_linear()
    val, tr = split_indices(len(theta), 0.1, 0)
    theta, x = theta.clone(), x.clone()
    theta[val] += 100.0
    x[val] += 100.0
    est = PosteriorEstimator(prior, objective=objective, seed=0, **SMALL)
    est.fit(theta, x, max_epochs=1, show_progress_bar=False)
    modules = [est.flow] + ([est.step.proxy] if objective != "npe" else [])
    for module in modules:
        torch.testing.assert_close(module.theta_loc, theta[tr].mean(0))
        torch.testing.assert_close(module.x_loc, x[tr].mean(0))
        torch.testing.assert_close(module.x_scale, x[tr].std(0))
