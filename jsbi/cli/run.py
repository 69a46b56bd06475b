r"""``jsbi run``: simulate, train one posterior, sample it for an observation.

The three configs are built once, from the flags given (each flag is a field of one of
them), before anything is simulated; ``run.json`` records them whole, beside the files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsbi.cli.flags import (
    POSITIVE_INT,
    add_config_flags,
    add_machine_flags,
    flag,
    given,
    out_folder,
    set_machine,
)
from jsbi.cli.problem import problem
from jsbi.files import atomic_save, atomic_write_text
from jsbi.flows import FlowConfig
from jsbi.methods import NPEConfig, SymmetricConfig, method_config, method_names
from jsbi.posteriors.mcmc import MixingInfo, mixing_problems
from jsbi.training import TrainConfig

__all__: list[str] = []

EXAMPLES = """examples:
  jsbi run --task two_moons --num-simulations 2000 --objective jeffreys --out runs/tm
  jsbi run --task slcp --num-simulations 10000 --objective npe --max-epochs 200
  jsbi run --simulator model.py:simulate --prior model.py:prior --observed 0.3,1.2
  jsbi run --help-all          (every option, the symmetric methods' internals too)
"""

#: What ``jsbi run`` writes; a new run in the same folder first removes them.
RUN_FILES = ("posterior.pt", "history.json", "samples.pt", "samples.csv", "run.json")


def add_method_flags(p: argparse.ArgumentParser, show_all: bool) -> None:
    r"""The flow's, the symmetric methods' and the training's flags."""
    add_config_flags(p, TrainConfig, "training (every method)", show_all=show_all)
    add_config_flags(p, FlowConfig, "the flow (every jsbi method)", show_all=show_all)
    add_config_flags(
        p,
        SymmetricConfig,
        "the symmetric methods (jeffreys, srfe, distill, reverse; refused with npe); "
        "defaults shown are jeffreys'",
        skip=("objective",),
        shown=SymmetricConfig.jeffreys(),
        show_all=show_all,
    )


def add_arguments(p: argparse.ArgumentParser, show_all: bool = False) -> None:
    from jsbi.simulators.tasks import TASKS

    p.epilog = EXAMPLES
    g = p.add_argument_group("what to run")
    g.add_argument("--task", choices=sorted(TASKS), help="a built-in task")
    g.add_argument(
        "--simulator",
        metavar="MODULE:NAME",
        help="your own simulator instead of --task: a batched function theta[n, d] -> "
        "x[n, m] (or a jsbi Simulator) as module:name or path/to/file.py:name",
    )
    g.add_argument(
        "--prior",
        metavar="MODULE:NAME",
        help="--simulator's prior: a torch distribution (or anything jsbi.as_prior takes)",
    )
    g.add_argument(
        "--observed",
        metavar="X_O",
        help="--simulator's observation: comma-separated numbers, or a .pt/.npy/.csv/.txt file",
    )
    g.add_argument(
        "--num-simulations",
        type=POSITIVE_INT,
        default=1000,
        help="(theta, x) training pairs to simulate (default: %(default)s)",
    )
    g.add_argument(
        "--objective",
        default="npe",
        choices=method_names(baseline=False),
        help="the method: npe (maximum likelihood), jeffreys (the symmetric default), srfe, "
        "distill, reverse, or a variant (default: %(default)s)",
    )
    g.add_argument(
        "--out",
        type=out_folder,
        default=Path("run-out"),
        help="output folder: posterior.pt, samples.pt, samples.csv, history.json, run.json "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the simulations, the training and the samples (default: %(default)s)",
    )
    g.add_argument(
        "--observation",
        type=POSITIVE_INT,
        default=1,
        help="the task's observation to sample the posterior for (--task; default: %(default)s)",
    )
    g.add_argument(
        "--num-samples",
        type=POSITIVE_INT,
        default=10_000,
        help="posterior samples drawn for the observation (default: %(default)s)",
    )
    g.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="parallel simulation workers (-1: all cores) (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    add_method_flags(p, show_all)
    add_machine_flags(p)


def estimator(args: argparse.Namespace, prior: Any, objective: str) -> Any:
    r"""The estimator of a parsed command line (bad options: a usage error, before
    anything is simulated)."""
    from jsbi.estimator import PosteriorEstimator

    method = given(args, SymmetricConfig)
    if isinstance(method_config(objective), NPEConfig) and method:
        args._parser.error(
            f"{', '.join(flag(k) for k in method)} apply to the symmetric methods "
            "(--objective jeffreys, srfe, distill or reverse), not to npe"
        )
    options = {**given(args, FlowConfig), **method, **given(args, TrainConfig)}
    try:
        est = PosteriorEstimator(
            prior, objective=objective, device=args.device, seed=args.seed, **options
        )
    except (NotImplementedError, ValueError, TypeError) as e:
        args._parser.error(str(e))
    config = est.method
    if isinstance(config, SymmetricConfig) and config.returns != "flow":
        if config.proxy != "likelihood":
            # jsbi run saves posterior.pt, and only the likelihood proxy can be saved:
            # refused here, not after the simulations and the training.
            args._parser.error(
                f"--posterior {config.returns} with --proxy {config.proxy}: jsbi run saves "
                "the posterior, and only the likelihood proxy's can be saved; use --proxy "
                "likelihood, or --posterior flow"
            )
    return est


def main(args: argparse.Namespace) -> int:

    set_machine(args)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        args._parser.error(f"--out {out}: cannot create the folder ({e.strerror})")
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    try:
        task = problem(args)
    except ValueError as e:
        args._parser.error(str(e))
    est = estimator(args, task.simulator.prior, args.objective)
    run = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # The flags that are config fields are in the configs below.
    configs = (*FlowConfig.names(), *SymmetricConfig.names(), *TrainConfig.names())
    run = {k: v for k, v in run.items() if k != "func" and not k.startswith("_")}
    run = {k: v for k, v in run.items() if k not in configs or k == "objective"}
    run["configs"] = {
        "flow": est.flow_config.asdict(),
        "method": est.method.asdict(),
        "train": est.train_config.asdict(),
    }
    # run.json says at every moment what the folder holds: a failed or interrupted run
    # leaves "status" at the last step reached, never an older run's files beside it.
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)

    def status(text: str, **extra: Any) -> None:
        run.update(status=text, **extra)
        atomic_write_text(out / "run.json", json.dumps(run, indent=1))

    status("simulating (nothing else written yet)")
    try:
        return _steps(args, est, task, out, status, say)
    except BaseException as err:
        status(
            f"failed ({type(err).__name__}): {run['status']}",
            error=str(err) or type(err).__name__,
        )
        raise


