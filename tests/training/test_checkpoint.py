from __future__ import annotations

import math

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.estimator import PosteriorEstimator


def _data(n=300):
    g = torch.Generator().manual_seed(3)
    theta = 4 * torch.rand(n, 2, generator=g) - 2
    return theta, theta + 0.3 * torch.randn(n, 2, generator=g)


def _fit(objective, path, max_epochs, callback=None):
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    kwargs = (
        {"warmup_epochs": 2, "num_proxy_samples": 4, "proxy": "ratio", "schedule": "joint"}
        if objective != "npe"
        else {}
    )
    est = PosteriorEstimator(
        prior, objective=objective, seed=5, hidden_features=(16,), num_transforms=1, **kwargs
    )
    return est.fit(
        *_data(),
        max_epochs=max_epochs,
        show_progress_bar=False,
        callback=callback,
        checkpoint=path,
    )


def _same(a, b):
    return len(a) == len(b) and all(
        (math.isnan(u) and math.isnan(v)) or u == v for u, v in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("objective", ["npe", "jeffreys"])
def test_crash_then_resume_equals_uninterrupted_run(tmp_path, objective):
    full = _fit(objective, None, max_epochs=6)

    def crash(epoch, logs):
        if epoch == 3:
            raise RuntimeError("simulated crash")

    path = tmp_path / "run.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(objective, path, max_epochs=6, callback=crash)
    assert path.exists()
    resumed = _fit(objective, path, max_epochs=6)

    for key in ("train_loss", "validation_loss"):
        assert _same(full.history[key], resumed.history[key]), key
    theta, x = _data(20)
    assert torch.equal(full.log_prob(theta, x=x), resumed.log_prob(theta, x=x))


def test_npe_first_resumes_in_its_phase(tmp_path):
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))

    def fit(path, callback=None):
        est = PosteriorEstimator(
            prior,
            objective="jeffreys",
            proxy="likelihood",
            schedule="npe-first",
            gate=False,  # phase 2 whatever the proxy's fit
            seed=5,
            hidden_features=(16,),
            num_transforms=1,
            num_proxy_samples=2,
            phase2_patience=4,
            proxy_options={"hidden_features": (16,), "num_transforms": 1},
        )
        return est.fit(
            *_data(),
            max_epochs=60,
            stop_after_epochs=2,
            learning_rate=3e-3,
            show_progress_bar=False,
            callback=callback,
            checkpoint=path,
        )

    full = fit(None)
    phases = full.history["train_phase"]
    assert 2.0 in phases, "phase 2 must run for this test"
    crash_at = phases.index(2.0) + 2  # one epoch into phase 2

    def crash(epoch, logs):
        if epoch == crash_at:
            raise RuntimeError("simulated crash")

    path = tmp_path / "run.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(path, callback=crash)
    resumed = fit(path)
    for key in ("train_loss", "validation_loss", "train_phase"):
        assert _same(full.history[key], resumed.history[key]), key
    assert full.history["best_phase"] == resumed.history["best_phase"]


def test_foreign_or_mismatched_checkpoint_raises(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not a jsbi training checkpoint"):
        _fit("npe", bad, max_epochs=2)
    path = tmp_path / "run.ckpt"
    _fit("npe", path, max_epochs=2)
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    est = PosteriorEstimator(prior, seed=6, hidden_features=(16,), num_transforms=1)
    with pytest.raises(ValueError, match="belongs to another run"):
        est.fit(*_data(), max_epochs=2, show_progress_bar=False, checkpoint=path)


def test_checkpoint_of_other_data_or_options_is_refused(tmp_path):
    # Same seed, same number of pairs: only the fingerprint tells these runs apart.
    path = tmp_path / "run.ckpt"
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    theta, x = _data()

    def fit(theta, x, **kwargs):
        est = PosteriorEstimator(prior, seed=5, hidden_features=(16,), num_transforms=1, **kwargs)
        return est.fit(theta, x, max_epochs=2, show_progress_bar=False, checkpoint=path)

    fit(theta, x)
    with pytest.raises(ValueError, match="other training data or another configuration"):
        fit(theta, x + 1.0)
    with pytest.raises(ValueError, match="other training data or another configuration"):
        fit(theta, x, num_bins=4)
    resumed = fit(theta, x)  # the same run still resumes (0 more epochs)
    assert resumed.history["epochs_trained"] == 2


def test_a_symmetric_run_resumes_only_with_the_same_options(tmp_path):
    # Every option of the symmetric step is part of the fingerprint: those held by its
    # config (gate_samples) and by its helpers (K in the reverse estimator, the flow's
    # learning rate in its optimisers).
    path = tmp_path / "run.ckpt"
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    theta, x = _data()

    def fit(learning_rate=5e-4, **kwargs):
        est = PosteriorEstimator(
            prior, objective="jeffreys", seed=5, hidden_features=(16,), num_transforms=1, **kwargs
        )
        return est.fit(
            theta,
            x,
            max_epochs=2,
            learning_rate=learning_rate,
            show_progress_bar=False,
            checkpoint=path,
        )

    fit()
    for kwargs in (
        {"gate_samples": 16},
        {"num_proxy_samples": 2},
        {"learning_rate": 1e-3},
    ):
        with pytest.raises(ValueError, match="other training data or another configuration"):
            fit(**kwargs)
    assert fit().history["epochs_trained"] == 2


def test_the_fingerprint_reads_objects_by_their_settings_not_their_address():
    from jsbi.tau import TauSchedule
    from jsbi.training.checkpoint import _fingerprint

    class Halfway(TauSchedule):  # a user's schedule, without a __repr__
        def __init__(self, tau):
            self.tau = tau

        def __call__(self, progress):
            return self.tau

    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    theta, x = _data()

    def fingerprint(tau):
        est = PosteriorEstimator(
            prior, objective="srfe", tau_schedule=Halfway(tau), hidden_features=(16,)
        )
        est.fit(theta, x, max_epochs=1, show_progress_bar=False)
        from jsbi.training import TrainConfig

        return _fingerprint(est.step, theta, x, 0, TrainConfig())

    assert fingerprint(0.3) == fingerprint(0.3) != fingerprint(0.4)
