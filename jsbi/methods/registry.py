r"""The one list of named methods: what ``objective=``, ``jsbi run --objective`` and the
benchmark's ``--objectives`` mean.

Each name is a method config (:class:`~jsbi.methods.NPEConfig` or a
:class:`~jsbi.methods.SymmetricConfig` preset); :data:`BASELINE` names sbi's NPE, which the
pipeline trains with sbi itself. :func:`build_step` turns a config into the training step.

Example:
    >>> method_config("jeffreys").gate_every
    5
    >>> method_config("jeffreys", posterior="flow").posterior
    'flow'
    >>> method_config("jeffreys", schedule="joint").num_proxy_samples   # the generic K
    8
    >>> method_config("jefreys")
    Traceback (most recent call last):
    ...
    ValueError: unknown method 'jefreys': did you mean 'jeffreys'? (...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.distributions import Distribution

from jsbi.config import closest
from jsbi.flows.conditional import ConditionalFlow
from jsbi.methods.base import TrainingStep
from jsbi.methods.config import MethodConfig, NPEConfig, SymmetricConfig
from jsbi.methods.npe import NPEStep
from jsbi.methods.symmetric import SymmetricStep
from jsbi.proxies.build import build_proxy

__all__ = [
    "BASELINE",
    "METHODS",
    "build_step",
    "method_config",
    "method_names",
    "method_overrides",
]

#: sbi's NPE (zuko NSF, sbi's defaults), trained by sbi on the same simulations: the
#: external baseline.
BASELINE = "sbi-npe"

#: Each named method: its preset and the preset's arguments. A name with overrides is its
#: preset built with them (``jeffreys`` with ``schedule="joint"`` is the joint schedule with
#: the generic defaults, not npe-first's tuning).
_PRESETS: dict[str, tuple[Callable[..., MethodConfig], dict[str, Any]]] = {
    "npe": (NPEConfig, {}),
    "jeffreys": (SymmetricConfig.jeffreys, {}),
    "srfe": (SymmetricConfig.srfe, {}),
    "distill": (SymmetricConfig.distill, {}),
    "reverse": (SymmetricConfig.reverse, {}),
    "jeffreys-flow": (SymmetricConfig.jeffreys, {"posterior": "flow"}),
    "jeffreys-mixture": (SymmetricConfig.jeffreys, {"posterior": "mixture"}),
    "npe-calibrated": (NPEConfig, {"calibration_weight": 5.0}),
    "srfe-anneal": (SymmetricConfig.srfe, {"tau_schedule": "anneal", "tau": 0.1}),
    "jeffreys-joint": (SymmetricConfig.jeffreys, {"proxy": "ratio", "schedule": "joint"}),
    "jeffreys-fixed": (
        SymmetricConfig.jeffreys,
        {"proxy": "ratio", "schedule": "joint", "adaptive": False},
    ),
    "srfe-joint": (SymmetricConfig.srfe, {"proxy": "ratio", "schedule": "joint"}),
    "srfe-anneal-joint": (
        SymmetricConfig.srfe,
        {"proxy": "ratio", "schedule": "joint", "tau_schedule": "anneal", "tau": 0.1},
    ),
    "jeffreys-nophase2": (SymmetricConfig.jeffreys, {"phase2": False}),
    "npe-ensemble": (NPEConfig, {}),
    "npe-recalibrated": (NPEConfig, {}),
    "npe-ensemble-recalibrated": (NPEConfig, {}),
    "jeffreys-recalibrated": (SymmetricConfig.jeffreys, {}),
    "jeffreys-noprobe": (
        SymmetricConfig.jeffreys,
        {"probe_every": None, "abandon_patience": None},
    ),
    "jeffreys-summary": (SymmetricConfig.jeffreys, {"share_embedding": True}),
}

#: The estimator options a named method carries besides its config (the flow's or the
#: training's); a user's own override of one wins.
OVERRIDES: dict[str, dict[str, Any]] = {
    "npe-ensemble": {"ensemble": 5},
    "npe-recalibrated": {"recalibrate": True},
    "npe-ensemble-recalibrated": {"ensemble": 5, "recalibrate": True},
    "jeffreys-recalibrated": {"recalibrate": True},
}

#: The named methods. The first five are the objectives; the others are variants the
#: benchmark compares.
METHODS: dict[str, MethodConfig] = {name: f(**kw) for name, (f, kw) in _PRESETS.items()}

#: What each variant is, for ``--help`` and the docs.
DESCRIPTIONS: dict[str, str] = {
    "npe": "the flow on the forward KL alone (maximum likelihood, sbi's NPE loss)",
    "jeffreys": "the default: npe first, then forward plus reverse KL through the likelihood "
    "proxy while it is the better model; returns the better of the flow and the proxy",
    "srfe": "forward KL plus the Surprisal-Renyi free energy (tau 0.5)",
    "distill": "forward KL plus the forward KL from the proxy, by importance sampling",
    "reverse": "reverse KL only (an ablation): the ratio proxy, the joint schedule",
    "jeffreys-flow": "jeffreys, always returning the flow",
    "jeffreys-mixture": "jeffreys, returning the equal mixture of its flow and its proxy",
    "npe-calibrated": "npe with the conservative coverage penalty (Falkiewicz et al. 2023), "
    "weight 5",
    "srfe-anneal": "srfe with tau annealed from 0.9 to 0.1",
    "jeffreys-joint": "docs/method.md's reconstruction: the ratio proxy, warm-up, then "
    "the joint primal-dual objective",
    "jeffreys-fixed": "the fixed-weight penalty ablation of jeffreys-joint",
    "srfe-joint": "srfe under the joint schedule with the ratio proxy",
    "srfe-anneal-joint": "srfe-anneal under the joint schedule with the ratio proxy",
    "jeffreys-nophase2": "jeffreys stopped at the switch: npe's flow, the proxy (both at "
    "phase 1's best epoch) or their mixture",
    "npe-ensemble": "npe, five flows trained as one batched module, their mixture returned",
    "npe-recalibrated": "npe with its base temperature fitted on the validation pairs",
    "npe-ensemble-recalibrated": "npe-ensemble with its temperature fitted likewise",
    "jeffreys-recalibrated": "jeffreys with the flow's temperature fitted on the validation "
    "pairs: the flow, recalibrated, where the proxy is not ahead (never the mixture)",
    "jeffreys-noprobe": "jeffreys without the phase-1 probes that abandon a trailing proxy",
    "jeffreys-summary": "jeffreys whose likelihood proxy models the flow's embedding of x "
    "(learned summaries), not x: for high-dimensional x",
    BASELINE: "sbi's NPE (zuko NSF, sbi's defaults), the baseline",
}


def method_overrides(method: str | MethodConfig) -> dict[str, Any]:
    r"""The estimator options a named method carries besides its config (:data:`OVERRIDES`;
    none for a config)."""
    return dict(OVERRIDES.get(method, {})) if isinstance(method, str) else {}


def method_names(baseline: bool = True) -> list[str]:
    r"""The registry's names (and sbi's NPE, :data:`BASELINE`, with ``baseline``)."""
    return [*METHODS, *([BASELINE] if baseline else [])]


def method_config(method: str | MethodConfig, **overrides: Any) -> MethodConfig:
    r"""The config of a named method (or ``method`` itself), with ``overrides`` of its
    fields; an unknown name is an error naming the closest."""
    if isinstance(method, str):
        if method not in METHODS:
            near = closest(method, METHODS)
            hint = f"did you mean {near!r}? " if near else ""
            raise ValueError(
                f"unknown method {method!r}: {hint}(the methods are {', '.join(METHODS)})"
            )
        build, kwargs = _PRESETS[method]
        return build(**{**kwargs, **overrides})
    if not isinstance(method, (NPEConfig, SymmetricConfig)):
        raise TypeError(
            f"a method is a name ({', '.join(METHODS)}) or a method config (NPEConfig, "
            f"SymmetricConfig), got {type(method).__name__}"
        )
    return method.replace(**overrides) if overrides else method


def build_step(
    config: MethodConfig,
    flow: ConditionalFlow,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
) -> TrainingStep:
    r"""The training step of ``config``: the flow's, and for a symmetric method its proxy,
    built and standardised on the training pairs."""
    if isinstance(config, NPEConfig):
        return NPEStep(flow, config)
    proxy = build_proxy(config.proxy_config(), flow, prior, theta, x)
    return SymmetricStep(flow, proxy, config, prior)