def _steps(
    args: argparse.Namespace,
    est: Any,
    task: Any,
    out: Path,
    status: Callable[..., None],
    say: Callable[..., None],
) -> int:

    import jsbi
    from jsbi.seeding import seeded

    say(f"simulating {args.num_simulations} pairs of {task.label} (seed {args.seed}) ...")
    start = time.perf_counter()
    theta, x = jsbi.simulate(
        task.simulator,
        args.num_simulations,
        seed=args.seed,
        n_jobs=args.n_jobs,
        show_progress_bar=False if args.quiet else None,
    )
    status("training (nothing else written yet)", simulation_time_s=time.perf_counter() - start)
    start = time.perf_counter()
    posterior = est.fit(
        theta,
        x,
        show_progress_bar=False if args.quiet else None,
        show_train_summary=not args.quiet,
    )
    train_time = time.perf_counter() - start
    posterior.set_default_x(task.x_o)  # warns if x_o is atypical of the simulations
    p_value = posterior.observation_p_value()
    p_value = None if math.isnan(p_value) else p_value
    threshold = posterior.misspecification_threshold
    # Saved as soon as it exists: a failure while sampling loses no training.
    posterior.save(out / "posterior.pt")
    atomic_write_text(out / "history.json", json.dumps(posterior.history, indent=1))
    status(
        "sampling (posterior.pt and history.json written; samples not yet)",
        observation_p_value=p_value,
        observation_atypical=None if p_value is None or threshold is None else p_value < threshold,
        num_pairs_used=int(len(theta)),
        training_time_s=train_time,
        epochs_trained=posterior.history["epochs_trained"],
        best_validation_loss=posterior.history["best_validation_loss"],
    )
    with seeded(args.seed, [posterior.device]):
        samples = posterior.sample((args.num_samples,)).cpu()
    atomic_save(samples, out / "samples.pt")
    text = io.StringIO(newline="")
    w = csv.writer(text)
    names = getattr(task.simulator, "theta_names", None)
    w.writerow(names or [f"theta_{i + 1}" for i in range(samples.shape[1])])
    w.writerows(samples.tolist())
    atomic_write_text(out / "samples.csv", text.getvalue())
    status("complete", **_mixing_fields(getattr(posterior, "last_mixing", None)))
    say(f"wrote {out}/posterior.pt, samples.pt, samples.csv, history.json, run.json")
    return 0


def _mixing_fields(mixing: MixingInfo | None) -> dict[str, Any]:
    # How the samples' MCMC chains mixed (a proxy posterior's draw), for run.json: the
    # numbers (JSON's null for a NaN) and whether they say the chains mixed.
    if mixing is None:
        return {}
    info = {k: v if math.isfinite(v) else None for k, v in mixing.as_dict().items()}
    return {"mcmc_mixing": info, "mcmc_mixed": not mixing_problems(mixing)}
