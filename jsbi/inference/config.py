r"""Options in one place: frozen, validated dataclasses.

:class:`TrainConfig` holds what :meth:`~jsbi.inference.PosteriorEstimator.fit` trains with,
:class:`FlowConfig` the conditional flow every jsbi objective trains, and
:class:`AdaptiveConfig` the symmetric step's options. Each is checked when built (each bad
value named, a typo'd name answered with the closest one), and the command line's flags are
generated from their fields (:func:`add_train_flags`, :func:`add_flow_flags`,
:func:`add_adaptive_flags`), so ``jsbi run``, ``report`` and ``demo`` share one spelling,
one default and one check per option.

Example:
    >>> config = TrainConfig(learning_rate=1e-3, max_epochs=100)
    >>> config.fit_options()["batch_size"]
    200
    >>> TrainConfig.from_options({"learning_rte": 1e-3})
    Traceback (most recent call last):
    ...
    ValueError: unknown training option 'learning_rte': did you mean 'learning_rate'?
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "JOINT_DEFAULTS",
    "NO_EPOCH_CAP",
    "AdaptiveConfig",
    "FlowConfig",
    "TrainConfig",
    "adaptive_options_from_args",
    "add_adaptive_flags",
    "add_flow_flags",
    "add_train_flags",
    "flow_options_from_args",
    "train_config_from_args",
]

#: ``max_epochs`` meaning "no cap: early stopping ends training".
NO_EPOCH_CAP = 2**31 - 1


def _field(default: Any, help: str, **checks: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **checks})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    r"""How a posterior trains (see :func:`~jsbi.inference.trainer.train`).

    Arguments:
        learning_rate: Adam's learning rate, finite and > 0.
        batch_size: Training batch size, >= 1.
        validation_fraction: Held-out fraction for early stopping, in (0, 1).
        stop_after_epochs: Early-stopping patience in epochs, >= 1.
        max_epochs: Epoch cap, >= 1 (:data:`NO_EPOCH_CAP`: none).
        clip_max_norm: Gradient-norm clip, finite and > 0, or ``None`` (off).
    """

    learning_rate: float = _field(5e-4, "Adam learning rate", positive=True)
    batch_size: int = _field(200, "training batch size", minimum=1)
    validation_fraction: float = _field(
        0.1, "fraction of the pairs held out for early stopping", open_unit=True
    )
    stop_after_epochs: int = _field(
        20, "early-stopping patience: epochs without a better validation loss", minimum=1
    )
    max_epochs: int = _field(
        NO_EPOCH_CAP,
        "upper bound on training epochs; early stopping usually ends sooner",
        minimum=1,
    )
    clip_max_norm: float | None = _field(
        5.0, "gradient-norm clip (none: off)", positive=True, optional=True
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> TrainConfig:
        r"""Builds a config from keyword options; an unknown one is an error naming the
        closest valid option."""
        return cls(**_known(cls, options, "unknown training option {!r}"))

    def fit_options(self) -> dict[str, Any]:
        r"""The options as :meth:`~jsbi.inference.PosteriorEstimator.fit` keywords."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        r"""A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)


def _known(cls: type, options: Mapping[str, Any] | None, unknown: str) -> dict[str, Any]:
    # The options, or an error for the first name that is not a field of cls, with the
    # closest one (``unknown`` formats the name).
    options = dict(options or {})
    names = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f": did you mean {close[0]!r}?" if close else f"; the options are {names}"
            raise ValueError(unknown.format(key) + hint)
    return options


