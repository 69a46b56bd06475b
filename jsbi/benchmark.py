r"""The benchmark table: tasks x budgets x methods x seeds, against sbi's NPE, resumable.

One *unit* is a (task, budget, seed, method): it simulates (seeded by the seed and the
budget only, so every method of a cell trains on the same pairs), trains, then scores each
observation with C2ST against the task's reference posterior (sbibm's definition). Units
run in parallel through joblib, under the same backends as :func:`jsbi.simulate` (local
processes, Dask, Ray). With ``out=`` every finished unit writes ``out/rows/<unit>.csv`` and
every unfinished jsbi unit keeps a training checkpoint in ``out/checkpoints/``: rerunning
the same call skips what is done and resumes the rest.

Development set (tune here): :data:`DEV_TASKS` with observations 1-5. Everything else
(other tasks, observations 6-10) is held out: :func:`summary_table` marks each row's set.

Example:
    >>> rows = run_benchmark(["two_moons"], [300], ["npe", "sbi-npe"], observations=[1],
    ...                      num_samples=500, max_epochs=3, out="bench/")
    two_moons_300_0_npe: C2ST ... epochs)
    two_moons_300_0_sbi-npe: C2ST ... epochs)
    >>> sorted(row["method"] for row in rows)
    ['npe', 'sbi-npe']
    >>> print(summary_table(rows))
    | task | sims | set | method | support | C2ST mean ± sd | n | train s | s/epoch vs npe |
    ...
"""

from __future__ import annotations

__all__ = [
    "DEV_TASKS",
    "METHODS",
    "Method",
    "comparison_table",
    "load_rows",
    "method_support",
    "method_posterior",
    "method_transforms",
    "plot_budgets",
    "run_benchmark",
    "run_unit",
    "summary_table",
    "write_results",
    "write_rows",
]

import csv
import dataclasses
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import joblib
import torch
from torch.distributions import Independent, Uniform

from jsbi.seeding import seeded

DEV_TASKS = ("two_moons", "gaussian_mixture", "slcp", "gaussian_linear_uniform")
DEV_OBSERVATIONS = range(1, 6)


