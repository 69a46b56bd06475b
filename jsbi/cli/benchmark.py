r"""``jsbi benchmark``: the resumable grid of tasks x budgets x methods x seeds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jsbi.cli.flags import add_config_flags, add_machine_flags, given, int_list, set_machine
from jsbi.training import TrainConfig

__all__: list[str] = []

EXAMPLES = """examples:
  jsbi benchmark --tasks two_moons,slcp --num-simulations 1000 --objectives jeffreys,npe,sbi-npe
  jsbi benchmark --out benchmark-out --summarise      (rewrite the summary, train nothing)
"""


def add_arguments(p: argparse.ArgumentParser, show_all: bool = False) -> None:
    from jsbi.benchmark import METHODS
    from jsbi.simulators.simulate import BACKENDS
    from jsbi.simulators.tasks import TASKS

    p.epilog = EXAMPLES
    g = p.add_argument_group("the grid")
    g.add_argument(
        "--tasks",
        default=",".join(sorted(TASKS)),
        help="comma-separated built-in tasks (default: all of them)",
    )
    g.add_argument(
        "--num-simulations",
        type=int_list,
        default=[1000, 10_000],
        help="comma-separated simulation budgets (default: 1000,10000)",
    )
    g.add_argument(
        "--objectives",
        default="npe,jeffreys,srfe,sbi-npe",
        help=f"comma-separated methods among {', '.join(METHODS)} (default: %(default)s)",
    )
    g.add_argument(
        "--observations",
        type=int_list,
        default=list(range(1, 11)),
        help="comma-separated observation numbers (default: 1..10; 1-5 of the development "
        "tasks are the development set, the rest held out)",
    )
    g.add_argument(
        "--seeds", type=int_list, default=[0], help="comma-separated seeds (default: 0)"
    )
    g.add_argument(
        "--num-c2st-samples",
        dest="num_samples",
        type=int,
        default=10_000,
        help="posterior and reference samples per C2ST (default: %(default)s)",
    )
    g.add_argument(
        "--support",
        default=None,
        choices=["transform", "truncate"],
        help="how every jsbi method's flow respects a bounded prior (default: the method's)",
    )
    g.add_argument(
        "--embedding",
        default=None,
        choices=["mlp"],
        help="every method, sbi's NPE too, reads x through an MLP embedding (20 features, "
        "trained with the flow; jeffreys-summary's likelihood proxy models its summaries). "
        "Give such runs their own --out (default: none, x itself)",
    )
    # The package's training defaults for every unit, so that rows compare like with
    # like (a finished unit is read back, not retrained): only the cap is a flag.
    add_config_flags(p, TrainConfig, "training", only=["max_epochs"])
    o = p.add_argument_group("where and how")
    o.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark-out"),
        help="results folder: rows/ (one CSV per finished unit, kept for resuming; "
        "rebuilt from benchmark.csv where missing), checkpoints/ (unfinished units), "
        "benchmark.csv (every finished unit's rows), summary.md and c2st_<task>.png "
        "(default: %(default)s)",
    )
    o.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="(task, budget, seed, method) units trained at once (default: %(default)s)",
    )
    o.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="joblib backend for the units, as for simulation (dask needs a running "
        "dask.distributed client; default: joblib's)",
    )
    o.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: rewrite the summary from the finished units in --out",
    )
    o.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another results folder whose finished units (DIR/rows) join the summary; "
        "repeatable; a unit found in --out wins over the same unit here",
    )
    add_machine_flags(p)


def _unit_key(row: dict) -> tuple:
    return tuple(row[k] for k in ("task", "num_simulations", "seed", "method", "observation"))


def _command(args: argparse.Namespace, tasks: list[str], methods: list[str]) -> str:
    # The command that regenerates the summary.
    max_epochs = given(args, TrainConfig).get("max_epochs")
    return (
        f"jsbi benchmark --tasks {','.join(tasks)} --num-simulations "
        f"{','.join(map(str, args.num_simulations))} --objectives {','.join(methods)} "
        f"--observations {','.join(map(str, args.observations))} "
        f"--seeds {','.join(map(str, args.seeds))} --num-c2st-samples {args.num_samples} "
        + (f"--max-epochs {max_epochs} " if max_epochs is not None else "")
        + (f"--support {args.support} " if args.support is not None else "")
        + (f"--embedding {args.embedding} " if args.embedding is not None else "")
        + f"--out {args.out}"
        + "".join(f" --also {folder}" for folder in args.also)
        + (" --summarise" if args.summarise else "")
    )


def main(args: argparse.Namespace) -> int:
    from jsbi.benchmark import (
        METHODS,
        FinishedUnitError,
        UnitsFailedError,
        load_rows,
        run_benchmark,
        summary_table,
        write_results,
    )
    from jsbi.simulators.tasks import TASKS

    set_machine(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.objectives.split(",") if m.strip()]
    for name, chosen, known in (("--tasks", tasks, TASKS), ("--objectives", methods, METHODS)):
        bad = [v for v in chosen if v not in known]
        if bad or not chosen:
            args._parser.error(
                f"{name}: unknown {bad or 'none given'}; choose from {sorted(known)}"
            )
    if any(n < 1 for n in args.num_simulations) or args.num_samples < 2:
        args._parser.error("--num-simulations must be positive and --num-c2st-samples >= 2")
    for folder in args.also:  # checked before any training, so a typo cannot waste a run
        if not (Path(folder, "rows").is_dir() or Path(folder, "benchmark.csv").exists()):
            args._parser.error(
                f"--also: {folder} is not a folder of finished units (no rows/, no benchmark.csv)"
            )
    failed = None
    if args.summarise:
        rows = [r for r in load_rows(args.out) if r["task"] in tasks and r["method"] in methods]
        if not rows:
            args._parser.error(f"--summarise: no finished units in {args.out}/rows")
    else:
        train = TrainConfig().replace(**given(args, TrainConfig))
        options = {"device": args.device}
        if args.support is not None:
            options["support"] = args.support
        if args.embedding is not None:
            options["embedding"] = args.embedding
        try:
            rows = run_benchmark(
                tasks,
                args.num_simulations,
                methods,
                observations=args.observations,
                seeds=args.seeds,
                num_samples=args.num_samples,
                max_epochs=train.max_epochs,
                options=options,
                out=args.out,
                n_jobs=args.n_jobs,
                backend=args.backend,
                threads=args.threads,
            )
        except UnitsFailedError as e:  # the others finished: summarise them, then fail
            failed = e
            rows = e.rows
        except (ImportError, RuntimeError, FinishedUnitError) as e:  # a backend missing
            # or not started, or a finished unit asked for observations it was not scored on
            args._parser.error(str(e))
    seen = {_unit_key(r) for r in rows}
    rows += [
        r
        for r in load_rows(*args.also)
        if r["task"] in tasks and r["method"] in methods and _unit_key(r) not in seen
    ]
    summary = write_results(rows, args.out, _command(args, tasks, methods))
    print(summary_table(rows, methods))
    print(f"\nwrote {summary}, {args.out / 'benchmark.csv'} and the C2ST-vs-budget figures")
    if failed is not None:
        print(f"jsbi benchmark: {failed}", file=sys.stderr)
        return 1
    return 0
