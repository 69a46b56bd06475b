r"""sbi's NPE baseline: seeded, logs nothing to the working tree, works with the diagnostics."""

from __future__ import annotations

import math
import os

import pytest
import torch

from jsbi.diagnostics import (
    check_sbc,
    expected_coverage,
    leakage,
    nltp,
    run_sbc,
    run_tarp,
    train_sbi_npe,
)
from tests.diagnostics.analytic import GaussianTask, pairs

SMALL = dict(hidden_features=16, num_transforms=1, num_bins=4, max_num_epochs=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        task = GaussianTask()
        theta, x = pairs(300, seed=4)
        a = train_sbi_npe(theta, x, task.prior, seed=1, **SMALL)
        b = train_sbi_npe(theta, x, task.prior, seed=1, **SMALL)
        files = os.listdir(".")
    finally:
        os.chdir(cwd)
    return task, a, b, files


def test_seeded_history_and_no_logs(trained):
    _, (post, h), (_, h2), files = trained
    assert files == []  # no ./sbi-logs
    assert h["train_loss"] == h2["train_loss"]
    # sbi counts epochs from 0: max_num_epochs=2 runs three.
    assert len(h["train_loss"]) == len(h["validation_loss"]) == len(h["epoch"]) == 3
    assert h["num_simulations"] == 300 and h["wall_time"] > 0
    assert all(math.isfinite(v) for v in h["validation_loss"])


def test_diagnostics_accept_sbi_posterior(trained):
    task, (post, _), _, _ = trained
    theta, x = pairs(30, seed=9)
    ranks = run_sbc(post, theta, x, 20, batch_size=16, seed=0)
    assert ranks.shape == (30, 2) and ranks.max() <= 20
    assert check_sbc(ranks, 20).outside_band.shape == (2,)
    cov = expected_coverage(post, theta, x, 20, batch_size=16, seed=0)
    assert cov.hpd_ranks.shape == (30,)
    assert run_tarp(post, theta, x, 20, seed=0).ecp.shape == (4,)
    assert math.isfinite(nltp(post, theta, x, num_leakage_samples=100).mean)
    out = leakage(post, x[:2], task.prior, 50)
    assert out.shape == (2,) and torch.all(out == 0)  # Gaussian prior: full support


def test_no_convergence_line_on_stdout_without_progress_bars(capsys, tmp_path, monkeypatch):
    # sbi prints "Neural network successfully converged ..." even with its progress bars
    # off; jsbi's baseline keeps stdout clean (the history says how training stopped).
    monkeypatch.chdir(tmp_path)
    theta, x = pairs(200, seed=2)
    # A large learning rate: sbi's early stopping ends training within a few epochs.
    small = {**SMALL, "max_num_epochs": 300, "stop_after_epochs": 2, "learning_rate": 0.05}
    _, history = train_sbi_npe(theta, x, GaussianTask().prior, seed=0, **small)
    assert history["stopped_by"] == "early stopping" and history["epochs_trained"] < 300
    assert capsys.readouterr().out == ""


def test_bad_shapes():
    with pytest.raises(ValueError, match="same N"):
        train_sbi_npe(torch.zeros(10, 2), torch.zeros(9, 2), GaussianTask().prior)
