"""TrainConfig: every training option checked once, and the CLI's flags generated from it."""

from __future__ import annotations

import argparse
import math

import pytest

from jsbi.inference import TrainConfig
from jsbi.inference.config import NO_EPOCH_CAP, add_train_flags, train_config_from_args


def test_defaults_are_fits_defaults():
    import inspect

    from jsbi.inference import PosteriorEstimator

    fit = inspect.signature(PosteriorEstimator.fit).parameters
    for name, value in TrainConfig().fit_options().items():
        assert fit[name].default == value, name
    assert TrainConfig().max_epochs == NO_EPOCH_CAP


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": math.inf}, "learning_rate must be finite and > 0"),
        ({"learning_rate": 0.0}, "learning_rate must be finite and > 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\)"),
        ({"validation_fraction": math.nan}, r"validation_fraction must be in \(0, 1\)"),
        ({"stop_after_epochs": 0}, "stop_after_epochs must be an int >= 1"),
        ({"clip_max_norm": -1.0}, "clip_max_norm must be finite and > 0 or None"),
        ({"learning_rte": 1e-3}, "unknown training option 'learning_rte': did you mean"),
    ],
)
def test_a_bad_option_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_options(options)


def test_fit_checks_its_options_before_building_anything(monkeypatch):
    import torch
    from sbi.utils import BoxUniform

    import jsbi.inference.estimator as estimator
    from jsbi.inference import PosteriorEstimator

    def never(*args, **kwargs):
        raise AssertionError("the flow was built before the options were checked")

    monkeypatch.setattr(estimator, "build_conditional_flow", never)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((20,))
    with pytest.raises(ValueError, match="stop_after_epochs must be an int >= 1"):
        PosteriorEstimator(prior).fit(theta, theta, stop_after_epochs=0)
    assert TrainConfig(clip_max_norm=None).replace(batch_size=10).batch_size == 10
    import numpy as np

    assert TrainConfig(batch_size=np.int64(50)).batch_size == 50  # numpy ints are ints


def test_the_flags_come_from_the_fields():
    parser = argparse.ArgumentParser()
    add_train_flags(parser, defaults={"max_epochs": 500})
    args = parser.parse_args(["--learning-rate", "1e-3", "--clip-max-norm", "none"])
    config = train_config_from_args(args)
    assert config == TrainConfig(learning_rate=1e-3, clip_max_norm=None, max_epochs=500)
    with pytest.raises(SystemExit):
        parser.parse_args(["--validation-fraction", "1.5"])
    only = argparse.ArgumentParser()
    add_train_flags(only, only=["max_epochs"])
    assert train_config_from_args(only.parse_args([])) == TrainConfig()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "kl"}, "objective must be 'jeffreys', 'srfe', 'reverse' or 'distill'"),
        ({"schedule": "npe-last"}, "schedule must be 'joint' or 'npe-first'"),
        ({"schedule": "npe-first", "alpha": 2.0}, "alpha apply to schedule='joint'"),
        ({"alpha": 0.0}, r"alpha must be > 0 \(math.inf for a hard constraint\)"),
        ({"dual_lr": math.inf}, "dual_lr must be > 0 and finite"),
        ({"eps": math.nan}, "eps must be finite"),
        ({"num_proxy_samples": 1}, "num_proxy_samples must be >= 2 for objective='jeffreys'"),
        ({"num_proxy_samples": 2.0}, "num_proxy_samples must be >= 2"),
        ({"gate_samples": 1}, r"gate_samples must be >= 2 \(an int\)"),
        ({"gate_every": True}, r"gate_every must be >= 1 \(an int\)"),
        ({"reverse_batch_size": 0}, r"reverse_batch_size must be >= 1 \(an int\)"),
        ({"proxy_learning_rate": 0.0}, "proxy_learning_rate must be > 0 or None"),
        ({"proxy_learning_rate": -1e-3}, "proxy_learning_rate must be > 0 or None"),
        ({"min_ess": math.nan}, "min_ess must be finite and >= 0 or None"),
        ({"gate": "yes"}, "gate must be True, False or None"),
        ({"objective": "srfe", "tau": 1.5}, "tau"),
        ({"gate_sample": 9}, "unknown option 'gate_sample'.*did you mean 'gate_samples'"),
    ],
)
def test_a_bad_adaptive_option_is_named(options, message):
    from jsbi.inference.config import AdaptiveConfig

    with pytest.raises(ValueError, match=message):
        AdaptiveConfig.from_options(options)


def test_adaptive_defaults_follow_the_schedule():
    from jsbi.inference.config import JOINT_DEFAULTS, AdaptiveConfig

    joint = AdaptiveConfig()
    assert joint.joint() == JOINT_DEFAULTS and not joint.gated
    assert AdaptiveConfig(alpha=math.inf).joint()["alpha"] == math.inf  # a hard constraint
    first = AdaptiveConfig(schedule="npe-first", num_proxy_samples=1)
    assert first.gated and first.eps is None  # npe-first has no dual options
    assert not first.replace(gate=False).gated
    with pytest.raises(ValueError, match="num_proxy_samples must be >= 2"):
        first.replace(schedule="joint")  # K = 1 is npe-first's alone


def test_flow_config_checks_each_option_and_passes_only_the_given_ones():
    from jsbi.inference import FlowConfig

    assert FlowConfig().kwargs() == {}
    assert FlowConfig(num_transforms=3, passes=2).kwargs() == {"num_transforms": 3, "passes": 2}
    with pytest.raises(ValueError, match="did you mean 'num_bins'"):
        FlowConfig.from_options({"num_bin": 4})
    for bad, message in (
        ({"flow": "glow"}, "flow must be one of"),
        ({"support": "clip"}, "support must be 'transform', 'truncate' or None"),
        ({"passes": 1.5}, "passes must be an int >= 1"),
        ({"num_bins": 0}, "num_bins must be a positive int"),
        ({"z_score_theta": "global"}, "z_score_theta must be"),
    ):
        with pytest.raises(ValueError, match=message):
            FlowConfig(**bad)
    # The estimator builds one (with its resolved support) and reports its errors at
    # construction.
    import jsbi
    from jsbi.inference import PosteriorEstimator

    prior = jsbi.get_task("two_moons").prior
    est = PosteriorEstimator(prior, "maf", num_transforms=2)
    assert est.flow_config == FlowConfig(flow="maf", support=est.support, num_transforms=2)
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        PosteriorEstimator(prior, passes=0)
