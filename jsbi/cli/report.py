r"""``jsbi report`` and ``jsbi demo``: several methods on the same simulations, compared.

A symmetric method's flags reach every symmetric method in ``--objectives`` (``--tau`` and
``--tau-schedule`` srfe's only); a flag that reaches none is an error.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsbi.cli.flags import (
    POSITIVE_INT,
    add_machine_flags,
    flag,
    given,
    int_list,
    jobs,
    out_folder,
    set_machine,
)
from jsbi.cli.run import add_method_flags
from jsbi.flows import FlowConfig
from jsbi.methods import BASELINE, SymmetricConfig, method_config, method_names
from jsbi.training import TrainConfig

__all__: list[str] = []

EXAMPLES = """examples:
  jsbi report --task two_moons --num-simulations 2000 --objectives jeffreys,npe,sbi-npe
  jsbi report --task slcp --num-simulations 10000 --observations 1,2 --out report/
"""

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


def budget_for(precision: float) -> tuple[int, int]:
    r"""Held-out pairs and samples per pair that resolve a coverage deviation of
    ``precision``: a pointwise 95 % interval of a coverage is about ``1 / sqrt(N)`` wide
    at most, so ``N = (1 / precision)^2`` pairs (400 for 0.05); credibility levels are
    quantised in steps of ``1 / L``, kept 5 times finer: ``L = 5 / precision`` samples."""
    return math.ceil((1 / precision) ** 2), math.ceil(5 / precision)


def precision(text: str) -> float:
    value = float(text)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"precision must be in (0, 0.5), got {text}")
    return value


def add_budget(
    p: argparse.ArgumentParser,
    *,
    observations: str,
    num_sbc: int | None,
    num_posterior: int | None,
    num_c2st: int,
) -> None:
    r"""The diagnostics' budget: observations, pairs and samples (``None``: from
    ``--precision``)."""
    g = p.add_argument_group("the diagnostics")
    if num_sbc is None:  # the counts follow the precision (the demo fixes them instead)
        g.add_argument(
            "--precision",
            type=precision,
            default=0.05,
            help="the coverage deviation the calibration checks must resolve; sets "
            "--num-sbc to (1 / precision)^2 and --num-posterior-samples to 5 / precision "
            "unless given (default: %(default)s: 400 pairs x 100 samples)",
        )
    from_precision = "from --precision" if num_sbc is None else "%(default)s"
    g.add_argument(
        "--observations",
        type=int_list,
        default=int_list(observations),
        help="task observation numbers for C2ST, leakage and pair plots, comma-separated "
        f"(default: {observations})",
    )
    g.add_argument(
        "--num-sbc",
        type=POSITIVE_INT,
        default=num_sbc,
        help="held-out prior-predictive pairs for SBC, expected coverage, TARP and NLTP "
        f"(default: {from_precision})",
    )
    g.add_argument(
        "--num-posterior-samples",
        type=POSITIVE_INT,
        default=num_posterior,
        help=f"posterior samples per held-out pair (default: {from_precision})",
    )
    g.add_argument(
        "--num-c2st-samples",
        type=POSITIVE_INT,
        default=num_c2st,
        help="posterior samples per observation for C2ST against the reference posterior "
        "and for leakage (default: %(default)s)",
    )
    g.add_argument(
        "--c2st-classifier",
        choices=("rf", "mlp"),  # jsbi.diagnostics.c2st's (not imported: --help stays fast)
        default="rf",
        help="C2ST's classifier: rf (sbi's default, a random forest) or mlp (sbibm's, which "
        "published numbers use; about 6 times slower) (default: %(default)s)",
    )


def add_method_jobs(p: argparse.ArgumentParser) -> None:
    r"""``--method-jobs``: the methods trained, then diagnosed, side by side."""
    p.add_argument(
        "--method-jobs",
        type=jobs,
        default=-1,
        help="methods trained, then diagnosed, side by side, one process each (-1: as many "
        "as there are methods and cores; 1: one after the other); each is seeded, so the "
        "report is the same (default: %(default)s)",
    )


def add_arguments(p: argparse.ArgumentParser, show_all: bool = False) -> None:
    from jsbi.simulators.tasks import TASKS

    p.epilog = EXAMPLES
    g = p.add_argument_group("what to compare")
    g.add_argument("--task", required=True, choices=sorted(TASKS), help="built-in task")
    g.add_argument(
        "--num-simulations",
        type=POSITIVE_INT,
        default=1000,
        help="training pairs, shared by every method (default: %(default)s)",
    )
    g.add_argument(
        "--objectives",
        default="jeffreys,npe,sbi-npe",
        help=f"comma-separated methods among {', '.join(method_names())} (default: %(default)s)",
    )
    g.add_argument(
        "--out",
        type=out_folder,
        default=Path("report-out"),
        help="report folder: index.html, results.csv, PNG figures, samples.nc "
        "(default: %(default)s)",
    )
    g.add_argument("--seed", type=int, default=0, help="seeds everything (default: %(default)s)")
    g.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="parallel simulation workers (-1: all cores) (default: %(default)s)",
    )
    add_method_jobs(p)
    add_budget(p, observations="1,2,3", num_sbc=None, num_posterior=None, num_c2st=10_000)
    add_method_flags(p, show_all)
    add_machine_flags(p)


def add_demo_arguments(p: argparse.ArgumentParser, show_all: bool = False) -> None:
    p.add_argument(
        "--out",
        type=out_folder,
        default=Path("demo-out"),
        help="report folder (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds everything (default: %(default)s)")
    add_method_jobs(p)
    add_budget(
        p,
        observations=DEMO["observations"],
        num_sbc=DEMO["num_sbc"],
        num_posterior=DEMO["num_posterior_samples"],
        num_c2st=DEMO["num_c2st_samples"],
    )
    add_method_flags(p, show_all)
    add_machine_flags(p)


def method_options(args: argparse.Namespace, objectives: Sequence[str]) -> dict[str, dict]:
    r"""The symmetric methods' flags given, per method they reach; ``--tau`` and
    ``--tau-schedule`` reach srfe-like methods only. A flag that reaches none of
    ``objectives`` is a usage error."""
    changes = given(args, SymmetricConfig)
    if not changes:
        return {}
    symmetric = [
        o for o in objectives if o != BASELINE and isinstance(method_config(o), SymmetricConfig)
    ]
    if not symmetric:
        args._parser.error(
            f"{', '.join(flag(k) for k in changes)} apply to the symmetric methods "
            "(jeffreys, srfe, distill, reverse), and --objectives has none"
        )
    tau = {k: changes.pop(k) for k in ("tau", "tau_schedule") if k in changes}
    renyi = [o for o in symmetric if method_config(o).term == "renyi"]
    if tau and not renyi:
        args._parser.error("--tau and --tau-schedule apply to srfe, and --objectives has none")
    return {o: {**changes, **(tau if o in renyi else {})} for o in symmetric}


def _check(args: argparse.Namespace, objectives: Sequence[str]) -> None:
    known = method_names()
    bad = [o for o in objectives if o not in known]
    if bad or not objectives:
        args._parser.error(
            f"--objectives must be a comma-separated list of {', '.join(known)}; "
            f"got {','.join(objectives)!r}"
        )
    if not args.observations:
        args._parser.error("--observations must name at least one observation")


def _report(
    args: argparse.Namespace, objectives: Sequence[str], num_simulations: int, fit: dict
) -> int:
    import jsbi
    from jsbi.estimator import PosteriorEstimator
    from jsbi.pipeline import run_report

    set_machine(args)
    _check(args, objectives)
    task = jsbi.get_task(args.task)
    bad = [i for i in args.observations if not 1 <= i <= task.num_observations]
    if bad:
        args._parser.error(
            f"--observations must lie in 1..{task.num_observations} for {args.task}, got {bad}"
        )
    options = method_options(args, objectives)
    flow = given(args, FlowConfig)
    try:  # every option checked before anything is simulated
        fit = TrainConfig.from_options(fit).asdict()
        if fit["recalibrate"] and BASELINE in objectives:
            raise ValueError(
                "--recalibrate applies to jsbi's posteriors, not to sbi-npe: drop one of them"
            )
        for o in objectives:
            if o != BASELINE:
                PosteriorEstimator(task.prior, objective=o, **flow, **options.get(o, {}))
    except ValueError as e:
        args._parser.error(str(e))
    if getattr(args, "precision", None) is not None:  # jsbi report; the demo fixes both
        pairs, samples = budget_for(args.precision)
        args.num_sbc = args.num_sbc or pairs
        args.num_posterior_samples = args.num_posterior_samples or samples
    print(
        f"simulating {num_simulations} pairs of {args.task}, training "
        f"{', '.join(objectives)}, then the diagnostics: {args.num_sbc} held-out pairs x "
        f"{args.num_posterior_samples} samples per method ...",
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
        c2st_classifier=args.c2st_classifier,
        fit_options=fit,
        method_options=options,
        estimator_kwargs=flow,
        n_jobs=args.n_jobs,
        method_jobs=args.method_jobs,
        device=args.device,
        show_progress_bar=None,  # on a terminal: simulation, each training, diagnostics
    )
    print(report.summary())
    print(f"\nreport: {Path(args.out) / 'index.html'}  ({time.perf_counter() - start:.0f} s)")
    return 0


def main(args: argparse.Namespace) -> int:
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    return _report(args, objectives, args.num_simulations, given(args, TrainConfig))


def demo(args: argparse.Namespace) -> int:
    args.task = DEMO["task"]
    args.n_jobs = 1
    fit: dict[str, Any] = {"max_epochs": DEMO["max_epochs"], **given(args, TrainConfig)}
    return _report(args, DEMO["objectives"], DEMO["num_simulations"], fit)
