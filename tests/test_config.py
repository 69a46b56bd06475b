"""The configs: every option checked once, named in its error, and the CLI's flags made from
the fields."""

from __future__ import annotations

import argparse
import math

import pytest

from jsbi.cli.flags import add_config_flags, given
from jsbi.flows import FlowConfig
from jsbi.methods import SymmetricConfig
from jsbi.methods.config import JOINT_DEFAULTS
from jsbi.training import NO_EPOCH_CAP, TrainConfig


def test_defaults_are_fits_defaults():
    import torch
    from sbi.utils import BoxUniform

    from jsbi.estimator import PosteriorEstimator

    est = PosteriorEstimator(BoxUniform(-torch.ones(2), torch.ones(2)))
    assert est.train_config == TrainConfig()
    assert TrainConfig().max_epochs == NO_EPOCH_CAP and not TrainConfig().capped


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
    import numpy as np
    import torch
    from sbi.utils import BoxUniform

    import jsbi.estimator as estimator
    from jsbi.estimator import PosteriorEstimator

    def never(*args, **kwargs):
        raise AssertionError("the flow was built before the options were checked")

    monkeypatch.setattr(estimator, "build_flows", never)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((20,))
    with pytest.raises(ValueError, match="stop_after_epochs must be an int >= 1"):
        PosteriorEstimator(prior).fit(theta, theta, stop_after_epochs=0)
    with pytest.raises(ValueError, match="stop_after_epochs must be an int >= 1"):
        PosteriorEstimator(prior, stop_after_epochs=0)  # at construction too
    assert TrainConfig(clip_max_norm=None).replace(batch_size=10).batch_size == 10
    assert TrainConfig(batch_size=np.int64(50)).batch_size == 50  # numpy ints are ints


def test_the_flags_come_from_the_fields():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig, "training")
    args = parser.parse_args(["--learning-rate", "1e-3", "--clip-max-norm", "none"])
    config = TrainConfig(max_epochs=500).replace(**given(args, TrainConfig))
    assert config == TrainConfig(learning_rate=1e-3, clip_max_norm=None, max_epochs=500)
    with pytest.raises(SystemExit):
        parser.parse_args(["--validation-fraction", "1.5"])
    only = argparse.ArgumentParser()
    add_config_flags(only, TrainConfig, "training", only=["max_epochs"])
    assert given(only.parse_args([]), TrainConfig) == {}
    with pytest.raises(SystemExit):
        only.parse_args(["--batch-size", "10"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "kl"}, "objective must be one of 'jeffreys', 'srfe'"),
        ({"schedule": "npe-last"}, "schedule must be one of 'npe-first', 'joint'"),
        ({"schedule": "npe-first", "alpha": 2.0}, "alpha apply to schedule='joint'"),
        (
            {"schedule": "joint", "alpha": 0.0},
            r"alpha must be > 0 \(math.inf for a hard constraint\)",
        ),
        ({"schedule": "joint", "dual_lr": math.inf}, "dual_lr must be > 0 and finite"),
        ({"schedule": "joint", "eps": math.nan}, "eps must be"),
        (
            {"schedule": "joint", "num_proxy_samples": 1},
            "num_proxy_samples must be >= 2 for objective='jeffreys'",
        ),
        ({"num_proxy_samples": 2.0}, "num_proxy_samples must be an int >= 1"),
        ({"gate_samples": 1}, "gate_samples must be an int >= 2"),
        ({"gate_every": True}, "gate_every must be an int >= 1"),
        ({"reverse_batch_size": 0}, "reverse_batch_size must be an int >= 1 or None"),
        ({"proxy_learning_rate": 0.0}, "proxy_learning_rate must be finite and > 0 or None"),
        ({"proxy_learning_rate": -1e-3}, "proxy_learning_rate must be finite and > 0 or None"),
        ({"min_ess": math.nan}, "min_ess must be finite and >= 0 or None"),
        ({"gate": "yes"}, "gate must be True or False or None"),
        ({"objective": "srfe", "tau": 1.5}, "tau"),
        ({"tau": 0.3}, "tau and tau_schedule apply to objective='srfe'"),
        ({"gate_sample": 9}, "unknown method option 'gate_sample'.*did you mean 'gate_samples'"),
    ],
)
def test_a_bad_symmetric_option_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        SymmetricConfig.from_options(options)


def test_symmetric_defaults_follow_the_schedule():
    joint = SymmetricConfig(schedule="joint")
    assert joint.joint() == JOINT_DEFAULTS and not joint.gated
    assert joint.replace(alpha=math.inf).joint()["alpha"] == math.inf  # a hard constraint
    first = SymmetricConfig(num_proxy_samples=1)
    assert first.gated and first.eps is None  # npe-first has no dual options
    assert not first.replace(gate=False).gated
    with pytest.raises(ValueError, match="num_proxy_samples must be >= 2"):
        first.replace(schedule="joint")  # K = 1 is npe-first's alone
    # The jeffreys preset holds its tuned defaults for npe-first only.
    assert SymmetricConfig.jeffreys().num_proxy_samples == 1
    assert SymmetricConfig.jeffreys(schedule="joint").num_proxy_samples == 8
    assert SymmetricConfig.reverse().joint_schedule and SymmetricConfig.reverse().proxy == "ratio"


def test_flow_config_checks_each_option_and_passes_only_the_given_ones():
    assert FlowConfig().kwargs() == {}
    assert FlowConfig(num_transforms=3, passes=2).kwargs() == {"num_transforms": 3, "passes": 2}
    with pytest.raises(ValueError, match="did you mean 'num_bins'"):
        FlowConfig.from_options({"num_bin": 4})
    for bad, message in (
        ({"flow": "glow"}, "flow must be one of"),
        ({"support": "clip"}, "support must be one of None, 'transform', 'truncate'"),
        ({"passes": 1.5}, "passes must be an int >= 1"),
        ({"num_bins": 0}, "num_bins must be an int >= 1"),
        ({"z_score_theta": "global"}, "z_score_theta must be"),
    ):
        with pytest.raises(ValueError, match=message):
            FlowConfig(**bad)
    # The estimator builds one (with its resolved support) and reports its errors at
    # construction.
    import jsbi
    from jsbi.estimator import PosteriorEstimator

    prior = jsbi.get_task("two_moons").prior
    est = PosteriorEstimator(prior, "maf", num_transforms=2)
    assert est.flow_config == FlowConfig(flow="maf", support=est.support, num_transforms=2)
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        PosteriorEstimator(prior, passes=0)


def test_an_unknown_override_names_the_config_with_the_closest_field():
    import jsbi
    from jsbi.estimator import PosteriorEstimator

    prior = jsbi.get_task("two_moons").prior
    for name, owner in (
        ("num_transfroms", "FlowConfig"),
        ("gate_sample", "SymmetricConfig"),
        ("learning_rte", "TrainConfig"),
    ):
        with pytest.raises(ValueError, match=f"unknown option '{name}'.*{owner}"):
            PosteriorEstimator(prior, objective="jeffreys", **{name: 1})
    with pytest.raises(ValueError, match="applies to the symmetric objectives"):
        PosteriorEstimator(prior, objective="npe", proxy="ratio")
    assert PosteriorEstimator(prior, max_epochs=7).train_config.max_epochs == 7
