from __future__ import annotations

import math

import pytest
import torch

from jsbi.density import DensityEstimator

SMALL = dict(num_transforms=2, hidden_features=(16, 16))


@pytest.mark.parametrize("objective", ["npe", "jeffreys", "srfe"])
def test_fit_shapes_history_and_normalisation(objective):
    data = torch.randn(200, 1) * 0.5 + 1.0
    test = torch.randn(300, 1) * 0.5 + 1.0
    options = {} if objective == "npe" else {"warmup_epochs": 1, "num_proxy_samples": 4}
    est = DensityEstimator(objective=objective, **SMALL, **options)
    density = est.fit(data, held_out=test, max_epochs=4, show_progress_bar=False)
    assert density.sample((5, 3)).shape == (5, 3, 1)
    assert density.log_prob(data[:7]).shape == (7,)
    h = density.history
    assert len(h["held_out_nll"]) == h["epochs_trained"] == 4
    assert all(math.isfinite(v) for v in h["held_out_nll"])
    # A density, whatever the objective: it integrates to one.
    grid = torch.linspace(-8, 10, 4001)[:, None]
    mass = torch.trapezoid(density.log_prob(grid).exp(), grid[:, 0])
    assert mass == pytest.approx(1.0, abs=1e-2)


def test_free_energy_proxy_warms_up_on_its_data_fit():
    # A free MLP energy has no ratio for the contrastive warm-up: it fits C instead, and C
    # decreases (importance sampling from the flow, so an estimate, hence the margin).
    data = torch.randn(400, 2) * torch.tensor([1.0, 0.3])
    est = DensityEstimator(objective="jeffreys", warmup_epochs=15, **SMALL)
    density = est.fit(data, max_epochs=15, show_progress_bar=False)
    C = density.history["train_C"]
    assert len(C) == 15 and "train_contrastive" not in density.history
    assert C[-1] < C[0] - 0.1


def test_bad_input():
    with pytest.raises(ValueError, match=r"samples must have shape \(n >= 2, d\)"):
        DensityEstimator().fit(torch.randn(10))
    with pytest.raises(ValueError, match=r"held_out must have shape \(n', 2\)"):
        DensityEstimator().fit(torch.randn(10, 2), held_out=torch.randn(5, 3))
    density = DensityEstimator(objective="npe", **SMALL).fit(
        torch.randn(50, 2), max_epochs=1, show_progress_bar=False
    )
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 2\)"):
        density.log_prob(torch.randn(4, 3))
