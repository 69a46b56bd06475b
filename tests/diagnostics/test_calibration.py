r"""SBC, expected coverage and TARP on a conjugate Gaussian model with a known posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jsbi.diagnostics.coverage import coverage_from_log_probs, expected_coverage, plot_coverage
from jsbi.diagnostics.sbc import (
    check_sbc,
    dimension_prob,
    draw_samples,
    ecdf_band,
    plot_sbc_ecdf,
    run_sbc,
)
from jsbi.diagnostics.tarp import plot_tarp, run_tarp
from tests.diagnostics.analytic import GaussianPosterior, pairs

N, L = 200, 200


@pytest.fixture(scope="module")
def heldout():
    return pairs(N, seed=1)


def test_draw_samples_chunks_and_seeds(heldout):
    _, x = heldout
    post = GaussianPosterior()
    a = draw_samples(post, x, 7, batch_size=64, seed=3)
    b = draw_samples(post, x, 7, batch_size=64, seed=3)
    assert a.shape == (7, N, 2)
    assert torch.equal(a, b)
    # Chunks condition on their own observations: the sample mean tracks x / (1 + s^2).
    many = draw_samples(post, x[:5], 4000, batch_size=2, seed=0).mean(0)
    assert torch.allclose(many, x[:5] / 1.25, atol=0.05)


class Recorder(GaussianPosterior):
    def __init__(self):
        super().__init__()
        self.batches = []

    def sample_batched(self, sample_shape, x):
        self.batches.append(len(x))
        return super().sample_batched(sample_shape, x)


def test_run_sbc_is_batched(heldout):
    theta, x = heldout
    post = Recorder()
    ranks = run_sbc(post, theta, x, 50, batch_size=64)
    assert post.batches == [64, 64, 64, 8]
    assert ranks.shape == (N, 2) and ranks.min() >= 0 and ranks.max() <= 50


@pytest.mark.parametrize(("scale", "calibrated"), [(1.0, True), (0.5, False), (2.0, False)])
def test_sbc_detects_miscalibration(heldout, scale, calibrated):
    theta, x = heldout
    res = check_sbc(run_sbc(GaussianPosterior(scale=scale), theta, x, L, seed=0), L)
    assert res.calibrated is calibrated
    assert res.outside_band.shape == (2,)
    if calibrated:
        assert (res.ks_pvalues > 0.01).all() and (res.chi2_pvalues > 0.01).all()
    else:
        assert (res.ks_pvalues < 1e-3).all() and (res.chi2_pvalues < 1e-3).all()
    assert set(res.to_dict()) >= {"sbc_calibrated", "sbc_ks_pvalue[theta_1]"}


def test_ecdf_band_is_simultaneous():
    # Under uniform ranks the ECDF leaves a 95% simultaneous band in about 5% of runs.
    rng = np.random.default_rng(0)
    out = [ecdf_band(rng.integers(0, 101, 200), 100)["outside"].any() for _ in range(300)]
    assert 0.01 < np.mean(out) < 0.11


def test_sbc_verdict_is_family_wise():
    # Uniform ranks in 10 dimensions: one 95% band per dimension calls about 40% of runs
    # out of band; the verdict's family-wise bands about 5% (Bonferroni: 99.5% each).
    assert dimension_prob(0.95, 10) == pytest.approx(0.995)
    rng = np.random.default_rng(1)
    runs = [rng.integers(0, 101, (200, 10)) for _ in range(150)]
    per_dimension = [
        any(ecdf_band(r[:, j], 100)["outside"].any() for j in range(10)) for r in runs
    ]
    verdict = [not check_sbc(torch.as_tensor(r), 100).calibrated for r in runs]
    assert np.mean(per_dimension) > 0.25
    assert np.mean(verdict) < 0.1
    # A real miscalibration is still caught in 10 dimensions.
    theta, x = pairs(200, dim=10, seed=1)
    ranks = run_sbc(GaussianPosterior(dim=10, scale=0.7), theta, x, 100, seed=0)
    assert not check_sbc(ranks, 100).calibrated


def test_check_sbc_bad_input():
    with pytest.raises(ValueError, match="ranks must lie in"):
        check_sbc(torch.full((10, 2), 11), 10)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        check_sbc(torch.zeros(10), 10)


@pytest.mark.parametrize(
    ("scale", "verdict"),
    [(1.0, "calibrated"), (0.5, "over-confident"), (2.0, "under-confident")],
)
def test_expected_coverage(heldout, scale, verdict):
    theta, x = heldout
    res = expected_coverage(GaussianPosterior(scale=scale), theta, x, L, seed=0)
    assert res.verdict == verdict
    assert res.levels[0] == 0 and res.levels[-1] == pytest.approx(1.0)
    if verdict == "calibrated":
        assert abs(res.max_deviation) < 0.1
    elif verdict == "over-confident":
        assert res.max_deviation < -0.2 and res.mean_deviation < 0
    else:
        assert res.max_deviation > 0.2 and res.mean_deviation > 0


def test_coverage_closed_form():
    # Truth always densest -> covered at every level (under-confident extreme); always
    # least dense -> covered only at level 1.
    lq = torch.zeros(9, 4)
    assert coverage_from_log_probs(lq, torch.ones(4)).coverage[1:].min() == 1.0
    res = coverage_from_log_probs(lq, -torch.ones(4))
    assert res.coverage[-1] == 1.0 and res.coverage[-2] == 0.0
    assert res.max_deviation == pytest.approx(-0.9)
    with pytest.raises(ValueError, match="log_q_true"):
        coverage_from_log_probs(lq, torch.ones(5))


@pytest.mark.parametrize(("scale", "sign"), [(1.0, 0), (0.5, -1), (2.0, 1)])
def test_tarp(heldout, scale, sign):
    theta, x = heldout
    res = run_tarp(GaussianPosterior(scale=scale), theta, x, L, seed=0)
    assert res.ecp[0] == 0 and res.ecp[-1] == pytest.approx(1.0)
    if sign == 0:
        assert abs(res.atc) < 0.03
    else:
        assert np.sign(res.atc) == sign and abs(res.atc) > 0.03


def test_plots_draw(heldout):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta, x = heldout
    post = GaussianPosterior()
    sbc = check_sbc(run_sbc(post, theta, x, 50, seed=0), 50)
    axes = plot_sbc_ecdf(sbc)
    assert len(axes) == 2 and len(axes[0].lines) >= 1
    ax = plot_coverage({"exact": expected_coverage(post, theta, x, 50, seed=0)})
    assert len(ax.lines) == 2
    ax = plot_tarp(run_tarp(post, theta, x, 50, seed=0))
    assert len(ax.lines) == 2
    plt.close("all")


class Unnormalisable(GaussianPosterior):
    # A truncated flow with no draw inside the support at some x: its normalised density
    # raises, the unnormalised one (ranks, coverage) is fine.
    def log_prob_batched(self, theta, x, norm_posterior=True):
        from jsbi.posteriors.posterior import UnnormalisableError

        if norm_posterior:
            raise UnnormalisableError("none of 1000 flow samples fell inside the support")
        return super().log_prob_batched(theta, x)


def test_calibration_keeps_its_columns_where_the_nltp_cannot_be_normalised(heldout):
    from jsbi.diagnostics.calibration import calibration

    theta, x = heldout
    with pytest.warns(UserWarning, match="NLTP not computed"):
        out = calibration(Unnormalisable(), theta, x, 50)
    assert np.isnan(out["nltp"]) and np.isnan(out["nltp_se"])
    exact = calibration(GaussianPosterior(), theta, x, 50)
    assert out["coverage_max_deviation"] == exact["coverage_max_deviation"]
    assert out["tarp_atc"] == exact["tarp_atc"] and np.isfinite(exact["nltp"])


@pytest.mark.parametrize(("scale", "calibrated"), [(1.0, True), (0.8, False)])
def test_calibration_of_the_exact_gaussian_mixture_posterior(scale, calibrated):
    # A non-Gaussian, truncated posterior (a spike on a broad bump, cut at the prior's
    # edges): the exact one is inside every band, so a development task's deviations are
    # the estimator's and not the diagnostics'; 20% too narrow is flagged.
    from jsbi.diagnostics.calibration import calibration
    from jsbi.seeding import seeded
    from jsbi.simulators import get_task
    from tests.diagnostics.analytic import MixturePosterior

    task = get_task("gaussian_mixture")
    with seeded(5):
        theta = task.prior.sample((1000,))
        x = task.simulate(theta)
    out = calibration(MixturePosterior(scale), theta, x, 100, seed=0)
    assert out["coverage_outside_band"] is not calibrated
    assert out["sbc_in_band"] is calibrated
    if calibrated:
        assert abs(out["coverage_max_deviation"]) <= 0.05 and abs(out["tarp_atc"]) <= 0.02
    else:
        assert out["coverage_max_deviation"] < -0.05  # over-confident
