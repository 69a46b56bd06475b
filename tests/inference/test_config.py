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
