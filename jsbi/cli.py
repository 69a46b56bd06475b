r"""The ``jsbi`` command line.

Subcommands register in :data:`COMMANDS` (name -> ``(help, add_arguments, run)``), so
further commands plug in next to ``run``, ``report`` and ``demo`` without touching
:func:`main`.

Example::

    $ jsbi run --task two_moons --num-simulations 1000 --objective jeffreys --out runs/tm
    $ jsbi report --task two_moons --num-simulations 1000 --objectives jeffreys,npe,sbi-npe \
        --out report/
    $ jsbi demo --out demo-out
    $ jsbi run --help
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "main"]


def _number(kind: type, low: float | None = None, high: float | None = None, *, low_ok=True):
    # An argparse type: a finite number in range, or a usage error naming the range.
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


_POSITIVE_INT = _number(int, 1)


def _out_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return path


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per training process; jsbi's networks are small, and on a "
        "busy 2-core machine two threads trained NPE many times slower than one "
        "(default: %(default)s)",
    )


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="cpu",
        help="training device of every method, e.g. cuda (default: %(default)s)",
    )


def _set_threads(args: argparse.Namespace) -> None:
    # Threads and device: checked before anything is simulated.
    import torch

    if args.threads < 1:
        args._parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except (RuntimeError, TypeError):
        args._parser.error(
            f"--device must be a torch device such as cpu or cuda, got {args.device!r}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        args._parser.error(f"--device {args.device}: CUDA is not available here")


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
        type=_POSITIVE_INT,
        default=1000,
        help="number of (theta, x) training pairs to simulate (default: %(default)s)",
    )
    p.add_argument(
        "--objective",
        default="npe",
        choices=["npe", "jeffreys", "srfe", "reverse", "distill"],
        help="training objective: npe (forward KL, maximum likelihood), jeffreys (forward "
        "plus reverse KL through an energy-based proxy, adaptive primal-dual), srfe "
        "(forward KL plus the Surprisal-Renyi free energy) or reverse (reverse KL only, an "
        "ablation) (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=_out_folder,
        default=Path("run-out"),
        help="output folder: posterior.pt, samples.pt, samples.csv, history.json, run.json "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the simulations, the network initialisation, the training split and "
        "the posterior samples (default: %(default)s)",
    )
    p.add_argument(
        "--observation",
        type=_POSITIVE_INT,
        default=1,
        help="task observation number to sample the posterior for (default: %(default)s)",
    )
    p.add_argument(
        "--num-samples",
        type=_POSITIVE_INT,
        default=10_000,
        help="posterior samples drawn for the observation (default: %(default)s)",
    )
    from jsbi.inference.config import add_train_flags

    add_train_flags(p)  # the training options, from jsbi.inference.TrainConfig
    p.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="parallel simulation workers (-1: all cores) (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _add_flow(p)
    _add_adaptive(p)


def _add_flow(p: argparse.ArgumentParser) -> None:
    from jsbi.inference.config import add_flow_flags

    add_flow_flags(p)  # one flag per jsbi.inference.FlowConfig field


def _add_adaptive(p: argparse.ArgumentParser) -> None:
    from jsbi.inference.config import add_adaptive_flags

    g = p.add_argument_group("the proxy and srfe's tau (rejected with npe)")
    g.add_argument(
        "--proxy",
        choices=["ratio", "likelihood", "residual", "mlp"],
        help="the energy-based proxy: likelihood (prior x a learned likelihood flow), ratio "
        "(prior x a learned ratio), residual (the flow x a learned correction) or mlp",
    )
    g.add_argument(
        "--posterior",
        choices=["flow", "proxy", "auto"],
        help="what training returns: the flow, the proxy (sampled by importance resampling "
        "from the flow) or auto (the proxy where its validation NLL is lower than the "
        "flow's by more than one standard error; history.json's 'posterior' says which; "
        "default: auto with the likelihood proxy, else flow)",
    )
    g.add_argument(
        "--tau",
        type=_number(float, 0, 1, low_ok=False),
        help="srfe only: Renyi order tau in (0, 1); with --tau-schedule anneal, the value "
        "it anneals to from 0.9 (default: 0.5)",
    )
    g.add_argument(
        "--tau-schedule",
        choices=["constant", "anneal", "reverse", "step"],
        help="srfe only: how tau moves over training: constant, anneal (0.9 down to "
        "--tau), reverse (0.1 up to 0.9) or step (default: constant)",
    )
    add_adaptive_flags(p)  # one flag per jsbi.inference.AdaptiveConfig field


def _adaptive_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    # The PosteriorEstimator keywords of the symmetric-objective flags the user gave.
    from jsbi.inference.config import adaptive_options_from_args
    from jsbi.inference.estimator import split_options

    given = adaptive_options_from_args(args)
    given.update({k: getattr(args, k) for k in ("proxy", "posterior", "tau", "tau_schedule")})
    kwargs, rest, _ = split_options({k: v for k, v in given.items() if v is not None})
    if rest:
        kwargs["objective_kwargs"] = rest
    return kwargs


def _flow_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    # The PosteriorEstimator keywords of the flow flags the user gave.
    from jsbi.inference.config import flow_options_from_args

    return flow_options_from_args(args)


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _given(adaptive: dict[str, Any]) -> list[str]:
    # The option names in _adaptive_kwargs' result, objective_kwargs' included.
    return [k for k in adaptive if k != "objective_kwargs"] + list(
        adaptive.get("objective_kwargs", {})
    )


def _method_options(
    args: argparse.Namespace, objectives: Sequence[str]
) -> dict[str, dict[str, Any]]:
    # jsbi report/demo: the symmetric-objective flags given, per method they reach; tau and
    # its schedule reach srfe only. A flag that reaches none of --objectives is an error.
    from jsbi.inference.estimator import OBJECTIVES

    adaptive = _adaptive_kwargs(args)
    if not adaptive:
        return {}
    symmetric = [o for o in objectives if o in OBJECTIVES and o != "npe"]
    if not symmetric:
        args._parser.error(
            f"{', '.join(_option(k) for k in _given(adaptive))} apply to the symmetric objectives "
            "(jeffreys, srfe, reverse, distill), and --objectives has none"
        )
    tau = {k: adaptive.pop(k) for k in ("tau", "tau_schedule") if k in adaptive}
    if tau and "srfe" not in objectives:
        args._parser.error("--tau and --tau-schedule apply to srfe, and --objectives has none")
    return {o: {**adaptive, **(tau if o == "srfe" else {})} for o in symmetric}


def _run(args: argparse.Namespace) -> int:

    _set_threads(args)
    import jsbi
    from jsbi.inference import PosteriorEstimator

    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        args._parser.error(f"--out {out}: cannot create the folder ({e.strerror})")
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    task = jsbi.get_task(args.task)
    if not 1 <= args.observation <= task.num_observations:
        raise SystemExit(
            f"jsbi run: --observation must be in 1..{task.num_observations} for {args.task}"
        )
    adaptive = _adaptive_kwargs(args)
    flags = _given(adaptive)
    if args.objective == "npe" and flags:
        args._parser.error(
            f"{', '.join(_option(k) for k in flags)} apply to the adaptive objectives "
            "(--objective jeffreys, srfe, reverse or distill), not to npe"
        )
    if ("tau" in adaptive or "tau_schedule" in adaptive) and args.objective != "srfe":
        args._parser.error(f"--tau and --tau-schedule apply to srfe, not to {args.objective}")
    # Bad objective options or flow names fail before the (possibly long) simulation.
    try:
        est = PosteriorEstimator(
            task.prior,
            objective=args.objective,
            device=args.device,
            seed=args.seed,
            **_flow_kwargs(args),
            **adaptive,
        )
    except (NotImplementedError, ValueError, TypeError) as e:
        args._parser.error(str(e))
    run = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    run.pop("func", None)
    run.pop("_parser", None)
    run["flow"], run["support"] = est.flow_name, est.support
    # run.json says at every moment what the folder holds: a failed or interrupted run
    # leaves "status" at the last step reached, never an older run's files beside it.
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)

    def status(text: str, **extra: Any) -> None:
        run.update(status=text, **extra)
        (out / "run.json").write_text(json.dumps(run, indent=1))

    status("simulating (nothing else written yet)")
    try:
        return _run_steps(args, est, task, out, run, status, say)
    except BaseException as err:
        status(
            f"failed ({type(err).__name__}): {run['status']}",
            error=str(err) or type(err).__name__,
        )
        raise


#: What ``jsbi run`` writes; a new run in the same folder first removes them.
_RUN_FILES = ("posterior.pt", "history.json", "samples.pt", "samples.csv", "run.json")


def _run_steps(
    args: argparse.Namespace,
    est: Any,
    task: Any,
    out: Path,
    run: dict[str, Any],
    status: Callable[..., None],
    say: Callable[..., None],
) -> int:
    import torch

    import jsbi
    from jsbi.inference.config import train_config_from_args
    from jsbi.seeding import seeded

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
    status("training (nothing else written yet)", simulation_time_s=sim_time)
    start = time.perf_counter()
    posterior = est.fit(
        theta,
        x,
        **train_config_from_args(args).fit_options(),
        show_progress_bar=False if args.quiet else None,
        show_train_summary=not args.quiet,
    )
    train_time = time.perf_counter() - start
    x_o = task.observation(args.observation)
    posterior.set_default_x(x_o)
    # Saved as soon as it exists: a failure while sampling loses no training.
    posterior.save(out / "posterior.pt")
    (out / "history.json").write_text(json.dumps(posterior.history, indent=1))
    status(
        "sampling (posterior.pt and history.json written; samples not yet)",
        num_pairs_used=int(len(theta)),
        training_time_s=train_time,
        epochs_trained=posterior.history["epochs_trained"],
        best_validation_loss=posterior.history["best_validation_loss"],
    )
    with seeded(args.seed, [posterior.device]):
        samples = posterior.sample((args.num_samples,)).cpu()

    torch.save(samples, out / "samples.pt")
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(task.theta_names)
        w.writerows(samples.tolist())
    status("complete")
    say(f"wrote {out}/posterior.pt, samples.pt, samples.csv, history.json, run.json")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _add_report(p: argparse.ArgumentParser) -> None:
    from jsbi.simulators.tasks import TASKS

    p.add_argument(
        "--task",
        required=True,
        choices=sorted(TASKS),
        help="built-in task to simulate (sbibm definitions)",
    )
    p.add_argument(
        "--num-simulations",
        type=_POSITIVE_INT,
        default=1000,
        help="training pairs, shared by every method (default: %(default)s)",
    )
    p.add_argument(
        "--objectives",
        default="jeffreys,npe,sbi-npe",
        help="comma-separated methods to train and compare: jsbi objectives (npe, "
        "jeffreys, srfe, reverse, distill; the symmetric ones take the flags below) and "
        "sbi-npe (sbi's NPE) (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=_out_folder,
        default=Path("report-out"),
        help="report folder: index.html, results.csv, PNG figures, samples.nc "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds simulation, training and diagnostics (default: %(default)s)",
    )
    _add_report_budget(p, observations="1,2,3", num_sbc=1000, num_posterior=1000, num_c2st=10_000)
    from jsbi.inference.config import add_train_flags

    add_train_flags(p)  # every method's training options, from jsbi.inference.TrainConfig
    p.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="parallel simulation workers (-1: all cores) (default: %(default)s)",
    )
    _add_flow(p)
    _add_adaptive(p)


def _add_report_budget(
    p: argparse.ArgumentParser,
    *,
    observations: str,
    num_sbc: int,
    num_posterior: int,
    num_c2st: int,
) -> None:
    p.add_argument(
        "--observations",
        type=_int_list,
        default=_int_list(observations),
        help="task observation numbers for C2ST, leakage and pair plots, comma-separated "
        f"(default: {observations})",
    )
    p.add_argument(
        "--num-sbc",
        type=int,
        default=num_sbc,
        help="held-out prior-predictive pairs for SBC, expected coverage, TARP and NLTP "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--num-posterior-samples",
        type=int,
        default=num_posterior,
        help="posterior samples per held-out pair (default: %(default)s)",
    )
    p.add_argument(
        "--num-c2st-samples",
        type=int,
        default=num_c2st,
        help="posterior samples per observation for C2ST against the reference posterior "
        "and for leakage (default: %(default)s)",
    )


def _check_report_args(
    args: argparse.Namespace, objectives: Sequence[str], num_simulations: int
) -> None:
    from jsbi.inference.estimator import OBJECTIVES

    known = [*OBJECTIVES, "sbi-npe"]
    bad = [o for o in objectives if o not in known]
    if bad or not objectives:
        args._parser.error(
            f"--objectives must be a comma-separated list of {', '.join(known)}; "
            f"got {','.join(objectives)!r}"
        )
    if num_simulations < 1:
        args._parser.error("--num-simulations must be >= 1")
    for name in ("num_sbc", "num_posterior_samples", "num_c2st_samples"):
        if getattr(args, name) < 1:
            args._parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.observations:
        args._parser.error("--observations must name at least one observation")


def _report(
    args: argparse.Namespace,
    objectives: Sequence[str],
    num_simulations: int,
    fit_options: dict[str, Any],
) -> int:
    import jsbi
    from jsbi.pipeline import run_report

    _check_report_args(args, objectives, num_simulations)
    method_options = _method_options(args, objectives)
    task = jsbi.get_task(args.task)
    bad = [i for i in args.observations if not 1 <= i <= task.num_observations]
    if bad:
        args._parser.error(
            f"--observations must lie in 1..{task.num_observations} for {args.task}, got {bad}"
        )
    print(
        f"simulating {num_simulations} pairs of {args.task}, training "
        f"{', '.join(objectives)}, running the diagnostics ...",
        file=sys.stderr,
    )
    start = time.perf_counter()
    report = run_report(
        args.task,
        num_simulations,
        tuple(objectives),
        args.out,
        args.seed,
        observations=tuple(args.observations),
        num_sbc=args.num_sbc,
        num_posterior_samples=args.num_posterior_samples,
        num_c2st_samples=args.num_c2st_samples,
        fit_options=fit_options,
        method_options=method_options,
        estimator_kwargs=_flow_kwargs(args),
        n_jobs=args.n_jobs,
        device=args.device,
        show_progress_bar=None,  # on a terminal: simulation, each training, diagnostics
    )
    print(report.summary())
    print(f"\nreport: {Path(args.out) / 'index.html'}  ({time.perf_counter() - start:.0f} s)")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    _set_threads(args)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    from jsbi.inference.config import train_config_from_args

    fit = train_config_from_args(args).fit_options()
    return _report(args, objectives, args.num_simulations, fit)


# The demo's budget: two_moons on a 2-core CPU in a few minutes, yet enough pairs and
# samples that C2ST and the calibration checks separate the methods. The epoch cap is a
# safety bound, above npe's early stop: under a cap npe-first's phase 1 never ends and the
# symmetric objective would be npe itself. C2ST's 9 classifier fits (3 methods x 3
# observations) are the other large cost, hence 1,000 samples.
DEMO = {
    "task": "two_moons",
    "num_simulations": 2000,
    "objectives": ("jeffreys", "npe", "sbi-npe"),
    "observations": "1,2,3",
    "num_sbc": 200,
    "num_posterior_samples": 500,
    "num_c2st_samples": 1000,
    "max_epochs": 500,
}


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=_out_folder,
        default=Path("demo-out"),
        help="report folder (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds everything (default: %(default)s)")
    _add_report_budget(
        p,
        observations=DEMO["observations"],
        num_sbc=DEMO["num_sbc"],
        num_posterior=DEMO["num_posterior_samples"],
        num_c2st=DEMO["num_c2st_samples"],
    )
    from jsbi.inference.config import add_train_flags

    add_train_flags(p, defaults={"max_epochs": DEMO["max_epochs"]})
    _add_threads(p)
    _add_device(p)
    _add_flow(p)
    _add_adaptive(p)


def _demo(args: argparse.Namespace) -> int:
    _set_threads(args)
    args.task = DEMO["task"]
    args.n_jobs = 1
    from jsbi.inference.config import train_config_from_args

    fit = train_config_from_args(args).fit_options()
    return _report(args, DEMO["objectives"], DEMO["num_simulations"], fit)


def _add_benchmark(p: argparse.ArgumentParser) -> None:
    from jsbi.benchmark import METHODS
    from jsbi.simulators.simulate import BACKENDS
    from jsbi.simulators.tasks import TASKS

    p.add_argument(
        "--tasks",
        default=",".join(sorted(TASKS)),
        help="comma-separated built-in tasks (default: all of them)",
    )
    p.add_argument(
        "--num-simulations",
        type=_int_list,
        default=[1000, 10_000],
        help="comma-separated simulation budgets (default: 1000,10000)",
    )
    p.add_argument(
        "--objectives",
        default="npe,jeffreys,srfe,sbi-npe",
        help=f"comma-separated methods among {', '.join(METHODS)} (default: %(default)s)",
    )
    p.add_argument(
        "--observations",
        type=_int_list,
        default=list(range(1, 11)),
        help="comma-separated observation numbers (default: 1..10; 1-5 of the development "
        "tasks are the development set, the rest held out)",
    )
    p.add_argument(
        "--seeds", type=_int_list, default=[0], help="comma-separated seeds (default: 0)"
    )
    p.add_argument(
        "--num-c2st-samples",
        "--num-samples",  # the earlier name, still read
        dest="num_samples",
        type=int,
        default=10_000,
        help="posterior and reference samples per C2ST, as in jsbi report (default: %(default)s)",
    )
    from jsbi.inference.config import add_train_flags

    # The package's training defaults for every unit, so that rows compare like with
    # like (a finished unit is read back, not retrained): only the cap is a flag.
    add_train_flags(p, only=["max_epochs"])
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="results folder: rows/ (one CSV per finished unit, kept for resuming), "
        "checkpoints/ (unfinished units), benchmark.csv, summary.md and c2st_<task>.png "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="(task, budget, seed, method) units trained at once (default: %(default)s)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="joblib backend for the units, as for simulation (dask needs a running "
        "dask.distributed client; default: joblib's)",
    )
    p.add_argument(
        "--support",
        default=None,
        choices=["transform", "truncate"],
        help="how every jsbi method's flow respects a bounded prior (default: the "
        "package's; rows recorded before it was truncate used transform)",
    )
    p.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: rewrite the summary from the finished units in --out",
    )
    p.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another results folder whose finished units (DIR/rows) join the summary, "
        "e.g. benchmarks/results/objectives, the development runs; repeatable; a unit "
        "found in --out wins over the same unit here",
    )


def _unit_key(row: dict) -> tuple:
    return tuple(row[k] for k in ("task", "num_simulations", "seed", "method", "observation"))


def _benchmark(args: argparse.Namespace) -> int:
    _set_threads(args)
    from jsbi.benchmark import (
        METHODS,
        FinishedUnitError,
        load_rows,
        run_benchmark,
        summary_table,
        write_results,
    )
    from jsbi.simulators.tasks import TASKS

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.objectives.split(",") if m.strip()]
    for name, given, known in (("--tasks", tasks, TASKS), ("--objectives", methods, METHODS)):
        bad = [v for v in given if v not in known]
        if bad or not given:
            args._parser.error(
                f"{name}: unknown {bad or 'none given'}; choose from {sorted(known)}"
            )
    if any(n < 1 for n in args.num_simulations) or args.num_samples < 2:
        args._parser.error("--num-simulations must be positive and --num-c2st-samples >= 2")
    for folder in args.also:  # checked before any training, so a typo cannot waste a run
        if not Path(folder, "rows").is_dir():
            args._parser.error(f"--also: {folder}/rows is not a folder of finished units")
    if args.summarise:
        rows = [r for r in load_rows(args.out) if r["task"] in tasks and r["method"] in methods]
        if not rows:
            args._parser.error(f"--summarise: no finished units in {args.out}/rows")
    else:
        try:
            rows = run_benchmark(
                tasks,
                args.num_simulations,
                methods,
                observations=args.observations,
                seeds=args.seeds,
                num_samples=args.num_samples,
                max_epochs=args.max_epochs,
                options={
                    "device": args.device,
                    **({} if args.support is None else {"support": args.support}),
                },
                out=args.out,
                n_jobs=args.n_jobs,
                backend=args.backend,
                threads=args.threads,
            )
        except (ImportError, RuntimeError, FinishedUnitError) as e:  # a backend missing
            # or not started, or a finished unit asked for observations it was not scored on
            args._parser.error(str(e))
    seen = {_unit_key(r) for r in rows}
    rows += [
        r
        for r in load_rows(*args.also)
        if r["task"] in tasks and r["method"] in methods and _unit_key(r) not in seen
    ]
    command = (
        f"jsbi benchmark --tasks {','.join(tasks)} --num-simulations "
        f"{','.join(map(str, args.num_simulations))} --objectives {','.join(methods)} "
        f"--observations {','.join(map(str, args.observations))} "
        f"--seeds {','.join(map(str, args.seeds))} --num-c2st-samples {args.num_samples} "
        + (f"--max-epochs {args.max_epochs} " if args.max_epochs != 2**31 - 1 else "")
        + (f"--support {args.support} " if args.support is not None else "")
        + f"--out {args.out}"
        + "".join(f" --also {folder}" for folder in args.also)
        + (" --summarise" if args.summarise else "")
    )
    summary = write_results(rows, args.out, command)
    print(summary_table(rows, methods))
    print(f"\nwrote {summary}, {args.out / 'benchmark.csv'} and the C2ST-vs-budget figures")
    return 0


#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "simulate a built-in task, train a posterior, sample it for an observation",
        _add_run,
        _run,
    ),
    "report": (
        "simulate a built-in task, train several objectives on the same pairs, and write "
        "the comparison report (C2ST, SBC, coverage, TARP, NLTP, figures)",
        _add_report,
        _run_report,
    ),
    "benchmark": (
        "the benchmark table: tasks x budgets x methods x observations x seeds, C2ST "
        "against the reference posterior, resumable and parallel; writes CSVs, a Markdown "
        "summary and C2ST-vs-budget figures",
        _add_benchmark,
        _benchmark,
    ),
    "demo": (
        "the main job, small: two_moons with 2,000 simulations, jsbi's jeffreys and npe "
        "against sbi's NPE, report written to --out (a few minutes on a laptop CPU)",
        _add_demo,
        _demo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jsbi",
        description="Simulation-based inference with adaptive symmetric (Jeffreys / SRFE) "
        "objectives, checked against sbi's NPE.",
    )
    from jsbi import __version__

    parser.add_argument("--version", action="version", version=f"jsbi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        if name in ("run", "report", "benchmark"):  # demo adds its own, the same flags
            _add_threads(p)
            _add_device(p)
        p.set_defaults(func=run, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Runs the ``jsbi`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
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
