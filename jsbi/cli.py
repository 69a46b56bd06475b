r"""The ``jsbi`` command line.

Subcommands register in :data:`COMMANDS` (name -> ``(add_arguments, run)``), so ``report``,
``benchmark`` and ``demo`` plug in next to ``run`` without touching :func:`main`.

Example:
    $ jsbi run --task two_moons --num-simulations 1000 --objective npe --out runs/tm
    $ jsbi run --help
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["COMMANDS", "main"]


def _add_run(p: argparse.ArgumentParser) -> None:
    from jsbi.simulators.tasks import TASKS

    p.add_argument(
        "--task",
        required=True,
        choices=sorted(TASKS),
        help="built-in task to simulate (sbibm definitions)",
    )
    p.add_argument(
        "--num-simulations",
        type=int,
        default=1000,
        help="number of (theta, x) training pairs to simulate (default: %(default)s)",
    )
    p.add_argument(
        "--objective",
        default="npe",
        help="training objective: npe (forward KL; jeffreys, srfe, reverse are planned) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder: posterior.pt, samples.pt, samples.csv, history.json, run.json",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the simulations, the network initialisation, the training split and "
        "the posterior samples (default: %(default)s)",
    )
    p.add_argument(
        "--flow",
        default="nsf",
        help="conditional flow: nsf, maf, ncsf, realnvp or naf (default: %(default)s)",
    )
    p.add_argument(
        "--observation",
        type=int,
        default=1,
        help="task observation number to sample the posterior for (default: %(default)s)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=10_000,
        help="posterior samples drawn for the observation (default: %(default)s)",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=2**31 - 1,
        help="upper bound on training epochs; early stopping usually ends sooner "
        "(default: no limit)",
    )
    p.add_argument(
        "--batch-size", type=int, default=200, help="training batch size (default: %(default)s)"
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=5e-4,
        help="Adam learning rate (default: %(default)s)",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="parallel simulation workers (-1: all cores) (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="cpu", help="training device, e.g. cuda (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _run(args: argparse.Namespace) -> int:
    import torch

    import jsbi
    from jsbi.inference import PosteriorEstimator

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    task = jsbi.get_task(args.task)
    if not 1 <= args.observation <= task.num_observations:
        raise SystemExit(
            f"jsbi run: --observation must be in 1..{task.num_observations} for {args.task}"
        )
    # Bad objective or flow names fail before the (possibly long) simulation.
    try:
        est = PosteriorEstimator(
            task.prior,
            flow=args.flow,
            objective=args.objective,
            device=args.device,
            seed=args.seed,
        )
    except (NotImplementedError, ValueError) as e:
        raise SystemExit(f"jsbi run: {e}") from e
    say(f"simulating {args.num_simulations} pairs of {args.task} (seed {args.seed}) ...")
    start = time.perf_counter()
    theta, x = jsbi.simulate(
        task,
        args.num_simulations,
        seed=args.seed,
        n_jobs=args.n_jobs,
        show_progress_bar=False if args.quiet else None,
    )
    sim_time = time.perf_counter() - start
    start = time.perf_counter()
    posterior = est.fit(
        theta,
        x,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        show_progress_bar=False if args.quiet else None,
        show_train_summary=not args.quiet,
    )
    train_time = time.perf_counter() - start
    x_o = task.observation(args.observation)
    posterior.set_default_x(x_o)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        samples = posterior.sample((args.num_samples,)).cpu()

    posterior.save(out / "posterior.pt")
    torch.save(samples, out / "samples.pt")
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(task.theta_names)
        w.writerows(samples.tolist())
    (out / "history.json").write_text(json.dumps(posterior.history, indent=1))
    run = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "num_pairs_used": int(len(theta)),
        "simulation_time_s": sim_time,
        "training_time_s": train_time,
        "epochs_trained": posterior.history["epochs_trained"],
        "best_validation_loss": posterior.history["best_validation_loss"],
    }
    run.pop("func", None)
    (out / "run.json").write_text(json.dumps(run, indent=1))
    say(f"wrote {out}/posterior.pt, samples.pt, samples.csv, history.json, run.json")
    return 0


#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "simulate a built-in task, train a posterior, sample it for an observation",
        _add_run,
        _run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsbi",
        description="Simulation-based inference with adaptive symmetric (Jeffreys / SRFE) "
        "objectives, checked against sbi's NPE.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Runs the ``jsbi`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
