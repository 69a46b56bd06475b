r"""Command-line flags from any config: one function makes them, one reads them back.

:func:`add_config_flags` adds a ``--flag`` per field of a config class
(:class:`~jsbi.flows.FlowConfig`, :class:`~jsbi.methods.SymmetricConfig`,
:class:`~jsbi.training.TrainConfig`): its help is the field's, its parse checks the value
as the config does, and it defaults to "not given". :func:`given` returns the fields a
command line gave, for ``Config.replace(**given(args, Config))``. Fields marked advanced
are shown by ``--help-all`` only.

Example:
    >>> import argparse
    >>> from jsbi.training import TrainConfig
    >>> parser = argparse.ArgumentParser()
    >>> add_config_flags(parser, TrainConfig, "training")
    >>> args = parser.parse_args(["--max-epochs", "20"])
    >>> given(args, TrainConfig)
    {'max_epochs': 20}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

from jsbi.config import Config, check_field, kind

__all__ = ["add_config_flags", "given"]

_WORDS = {"true": True, "false": False, "none": None}
#: A flag left out is not in the parsed namespace at all: "given" is what is there.
_GIVEN = argparse.SUPPRESS


def flag(name: str) -> str:
    r"""A field's flag: ``max_epochs`` -> ``--max-epochs``."""
    return "--" + name.replace("_", "-")


def _parser(f: dataclasses.Field) -> Any:
    # The parse of one field's text, then the field's own checks, as a usage error that
    # names the flag.
    k = kind(f)

    def parse(text: str) -> Any:
        value: Any
        try:
            if text.lower() == "none" and f.metadata.get("optional"):
                value = None
            elif k in ("int", "float"):
                value = int(text) if k == "int" else float(text)
            elif text.startswith("{"):
                value = json.loads(text)
            elif "," in text or f.name.endswith("hidden_features"):
                widths = tuple(int(w) for w in text.split(","))
                value = widths[0] if len(widths) == 1 and k == "any" else widths
            else:
                value = _WORDS.get(text.lower(), text)
        except ValueError:
            expected = {"int": "an int", "float": "a number"}.get(k, "a value")
            if f.name.endswith("hidden_features"):
                expected = "comma-separated ints"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            check_field(f, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = f.name
    return parse


def add_config_flags(
    parser: argparse.ArgumentParser,
    config: type[Config],
    title: str,
    *,
    skip: Collection[str] = (),
    only: Collection[str] | None = None,
    shown: Config | None = None,
    show_all: bool = False,
) -> None:
    r"""Adds a flag per field of ``config`` in an argument group ``title``.

    Arguments:
        parser: The (sub)command's parser.
        config: The config class.
        title: The group's title.
        skip: Fields without a flag.
        only: The fields to add (default: all but ``skip``).
        shown: The config whose values the help shows as defaults (default: the class's).
        show_all: Show the advanced fields' help too (else ``--help-all`` does).
    """
    defaults = shown or config()
    group = parser.add_argument_group(title)
    added = []
    for f in dataclasses.fields(config):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        added.append(f.name)
        help_ = f.metadata["help"]
        value = getattr(defaults, f.name)
        if value is not None and value != {}:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else value
            help_ += f" (default: {str(text).lower() if isinstance(text, bool) else text})"
        if f.metadata.get("advanced") and not show_all:
            help_ = argparse.SUPPRESS
        if kind(f) == "bool":
            group.add_argument(
                flag(f.name), action=argparse.BooleanOptionalAction, default=_GIVEN, help=help_
            )
            continue
        choices = f.metadata.get("flag_choices") or f.metadata.get("choices")
        if choices is not None and (kind(f) == "str" or f.metadata.get("flag_choices")):
            names = [c for c in choices if c is not None]
            group.add_argument(flag(f.name), choices=names, default=_GIVEN, help=help_)
            continue
        group.add_argument(flag(f.name), type=_parser(f), default=_GIVEN, help=help_)
    parser.set_defaults(**{_added(config): tuple(added)})


def _added(config: type[Config]) -> str:
    return f"_flags_of_{config.__name__}"


def given(args: argparse.Namespace, config: type[Config]) -> dict[str, Any]:
    r"""The fields of ``config`` that the command line gave (the others are left out)."""
    values: Mapping[str, Any] = vars(args)
    names = values.get(_added(config), ())
    return {k: values[k] for k in names if k in values}


def number(kind: type, low: float | None = None, high: float | None = None, *, low_ok=True):
    r"""An argparse type: a finite number in range, or a usage error naming the range."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        bad = not math.isfinite(value)
        if low is not None:
            bad |= value < low or (value == low and not low_ok)
        if high is not None:
            bad |= value >= high
        if bad:
            lo = "" if low is None else (f">= {low}" if low_ok else f"> {low}")
            hi = "" if high is None else f"< {high}"
            raise argparse.ArgumentTypeError(
                f"expected a finite {kind.__name__} {' and '.join(t for t in (lo, hi) if t)}, "
                f"got {text!r}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = number(int, 1)


def jobs(text: str) -> int:
    r"""An argparse type: a number of processes, ``-1`` (every core) or an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"expected -1 or an int >= 1, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    r"""An argparse type: comma-separated integers."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def out_folder(text: str):
    r"""An argparse type: a folder (that may not exist yet), not a file."""
    from pathlib import Path

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return path


def add_machine_flags(parser: argparse.ArgumentParser) -> None:
    r"""``--threads`` and ``--device``."""
    group = parser.add_argument_group("the machine")
    group.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help="torch CPU threads per training process; jsbi's networks are small, and on a "
        "busy 2-core machine two threads trained NPE many times slower than one "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--device",
        default="cpu",
        help="training device of every method, e.g. cuda (default: %(default)s)",
    )


def set_machine(args: argparse.Namespace) -> None:
    r"""Applies ``--threads`` and checks ``--device``, before anything is simulated."""
    import torch

    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except (RuntimeError, TypeError):
        args._parser.error(
            f"--device must be a torch device such as cpu or cuda, got {args.device!r}"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            args._parser.error(f"--device {args.device}: CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            args._parser.error(
                f"--device {args.device}: this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
