r"""Runs the tutorials and keeps what the docs show: their printed output, their
figures and their run times (``make docs`` calls this before ``sphinx-build``).

Each tutorial runs as its own ``python`` process, as a reader runs it (Dask's worker
processes need the simulator to come from ``__main__``), with its output folder under
``--out``: ``<out>/<name>/``, with ``output.txt`` beside its figures, and
``<out>/timings.md``, a table of the run times.

Example:
    python docs/run_tutorials.py --settings small --out docs/_generated
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUTORIALS = ("first_posterior", "choosing_objective", "scaling_out", "comparing_models")


def run(name: str, settings: str, out: Path) -> float:
    r"""Runs one tutorial; returns its wall time in seconds. A failing tutorial raises,
    with its output, so a docs build never shows a stale or broken one."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MPLBACKEND": "Agg"}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, str(HERE / "tutorials" / f"{name}.py"), "--settings", settings]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--out", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"tutorial {name} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    (folder / "output.txt").write_text(proc.stdout)
    return seconds


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "_generated"))
    parser.add_argument(
        "--settings",
        choices=("full", "small"),
        default="full",
        help="full: a laptop CPU in a few minutes each; small: CI's smallest run",
    )
    parser.add_argument("--only", nargs="*", choices=TUTORIALS, default=list(TUTORIALS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    for name in args.only:
        times[name] = run(name, args.settings, out)
        print(f"{name}: {times[name]:.0f} s", flush=True)
    rows = "\n".join(f"| {name} | {s:.0f} |" for name, s in times.items())
    (out / "timings.md").write_text(
        f"Settings `{args.settings}`, on {platform.machine()} with {os.cpu_count()} CPU "
        f"core(s), Python {platform.python_version()}, when the docs were built:\n\n"
        f"| tutorial | seconds |\n|---|---|\n{rows}\n"
    )
    return times


if __name__ == "__main__":
    main()
