r"""Frozen, checked configs: the objects that travel.

Every option of jsbi lives in one frozen dataclass: :class:`~jsbi.flows.FlowConfig` (the
flow), :class:`~jsbi.methods.SymmetricConfig` (a method), :class:`~jsbi.training.TrainConfig`
(the loop). Each is built once, checked once (every bad value an error naming the field),
and passed as one object; the command line's flags are generated from their fields
(:func:`jsbi.cli.flags.add_config_flags`) and ``run.json`` records :meth:`Config.asdict`.

A field is declared with :func:`option`: its default, its help text (the flag's help too)
and the checks of its value.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Example(Config):
    ...     what = "example"
    ...     rate: float = option(0.1, "a rate", positive=True)
    >>> Example(rate=2.0).replace(rate=3.0)
    Example(rate=3.0)
    >>> Example(rate=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: rate must be finite and > 0, got -1.0
    >>> Example.from_options({"rte": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: unknown example option 'rte': did you mean 'rate'?
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["Config", "option"]  # closest: the error messages' helper, not public

C = TypeVar("C", bound="Config")


def option(
    default: Any,
    help: str,
    *,
    minimum: int | None = None,
    positive: bool = False,
    nonnegative: bool = False,
    open_unit: bool = False,
    optional: bool = False,
    choices: tuple[Any, ...] | None = None,
    advanced: bool = False,
    flag_choices: tuple[str, ...] | None = None,
) -> Any:
    r"""A config field: its default, help text and checks.

    Arguments:
        default: The default (a dict default is copied per instance).
        help: One line for the docs and the command line.
        minimum: An int field's least value.
        positive: A float field must be finite and > 0.
        nonnegative: A float field must be finite and >= 0.
        open_unit: A float field must lie in (0, 1).
        optional: ``None`` is allowed too.
        choices: The allowed values.
        advanced: The command line shows the flag under ``--help-all`` only.
        flag_choices: The names the command line offers (the field may take more, e.g.
            a class).
    """
    meta = {
        "help": help,
        "minimum": minimum,
        "positive": positive,
        "nonnegative": nonnegative,
        "open_unit": open_unit,
        "optional": optional,
        "choices": choices,
        "advanced": advanced,
        "flag_choices": flag_choices,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def kind(f: dataclasses.Field) -> str:
    r"""A field's value kind from its annotation: ``"int"``, ``"float"``, ``"bool"``,
    ``"str"`` or ``"any"``."""
    first = str(f.type).split("|")[0].strip()
    return first if first in ("int", "float", "bool", "str") else "any"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_field(f: dataclasses.Field, value: Any) -> None:
    r"""Raises a :class:`ValueError` naming ``f`` when ``value`` fails its checks."""
    meta, name = f.metadata, f.name
    if value is None and meta.get("optional"):
        return
    choices = meta.get("choices")
    if choices is not None and not any(value is c or value == c for c in choices):
        shown = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    k = kind(f)
    none = " or None" if meta.get("optional") else ""
    if k == "int":
        least = meta.get("minimum")
        if not _is_int(value) or (least is not None and value < least):
            bound = "" if least is None else f" >= {least}"
            raise ValueError(f"{name} must be an int{bound}{none}, got {value!r}")
    elif k == "bool" and not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False{none}, got {value!r}")
    elif k == "float":
        number = math.nan
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
        if meta.get("positive") and not (math.isfinite(number) and number > 0):
            raise ValueError(f"{name} must be finite and > 0{none}, got {value!r}")
        if meta.get("nonnegative") and not (math.isfinite(number) and number >= 0):
            raise ValueError(f"{name} must be finite and >= 0{none}, got {value!r}")
        if meta.get("open_unit") and not 0 < number < 1:  # NaN fails too
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if math.isnan(number):
            raise ValueError(f"{name} must be finite{none}, got {value!r}")


def closest(name: str, names: Iterable[str]) -> str | None:
    r"""The name in ``names`` closest to ``name`` (``None`` if none is close)."""
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Base of jsbi's configs: every field checked when built (:func:`option`'s checks,
    then :meth:`check` for what spans fields); :meth:`replace` and :meth:`from_options`
    answer an unknown name with the closest field."""

    #: What the config configures, for error messages ("unknown flow option ...").
    what: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        r"""Checks across fields (subclasses)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        r"""The field names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def unknown(cls, names: Iterable[str]) -> None:
        r"""Raises a :class:`ValueError` for the first of ``names`` that is not a field,
        naming the closest field."""
        known = cls.names()
        for key in names:
            if key not in known:
                near = closest(key, known)
                hint = f": did you mean {near!r}?" if near else f"; the options are {list(known)}"
                raise ValueError(f"unknown {cls.what} option {key!r}{hint}")

    @classmethod
    def from_options(cls: type[C], options: Mapping[str, Any] | None = None) -> C:
        r"""A config from keyword options; an unknown one is an error naming the closest."""
        options = dict(options or {})
        cls.unknown(options)
        return cls(**options)

    def replace(self: C, **changes: Any) -> C:
        r"""A copy with ``changes``, checked like the original."""
        self.unknown(changes)
        return dataclasses.replace(self, **changes)

    def changed(self) -> dict[str, Any]:
        r"""The fields whose value differs from the class's default."""
        default = type(self)()
        return {
            name: getattr(self, name)
            for name in self.names()
            if getattr(self, name) != getattr(default, name)
        }

    def asdict(self) -> dict[str, Any]:
        r"""The fields as JSON-friendly data (tuples as lists, objects as their repr)."""
        return {name: _plain(getattr(self, name)) for name in self.names()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)
