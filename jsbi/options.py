r"""The front door's options: where each keyword goes, sbi's names for them, and the
checks that run before anything is built.

Example:
    >>> from jsbi.methods import method_config
    >>> route({"num_transforms": 2, "max_epochs": 5}, method_config("npe"))
    {'flow': {'num_transforms': 2}, 'method': {}, 'train': {'max_epochs': 5}}
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributions import Distribution

from jsbi.config import closest
from jsbi.flows import FlowConfig
from jsbi.methods import MethodConfig, NPEConfig, SymmetricConfig
from jsbi.training import TrainConfig

__all__: list[str] = []

#: sbi's names for jsbi's options, accepted with a note.
SBI_NAMES = {
    "density_estimator": "flow",
    "max_num_epochs": "max_epochs",
    "training_batch_size": "batch_size",
}

#: sbi's ``train`` options that have no meaning for jsbi.
SBI_TRAIN_UNSUPPORTED = {
    "resume_training",
    "force_first_round_loss",
    "discard_prior_samples",
    "retrain_from_scratch",
    "dataloader_kwargs",
    "exclude_invalid_x",
    "calibration_kernel",
}


def route(overrides: dict[str, Any], method: MethodConfig) -> dict[str, dict[str, Any]]:
    # Each override to the config that has the field: the flow's, the method's or the
    # training's; sbi's names are translated; an unknown name names the closest field.
    parts: dict[str, dict[str, Any]] = {"flow": {}, "method": {}, "train": {}}
    owners = {"flow": FlowConfig, "method": type(method), "train": TrainConfig}
    for key, value in sbi_names(overrides).items():
        owner = next((k for k, cls in owners.items() if key in cls.names()), None)
        if owner is None and isinstance(method, NPEConfig) and key in SymmetricConfig.names():
            raise ValueError(
                f"{key!r} applies to the symmetric objectives (jeffreys, srfe, distill, "
                "reverse), not to objective='npe'"
            )
        if owner is None:
            fields = {n: cls.__name__ for cls in owners.values() for n in cls.names()}
            near = closest(key, fields)
            hint = f": did you mean {near!r} ({fields[near]})?" if near else ""
            raise ValueError(f"unknown option {key!r}{hint}")
        if key == "objective":
            raise ValueError("pass the method as objective=..., not among the overrides")
        parts[owner][key] = value
    return parts


def sbi_names(options: dict[str, Any]) -> dict[str, Any]:
    # sbi's names for jsbi's options, translated with a one-time note.
    out = dict(options)
    for theirs, ours in SBI_NAMES.items():
        if theirs in out:
            if ours in out:
                raise TypeError(f"pass {ours}= or sbi's {theirs}=, not both")
            warnings.warn(f"{theirs}= is sbi's name; jsbi calls it {ours}=", stacklevel=4)
            out[ours] = out.pop(theirs)
    return out


def check_prior(prior: Any) -> Distribution:
    # Any prior sbi takes, as a torch distribution with a support (jsbi.as_prior).
    from jsbi.simulators.priors import as_prior

    prior = as_prior(prior)
    if len(prior.event_shape) != 1:
        raise ValueError(f"prior must have event shape (d,), got {tuple(prior.event_shape)}")
    return prior


def check_device(device: Any) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}, but CUDA is not available here")
    return device


@contextlib.contextmanager
def interrupt_says(where: str) -> Iterator[None]:
    # Ctrl-C during set-up names where it happened and that nothing was trained.
    try:
        yield
    except KeyboardInterrupt as err:
        if err.args:
            raise
        raise KeyboardInterrupt(f"fit interrupted while {where}: nothing to return") from None


def check_recalibrate(train: TrainConfig, flow: FlowConfig, returns: str = "flow") -> None:
    if train.recalibrate and flow.flow == "ncsf":
        raise ValueError(
            "recalibrate=True needs a flow with a Gaussian base; flow='ncsf' has a uniform "
            "base on the circle, so no temperature"
        )
    if train.recalibrate and returns in ("proxy", "mixture"):
        raise ValueError(
            f"recalibrate=True fits the flow's temperature, but posterior={returns!r} never "
            "returns the flow alone: use posterior='auto' (the flow recalibrated where the "
            "proxy is not ahead) or 'flow'"
        )


def check_proposal(proposal: Distribution | None, prior: Distribution) -> None:
    r"""What ``theta`` was drawn from must be the prior or a truncation of it (TSNPE)."""
    from jsbi.posteriors import TruncatedProposal

    if proposal is None or proposal is prior:
        return
    if not isinstance(proposal, TruncatedProposal):
        raise ValueError(
            "proposal must be None, the prior, or a jsbi.posteriors.TruncatedProposal "
            f"(got {type(proposal).__name__}): NPE's loss on pairs from any other "
            "proposal fits the proposal's posterior, not the prior's"
        )
    if proposal.prior is not prior:
        raise ValueError("proposal must truncate this estimator's prior")


def check_support(theta: torch.Tensor, prior: Distribution, support: str) -> None:
    r"""Rows of ``theta`` outside the prior's support: an error for a flow that maps onto
    it (``support="transform"``), a warning for one that truncates."""
    from jsbi.flows.support import Support, prior_device

    dim = int(prior.event_shape[0])
    inside = Support.from_prior(prior, dim).contains(theta.to(prior_device(prior)))
    outside = int((~inside.cpu()).sum())
    if outside and support == "transform":
        raise ValueError(
            f"{outside} of {len(theta)} rows of theta lie outside the prior's support; "
            "a flow with support='transform' gives them zero density (drop them or pass "
            "support='truncate')"
        )
    if outside:
        warnings.warn(
            f"{outside} of {len(theta)} rows of theta lie outside the prior's support: "
            "the flow fits them, the truncated posterior gives them zero density",
            stacklevel=3,  # the caller of fit
        )