def _check(f: dataclasses.Field, value: Any) -> None:
    meta, name = f.metadata, f.name
    if value is None and meta.get("optional"):
        return
    if f.type in ("int", int):
        # numpy ints are ints here (fit took int(batch_size) before this dataclass).
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < meta["minimum"]
        ):
            raise ValueError(f"{name} must be an int >= {meta['minimum']}, got {value!r}")
        return
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if meta.get("positive") and not (math.isfinite(number) and number > 0):
        none = " or None" if meta.get("optional") else ""
        raise ValueError(f"{name} must be finite and > 0{none}, got {value!r}")
    if meta.get("open_unit") and not 0 < number < 1:  # NaN fails too
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def _arg_type(f: dataclasses.Field) -> Any:
    # argparse type: parse, then the field's own check, as a usage error naming the flag.
    def parse(text: str) -> Any:
        if f.metadata.get("optional") and text.lower() in ("none", "off"):
            return None
        # The command line's wording: "expected a finite float > 0, got 'inf'".
        kind = "int" if f.type in ("int", int) else "float"
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            _check(f, value)
        except ValueError:
            meta = f.metadata
            bound = (
                f">= {meta['minimum']}"
                if "minimum" in meta
                else "> 0 and < 1"
                if meta.get("open_unit")
                else "> 0"
            )
            none = " (or none)" if meta.get("optional") else ""
            raise argparse.ArgumentTypeError(
                f"expected a finite {kind} {bound}{none}, got {text!r}"
            ) from None
        return value

    parse.__name__ = f.name
    return parse


