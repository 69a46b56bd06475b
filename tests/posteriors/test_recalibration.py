"""Temperature recalibration: it undoes a known over-confidence, keeps the density
normalised, and travels with the saved posterior."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

import jsbi

SMALL = {"hidden_features": (32, 32), "num_transforms": 2, "flow": "maf"}


@pytest.fixture(scope="module")
def fitted():
    # theta ~ N(0, 1), x = theta + N(0, 0.5^2): the posterior is N(0.8 x, 0.2).
    torch.manual_seed(0)
    prior = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)
    theta = prior.sample((3000,))
    x = theta + 0.5 * torch.randn_like(theta)
    post = jsbi.PosteriorEstimator(prior, seed=0, **SMALL).fit(
        theta[:2000], x[:2000], max_epochs=60, show_progress_bar=False
    )
    return post, theta[2000:], x[2000:]


def test_recalibration_undoes_a_known_over_confidence(fitted):
    post, theta, x = fitted
    # Narrow every credible region by a factor 0.4: the truths fall outside too often.
    assert post.recalibrate(theta[:500], x[:500], temperatures=[0.4], nll_tolerance=None) == 0.4
    over = post.history["recalibration"]["error"]
    kept = post.recalibrate(theta[:500], x[:500], num_samples=100)
    # 1 is on the grid (steps of 9 %: 0.84, 0.92, 1, 1.09, 1.19); a trained flow's
    # temperature is within two steps of it on 500 pairs.
    assert 0.84 <= kept <= 1.19, post.history["recalibration"]
    record = post.history["recalibration"]
    assert record["temperature_before"] == pytest.approx(0.4)
    assert record["error_before"] == pytest.approx(over)
    assert record["error"] < 0.5 * over
    # Held-out pairs agree: the kept temperature's calibration error is the smaller.
    tail = (theta[500:], x[500:])
    post.recalibrate(*tail, temperatures=[kept], nll_tolerance=None)
    after = post.history["recalibration"]["error"]
    post.recalibrate(*tail, temperatures=[0.4], nll_tolerance=None)
    assert after < post.history["recalibration"]["error"]


def test_a_tempered_density_is_normalised_and_saved(fitted, tmp_path):
    post, theta, x = fitted
    post.recalibrate(theta[:2], x[:2], temperatures=[1.7], nll_tolerance=None)
    assert post.temperature == pytest.approx(1.7)
    grid = torch.linspace(-12, 12, 8001)[:, None]
    density = post.log_prob(grid, x=x[0]).exp()
    assert float(density.sum() * (grid[1, 0] - grid[0, 0])) == pytest.approx(1.0, abs=1e-3)
    # Wider than the posterior N(0.8 x, 0.2): sd about 1.7 * sqrt(0.2).
    sd = float(post.sample((20_000,), x=x[0]).std())
    assert sd == pytest.approx(1.7 * 0.2**0.5, rel=0.15)
    path = tmp_path / "tempered.pt"
    post.save(path)
    loaded = jsbi.load_posterior(path)
    assert loaded.temperature == pytest.approx(1.7)
    torch.testing.assert_close(
        loaded.log_prob(grid[::500], x=x[0]), post.log_prob(grid[::500], x=x[0])
    )


def test_bad_temperatures_are_refused(fitted):
    post, theta, x = fitted
    with pytest.raises(ValueError, match="temperatures must be positive"):
        post.recalibrate(theta[:10], x[:10], temperatures=[0.0, 1.0])
    with pytest.raises(ValueError, match="nll_tolerance must be >= 0"):
        post.recalibrate(theta[:10], x[:10], nll_tolerance=-1.0)


def test_a_temperature_that_worsens_the_fit_is_refused(fitted, monkeypatch):
    post, theta, x = fitted
    post.recalibrate(theta[:2], x[:2], temperatures=[1.0], nll_tolerance=None)
    # A calibration error that (wrongly) favours 0.4 and 0.6 over the trained T = 1; the
    # true parameters' density is the real one, and far lower at either.
    fake = {1.0: 0.05, 0.6: 0.02, 0.4: 0.01, 0.97: 0.04}
    monkeypatch.setattr(post, "_calibration_error", lambda *a: fake[round(post.temperature, 4)])
    grid = [0.4, 0.6, 0.97]
    assert post.recalibrate(theta[:500], x[:500], temperatures=grid, nll_tolerance=None) == 0.4
    post.recalibrate(theta[:2], x[:2], temperatures=[1.0], nll_tolerance=None)
    # Guarded: 0.4 and 0.6 are refused by their NLL; 0.97 (barely narrower) does not worsen it.
    assert post.recalibrate(theta[:500], x[:500], temperatures=grid) == 0.97
    record = post.history["recalibration"]
    assert sorted(record["refused"]) == [0.4, 0.6]
    assert all(mean > 3 * se for mean, se in record["refused"].values()), record
    # Where every candidate of smaller error is refused, the temperature stays ...
    fake[0.97] = 0.03
    kept = post.recalibrate(theta[:500], x[:500], temperatures=[0.4, 0.6], nll_tolerance=0)
    assert kept == pytest.approx(0.97) and sorted(post.history["recalibration"]["refused"]) == [
        0.4,
        0.6,
    ]
    # ... and where none has a smaller error, none is tried against the fit.
    fake[0.97] = 0.005
    kept = post.recalibrate(theta[:500], x[:500], temperatures=[0.4, 0.6])
    assert kept == pytest.approx(0.97) and post.history["recalibration"]["refused"] == {}


def test_a_failed_recalibration_leaves_the_temperature_as_it_was(fitted, monkeypatch):
    post, theta, x = fitted
    post.recalibrate(theta[:20], x[:20], temperatures=[1.3], nll_tolerance=None)
    calls = []

    def fails_on_the_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("the sampler gave up")
        return 0.1

    monkeypatch.setattr(post, "_calibration_error", fails_on_the_second)
    with pytest.raises(RuntimeError, match="gave up"):
        post.recalibrate(theta[:20], x[:20], temperatures=[2.5, 3.0], nll_tolerance=None)
    assert post.temperature == pytest.approx(1.3)


def test_a_temperature_whose_samples_cannot_be_drawn_is_skipped(fitted, monkeypatch):
    from jsbi.flows.support import SupportRejectionError

    post, theta, x = fitted
    post.recalibrate(theta[:2], x[:2], temperatures=[1.0], nll_tolerance=None)
    errors = {1.0: 0.05, 2.5: 0.01, 0.9: 0.03}

    def error(*args):
        if round(post.temperature, 4) == 2.5:  # a truncated flow's rejection gives up
            raise SupportRejectionError("rejection sampling gave up")
        return errors[round(post.temperature, 4)]

    monkeypatch.setattr(post, "_calibration_error", error)
    assert post.recalibrate(theta[:50], x[:50], temperatures=[2.5, 0.9], nll_tolerance=None) == 0.9
    assert post.history["recalibration"]["error"] == 0.03
    # Guarded, a skipped candidate is never tried against the fit.
    post.recalibrate(theta[:2], x[:2], temperatures=[1.0], nll_tolerance=None)
    assert post.recalibrate(theta[:50], x[:50], temperatures=[2.5, 0.9]) == 0.9
    assert 2.5 not in post.history["recalibration"]["refused"]
    # Where the current temperature itself cannot be measured, recalibrate says so.
    post.flow.set_temperature(2.5)
    with pytest.raises(SupportRejectionError):
        post.recalibrate(theta[:50], x[:50], temperatures=[0.9])
    assert post.temperature == pytest.approx(2.5)
    post.flow.set_temperature(1.0)
    # In the guard, a candidate whose density cannot be renormalised (no draw inside the
    # support) is refused, and the temperature stays.
    from jsbi.posteriors.posterior import UnnormalisableError

    real = post._log_prob

    def log_prob(*args, **kwargs):
        if round(post.temperature, 4) == 0.9:
            raise UnnormalisableError("no draw inside the support")
        return real(*args, **kwargs)

    monkeypatch.setattr(post, "_log_prob", log_prob)
    assert post.recalibrate(theta[:50], x[:50], temperatures=[2.5, 0.9]) == 1.0
    assert post.history["recalibration"]["refused"][0.9][0] == float("inf")
