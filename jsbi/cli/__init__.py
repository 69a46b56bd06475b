r"""The ``jsbi`` command line.

Subcommands register in :data:`COMMANDS` (name -> ``(help, add_arguments, run)``): ``run``,
``report``, ``demo`` and ``benchmark``. ``jsbi COMMAND --help`` shows the options a
scientist needs; ``--help-all`` adds the methods' internals.

Example::

    $ jsbi run --task two_moons --num-simulations 1000 --objective jeffreys --out runs/tm
    $ jsbi report --task two_moons --num-simulations 1000 --objectives jeffreys,npe,sbi-npe
    $ jsbi demo --out demo-out
    $ jsbi run --help-all
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from jsbi.cli import benchmark, report, run
from jsbi.config import closest

__all__ = ["COMMANDS", "build_parser", "main"]

#: name -> (help, add_arguments(parser, show_all), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "simulate (a built-in task or your simulator), train a posterior, sample it for an "
        "observation",
        run.add_arguments,
        run.main,
    ),
    "report": (
        "simulate a built-in task, train several methods on the same pairs, and write the "
        "comparison report (C2ST, SBC, coverage, TARP, NLTP, figures)",
        report.add_arguments,
        report.main,
    ),
    "benchmark": (
        "the benchmark table: tasks x budgets x methods x observations x seeds, C2ST "
        "against the reference posterior, resumable and parallel",
        benchmark.add_arguments,
        benchmark.main,
    ),
    "demo": (
        "the main job, small: two_moons with 2,000 simulations, jsbi's jeffreys and npe "
        "against sbi's NPE, report written to --out (a few minutes on a laptop CPU)",
        report.add_demo_arguments,
        report.demo,
    ),
}


class Parser(argparse.ArgumentParser):
    r"""An argument parser whose errors show the subcommand's usage and, for a mis-spelled
    option, the closest one."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            options = [s for a in self._actions for s in a.option_strings]
            hints = []
            for word in message.split(":", 1)[1].split():
                if word.startswith("--"):
                    near = closest(word.split("=")[0], options)
                    hints.append(f"{word}: did you mean {near}?" if near else word)
            if hints:
                message += "\n" + "\n".join(hints)
        super().error(message)


def build_parser(show_all: bool = False) -> argparse.ArgumentParser:
    r"""The ``jsbi`` parser (``show_all``: the advanced options' help too)."""
    from jsbi import __version__

    parser = Parser(
        prog="jsbi",
        description="Simulation-based inference with adaptive symmetric (Jeffreys / SRFE) "
        "objectives, checked against sbi's NPE.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"jsbi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, (help_, add, main_) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add(p, show_all)
        p.add_argument(
            "--help-all", action="store_true", help="show every option, the methods' too"
        )
        p.set_defaults(func=main_, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Runs the ``jsbi`` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help-all" in argv:
        build_parser(show_all=True).parse_args([a for a in argv if a != "--help-all"] + ["-h"])
    args, extras = build_parser().parse_known_args(argv)
    if extras:  # the subcommand's usage, with a "did you mean" for a mis-spelled option
        args._parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        # Ctrl-C: one line, not a traceback; what was saved stays saved.
        print(
            f"jsbi {args.command}: interrupted" + (f": {err}" if err.args else ""), file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