def add_train_flags(
    parser: argparse.ArgumentParser,
    *,
    only: Sequence[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    r"""Adds one ``--flag`` per :class:`TrainConfig` field (``max_epochs`` ->
    ``--max-epochs``), with the field's default, help and check.

    Arguments:
        parser: The (sub)command's parser.
        only: The fields to add (default: all).
        defaults: Other defaults than the dataclass's (e.g. the demo's epoch cap).
    """
    defaults = dict(defaults or {})
    for f in dataclasses.fields(TrainConfig):
        if only is not None and f.name not in only:
            continue
        default = defaults.get(f.name, f.default)
        shown = "no limit" if default == NO_EPOCH_CAP else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_arg_type(f),
            default=default,
            help=f"{f.metadata['help']} (default: {shown})",
        )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    r"""The :class:`TrainConfig` of a parsed command line (fields it has no flag for keep
    their defaults)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return TrainConfig(**{k: getattr(args, k) for k in names if hasattr(args, k)})


#: The flows :class:`FlowConfig` names (:data:`jsbi.inference.flows.FLOWS`' keys).
FLOW_NAMES = ("nsf", "maf", "ncsf", "realnvp", "naf")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    r"""The conditional flow :math:`q_\phi(\theta \mid x)` of a jsbi estimator
    (:func:`~jsbi.inference.flows.build_conditional_flow`), checked when built.

    Arguments:
        flow: A name in :data:`FLOW_NAMES` or a zuko flow class.
        support: How a bounded prior is respected, ``"transform"`` or ``"truncate"``
            (``None``: the package's default, :data:`~jsbi.inference.support.DEFAULT_SUPPORT`).
        num_transforms: Flow transforms, >= 1.
        num_bins: Spline bins per transform (``nsf``, ``ncsf``), >= 1.
        hidden_features: The hidden-layer widths of each transform's network, or one
            width (sbi's spelling: one layer of that width per transform).
        passes: zuko's ``passes``: 2 is a coupling flow (one network pass to sample
            instead of one per parameter); ``None``: fully autoregressive.
        z_score_theta: ``True``, ``"independent"``, ``"local"`` or ``False`` (see
            :func:`~jsbi.inference.flows.build_conditional_flow`).
        z_score_x: ``True``, ``"robust"`` or ``False``.

    Example:
        >>> FlowConfig(passes=2).kwargs()
        {'passes': 2}
        >>> FlowConfig(num_transforms=0)
        Traceback (most recent call last):
        ...
        ValueError: num_transforms must be a positive int, got 0
    """

    flow: Any = _field("nsf", "conditional flow", choices=FLOW_NAMES)
    support: str | None = _field(
        None,
        "how the flow respects a bounded prior: transform (it lives in the prior's "
        "unconstrained space) or truncate (sbi's way: on theta, samples outside rejected, "
        "log_prob renormalised)",
        choices=("transform", "truncate"),
    )
    num_transforms: int = _field(5, "flow transforms, >= 1")
    num_bins: int = _field(10, "spline bins per transform (nsf, ncsf), >= 1")
    hidden_features: Any = _field(
        (50,) * 5,
        "hidden-layer widths of each transform's network, comma-separated (one number: "
        "sbi's spelling, one layer of that width per transform)",
    )
    passes: int | None = _field(
        None, "zuko's passes: 2 is a coupling flow (fast sampling), none fully autoregressive"
    )
    z_score_theta: Any = _field(
        True, "standardise theta", choices=(True, False, "independent", "local")
    )
    z_score_x: Any = _field(True, "standardise x", choices=(True, False, "robust"))

    def __post_init__(self) -> None:
        from jsbi.inference.flows import FLOWS, check_flow_options

        if isinstance(self.flow, str):
            if self.flow.lower() not in FLOWS:
                raise ValueError(
                    f"flow must be one of {sorted(FLOWS)} or a zuko flow class, got {self.flow!r}"
                )
        elif not isinstance(self.flow, type):
            raise ValueError(f"flow must be a name or a zuko flow class, got {self.flow!r}")
        if self.support not in (None, "transform", "truncate"):
            raise ValueError(
                f"support must be 'transform', 'truncate' or None, got {self.support!r}"
            )
        if self.passes is not None and _int_below(self.passes, 1):
            raise ValueError(f"passes must be an int >= 1 or None, got {self.passes!r}")
        check_flow_options(
            num_transforms=self.num_transforms,
            num_bins=self.num_bins,
            hidden_features=self.hidden_features,
            z_score_theta=self.z_score_theta,
            z_score_x=self.z_score_x,
        )

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> FlowConfig:
        r"""Builds a config from keyword options; an unknown one is an error naming the
        closest valid option."""
        return cls(**_known(cls, options, "unknown flow option {!r}"))

    def kwargs(self) -> dict[str, Any]:
        r"""The architecture options that differ from the defaults, as
        :func:`~jsbi.inference.flows.build_conditional_flow` keywords (``flow`` and
        ``support`` are its own arguments)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("flow", "support") and getattr(self, f.name) != f.default
        }

    def replace(self, **changes: Any) -> FlowConfig:
        r"""A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)


def _flow_flag_type(f: dataclasses.Field) -> Any:
    # The parse of one FlowConfig flag, then FlowConfig's own check of that value, as a
    # usage error naming the flag.
    words = {"true": True, "false": False}

    def parse(text: str) -> Any:
        value: Any
        if f.name == "hidden_features":
            try:
                widths = tuple(int(w) for w in text.split(","))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated ints, got {text!r}"
                ) from None
            value = widths[0] if len(widths) == 1 else widths
        elif f.name in ("num_transforms", "num_bins", "passes"):
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected int, got {text!r}") from None
        else:
            value = words.get(text.lower(), text)
        try:
            FlowConfig(**{f.name: value})
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = f.name
    return parse


def add_flow_flags(parser: argparse.ArgumentParser) -> None:
    r"""Adds one flag per :class:`FlowConfig` field (``num_transforms`` ->
    ``--num-transforms``), each defaulting to "not given", so the estimator's own default
    holds (:func:`flow_options_from_args` returns only the given ones)."""
    g = parser.add_argument_group(
        "the flow (every jsbi method; sbi-npe keeps sbi's own)",
        "Left out, each takes the estimator's default (see jsbi.inference.FlowConfig).",
    )
    for f in dataclasses.fields(FlowConfig):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        choices = f.metadata.get("choices")
        if f.name in ("flow", "support"):
            shown = "nsf" if f.name == "flow" else "the package's, DEFAULT_SUPPORT"
            g.add_argument(flag, choices=choices, default=None, help=f"{help} (default: {shown})")
            continue
        if choices:
            help += " (" + ", ".join(str(c).lower() for c in choices) + ")"
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        g.add_argument(
            flag,
            type=_flow_flag_type(f),
            default=None,
            help=f"{help} (default: {str(shown).lower() if shown is not None else 'none'})",
        )


def flow_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    r"""The :class:`FlowConfig` options a parsed command line gave (those left out are not
    in the dict)."""
    names = [f.name for f in dataclasses.fields(FlowConfig)]
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


#: The joint schedule's dual-variable and warm-up defaults (METHOD.md section 4);
#: ``schedule="npe-first"`` has neither, and giving one with it is an error.
JOINT_DEFAULTS: dict[str, Any] = {
    "eps": 0.0,
    "alpha": 1.0,
    "dual_lr": 0.05,
    "lambda_init": 1.0,
    "adaptive": True,
    "warmup_epochs": 10,
}

_OBJECTIVES = ("jeffreys", "srfe", "reverse", "distill")
_SCHEDULES = ("joint", "npe-first")


@dataclasses.dataclass(frozen=True)
class AdaptiveConfig:
    r"""The options of the symmetric step (:class:`~jsbi.inference.trainer.AdaptiveStep`),
    checked when built: each bad value is an error naming it, and an unknown name
    (:meth:`from_options`) is answered with the closest one.

    Arguments:
        objective: ``"jeffreys"``, ``"srfe"``, ``"reverse"`` or ``"distill"``.
        schedule: ``"joint"`` (METHOD.md section 4) or ``"npe-first"`` (section 4b).
        gate: Whether the reverse weight follows the proxy's measured fit (``None``: on for
            ``npe-first``; the joint schedule ignores it). See :attr:`gated`.
        gate_samples: Importance samples per validation ``x`` for the gate's proxy NLL,
            >= 2.
        gate_every: In phase 2, the gate is measured on every ``gate_every``-th epoch (the
            first included) and keeps its value in between, >= 1: the measurement is the
            largest cost of a phase-2 epoch (``benchmarks/results/phase_cost.txt``).
        proxy_reverse_weight: ``npe-first``: the weight of :math:`R` in the proxy's loss,
            >= 0.
        path_gradient: Whether the flow's reverse gradient uses the path
            (sticking-the-landing) estimator (``jeffreys`` and ``reverse`` only; ignored
            otherwise).
        phase2_patience: ``npe-first``: phase 2's early-stopping patience, >= 1
            (``None``: the loop's ``stop_after_epochs``).
        tau: ``srfe``: a float in (0, 1), a schedule name (``"anneal"``, ``"reverse"``,
            ``"step"``, ``"constant"``) or a :class:`~jsbi.inference.tau.TauSchedule`.
        tau_epochs: Epochs of the symmetric phase over which a tau schedule runs, >= 1.
        eps, alpha, dual_lr, lambda_init, adaptive, warmup_epochs: ``joint`` only: the
            constraint's tolerance :math:`\epsilon`, the resilience cost :math:`\alpha`
            (``math.inf``: a hard constraint), the dual step :math:`\eta_\lambda`, the
            dual's initial value (the fixed weight when not adaptive), ``False`` for the
            fixed-weight penalty ablation, and the warm-up epochs. ``None`` is
            :data:`JOINT_DEFAULTS`' value (:meth:`joint`); a value with ``npe-first`` is an
            error.
        reverse_weight: :math:`\beta`, the weight of :math:`R` in the flow's loss (and, in
            the joint schedule, the proxy's), finite and > 0.
        num_proxy_samples: :math:`K`, flow samples per observation (``srfe`` and the
            joint schedule need at least 2).
        num_prior_samples: :math:`M >= 0`, prior samples per observation added to the
            importance sampler of :math:`\log Z` (and of ``distill``'s proposal).
        reverse_batch_size: How many observations of each batch enter the reverse term,
            >= 1 (``None``: all).
        proxy_every: In npe-first's phase 1 (and phase-2 steps without the reverse term),
            the proxy fits its data on every ``proxy_every``-th batch only, >= 1.
        reverse_every: ``npe-first``: in phase 2 the reverse term enters every
            ``reverse_every``-th batch only (the first included), with its weights
            (``reverse_weight``, ``proxy_reverse_weight``) times ``reverse_every``, so the
            gradient is the same in expectation; the batches in between are npe steps
            (with the proxy's own fit), >= 1. A reverse-term step costs several npe steps
            (``benchmarks/results/phase_cost.txt``).
        proxy_patience: ``npe-first``: the proxy's own early stopping, >= 1. Its own fit on
            the validation pairs is measured every epoch of both phases; after this many
            epochs without a better one it is restored to its best state and stops
            fitting (with ``proxy_reverse_weight=0`` it then no longer moves at all).
            ``None``: it fits to the end, its best state kept only at the switch.
        proxy_learning_rate: The proxy's Adam learning rate (``None``: the flow's).
        min_ess: ESS fraction below which a joint batch counts as collapsed (``None``:
            ``1.5 / (num_proxy_samples + num_prior_samples)``).
        max_lambda: A dual above this counts as a blow-up, > 0.
        max_restores: Fault restores allowed before training stops, >= 0.

    Example:
        >>> AdaptiveConfig(schedule="npe-first").gated
        True
        >>> AdaptiveConfig.from_options({"gate_sample": 9})
        Traceback (most recent call last):
        ...
        ValueError: unknown option 'gate_sample' of the symmetric objective: did you mean 'gate_samples'?
    """  # noqa: E501

    objective: str = _field("jeffreys", "the symmetric objective")
    schedule: str = _field(
        "joint",
        "npe-first: npe to its early stop, then the symmetric objective from its best state, "
        "the better phase kept; joint: warm-up, then the primal-dual objective",
        choices=_SCHEDULES,
    )
    gate: bool | None = _field(
        None,
        "npe-first: the reverse term only while the proxy's validation NLL is below the "
        "flow's (--no-gate: always)",
    )
    gate_samples: int = _field(256, "importance samples per validation x for the gate, >= 2")
    gate_every: int = _field(1, "npe-first: measure the gate every n-th phase-2 epoch, >= 1")
    proxy_reverse_weight: float = _field(
        0.0, "npe-first: the reverse term's weight in the proxy's loss, >= 0"
    )
    path_gradient: bool = _field(
        False, "jeffreys, reverse: the path (sticking-the-landing) gradient of the reverse term"
    )
    phase2_patience: int | None = _field(
        None, "npe-first: phase 2's early-stopping patience, >= 1 (default: the loop's)"
    )
    tau: Any = _field(0.5, "srfe: the Renyi order in (0, 1) or a schedule name")
    tau_epochs: int = _field(50, "srfe: epochs over which a tau schedule runs, >= 1")
    eps: float | None = _field(
        None,
        "joint: constraint tolerance epsilon: the proxy's fit C may exceed the forward term F "
        "by eps plus the slack",
    )
    alpha: float | None = _field(
        None,
        "joint: resilience cost alpha of the slack (slack = lambda / alpha); larger means a "
        "stiffer constraint",
    )
    dual_lr: float | None = _field(None, "joint: dual ascent step size on the multiplier lambda")
    lambda_init: float | None = _field(None, "joint: the multiplier's initial value, >= 0")
    adaptive: bool | None = _field(
        None,
        "joint: the adaptive primal-dual scheme (--no-adaptive: the fixed-weight penalty "
        "ablation, lambda fixed, no slack)",
    )
    warmup_epochs: int | None = _field(
        None, "joint: epochs of forward-KL flow and proxy fit before the reverse term, >= 0"
    )
    reverse_weight: float = _field(1.0, "beta: the reverse term's weight in the flow's loss, > 0")
    num_proxy_samples: int = _field(
        8, "K: flow samples per observation that estimate the reverse term"
    )
    num_prior_samples: int = _field(
        0, "M: prior samples per observation added to the importance sampler of log Z, >= 0"
    )
    reverse_batch_size: int | None = _field(
        None, "observations of each batch in the reverse term, >= 1 (default: all)"
    )
    proxy_every: int = _field(
        1, "npe-first: in phase 1 the proxy fits its data on every n-th batch, >= 1"
    )
    reverse_every: int = _field(
        1, "npe-first: in phase 2 the reverse term on every n-th batch only, its weight times n"
    )
    proxy_patience: int | None = _field(
        None,
        "npe-first: the proxy stops fitting, at its best state, after this many epochs "
        "without a better own validation fit, >= 1 (default: it fits to the end)",
    )
    proxy_learning_rate: float | None = _field(
        None, "the proxy's Adam learning rate, > 0 (default: the flow's)"
    )
    min_ess: float | None = _field(
        None, "joint: ESS fraction below which a batch counts as collapsed, >= 0"
    )
    max_lambda: float = _field(1e4, "a dual variable above this is a blow-up, > 0")
    max_restores: int = _field(5, "fault restores allowed before training stops, >= 0")

    def __post_init__(self) -> None:
        if self.objective not in _OBJECTIVES:
            raise ValueError(
                f"objective must be 'jeffreys', 'srfe', 'reverse' or 'distill', got "
                f"{self.objective!r}"
            )
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be 'joint' or 'npe-first', got {self.schedule!r}")
        given = sorted(k for k in JOINT_DEFAULTS if getattr(self, k) is not None)
        if self.schedule == "npe-first" and given:
            raise ValueError(
                f"{', '.join(given)} apply to schedule='joint' (the dual variable and the "
                "warm-up); schedule='npe-first' has neither"
            )
        joint = self.joint()
        for name, value in (
            ("dual_lr", joint["dual_lr"]),
            ("alpha", joint["alpha"]),
            ("reverse_weight", self.reverse_weight),
            ("max_lambda", self.max_lambda),
        ):
            if math.isnan(value) or not value > 0 or (name != "alpha" and math.isinf(value)):
                raise ValueError(
                    f"{name} must be > 0"
                    + ("" if name == "alpha" else " and finite")
                    + (" (math.inf for a hard constraint)" if name == "alpha" else "")
                    + f", got {value}"
                )
        for name, value in (
            ("eps", joint["eps"]),
            ("lambda_init", joint["lambda_init"]),
            ("proxy_reverse_weight", self.proxy_reverse_weight),
        ):
            if not (math.isfinite(value) and (name == "eps" or value >= 0)):
                raise ValueError(
                    f"{name} must be finite"
                    + ("" if name == "eps" else " and >= 0")
                    + f", got {value}"
                )
        min_k = 2 if (self.schedule == "joint" or self.objective == "srfe") else 1
        if _int_below(self.num_proxy_samples, min_k):
            raise ValueError(
                f"num_proxy_samples must be >= {min_k} for objective={self.objective!r} "
                f"with schedule={self.schedule!r}, got {self.num_proxy_samples}"
            )
        if _int_below(joint["warmup_epochs"], 0) or _int_below(self.tau_epochs, 1):
            raise ValueError(
                f"warmup_epochs must be >= 0 and tau_epochs >= 1, got "
                f"{joint['warmup_epochs']}, {self.tau_epochs}"
            )
        # (name, minimum, whether None is allowed)
        for name, minimum, optional in (
            ("num_prior_samples", 0, False),
            ("gate_samples", 2, False),
            ("gate_every", 1, False),
            ("proxy_every", 1, False),
            ("reverse_every", 1, False),
            ("max_restores", 0, False),
            ("phase2_patience", 1, True),
            ("reverse_batch_size", 1, True),
            ("proxy_patience", 1, True),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if _int_below(value, minimum):
                raise ValueError(f"{name} must be >= {minimum} (an int), got {value!r}")
        lr, ess = self.proxy_learning_rate, self.min_ess
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"proxy_learning_rate must be > 0 or None (the flow's), got {lr!r}")
        if ess is not None and not (math.isfinite(ess) and ess >= 0):
            raise ValueError(f"min_ess must be finite and >= 0 or None, got {ess!r}")
        if self.proxy_patience is not None and (
            self.schedule != "npe-first" or self.proxy_reverse_weight
        ):
            raise ValueError(
                "proxy_patience applies to schedule='npe-first' with proxy_reverse_weight=0 "
                "(a proxy that shares the reverse term has no own early stopping)"
            )
        if self.reverse_every != 1 and self.schedule != "npe-first":
            raise ValueError(
                "reverse_every applies to schedule='npe-first' (the joint schedule's dual "
                "variable steps on every batch)"
            )
        if self.gate not in (None, True, False):
            raise ValueError(f"gate must be True, False or None, got {self.gate!r}")
        if self.objective == "srfe":
            from jsbi.inference.tau import make_tau_schedule

            make_tau_schedule(self.tau)  # its own error names tau

    @classmethod
    def coerce(
        cls, config: AdaptiveConfig | None, options: Mapping[str, Any] | None = None
    ) -> AdaptiveConfig:
        r"""``config``, or one built from ``options`` when it is ``None``; both is an
        error."""
        if config is None:
            return cls.from_options(options)
        if options:
            raise TypeError(f"pass config= or options {sorted(options)}, not both")
        return config

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> AdaptiveConfig:
        r"""Builds a config from keyword options; an unknown one is an error naming the
        closest valid option."""
        return cls(**_known(cls, options, "unknown option {!r} of the symmetric objective"))

    @property
    def gated(self) -> bool:
        r"""Whether the gate is on (``gate=None``: on for ``npe-first``)."""
        return self.schedule == "npe-first" if self.gate is None else bool(self.gate)

    def needs_prior(self) -> list[str]:
        r"""What in this config needs the prior: ``num_prior_samples > 0``, ``distill``
        (its proposal mixes in the prior) and the gate (its measurement does)."""
        needs = (
            (self.num_prior_samples > 0, "num_prior_samples > 0"),
            (self.objective == "distill", "objective='distill'"),
            (self.gated, "the gate (gate=True)"),
        )
        return [what for need, what in needs if need]

    def joint(self) -> dict[str, Any]:
        r"""The joint schedule's options, each ``None`` replaced by its
        :data:`JOINT_DEFAULTS` value (what ``npe-first``'s unused dual is built with)."""
        given = {k: getattr(self, k) for k in JOINT_DEFAULTS}
        return {k: JOINT_DEFAULTS[k] if v is None else v for k, v in given.items()}

    def replace(self, **changes: Any) -> AdaptiveConfig:
        r"""A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)


def _int_below(value: Any, minimum: int) -> bool:
    # True when value is not an int (bools excluded, numpy ints included) >= minimum.
    return isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum


#: AdaptiveConfig's fields without a generated flag: the objective is ``--objective``, and
#: tau is the estimator's ``--tau`` with ``--tau-schedule``.
_NO_FLAG = ("objective", "tau")


def _option_parser(f: dataclasses.Field) -> Any:
    # The parse of a number flag (int or float, "none" where the field may be None), then
    # AdaptiveConfig's own check of that one value (under the schedule it applies to), as
    # a usage error naming the flag.
    kind = int if f.type.startswith("int") else float
    optional = f.type.endswith("| None")
    schedule = "joint" if f.name in JOINT_DEFAULTS or f.name == "min_ess" else "npe-first"

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        try:
            AdaptiveConfig(schedule=schedule, **{f.name: value})
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = f.name
    return parse


def add_adaptive_flags(parser: argparse.ArgumentParser) -> None:
    r"""Adds one flag per :class:`AdaptiveConfig` field (``gate_samples`` ->
    ``--gate-samples``; a bool is ``--path-gradient`` / ``--no-path-gradient``), each
    defaulting to "not given", so the estimator's own default holds
    (:func:`adaptive_options_from_args` returns only the given ones). ``--fixed-weight``
    is ``--no-adaptive``'s older spelling."""
    g = parser.add_argument_group(
        "symmetric objectives (jeffreys, srfe, reverse, distill; rejected with npe)",
        "Left out, each takes the estimator's default (see jsbi.PosteriorEstimator and "
        "jsbi.inference.AdaptiveConfig).",
    )
    for f in dataclasses.fields(AdaptiveConfig):
        if f.name in _NO_FLAG:
            continue
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type.startswith("bool"):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.type == "str":
            g.add_argument(flag, choices=f.metadata["choices"], default=None, help=help)
        else:
            g.add_argument(flag, type=_option_parser(f), default=None, help=help)
    g.add_argument(
        "--fixed-weight",
        dest="adaptive",
        action="store_const",
        const=False,
        help="the older spelling of --no-adaptive",
    )


def adaptive_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    r"""The :class:`AdaptiveConfig` options a parsed command line gave (those left out are
    not in the dict)."""
    names = [f.name for f in dataclasses.fields(AdaptiveConfig) if f.name not in _NO_FLAG]
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
