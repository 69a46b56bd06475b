r"""Training options in one place: a frozen, validated dataclass.

:class:`TrainConfig` holds what :meth:`~jsbi.inference.PosteriorEstimator.fit` trains with.
It is checked when built (each bad value named, a typo'd name answered with the closest
one), and the command line's training flags are generated from its fields
(:func:`add_train_flags`), so ``jsbi run``, ``report`` and ``demo`` share one spelling,
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

__all__ = ["NO_EPOCH_CAP", "TrainConfig", "add_train_flags", "train_config_from_args"]

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
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f": did you mean {close[0]!r}?" if close else f"; the options are {names}"
                raise ValueError(f"unknown training option {key!r}{hint}")
        return cls(**options)

    def fit_options(self) -> dict[str, Any]:
        r"""The options as :meth:`~jsbi.inference.PosteriorEstimator.fit` keywords."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        r"""A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)


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
