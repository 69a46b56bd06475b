"""The npe-first schedule and the gate (METHOD.md section 4b)."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import build_conditional_flow
from jsbi.methods.config import SymmetricConfig
from jsbi.methods.symmetric import SymmetricStep
from jsbi.proxies.likelihood import LikelihoodEnergy
from jsbi.seeding import seeded
from jsbi.training.data import split_indices
from jsbi.training.loop import train
from tests.methods.conftest import start

SMALL = {"hidden_features": (16, 16), "num_transforms": 1, "num_bins": 4}
FIT = {"max_epochs": 200, "stop_after_epochs": 3, "learning_rate": 3e-3}


def _box(n=300, seed=0):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    return prior, theta, theta + 0.2 * torch.randn(n, 2, generator=g)


def _fit(prior, theta, x, objective="npe", **kwargs):
    est = PosteriorEstimator(prior, objective=objective, seed=0, **kwargs, **SMALL)
    return est, est.fit(theta, x, show_progress_bar=False, **FIT)


@pytest.mark.parametrize("objective", ["jeffreys", "distill", "srfe"])
def test_npe_first_phase_one_is_npe_and_the_result_is_never_worse(objective):
    prior, theta, x = _box()
    _, npe = _fit(prior, theta, x)
    _, sym = _fit(
        prior,
        theta,
        x,
        objective,
        proxy="likelihood",
        schedule="npe-first",
        gate=False,  # phase 2 runs whatever the proxy's fit
        num_proxy_samples=2,
        proxy_options=SMALL,
    )
    h, h_npe = sym.history, npe.history
    phases = h["train_phase"]
    n1 = phases.count(1.0)
    # Phase 1 is npe itself (same weights, same validation losses), up to npe's stop.
    assert n1 == h_npe["epochs_trained"]
    assert h["validation_loss"][:n1] == h_npe["validation_loss"]
    assert phases[n1:] and set(phases[n1:]) == {2.0}
    assert all(math.isfinite(v) for v in h["train_R"][n1:])
    # The returned state is the best over both phases: never worse than phase 1's.
    assert h["best_validation_loss"] <= h_npe["best_validation_loss"]
    assert h["best_validation_loss"] == min(h["validation_loss"])
    assert h["best_phase"] == phases[h["best_epoch"] - 1]


def test_a_run_stopped_at_the_switch_returns_its_best_epochs_flow_and_proxy():
    # The returned state is one epoch's, flow and proxy together: with phase2=False, the
    # proxy as it was at the flow's best epoch (its own validation fit that epoch's), not
    # its own best fit, which is another epoch here.
    prior, theta, x = _box()
    est, post = _fit(prior, theta, x, "jeffreys", phase2=False, num_proxy_samples=2)
    h = post.history
    fits = h["validation_proxy_fit"]
    best_own = min(range(len(fits)), key=fits.__getitem__)
    assert h["best_phase"] == 1 and best_own != h["best_epoch"] - 1  # the case that matters
    step = est.step
    with seeded(0, [theta.device]), torch.no_grad():
        final = float(step.proxy.fit_loss(*step._validation))
    assert final == pytest.approx(fits[h["best_epoch"] - 1], abs=1e-5)
    assert final != pytest.approx(fits[best_own], abs=1e-3)


class _BrokenLikelihood(LikelihoodEnergy):
    # Never learns: its fit has no gradient, so the proxy stays a random flow.
    def fit_loss(self, theta, x):
        return 0.0 * super().fit_loss(theta, x)


def test_the_gate_keeps_a_broken_proxy_away_and_the_flow_is_npes():
    prior, theta, x = _box()
    npe_est, npe = _fit(prior, theta, x)

    # The estimator's initial flow, standardised on its training pairs.
    _, tr = split_indices(len(theta), 0.1, 0)
    torch.manual_seed(0)
    flow = build_conditional_flow(theta[tr], x[tr], prior, **SMALL)
    broken = _BrokenLikelihood(prior, 2, **SMALL).set_standardization(theta[tr], x[tr])
    step = SymmetricStep(flow, broken, SymmetricConfig(num_proxy_samples=2), prior)
    history = train(step, theta, x, seed=0, **FIT)
    switch = history["phase2_start"]
    assert switch["gate"] == 0.0 and switch["proxy_minus_flow"] > 0
    assert history["phase2_skipped"] and set(history["train_phase"]) == {1.0}
    assert history["best_phase"] == 1
    assert history["validation_loss"] == npe.history["validation_loss"]
    for name, value in npe_est.flow.state_dict().items():
        torch.testing.assert_close(flow.state_dict()[name], value, rtol=0, atol=0)


def test_reverse_samples_outside_the_support_are_counted_never_nan():
    # An unbounded flow on a box prior leaks; the likelihood proxy's energy is +inf there.
    prior, theta, x = _box()
    _, post = _fit(
        prior,
        theta,
        x,
        "jeffreys",
        support="truncate",
        proxy="likelihood",
        schedule="npe-first",
        gate=False,
        num_proxy_samples=8,
        proxy_options=SMALL,
    )
    h = post.history
    phase2 = [i for i, p in enumerate(h["train_phase"]) if p == 2.0]
    assert phase2 and sum(h["train_outside"][i] for i in phase2) > 0
    for key in ("train_loss", "train_F", "train_R", "validation_loss"):
        assert all(math.isfinite(h[key][i]) for i in phase2), key
    assert h["train_faults"][phase2[0]] == 0.0


def test_schedule_options_are_checked_at_construction():
    prior, theta, x = _box()
    with pytest.raises(ValueError, match="schedule"):
        PosteriorEstimator(prior, objective="jeffreys", schedule="npe-last")
    with pytest.raises(ValueError, match="proxy"):
        PosteriorEstimator(prior, objective="jeffreys", proxy="likelihod")
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    proxy = LikelihoodEnergy(prior, 2, **SMALL)
    with pytest.raises(ValueError, match="the gate"):
        SymmetricStep(flow, proxy, SymmetricConfig(), None)
    with pytest.raises(ValueError, match="num_proxy_samples must be >= 2"):
        SymmetricConfig(objective="srfe", num_proxy_samples=1)
    with pytest.raises(ValueError, match="eps must be finite"):
        SymmetricConfig(schedule="joint", eps=math.nan)
    with pytest.raises(ValueError, match="eps, warmup_epochs apply to schedule='joint'"):
        SymmetricConfig(eps=0.1, warmup_epochs=2)
    with pytest.raises(ValueError, match="dual_lr apply to schedule='joint'"):
        PosteriorEstimator(prior, objective="jeffreys", dual_lr=0.1)  # at construction
    with pytest.raises(ValueError, match="phase2_patience"):
        SymmetricConfig(phase2_patience=0)


def test_auto_returns_the_proxy_ahead_by_one_standard_error_else_the_mixture():
    from jsbi.posteriors.proxy import auto_choice
    from jsbi.posteriors.proxy import candidates_per_sample as _candidates_per_sample

    def measured(gap, se, ess):
        return {"proxy_minus_flow": gap, "proxy_minus_flow_se": se, "proxy_ess": ess}

    assert auto_choice(measured(-0.263, 0.143, 0.183)) == "proxy"  # two_moons, 1,000: 1.8 se
    assert auto_choice(measured(-0.162, 0.077, 0.076)) == "proxy"  # slcp, 10,000: a low ESS
    assert auto_choice(measured(-0.1, 0.143, 0.5)) == "mixture"  # within one se
    assert auto_choice(measured(0.023, 0.018, 0.4)) == "mixture"  # the flow ahead by 1.3 se
    assert auto_choice(measured(-1.0, 0.1, 0.01)) == "flow"  # too low an ESS to sample it
    assert auto_choice(measured(math.nan, math.nan, math.nan)) == "flow"
    assert auto_choice(None) == "flow"  # not measured: the proxy was abandoned
    # A flow to recalibrate (recalibrate=True): the flow where the mixture would be.
    assert auto_choice(measured(0.023, 0.018, 0.4), mixture=False) == "flow"
    assert auto_choice(measured(-0.263, 0.143, 0.183), mixture=False) == "proxy"
    assert [_candidates_per_sample(measured(-1, 0.1, e)) for e in (0.5, 0.076, 0.021)] == [
        10,
        14,
        48,
    ]
    assert _candidates_per_sample(None) == 10 and _candidates_per_sample(measured(0, 0, 0.0)) == 10


def test_the_proxy_as_the_posterior_samples_and_round_trips(tmp_path):
    from jsbi.posteriors import MixturePosterior, Posterior
    from jsbi.posteriors.io import load_posterior
    from jsbi.posteriors.proxy import ProxyPosterior

    prior, theta, x = _box(n=400)
    est, post = _fit(
        prior,
        theta,
        x,
        "jeffreys",
        proxy="likelihood",
        schedule="npe-first",
        posterior="auto",
        num_proxy_samples=2,
        proxy_options=SMALL,
    )
    h = post.history
    m = h["final_proxy"]
    usable = m["proxy_ess"] >= 0.02
    wins = usable and m["proxy_minus_flow"] + m["proxy_minus_flow_se"] < 0
    assert h["posterior"] == ("proxy" if wins else "mixture" if usable else "flow")
    assert type(post) is (ProxyPosterior if wins else MixturePosterior if usable else Posterior)
    # The mixture's own measurement: never worse than the better member by log 2 or more.
    assert m["mixture_minus_flow"] < min(0.0, m["proxy_minus_flow"]) + math.log(2)
    # With a flow to recalibrate, auto returns the flow where it would return the mixture.
    est._recalibrate = True
    assert type(est.build_posterior()) is (ProxyPosterior if wins else Posterior)
    est._recalibrate = False
    # The proxy resamples from about 1 / ESS fraction proposal draws per sample, 10 to 50
    # (asked for whatever auto chose).
    est.method = est.method.replace(posterior="proxy")
    forced = est.build_posterior()
    assert isinstance(forced, ProxyPosterior) and h["posterior"] == "proxy"
    assert forced.candidates_per_sample == min(50, max(10, math.ceil(1 / m["proxy_ess"])))
    est.method = est.method.replace(posterior="mixture")
    mixed = est.build_posterior()
    assert type(mixed) is MixturePosterior and h["posterior"] == "mixture"
    assert mixed.candidates_per_sample == forced.candidates_per_sample
    proxy_post = ProxyPosterior(
        est.flow,
        est.step.proxy,
        prior,
        candidates_per_sample=1,
        max_candidates_per_sample=60,
        ess_per_sample=1.5,
        history=h,
        sampler="importance",
    )
    x_o = x[0]
    samples = proxy_post.sample((300,), x=x_o)
    assert samples.shape == (300, 2) and (samples.abs() <= 1).all()
    # 300 candidates have an ESS below 450: it grew with extra ones (at most 60 per sample).
    assert proxy_post.last_ess >= 450 and proxy_post.last_leakage == 0.0
    with pytest.raises(ValueError, match="max_candidates_per_sample must be >= "):
        ProxyPosterior(est.flow, est.step.proxy, prior, max_candidates_per_sample=5)
    lp = proxy_post.log_prob(samples[:5], x=x_o)
    assert torch.isfinite(lp).all()
    assert torch.isinf(proxy_post.log_prob(torch.tensor([[1.5, 0.0]]), x=x_o)).all()
    # The density integrates to one over the box (a grid, 2-D).
    g = torch.linspace(-1 + 1e-3, 1 - 1e-3, 120)
    grid = torch.cartesian_prod(g, g)
    mass = proxy_post.log_prob(grid, x=x_o).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.05)
    path = tmp_path / "proxy.pt"
    proxy_post.save(path)
    loaded = load_posterior(path)
    assert isinstance(loaded, ProxyPosterior) and loaded.max_candidates_per_sample == 60
    assert loaded.ess_per_sample == 1.5
    torch.testing.assert_close(loaded.log_prob(samples[:5], x=x_o), lp)
    with pytest.raises(ValueError, match="posterior must be"):
        PosteriorEstimator(prior, objective="jeffreys", posterior="best")
    with pytest.raises(ValueError, match="applies to the symmetric objectives"):
        PosteriorEstimator(prior, posterior="proxy")
    # The default: auto's choice where the proxy is the likelihood one, the flow otherwise.
    defaults = {
        ("jeffreys", None): "auto",
        ("srfe", None): "auto",
        ("distill", None): "auto",
        ("jeffreys", "ratio"): "flow",
        ("reverse", None): "flow",
        ("reverse", "likelihood"): "auto",
        ("npe", None): "flow",
    }
    for (objective, proxy), expected in defaults.items():
        kw = {} if proxy is None else {"proxy": proxy}
        assert PosteriorEstimator(prior, objective=objective, **kw).method.returns == expected


def _npe_first_step(**options):
    r"""A fresh npe-first step with the likelihood proxy on the box pairs, started."""
    prior, theta, x = _box()
    torch.manual_seed(0)
    flow = build_conditional_flow(theta, x, prior, **SMALL)
    proxy = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(theta, x)
    step = SymmetricStep(flow, proxy, SymmetricConfig.from_options(options), prior)
    start(step)
    return step, flow, proxy, prior, theta, x


def test_a_gated_off_phase_two_step_is_an_npe_step_without_reverse_samples():
    step, flow, _, _, theta, x = _npe_first_step(num_proxy_samples=2)
    step.state.phase, step.state.symmetric_from, step.state.epoch = 2, 0, 1
    calls = []
    sample = flow.rsample_and_log_prob
    flow.rsample_and_log_prob = lambda *a, **k: calls.append(1) or sample(*a, **k)
    step.state.gate = 0.0
    logs = step.step(theta[:50], x[:50])
    assert not calls and logs["gate"] == 0.0 and logs["phase"] == 2.0
    assert logs["loss"] == logs["F"] and "R" not in logs
    step.state.gate = 1.0
    logs = step.step(theta[:50], x[:50])
    assert calls and math.isfinite(logs["R"])


def test_the_gates_mass_inside_comes_from_the_importance_samplers_flow_draws():
    from jsbi.proxies.importance import proxy_nll

    prior, theta, x = _box()
    flow = build_conditional_flow(theta, x, prior, support="truncate", **SMALL)
    proxy = LikelihoodEnergy(prior, 2, **SMALL).set_standardization(theta, x)
    torch.manual_seed(1)
    nll, ess = proxy_nll(proxy, flow, prior, theta[:20], x[:20], num_samples=64)
    torch.manual_seed(1)
    nll2, ess2, mass = proxy_nll(
        proxy, flow, prior, theta[:20], x[:20], num_samples=64, inside=flow.support.contains
    )
    # The same draws (the membership test draws nothing), one more output.
    torch.testing.assert_close(nll, nll2)
    torch.testing.assert_close(ess, ess2)
    assert mass.shape == (20,) and ((0 <= mass) & (mass <= 1)).all()
    # The share of 32 flow draws inside: against a separate 4,000-draw estimate.
    with torch.no_grad():
        draws = flow.sample((4000,), x[:20])
    exact = flow.support.contains(draws).float().mean(0)
    assert (mass - exact).abs().max() < 4 * math.sqrt(0.25 / 32)


def test_building_the_prior_density_leaves_the_random_stream_alone():
    from jsbi.proxies.base import PriorLogDensity

    prior, _, _ = _box()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    PriorLogDensity(prior)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("objective", "options", "k", "path"),
    [
        ("jeffreys", {}, 1, True),  # npe-first's default: K = 1 with path gradients
        ("jeffreys", {"num_proxy_samples": 4}, 4, True),
        ("jeffreys", {"schedule": "joint"}, 8, False),
        ("srfe", {}, 8, False),  # SRFE's estimator needs K >= 2
    ],
)
def test_reverse_term_sample_defaults(objective, options, k, path):
    prior, theta, x = _box(60)
    est = PosteriorEstimator(prior, objective=objective, seed=0, **options, **SMALL)
    est.fit(theta, x, max_epochs=1, show_progress_bar=False)
    assert (est.step.reverse.num_proxy_samples, est.step.reverse.path_gradient) == (k, path)


def test_proxy_every_fits_the_proxy_on_every_kth_phase_one_batch_only():
    step, flow, proxy, prior, theta, x = _npe_first_step(proxy_every=3)
    step.on_epoch_start(1)
    moved = []
    for k in range(6):
        before = [p.detach().clone() for p in proxy.parameters()]
        logs = step.step(theta[50 * k : 50 * (k + 1)], x[50 * k : 50 * (k + 1)])
        after = list(proxy.parameters())
        moved.append(any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)))
        assert ("fit" in logs) == moved[-1]
    assert moved == [True, False, False, True, False, False]
    with pytest.raises(ValueError, match="proxy_every must be an int >= 1"):
        SymmetricConfig(proxy_every=0)


def test_reverse_every_takes_the_reverse_term_on_every_nth_phase_two_batch_n_times_heavier():
    step, flow, proxy, _, theta, x = _npe_first_step(num_proxy_samples=2, reverse_every=3)
    step.state.phase, step.state.symmetric_from, step.state.gate = 2, 0, 1.0
    step.on_epoch_start(1)
    calls = []
    sample = flow.rsample_and_log_prob
    flow.rsample_and_log_prob = lambda *a, **k: calls.append(1) or sample(*a, **k)
    reverse = []
    for k in range(6):
        n = len(calls)
        logs = step.step(theta[50 * k : 50 * (k + 1)], x[50 * k : 50 * (k + 1)])
        reverse.append(len(calls) > n)
        # Either way the gate is on and the proxy fits its data; R only with the samples.
        assert logs["gate"] == 1.0 and logs["phase"] == 2.0 and "fit" in logs
        assert ("R" in logs) == reverse[-1]
        if not reverse[-1]:
            assert logs["loss"] == logs["F"]
    assert reverse == [True, False, False, True, False, False]
    # The one batch in three carries three times the weight: the same gradient on average.
    assert step.plan.weights(step.state, math.nan, 1.0).flow == 3.0
    # The count is part of the schedule's state, so a resumed run keeps its rhythm.
    state = step.state_dict()
    step.state.reverse_batches = 0
    step.load_state_dict(state)
    assert step.state.reverse_batches == 6


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"reverse_every": 0}, "reverse_every must be an int >= 1"),
        ({"reverse_every": 2, "schedule": "joint"}, "reverse_every applies to schedule"),
    ],
)
def test_reverse_every_is_checked_at_construction(options, match):
    from jsbi.methods.config import SymmetricConfig

    with pytest.raises(ValueError, match=match):
        SymmetricConfig(**options)


def test_an_epochs_logs_average_each_term_over_the_batches_that_computed_it():
    from jsbi.training.faults import FaultRecovery
    from jsbi.training.loop import _EpochLoop

    class Half:
        # Logs "a" on every batch and "b" (its batch index) on every second one.
        calls = 0

        def train(self):
            pass

        def step(self, theta, x):
            self.calls += 1
            logs = {"loss": 1.0, "a": float(self.calls)}
            if self.calls % 2:
                logs["b"] = float(self.calls)
            return logs

    theta = torch.zeros(40, 2)
    faults = FaultRecovery(dict, lambda state: None, str, 0)
    generator = torch.Generator().manual_seed(0)
    loop = _EpochLoop(Half(), (theta, theta), None, generator, 10, None, None, None, faults)
    means, fault = loop._train_epoch(1)
    assert fault is None
    # Four batches of 10: a = 1..4 on every one, b = 1 and 3 on two.
    assert means == {"loss": 1.0, "a": 2.5, "b": 2.0}


def test_the_gate_is_measured_every_gate_every_th_phase_two_epoch():
    step, _, _, _, theta, x = _npe_first_step(gate_every=3)
    step.state.phase, step.state.symmetric_from = 2, 5
    measured = []
    for epoch in range(5, 12):
        step.on_epoch_start(epoch)
        logs = step.validate(theta[:20], x[:20])
        measured.append("gate" in logs)
    # Epochs 5, 8 and 11: the first phase-2 epoch, then every third.
    assert measured == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="gate_every must be an int >= 1"):
        _npe_first_step(gate_every=0)


def test_phase_one_probes_come_every_probe_every_epochs_then_ever_sparser(monkeypatch):
    import jsbi.methods.symmetric as schedules

    step, *_, theta, x = _npe_first_step(probe_every=5, abandon_patience=3)
    gaps = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])  # trailing, but gaining every time

    def measured(*args):
        return {"proxy_minus_flow": next(gaps), "proxy_minus_flow_se": 0.05}

    monkeypatch.setattr(schedules, "proxy_minus_flow", measured)
    probed = []
    for epoch in range(1, 40):
        step.on_epoch_start(epoch)
        if "probe_gap" in step.validate(theta[:20], x[:20]):
            probed.append(epoch)
    assert probed == [5, 10, 15, 22, 33]
    assert [p[0] for p in step.state.summary["probes"]] == probed
    assert not step.state.proxy_frozen  # it gained on the flow at every probe


def test_probes_that_abandon_nothing_leave_the_run_as_it_was():
    # A probe measures in its own random stream: the run, the flow and the proxy are
    # those of a run without probes.
    prior, theta, x = _box()
    histories = []
    for probe_every in (None, 2):
        est = PosteriorEstimator(
            prior,
            objective="jeffreys",
            seed=0,
            probe_every=probe_every,
            abandon_patience=None,
            **SMALL,
        )
        post = est.fit(theta, x, show_progress_bar=False, max_epochs=7, learning_rate=3e-3)
        histories.append(post.history)
    assert len(histories[1]["probes"]) == 3 and "probes" not in histories[0]
    assert histories[0]["validation_loss"] == histories[1]["validation_loss"]
    for key in ("validation_proxy_fit", "train_fit"):
        assert histories[0][key] == histories[1][key]


def test_a_proxy_that_keeps_trailing_is_abandoned_at_its_best_state(monkeypatch):
    import jsbi.methods.symmetric as schedules

    step, _, proxy, _, theta, x = _npe_first_step(probe_every=5, abandon_patience=3)
    # Gaps with standard error 0.05: the second probe gains on the flow (the count starts
    # again), the next three trail without gaining.
    gaps = iter([0.5, 0.3, 0.3, 0.31, 0.3])
    monkeypatch.setattr(
        schedules,
        "proxy_minus_flow",
        lambda *a: {"proxy_minus_flow": next(gaps), "proxy_minus_flow_se": 0.05},
    )
    best = {k: v.clone() for k, v in proxy.state_dict().items()}
    step.state.proxy_best = (1.0, best)
    with torch.no_grad():
        for p in proxy.parameters():
            p.add_(1.0)  # fitted on since its best state
    for epoch in range(1, 34):
        step.on_epoch_start(epoch)
        step.validate(theta[:20], x[:20])
    assert step.state.summary["proxy_abandoned_epoch"] == 33
    assert step.state.proxy_frozen and not step.plan.switch(step.state).go_on
    assert all(torch.equal(v, best[k]) for k, v in proxy.state_dict().items())
    assert not step.plan.fit_due(step.state)


def test_the_gate_uses_gate_samples_and_a_caller_may_ask_for_more(monkeypatch):
    import jsbi.methods.symmetric as schedules

    step, _, _, _, theta, x = _npe_first_step(gate_samples=16)
    asked = []
    real = schedules.proxy_minus_flow

    def spy(*args, **kwargs):
        asked.append(args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(schedules, "proxy_minus_flow", spy)
    first = step.measure_proxy(theta[:40], x[:40])
    again = step.measure_proxy(theta[:40], x[:40])
    more = step.measure_proxy(theta[:40], x[:40], num_samples=256)
    assert asked == [16, 16, 256]
    assert first == again  # the same random numbers every call
    assert more["proxy_nll"] != first["proxy_nll"] and more["gate"] in (0.0, 1.0)


def test_proxy_patience_stops_the_proxy_at_its_best_state_in_both_phases():
    step, _, proxy, _, theta, x = _npe_first_step(proxy_patience=2, num_proxy_samples=2)
    val = (theta[:40], x[:40])

    def params():
        return [p.detach().clone() for p in proxy.parameters()]

    # Epoch 1 sets the best own fit; then the validation fit is made worse twice (a
    # proxy the data disagree with), so its own early stopping ends the fit.
    step.on_epoch_start(1)
    step.step(theta[40:90], x[40:90])
    logs = step.validate(*val)
    best_value, best = step.state.proxy_best[0], params()
    assert logs["proxy_fit"] == best_value and not step.state.proxy_frozen
    for epoch in (2, 3):
        step.on_epoch_start(epoch)
        with torch.no_grad():
            for p in proxy.parameters():
                p.add_(0.5 * torch.randn_like(p))
        step.validate(*val)
    assert step.state.proxy_frozen and step.state.summary["proxy_stopped_epoch"] == 3
    restored = params()
    assert all(torch.equal(a, b) for a, b in zip(restored, best, strict=True))
    # Frozen: neither a phase-1 step, a phase-2 step nor a validation moves or refits it.
    step.on_epoch_start(4)
    logs = step.step(theta[90:140], x[90:140])
    assert "fit" not in logs
    step.state.phase, step.state.symmetric_from, step.state.gate = 2, 5, 1.0
    step.on_epoch_start(5)
    logs = step.step(theta[140:190], x[140:190])
    assert "fit" not in logs and math.isfinite(logs["R"]) and logs["gate"] == 1.0
    assert "proxy_fit" not in step.validate(*val)
    assert all(torch.equal(a, b) for a, b in zip(params(), best, strict=True))
    # A checkpoint or a fault restore keeps it stopped.
    state = step.state_dict()
    step.state.proxy_frozen = False
    step.load_state_dict(state)
    assert step.state.proxy_frozen and step.state.proxy_stale == 2


def test_without_proxy_patience_the_proxy_fits_to_the_end():
    step, _, proxy, _, theta, x = _npe_first_step(num_proxy_samples=2)
    step.state.phase, step.state.symmetric_from, step.state.gate = 2, 0, 1.0
    for epoch in (1, 2, 3, 4):
        step.on_epoch_start(epoch)
        logs = step.step(theta[:50], x[:50])
        assert "fit" in logs
        assert "proxy_fit" not in step.validate(theta[:40], x[:40])  # phase 1 only
    assert not step.state.proxy_frozen


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"proxy_patience": 0}, "proxy_patience must be an int >= 1"),
        ({"proxy_patience": 5, "schedule": "joint"}, "proxy_patience applies to schedule"),
        ({"proxy_patience": 5, "proxy_reverse_weight": 0.5}, "proxy_reverse_weight=0"),
    ],
)
def test_proxy_patience_is_checked_at_construction(options, match):
    from jsbi.methods.config import SymmetricConfig

    with pytest.raises(ValueError, match=match):
        SymmetricConfig(**options)


def test_npe_first_selects_the_likelihood_candidate_at_the_switch():
    prior, theta, x = _box()
    alternatives = [{"flow": "maf", "num_transforms": 1}]
    est, post = _fit(
        prior,
        theta,
        x,
        "jeffreys",
        num_proxy_samples=2,
        proxy_options={**SMALL, "alternatives": alternatives},
    )
    chosen = post.history["proxy_candidates"]
    proxy = est.step.proxy
    assert chosen["selected"] == int(proxy.selected) in (0, 1)
    assert chosen["nll"][chosen["selected"]] == min(chosen["nll"])
    assert len(chosen["nll"]) == 2 and all(math.isfinite(v) for v in chosen["nll"])
    assert "phase2_start" in post.history  # chosen at the switch, before the gate measured


def test_an_abandoned_proxy_is_not_the_misspecification_checks_reference(monkeypatch):
    # A proxy abandoned in phase 1 stopped training early: the check reads the flow's
    # embedding (and the abandoned proxy's candidates are not chosen); a proxy that ran
    # on is the check's likelihood.
    import jsbi.methods.symmetric as schedules

    prior, theta, x = _box()
    kinds = {}
    for gap in (5.0, -5.0):  # trailing far beyond its error, or clearly ahead
        monkeypatch.setattr(
            schedules,
            "proxy_minus_flow",
            lambda *a, g=gap: {"proxy_minus_flow": g, "proxy_minus_flow_se": 0.01},
        )
        est = PosteriorEstimator(
            prior,
            objective="jeffreys",
            posterior="flow",  # (the stand-in gap is not a measured proxy to return)
            seed=0,
            probe_every=1,
            abandon_patience=1,
            **SMALL,
        )
        post = est.fit(theta, x, show_progress_bar=False, max_epochs=3, learning_rate=3e-3)
        kinds[gap] = (post.history["typicality"], post.typicality.kind)
        if gap > 0:
            assert post.history["proxy_abandoned_epoch"] == 1
            assert "proxy_candidates" not in post.history
    assert kinds == {
        5.0: ("embedding (simulations)", "embedding"),
        -5.0: ("evidence (model)", "evidence"),  # (300 pairs leave 30 held out: too few)
    }
