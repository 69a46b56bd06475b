r"""What a saved posterior holds besides weights: its format, and the prior as plain data.

Priors stored as data: sbi's ``BoxUniform``, ``Independent(Uniform)``,
``Independent(Normal)``, ``MultivariateNormal``; for any other prior,
``load_posterior(path, prior=...)`` needs the prior.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, Uniform

__all__: list[str] = []

#: A posterior file's format name and the newest version this jsbi reads. A file is
#: written as version 1 (what an older jsbi reads too) unless it holds a mixture (version
#: 2: its proxy entry says ``mixture``, which a reader of version 1 would load as the
#: proxy's posterior alone).
FORMAT = "jsbi.posterior"
VERSION = 2


def prior_to_spec(prior: Distribution | None) -> dict[str, Any] | None:
    r"""Describes a supported prior as plain data (``None`` if unsupported)."""
    if prior is None:
        return None
    if isinstance(prior, Independent) and prior.reinterpreted_batch_ndims == 1:
        base = prior.base_dist
        if isinstance(base, Uniform) and base.low.ndim == 1:
            kind = "BoxUniform" if type(prior).__name__ == "BoxUniform" else "IndependentUniform"
            return {"type": kind, "low": base.low.detach().cpu(), "high": base.high.detach().cpu()}
        if isinstance(base, Normal) and base.loc.ndim == 1:
            return {
                "type": "IndependentNormal",
                "loc": base.loc.detach().cpu(),
                "scale": base.scale.detach().cpu(),
            }
    if type(prior) is MultivariateNormal and prior.loc.ndim == 1:
        return {
            "type": "MultivariateNormal",
            "loc": prior.loc.detach().cpu(),
            "scale_tril": prior.scale_tril.detach().cpu(),
        }
    return None


def prior_from_spec(spec: dict[str, Any], device: str | torch.device = "cpu") -> Distribution:
    r"""Rebuilds a prior from :func:`prior_to_spec`'s description."""
    kind = spec["type"]
    t = {k: v.to(device) for k, v in spec.items() if isinstance(v, Tensor)}
    if kind == "BoxUniform":
        from sbi.utils import BoxUniform

        return BoxUniform(t["low"], t["high"], device=str(device))
    if kind == "IndependentUniform":
        return Independent(Uniform(t["low"], t["high"]), 1)
    if kind == "IndependentNormal":
        return Independent(Normal(t["loc"], t["scale"]), 1)
    if kind == "MultivariateNormal":
        return MultivariateNormal(t["loc"], scale_tril=t["scale_tril"])
    raise ValueError(f"unknown prior type {kind!r}")
