r"""What the per-task benchmark scripts share: their command line (``--tasks``,
``--num-simulations``, ``--out``) and their run (one torch thread, warnings off, each
task's rows, one CSV).

Used by ``probe_trace.py``, ``recalibration_check.py`` and ``typicality_samples.py``
(run as scripts: this folder is on their path).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from jsbi.benchmark import write_rows


def parser(doc: str, tasks: str, out: str) -> argparse.ArgumentParser:
    r"""The shared options; a script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--tasks", default=tasks)
    p.add_argument("--num-simulations", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path(out))
    return p


def run(p: argparse.ArgumentParser, rows_for: Callable[[str, argparse.Namespace], list]) -> None:
    r"""Parses the options and writes ``rows_for(task, args)`` for every task."""
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = [row for task in args.tasks.split(",") for row in rows_for(task, args)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_rows(args.out, rows)