@dataclasses.dataclass(frozen=True)
class Method:
    r"""A benchmark method: a name and the :class:`~jsbi.inference.PosteriorEstimator`
    keywords it trains with (``options=None``: sbi's NPE, with sbi's own flow).

    The options are checked when the method is built, by the estimator's own checks: an
    unknown or misplaced option is an error naming the method.

    Example:
        >>> Method("jeffreys-c2", {"objective": "jeffreys", "passes": 2}).kwargs()
        {'objective': 'jeffreys', 'passes': 2}
        >>> Method("typo", {"objective": "jeffreys", "proxi": "ratio"})
        Traceback (most recent call last):
        ...
        ValueError: method 'typo': ...
    """

    name: str
    options: Mapping[str, Any] | None
    comment: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a method's name must be a non-empty string, got {self.name!r}")
        if self.options is not None:
            options = dict(self.options)
            if "objective" not in options:
                raise ValueError(f"method {self.name!r}: options need an 'objective'")
            object.__setattr__(self, "options", MappingProxyType(options))
            self.check()

    @property
    def is_sbi(self) -> bool:
        r"""Whether this is sbi's NPE."""
        return self.options is None

    def kwargs(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        r"""The estimator's keywords, with extra ``options``
        (:func:`~jsbi.inference.estimator.split_options`): the symmetric objectives'
        (``proxy``, ``gate_samples``, ...) for those methods only, every other (the flow's:
        ``z_score_theta``, ``passes``, ...) for every jsbi method. ``device`` is not one
        of them (:func:`run_unit` takes it for every method, sbi's too)."""
        from jsbi.inference.estimator import split_options

        if self.options is None:
            raise ValueError(f"method {self.name!r} is sbi's NPE: it takes no jsbi options")
        kwargs = dict(self.options)
        extra = {k: v for k, v in (options or {}).items() if k != "device"}
        named, objective_kwargs, other = split_options(extra)
        kwargs.update(other)
        if kwargs["objective"] != "npe":
            kwargs.update(named)
            if objective_kwargs:
                kwargs["objective_kwargs"] = {
                    **kwargs.get("objective_kwargs", {}),
                    **objective_kwargs,
                }
        return kwargs

    def check(self, options: Mapping[str, Any] | None = None) -> None:
        r"""Raises the estimator's error, naming this method, for options it would refuse.
        Nothing trains: the estimator is built on a stand-in 2-D box prior (a symmetric
        objective's check builds a small stand-in flow and step)."""
        from jsbi.inference import PosteriorEstimator

        if self.options is None:
            return
        prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
        try:
            PosteriorEstimator(prior, **self.kwargs(options))
        except (TypeError, ValueError) as err:
            raise ValueError(f"method {self.name!r}: {err}") from err

    def support(self, options: Mapping[str, Any] | None = None) -> str:
        r"""How the method respects a bounded prior: ``"transform"`` or ``"truncate"`` for
        jsbi's methods, ``"sbi"`` for sbi's NPE (its own truncation)."""
        from jsbi.inference.estimator import estimator_support

        if self.is_sbi:
            return "sbi"
        k = self.kwargs(options)
        return estimator_support(
            k["objective"], k.get("schedule"), k.get("support"), k.get("bounded")
        )

    def transforms(self, task: str, options: Mapping[str, Any] | None = None) -> str:
        r"""The kind of transforms the method's flow has on ``task``: ``"coupling"``
        (zuko's ``passes`` below the number of parameters, or ``realnvp``) or
        ``"autoregressive"`` for jsbi's methods (with two parameters and ``passes=2`` the
        two are the same transform, called autoregressive), ``"sbi"`` for sbi's NPE."""
        from jsbi.simulators import get_task

        if self.is_sbi:
            return "sbi"
        k = self.kwargs(options)
        d = get_task(task).dim_theta
        passes = k.get("passes")
        if str(k.get("flow", "nsf")).lower() == "realnvp" or (passes is not None and d > passes):
            return "coupling"
        return "autoregressive"

    def posterior(self, options: Mapping[str, Any] | None = None) -> str:
        r"""What the method returns: ``"flow"``, ``"proxy"`` or ``"auto"``
        (:class:`~jsbi.inference.PosteriorEstimator`'s ``posterior``, its default
        resolved) for jsbi's methods, ``"sbi"`` for sbi's NPE."""
        from jsbi.inference.estimator import default_posterior

        if self.is_sbi:
            return "sbi"
        k = self.kwargs(options)
        proxy = k.get("proxy") or k.get("objective_kwargs", {}).get("proxy")
        return k.get("posterior") or default_posterior(k["objective"], proxy)


def _methods(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


#: The benchmark's methods by name.
METHODS: dict[str, Method] = _methods(
    Method("npe", {"objective": "npe"}),
    Method(
        "jeffreys",
        {"objective": "jeffreys"},
        "the package default: the flow or the likelihood proxy, whichever is clearly the "
        "better model on the validation pairs (posterior='auto'; rows before the posterior "
        "column returned the flow, which is now jeffreys-flow)",
    ),
    Method("jeffreys-flow", {"objective": "jeffreys", "posterior": "flow"}),
    Method("srfe", {"objective": "srfe"}, "tau = 0.5, constant (the estimator's default)"),
    Method("srfe-anneal", {"objective": "srfe", "tau_schedule": "anneal", "tau": 0.1}),
    Method(
        "jeffreys-fixed",
        {"objective": "jeffreys", "proxy": "ratio", "schedule": "joint", "adaptive": False},
        "the fixed-weight penalty ablation of the joint schedule",
    ),
    Method("distill", {"objective": "distill"}),
    Method(
        "jeffreys-proxy",
        {"objective": "jeffreys", "posterior": "auto"},
        "posterior='auto' named, from before it was jeffreys' default (the same as jeffreys)",
    ),
    Method(
        "jeffreys-joint",
        {"objective": "jeffreys", "proxy": "ratio", "schedule": "joint"},
        "METHOD.md section 4's reconstruction, the default before revision 2 (section 4b): "
        "the ratio proxy, warm-up then the joint primal-dual objective",
    ),
    Method("srfe-joint", {"objective": "srfe", "proxy": "ratio", "schedule": "joint"}),
    Method(
        "srfe-anneal-joint",
        {
            "objective": "srfe",
            "tau_schedule": "anneal",
            "tau": 0.1,
            "proxy": "ratio",
            "schedule": "joint",
        },
    ),
    Method("sbi-npe", None, "sbi's NPE (zuko NSF), the baseline"),
)

_INT = ("num_simulations", "seed", "observation", "epochs")
_FLOAT = ("c2st", "train_seconds", "seconds_per_epoch")


def _unit_name(task: str, n: int, seed: int, method: str) -> str:
    return f"{task}_{n}_{seed}_{method}"


class FinishedUnitError(ValueError):
    r"""A finished unit was asked for observations it was not scored on."""


def method_support(method: str, options: dict[str, Any] | None = None) -> str:
    r""":meth:`Method.support` of ``METHODS[method]``."""
    return _method(method).support(options)


def method_transforms(method: str, task: str, options: dict[str, Any] | None = None) -> str:
    r""":meth:`Method.transforms` of ``METHODS[method]``."""
    return _method(method).transforms(task, options)


def method_posterior(method: str, options: dict[str, Any] | None = None) -> str:
    r""":meth:`Method.posterior` of ``METHODS[method]``."""
    return _method(method).posterior(options)


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def _finished_rows(
    done: Path,
    observations: Sequence[int],
    support: str | None = None,
    transforms: str | None = None,
    posterior: str | None = None,
) -> list[dict[str, Any]] | None:
    r"""The rows of the finished unit whose row file is ``done``, for ``observations``
    (``None`` if it has not finished). A finished unit is read back, never scored again;
    one trained with another ``support``, other ``transforms`` or another ``posterior``
    setting than the method now uses is an error."""
    if not done.exists():
        return None
    rows = _read_csv(done)
    if support is not None and (old := {r["support"] for r in rows}) != {support}:
        raise FinishedUnitError(
            f"the finished unit {done} was trained with support={sorted(old)[0]!r}, but the "
            f"method now uses support={support!r} (the default changed, or --option "
            "support=...): give it a fresh out folder, or pass the old support"
        )
    if transforms is not None and (old := {r["transforms"] for r in rows}) != {transforms}:
        raise FinishedUnitError(
            f"the finished unit {done} was trained with {sorted(old)[0]} transforms, but the "
            f"method now uses {transforms} ones (the passes option): give it a fresh out "
            "folder, or pass the old passes"
        )
    if posterior is not None and (old := {r["posterior"] for r in rows}) != {posterior}:
        raise FinishedUnitError(
            f"the finished unit {done} returned posterior={sorted(old)[0]!r}, but the method "
            f"now uses posterior={posterior!r} (the default changed, or --option "
            "posterior=...): give it a fresh out folder, or pass the old posterior"
        )
    scored = {r["observation"] for r in rows}
    if missing := sorted(set(observations) - scored):
        raise FinishedUnitError(
            f"observations {missing} were asked for, but the finished unit {done} was "
            f"scored on {sorted(scored)} and is read back, not scored again: give those "
            "observations a fresh out folder"
        )
    return [r for r in rows if r["observation"] in observations]


def _train(
    method: str,
    task: Any,
    theta: torch.Tensor,
    x: torch.Tensor,
    seed: int,
    max_epochs: int,
    options: dict[str, Any] | None,
    checkpoint: Path | None,
) -> tuple[Any, float, int]:
    from jsbi.pipeline import SBI_NPE, train_method

    fit = {"max_epochs": max_epochs}
    device = (options or {}).get("device")  # every method's, sbi's too
    spec = METHODS[method]
    if spec.is_sbi:
        trained = train_method(
            SBI_NPE, task.prior, theta, x, seed=seed, fit_options=fit, device=device
        )
        return trained.posterior, trained.seconds, trained.epochs
    kwargs = spec.kwargs(options)
    trained = train_method(
        kwargs["objective"],
        task.prior,
        theta,
        x,
        seed=seed,
        estimator_options=kwargs,
        fit_options=fit,
        checkpoint=checkpoint,
        device=device,
    )
    # With a checkpoint, the sum of the epochs' times: a resumed run reports the whole run.
    return trained.posterior, trained.seconds, trained.epochs


def run_unit(
    task_name: str,
    num_simulations: int,
    seed: int,
    method: str,
    *,
    observations: Sequence[int] = DEV_OBSERVATIONS,
    num_samples: int = 10_000,
    max_epochs: int = 2**31 - 1,
    options: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    threads: int = 1,
) -> list[dict[str, Any]]:
    r"""Simulates, trains one method and scores it on each observation (or reads the rows
    a previous run of the same unit wrote to ``out``; asking that finished unit for an
    observation it was not scored on is a :class:`FinishedUnitError`).

    Arguments:
        task_name: A built-in task.
        num_simulations: The simulation budget.
        seed: Seeds the simulations, the training and the sampling.
        method: A key of :data:`METHODS`.
        observations: Observation numbers to score.
        num_samples: Posterior and reference samples per C2ST.
        max_epochs: Training epochs at most.
        options: Extra jsbi options (:func:`~jsbi.inference.estimator.split_options`): the
            symmetric objectives' (``proxy``, ``gate_samples``, ...) for those methods
            only, every other (the flow's: ``z_score_theta``, ``passes``, ...) for every
            jsbi method.
        out: The resumable run's folder (``None``: nothing is written).
        threads: Torch threads of this unit (units run side by side).

    Returns:
        One row per observation: task, num_simulations, seed, method, observation, c2st,
        train_seconds, epochs, seconds_per_epoch.
    """
    import jsbi
    from jsbi.diagnostics.c2st import c2st

    _method(method).check(options)
    torch.set_num_threads(threads)
    name = _unit_name(task_name, num_simulations, seed, method)
    done = checkpoint = None
    support = method_support(method, options)
    transforms = method_transforms(method, task_name, options)
    returns = method_posterior(method, options)
    if out is not None:
        out = Path(out)
        done = out / "rows" / f"{name}.csv"
        finished = _finished_rows(done, observations, support, transforms, returns)
        if finished is not None:
            return finished
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint = out / "checkpoints" / f"{name}.ckpt"
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, num_simulations, seed=seed, show_progress_bar=False)
    posterior, seconds, epochs = _train(
        method, task, theta, x, seed, max_epochs, options, checkpoint
    )
    # What auto chose (the flow or the proxy); the setting itself otherwise.
    returned = (getattr(posterior, "history", None) or {}).get("posterior", returns)
    rows = []
    for obs in observations:
        # The same draws as before, and the caller's random stream left where it was.
        with seeded(seed, [getattr(posterior, "device", "cpu")]):
            samples = posterior.sample((num_samples,), x=task.observation(obs))
            reference = task.reference_samples(obs, num_samples)
        rows.append(
            {
                "task": task_name,
                "num_simulations": num_simulations,
                "seed": seed,
                "method": method,
                "observation": obs,
                "c2st": c2st(samples, reference, seed=seed),
                "train_seconds": seconds,
                "epochs": epochs,
                "seconds_per_epoch": seconds / max(epochs, 1),
                "support": support,
                "transforms": transforms,
                "posterior": returns,
                "returned": returned,
            }
        )
    mean = statistics.fmean(r["c2st"] for r in rows)
    chose = f", returned the {returned}" if returns == "auto" else ""
    print(
        f"  {name}: C2ST {mean:.3f} ({seconds:.0f} s, {epochs} epochs{chose})",
        flush=True,
    )
    if done is not None:
        done.parent.mkdir(parents=True, exist_ok=True)
        write_rows(done.with_suffix(".tmp"), rows)
        done.with_suffix(".tmp").replace(done)
        checkpoint.unlink(missing_ok=True)
    return rows


def run_benchmark(
    tasks: Sequence[str],
    budgets: Sequence[int],
    methods: Sequence[str],
    *,
    observations: Sequence[int] = DEV_OBSERVATIONS,
    seeds: Sequence[int] = (0,),
    num_samples: int = 10_000,
    max_epochs: int = 2**31 - 1,
    options: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    n_jobs: int = 1,
    backend: str | None = None,
    threads: int = 1,
) -> list[dict[str, Any]]:
    r"""Runs every (task, budget, seed, method) unit; see :func:`run_unit`.

    Arguments:
        tasks, budgets, methods, seeds: The grid.
        observations, num_samples, max_epochs, options: As for :func:`run_unit`.
        out: The resumable run's folder.
        n_jobs: Units run at once (joblib's ``n_jobs``).
        backend: A joblib backend, as for :func:`jsbi.simulate` (``"dask"``, ``"ray"``,
            ``"loky"``, ...).
        threads: Torch threads of each unit.

    Returns:
        The rows of every unit.
    """
    from jsbi.simulators import get_task
    from jsbi.simulators.simulate import parallel_backend

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {sorted(METHODS)}, got {unknown}")
    for m in methods:  # a bad option fails here, before any work
        METHODS[m].check(options)
    for name in tasks:
        get_task(name)  # an unknown task fails here, before any work
    if any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be positive, got {list(budgets)}")
    units = [
        (t, int(n), int(s), m) for t in tasks for n in budgets for s in seeds for m in methods
    ]
    # Longest first keeps the workers busy to the end: big budgets, adaptive methods.
    units.sort(key=lambda u: (-u[1], u[3] in ("npe", "sbi-npe")))
    if out is not None:  # a finished unit that cannot answer fails here, before any work
        for unit in units:
            _finished_rows(
                Path(out, "rows", f"{_unit_name(*unit)}.csv"),
                observations,
                method_support(unit[3], options),
                method_transforms(unit[3], unit[0], options),
                method_posterior(unit[3], options),
            )
    kwargs = dict(
        observations=list(observations),
        num_samples=num_samples,
        max_epochs=max_epochs,
        options=options,
        out=out,
        threads=threads,
    )
    with parallel_backend(backend):
        results = joblib.Parallel(n_jobs=n_jobs)(
            joblib.delayed(run_unit)(*unit, **kwargs) for unit in units
        )
    return [row for rows in results for row in rows]


def load_rows(*outs: str | os.PathLike) -> list[dict[str, Any]]:
    r"""The rows of every finished unit in one or more runs' folders."""
    rows = []
    for out in outs:
        for path in sorted(Path(out, "rows").glob("*.csv")):
            rows.extend(_read_csv(path))
    return rows


def _is_dev(row: dict[str, Any]) -> bool:
    return row["task"] in DEV_TASKS and row["observation"] in DEV_OBSERVATIONS


def summary_table(rows: Sequence[dict[str, Any]], methods: Sequence[str] | None = None) -> str:
    r"""A Markdown table: per task, budget, set (development / held-out) and method, the
    C2ST mean and standard deviation over observations and seeds, the training time and
    the per-epoch cost relative to jsbi ``npe`` in the same cells."""
    methods = list(methods or [m for m in METHODS if any(r["method"] == m for r in rows)])
    lines = [
        "| task | sims | set | method | support | C2ST mean ± sd | n | train s | s/epoch vs npe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["task"], r["num_simulations"], "dev" if _is_dev(r) else "held-out")
        groups.setdefault(key, []).append(r)
    for (task, n, split), cell in sorted(groups.items()):
        npe = [r["seconds_per_epoch"] for r in cell if r["method"] == "npe"]
        for method in methods:
            mine = [r for r in cell if r["method"] == method]
            if not mine:
                continue
            c = [r["c2st"] for r in mine]
            per_epoch = statistics.fmean(r["seconds_per_epoch"] for r in mine)
            ratio = f"{per_epoch / statistics.fmean(npe):.2f}" if npe else "-"
            seconds = statistics.fmean(r["train_seconds"] for r in mine)
            # The support, and the transforms where they are coupling ones.
            kinds = {
                r.get("support", "?") + ("/coupling" if r.get("transforms") == "coupling" else "")
                for r in mine
            }
            support = ", ".join(sorted(kinds))
            lines.append(
                f"| {task} | {n} | {split} | {method} | {support} | {_mean_sd(c)} | "
                f"{len(c)} | {seconds:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def comparison_table(
    rows: Sequence[dict[str, Any]],
    methods: Sequence[str] = ("npe", "jeffreys", "srfe", "sbi-npe"),
    differences: Sequence[tuple[str, str]] = (("jeffreys", "sbi-npe"),),
) -> str:
    r"""One Markdown line per (task, set, budget) with each method's C2ST mean ± sd side by
    side, ``n`` (observations x seeds per method, the smallest when they differ) and, for
    each pair ``(a, b)`` in ``differences``, the paired difference ``a - b`` (mean ± sd over
    the (seed, observation) pairs both methods scored; negative favours ``a``). A missing
    cell is ``-``."""
    if not differences or any(len(pair) != 2 for pair in differences):
        raise ValueError(
            f"differences must be a non-empty sequence of (method, method) pairs, "
            f"got {differences!r}"
        )
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["task"], "dev" if _is_dev(r) else "held-out", r["num_simulations"])
        groups.setdefault(key, []).append(r)
    paired = " | ".join(f"{a} − {b} (paired)" for a, b in differences)
    lines = [
        "| task | set | sims | " + " | ".join(methods) + f" | n | {paired} |",
        "|---|---|---|" + "---|" * (len(methods) + 1 + len(differences)),
    ]
    for (task, split, n), cell in sorted(groups.items()):
        cols, counts = [], []
        for method in methods:
            c = [r["c2st"] for r in cell if r["method"] == method]
            counts += [len(c)] if c else []
            cols.append(_mean_sd(c) if c else "-")
        if not counts:
            continue
        cols.append(str(min(counts)))
        for a, b in differences:
            by_pair = {
                m: {(r["seed"], r["observation"]): r["c2st"] for r in cell if r["method"] == m}
                for m in (a, b)
            }
            diffs = [by_pair[a][k] - by_pair[b][k] for k in by_pair[a] if k in by_pair[b]]
            cols.append(_mean_sd(diffs, signed=True) if diffs else "-")
        lines.append(f"| {task} | {split} | {n} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):{'+' if signed else ''}.3f} ± {sd:.3f}"


def plot_budgets(rows: Sequence[dict[str, Any]], task: str, path: str | os.PathLike) -> None:
    r"""C2ST against the simulation budget for each method on one task (mean ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in METHODS:
        mine = [r for r in rows if r["task"] == task and r["method"] == method]
        budgets = sorted({r["num_simulations"] for r in mine})
        if not budgets:
            continue
        values = [[r["c2st"] for r in mine if r["num_simulations"] == b] for b in budgets]
        means = [statistics.fmean(v) for v in values]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(budgets, means, yerr=sds, marker="o", capsize=3, label=method)
    ax.set(xscale="log", xlabel="simulations", ylabel="C2ST (0.5 is best)", title=task)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    rows: Sequence[dict[str, Any]], results: str | os.PathLike, command: str | None = None
) -> Path:
    r"""Writes ``benchmark.csv`` (every row), ``summary.md`` (the table, and ``command``,
    the one that regenerates it, when given) and one ``c2st_<task>.png`` per task to
    ``results``; returns the summary's path."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    order = ("task", "num_simulations", "seed", "method", "observation")
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in order))
    write_rows(results / "benchmark.csv", rows)
    tasks = sorted({r["task"] for r in rows})
    for task in tasks:
        plot_budgets(rows, task, results / f"c2st_{task}.png")
    figures = "\n".join(f"![{t}](c2st_{t}.png)" for t in tasks)
    summary = results / "summary.md"
    summary.write_text(
        "# jsbi benchmark\n\nC2ST against the reference posterior (sbibm's definition; 0.5 is "
        "perfect), mean ± sd over observations x seeds; `dev` rows are the development set "
        "(tuned on), `held-out` rows were never tuned on.\n\n"
        + (
            f"Regenerate (finished units are read back from `rows/`):\n\n    {command}\n\n"
            if command
            else ""
        )
        + f"{comparison_table(rows, *_table_methods(rows))}\n\nPer method, with training cost:\n\n"
        + f"{summary_table(rows)}\n\n{figures}\n"
    )
    return summary


