"""Every tensor of a training step follows ``device=``: none is made on the default device.

This machine has no GPU, so a CUDA mismatch cannot happen here. What causes one can: a
tensor created inside the training loop without ``device=`` lands on the default device
(the CPU) next to the model's. These tests record every such creation by jsbi code while
``fit`` and the posterior run; ``benchmarks/gpu_check.py`` is the check on a real GPU.
"""

from __future__ import annotations

import collections
import sys
import warnings

import pytest
import torch
from sbi.utils import BoxUniform
from torch.overrides import TorchFunctionMode

import jsbi
from jsbi.estimator import PosteriorEstimator
from jsbi.flows.support import prior_log_prob

_FACTORIES = {
    torch.randn,
    torch.rand,
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.tensor,
    torch.arange,
    torch.linspace,
    torch.eye,
    torch.randint,
    torch.normal,
    torch.randperm,
}
# Where a default-device tensor is right: module constructors (their buffers move with
# .to(device)) and the split and the epoch's shuffle, drawn from a seeded CPU generator
# and moved.
_SMALL = {"hidden_features": (16,), "num_transforms": 1, "num_bins": 4}
_CONSTRUCTION = {"__init__", "_stat", "split_indices", "train", "_train_epoch"}


class _DefaultDeviceCreations(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.found: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _FACTORIES and "device" not in kwargs and getattr(out, "ndim", 0) > 0:
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            path = "" if frame is None else frame.f_code.co_filename
            if "/jsbi/" in path and frame.f_code.co_name not in _CONSTRUCTION:
                where = f"{path.split('/jsbi/')[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
                self.found[f"{where} {func.__name__}"] += 1
        return out


@pytest.mark.parametrize(
    "options",
    [
        {"objective": "npe"},
        # gate=False: phase 2 runs whatever the proxy's fit.
        {
            "objective": "jeffreys",
            "gate": False,
            "phase2_patience": 2,
            "proxy_options": _SMALL,
        },
        {
            "objective": "srfe",
            "gate": False,
            "phase2_patience": 2,
            "proxy_options": _SMALL,
        },
        {
            "objective": "distill",
            "gate": False,
            "phase2_patience": 2,
            "proxy_options": _SMALL,
        },
        {"objective": "jeffreys"},  # the gate measured, phase 2 (or its skip)
        {"objective": "jeffreys", "posterior": "mixture"},  # both members sampled
        {
            "objective": "jeffreys",
            "schedule": "joint",
            "proxy": "ratio",
            "warmup_epochs": 1,
            "num_prior_samples": 2,
        },
    ],
    ids=lambda o: "-".join(str(v) for k, v in o.items() if k != "proxy_options"),
)
def test_training_and_sampling_create_no_tensor_on_the_default_device(options):
    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, 200, seed=0)
    est = PosteriorEstimator(task.prior, **_SMALL, **options)
    mode = _DefaultDeviceCreations()
    with warnings.catch_warnings(), mode:
        warnings.simplefilter("ignore")
        post = est.fit(
            theta,
            x,
            max_epochs=200,
            stop_after_epochs=2,
            learning_rate=3e-3,
            show_progress_bar=False,
        )
        post.sample((5,), x=x[0])
        post.log_prob(theta[:3], x=x[0])
        post.sample_batched((4,), x=x[:2])
    if options.get("gate") is False:
        assert max(post.history["train_phase"]) == 2
    assert not mode.found, f"tensors made on the default device: {dict(mode.found)}"


def test_the_detector_finds_a_default_device_tensor():
    # The test above cannot pass by missing them: a bare torch.zeros in jsbi code counts.
    from jsbi.flows import support

    mode = _DefaultDeviceCreations()
    with mode:
        support.torch.zeros(3)  # called from this test file: not jsbi code
        exec(compile("torch.zeros(3)", support.__file__, "exec"), {"torch": torch})
    assert sum(mode.found.values()) == 1


def test_the_prior_is_evaluated_on_its_own_device_and_answers_on_thetas():
    calls = []

    class Recording(BoxUniform):
        def log_prob(self, value):
            calls.append(value.device)
            return super().log_prob(value)

    prior = Recording(-torch.ones(2), torch.ones(2))
    lp = prior_log_prob(prior, torch.zeros(4, 2, dtype=torch.float64))
    assert calls == [torch.device("cpu")] and lp.shape == (4,) and lp.device == torch.device("cpu")


def test_the_gpu_check_runs_on_the_cpu(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--device", "cpu", "--budgets", "500", "--methods", "npe", "--max-epochs", "1"]
    argv += ["--cpu-epochs", "1", "--num-samples", "200", "--max-batch", "1024"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "    500 npe" in out and "largest npe batch that fits: 1024" in out
