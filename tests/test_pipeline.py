"""One pipeline: a method by name, jsbi's or sbi's, trained on the same pairs."""

from __future__ import annotations

import time

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.pipeline import TrainedMethod, method_label, train_method


def _pairs(n=200):
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    g = torch.Generator().manual_seed(0)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    return prior, theta, theta + 0.1 * torch.randn(n, 2, generator=g)


def test_jsbi_and_sbi_methods_train_through_one_function():
    prior, theta, x = _pairs()
    fit = {"max_epochs": 2, "batch_size": 50}
    small = {"hidden_features": (8, 8), "num_transforms": 1}
    ours = train_method("npe", prior, theta, x, estimator_options=small, fit_options=fit)
    theirs = train_method("sbi-npe", prior, theta, x, fit_options=fit)
    for trained, name in ((ours, "jsbi-npe"), (theirs, "sbi-npe")):
        assert isinstance(trained, TrainedMethod) and trained.name == name
        assert trained.seconds > 0
        assert trained.posterior.sample((5,), x=x[:1]).shape == (5, 2)
    # sbi's loop checks its cap after an epoch: max_num_epochs=2 runs 3.
    assert (ours.epochs, theirs.epochs) == (2, 3)
    assert ours.history["wall_time"] == ours.seconds
    # The same name and seed give the same posterior.
    again = train_method("jsbi-npe", prior, theta, x, estimator_options=small, fit_options=fit)
    assert again.history["validation_loss"] == ours.history["validation_loss"]


def test_a_checkpointed_run_counts_the_work_after_its_last_epoch(tmp_path):
    # A resumable run reports its epochs' times, and the choice and the misspecification
    # reference made after them, which no epoch's time holds.
    prior, theta, x = _pairs()
    small = {"hidden_features": (8, 8), "num_transforms": 1}
    start = time.perf_counter()
    trained = train_method(
        "jeffreys",
        prior,
        theta,
        x,
        estimator_options=small,
        fit_options={"max_epochs": 2, "batch_size": 50},
        checkpoint=tmp_path / "run.ckpt",
    )
    wall = time.perf_counter() - start
    h = trained.history
    assert h["decide_time"] > 0
    assert trained.seconds == pytest.approx(sum(h["epoch_time"]) + h["decide_time"])
    assert trained.seconds < wall


def test_options_that_do_not_apply_are_errors():
    prior, theta, x = _pairs(50)
    with pytest.raises(ValueError, match="apply to jsbi's methods, not to sbi-npe"):
        train_method("sbi-npe", prior, theta, x, estimator_options={"flow": "maf"})
    # clip_max_norm is sbi's too (passed under its name); a callback is jsbi's alone.
    with pytest.raises(ValueError, match=r"sbi-npe takes no fit option \['callback'\]"):
        train_method("sbi-npe", prior, theta, x, fit_options={"callback": print})
    with pytest.raises(ValueError, match="disagree"):
        train_method("npe", prior, theta, x, estimator_options={"objective": "jeffreys"})
    assert method_label("jeffreys") == "jsbi-jeffreys" and method_label("sbi-npe") == "sbi-npe"


def test_run_report_lives_in_the_pipeline():
    import jsbi
    import jsbi.diagnostics
    from jsbi.pipeline import run_report

    assert jsbi.run_report is run_report
    assert not hasattr(jsbi.diagnostics, "run_report")  # the diagnostics never train
