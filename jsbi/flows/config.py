r"""The flow's options: :class:`FlowConfig`, checked when built.

Example:
    >>> FlowConfig(passes=2).kwargs()
    {'passes': 2}
    >>> FlowConfig(num_transforms=0)
    Traceback (most recent call last):
    ...
    ValueError: num_transforms must be an int >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jsbi.config import Config, option
from jsbi.flows.conditional import FLOWS, check_flow_options
from jsbi.flows.support import SUPPORT_MODES

__all__ = ["FlowConfig"]

#: The flows :class:`FlowConfig` names (:data:`jsbi.flows.FLOWS`' keys).
FLOW_NAMES = tuple(FLOWS)


@dataclasses.dataclass(frozen=True)
class FlowConfig(Config):
    r"""The conditional flow :math:`q_\phi(\theta \mid x)` of a jsbi estimator
    (:func:`~jsbi.flows.build_conditional_flow`).

    Arguments:
        flow: A name in :data:`FLOW_NAMES` or a zuko flow class.
        support: How a bounded prior is respected, ``"transform"`` or ``"truncate"``
            (``None``: the method's choice, else :data:`~jsbi.flows.support.DEFAULT_SUPPORT`).
        num_transforms: Flow transforms, >= 1.
        num_bins: Spline bins per transform (``nsf``, ``ncsf``), >= 1.
        hidden_features: The hidden-layer widths of each transform's network, or one
            width (sbi's spelling: one layer of that width per transform).
        passes: zuko's ``passes``: 2 is a coupling flow (one network pass to sample
            instead of one per parameter); ``None``: fully autoregressive.
        z_score_theta: ``True``, ``"independent"``, ``"local"`` or ``False`` (see
            :func:`~jsbi.flows.build_conditional_flow`).
        z_score_x: ``True``, ``"robust"`` or ``False``.
        ensemble: ``K`` flows from ``K`` initialisations, trained as one module with a
            member dimension; the posterior is their equal-weight mixture
            (:class:`~jsbi.flows.ensemble.FlowEnsemble`).
        zuko_options: Further keywords of the zuko flow class.
    """

    what = "flow"

    flow: Any = option("nsf", "the conditional flow", flag_choices=tuple(FLOWS))
    support: str | None = option(
        None,
        "how the flow respects a bounded prior: truncate (sbi's way: samples outside "
        "rejected, log_prob renormalised) or transform (it lives in the prior's "
        "unconstrained space)",
        choices=(None, *SUPPORT_MODES),
    )
    num_transforms: int = option(5, "flow transforms", minimum=1)
    num_bins: int = option(10, "spline bins per transform (nsf, ncsf)", minimum=1, advanced=True)
    hidden_features: Any = option(
        (50,) * 5,
        "hidden-layer widths of each transform's network, comma-separated (one number: "
        "sbi's spelling, one layer of that width per transform)",
    )
    passes: int | None = option(
        None,
        "zuko's passes: 2 is a coupling flow (fast sampling), none fully autoregressive",
        minimum=1,
        optional=True,
        advanced=True,
    )
    z_score_theta: Any = option(
        True, "standardise theta", choices=(True, False, "independent", "local"), advanced=True
    )
    z_score_x: Any = option(True, "standardise x", choices=(True, False, "robust"), advanced=True)
    ensemble: int = option(
        1,
        "members of an ensemble of flows trained as one batched module, their mixture the "
        "posterior (npe)",
        minimum=1,
    )
    zuko_options: Mapping[str, Any] = option(
        {}, "further keywords of the zuko flow class", advanced=True
    )

    def check(self) -> None:
        if isinstance(self.flow, str):
            if self.flow.lower() not in FLOWS:
                raise ValueError(
                    f"flow must be one of {sorted(FLOWS)} or a zuko flow class, got {self.flow!r}"
                )
        elif not isinstance(self.flow, type):
            raise ValueError(f"flow must be a name or a zuko flow class, got {self.flow!r}")
        if not isinstance(self.zuko_options, Mapping):
            raise ValueError(f"zuko_options must be a dict, got {self.zuko_options!r}")
        check_flow_options(
            num_transforms=self.num_transforms,
            num_bins=self.num_bins,
            hidden_features=self.hidden_features,
            z_score_theta=self.z_score_theta,
            z_score_x=self.z_score_x,
        )

    def kwargs(self) -> dict[str, Any]:
        r"""The architecture options that differ from the defaults, as
        :func:`~jsbi.flows.build_conditional_flow` keywords (``flow`` and ``support`` are
        its own arguments)."""
        changed = self.changed()
        own = ("flow", "support", "zuko_options", "ensemble")
        kwargs = {k: v for k, v in changed.items() if k not in own}
        return {**kwargs, **dict(self.zuko_options)}
