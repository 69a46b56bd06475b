r"""What ``jsbi run`` simulates: a built-in task, or the user's own simulator and prior.

``--simulator`` and ``--prior`` name Python objects as ``module:name`` (an importable
module) or ``path/to/file.py:name`` (a file, executed as a module: the user's own code, at
the user's request). ``--observed`` is the observation: comma-separated numbers, or a
``.pt``, ``.npy``, ``.csv`` or ``.txt`` file.

Example:
    >>> load_object("math:pi", "--prior")
    3.141592653589793
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []


@dataclass
class Problem:
    r"""A simulator (``prior``, ``simulate``, ``name``, ``theta_names``) and the
    observation ``x_o`` to sample the posterior at."""

    simulator: Any
    x_o: Tensor
    label: str


def load_object(spec: str, flag: str) -> Any:
    r"""The object ``spec`` names: ``module:name`` or ``file.py:name`` (dotted names reach
    attributes)."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"{flag} must be module:name or path/to/file.py:name, got {spec!r}")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"{flag}: no file {where}")
        spec_ = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"{flag}: cannot import {where!r} ({e})") from e
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{flag}: {where} has no {part!r}")
        obj = getattr(obj, part)
    return obj


def load_observed(text: str) -> Tensor:
    r"""``--observed``: comma-separated numbers, or a file holding ``x_o``."""
    path = Path(text)
    if path.suffix in (".pt", ".npy", ".csv", ".txt"):
        if not path.is_file():
            raise ValueError(f"--observed: no file {text}")
        if path.suffix == ".pt":
            x = torch.load(path, weights_only=True)
        elif path.suffix == ".npy":
            import numpy as np

            x = np.load(path)
        else:
            import numpy as np

            x = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None)
    else:
        try:
            x = [float(v) for v in text.split(",")]
        except ValueError as e:
            raise ValueError(
                f"--observed must be comma-separated numbers or a .pt/.npy/.csv/.txt file, "
                f"got {text!r}"
            ) from e
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    if not torch.isfinite(x).all():
        raise ValueError("--observed must be finite")
    return x


def problem(args: argparse.Namespace) -> Problem:
    r"""The run's simulator and observation, from ``--task`` or ``--simulator``."""
    import jsbi

    if args.simulator is None:
        if args.task is None:
            raise ValueError("give --task (a built-in task) or --simulator and --prior")
        task = jsbi.get_task(args.task)
        if not 1 <= args.observation <= task.num_observations:
            raise ValueError(
                f"--observation must be in 1..{task.num_observations} for {args.task}"
            )
        return Problem(task, task.observation(args.observation), args.task)
    if args.task is not None:
        raise ValueError("give --task or --simulator, not both")
    if args.observed is None:
        raise ValueError("--simulator needs --observed (the data to infer from)")
    obj = load_object(args.simulator, "--simulator")
    if hasattr(obj, "prior") and callable(getattr(obj, "simulate", None)):
        sim = obj
    else:
        if args.prior is None:
            raise ValueError("--simulator names a function: give its --prior too")
        prior = load_object(args.prior, "--prior")
        name = args.simulator.rpartition(":")[2]
        sim = jsbi.wrap(obj, prior, name=name)
    return Problem(sim, load_observed(args.observed), str(getattr(sim, "name", "simulator")))
