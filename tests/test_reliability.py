"""No silent wrong answers: x standardisation, non-finite observations and diverged fits."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from sbi.utils import BoxUniform

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import x_standardization


def test_constant_column_keeps_scale_one_and_warns():
    x = torch.randn(300, 3)
    x[:, 1] = 4.0
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\] of x are constant"):
        loc, scale = x_standardization(x)
    assert scale[1] == 1.0 and loc[1] == 4.0
    assert torch.allclose(scale[[0, 2]], x[:, [0, 2]].std(0))


def test_a_few_huge_rows_warn_and_robust_scaling_ignores_them():
    x = torch.randn(1000, 2)
    x[:3, 0] = 1e6
    with pytest.warns(UserWarning, match=r"column\(s\) \[0\].*dominated by a few extreme rows"):
        _, scale = x_standardization(x)
    assert scale[0] > 1e4
    _, robust = x_standardization(x, robust=True)
    torch.testing.assert_close(robust, torch.ones(2), atol=0.15, rtol=0)
    sparse = torch.zeros(1000, 1)
    sparse[:3] = 1.0  # information only in a few rows: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_standardization(sparse)


def test_constant_x_column_does_not_collapse_the_posterior():
    # The column is constant in training; a new observation with another value there
    # used to be divided by 1e-14 and send every sample onto a prior bound.
    prior = BoxUniform(-torch.ones(1), torch.ones(1))
    theta = prior.sample((400,))
    x = torch.cat([theta + 0.1 * torch.randn(400, 1), torch.zeros(400, 1)], 1)
    est = PosteriorEstimator(prior, num_transforms=1, hidden_features=(16,))
    with pytest.warns(UserWarning, match="constant"):
        post = est.fit(theta, x, max_epochs=40, show_progress_bar=False)
    samples = post.sample((500,), x=torch.tensor([0.3, 0.01]))
    assert abs(float(samples.median()) - 0.3) < 0.2
    robust = PosteriorEstimator(prior, num_transforms=1, z_score_x="robust")
    assert (
        robust.fit(theta, x, max_epochs=1, show_progress_bar=False).flow.config["z_score_x"]
        == "robust"
    )


def test_a_non_finite_observation_is_an_error_not_nan_samples():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((200,))
    est = PosteriorEstimator(prior, num_transforms=1, hidden_features=(16,))
    post = est.fit(theta, theta + 0.1 * torch.randn(200, 2), max_epochs=2, show_progress_bar=False)
    for call in (
        lambda: post.sample((3,), x=torch.tensor([math.nan, 0.0])),
        lambda: post.log_prob(theta[:2], x=torch.tensor([0.0, math.inf])),
        lambda: post.map(x=torch.tensor([math.nan, 0.0])),
        lambda: post.sample_batched((3,), x=torch.tensor([[0.0, 0.0], [math.nan, 0.0]])),
        lambda: post.set_default_x(torch.tensor([math.nan, 0.0])),
    ):
        with pytest.raises(ValueError, match="x must be finite"):
            call()


def test_a_diverged_fit_raises_instead_of_returning_a_nan_posterior():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((200,))
    est = PosteriorEstimator(prior, num_transforms=1, hidden_features=(16,))
    with pytest.raises(FloatingPointError, match="learning rate.*x values"):
        est.fit(theta, theta, learning_rate=1e30, max_epochs=3, show_progress_bar=False)
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        est.fit(theta, theta, learning_rate=math.inf, max_epochs=1, show_progress_bar=False)


def test_x_near_the_float32_limit_is_standardised_not_overflowed():
    prior = BoxUniform(-torch.ones(1), torch.ones(1))
    theta = prior.sample((400,))
    x = 3e37 * (theta + 0.05 * torch.randn(400, 1))
    est = PosteriorEstimator(prior, num_transforms=1, hidden_features=(16,))
    post = est.fit(theta, x, max_epochs=60, learning_rate=3e-3, show_progress_bar=False)
    assert torch.isfinite(post.flow.x_scale).all()
    samples = post.sample((500,), x=torch.tensor([3e37 * 0.5]))
    assert abs(float(samples.median()) - 0.5) < 0.15


def test_a_typo_in_an_option_is_an_error_at_construction_naming_the_option():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="'num_transform'.*did you mean 'num_transforms'"):
        PosteriorEstimator(prior, num_transform=2)
    with pytest.raises(ValueError, match="num_bins must be >= 1|did you mean"):
        PosteriorEstimator(prior, num_bin=0)
    PosteriorEstimator(prior, passes=2, num_bins=4)  # zuko's own options pass
    # A typo of the estimator's own keyword is named too, not handed to zuko.
    with pytest.raises(ValueError, match="'proxi'.*did you mean 'proxy'"):
        PosteriorEstimator(prior, objective="jeffreys", proxi="ratio")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_bins": 0}, "num_bins must be an int >= 1, got 0"),
        ({"num_bins": 2.5}, "num_bins must be an int >= 1"),
        ({"num_transforms": 0}, "num_transforms must be an int >= 1"),
        ({"hidden_features": 0}, r"hidden_features must be .* got 0$"),
        ({"z_score_x": "yes"}, "z_score_x must be one of True, False, 'robust'"),
        ({"z_score_theta": "robust"}, "z_score_theta must be"),
        ({"seed": "a"}, "seed must be an int"),
        ({"device": "gpu0"}, "device must be a torch device"),
        (
            {"objective": "jeffreys", "num_proxy_samples": 0},
            "num_proxy_samples must be an int >= 1",
        ),
        ({"objective": "jeffreys", "gate": "yes"}, "gate must be True or False or None"),
        ({"objective": "jeffreys", "gate_samples": 1}, "gate_samples"),
        ({"objective": "srfe", "tau_epochs": 0}, "tau_epochs must be an int >= 1"),
        ({"objective": "jeffreys", "gate_sample": 9}, "gate_sample"),
        ({"flow": "ncsf", "recalibrate": True}, "recalibrate=True needs a flow with a Gaussian"),
        (
            {"objective": "jeffreys", "posterior": "mixture", "recalibrate": True},
            "recalibrate=True fits the flow's temperature, but posterior='mixture' never",
        ),
    ],
)
def test_bad_options_fail_at_construction_naming_the_argument(options, named):
    # Before any simulation or fit: each config checks its fields when built.
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match=named):
        PosteriorEstimator(prior, **options)


def test_an_embedding_that_does_not_fit_x_is_named_at_fit():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((50,))
    est = PosteriorEstimator(prior, embedding_net=torch.nn.Linear(5, 3), num_transforms=1)
    with pytest.raises(ValueError, match=r"embedding_net failed on x of shape \(2, 2\)"):
        est.fit(theta, theta, max_epochs=1)


def test_ctrl_c_before_the_first_epoch_names_it_and_returns_nothing(monkeypatch):
    from jsbi.methods.npe import NPEStep

    def interrupted(self, theta, x):
        raise KeyboardInterrupt

    monkeypatch.setattr(NPEStep, "step", interrupted)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((50,))
    est = PosteriorEstimator(prior, num_transforms=1)
    with pytest.raises(KeyboardInterrupt, match="no trained posterior to return"):
        est.fit(theta, theta, max_epochs=2, show_progress_bar=False)


def test_a_negative_sample_shape_is_named():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((50,))
    post = PosteriorEstimator(prior, num_transforms=1).fit(
        theta, theta, max_epochs=1, show_progress_bar=False
    )
    with pytest.raises(ValueError, match=r"sample_shape must be .* got \(-1,\)"):
        post.sample((-1,), x=theta[0])
    assert post.sample(torch.Size([2]), x=theta[0]).shape == (2, 2)


def _warn_from_jsbi(value: int) -> int:
    # A warning that names a jsbi module as its origin, raised in a worker process.
    import jsbi.progress

    warnings.warn_explicit("from a worker", UserWarning, jsbi.progress.__file__, 1)
    return value + 1


def test_a_workers_warnings_reach_the_callers_filters_by_their_dotted_module():
    from jsbi.progress import side_by_side

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="from a worker", module=r"jsbi\.progress")
        with pytest.raises(UserWarning, match="from a worker"):
            list(side_by_side(_warn_from_jsbi, [(1,), (2,)], 2))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert list(side_by_side(_warn_from_jsbi, [(1,), (2,)], 2)) == [2, 3]
    assert [str(w.message) for w in seen] == ["from a worker"] * 2