def _table_methods(
    rows: Sequence[dict[str, Any]],
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    r"""The comparison table's columns (the methods present, in :data:`METHODS`' order) and
    its paired differences: the default symmetric objective against sbi's NPE, or revision
    1's default (``jeffreys-joint``) where the rows have no ``jeffreys``, or jsbi's ``npe``
    where they have neither; and, where the rows hold a symmetric objective and ``npe``,
    that objective against jsbi's ``npe`` too (issue 16's "never worse than npe")."""
    present = {r["method"] for r in rows}
    methods = tuple(m for m in METHODS if m in present) + tuple(sorted(present - set(METHODS)))
    first = next((m for m in ("jeffreys", "jeffreys-joint") if m in present), "npe")
    differences = ((first, "sbi-npe"),)
    if first != "npe" and "npe" in present:
        differences += ((first, "npe"),)
    return methods, differences


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in _INT})
        r.update({k: float(r[k]) for k in _FLOAT})
        # Rows written before the support column were all support="transform", and those
        # written before the transforms column all autoregressive.
        r.setdefault("support", "sbi" if r["method"] == "sbi-npe" else "transform")
        r.setdefault("transforms", "sbi" if r["method"] == "sbi-npe" else "autoregressive")
        # Those written before the posterior column returned the flow (sbi's: its own),
        # but jeffreys-proxy's, which were posterior="auto" (what they returned unknown).
        if "posterior" not in r:
            old = {"sbi-npe": "sbi", "jeffreys-proxy": "auto"}.get(r["method"], "flow")
            r["posterior"] = old
            r["returned"] = "" if old == "auto" else old
    return rows


def write_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    r"""Writes rows (dicts with the same keys) as a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
