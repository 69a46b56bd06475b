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

__all__ = ["comparison_table", "load_rows", "run_benchmark", "summary_table", "write_results"]

import csv
import functools
import io
import math
import os
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import torch

from jsbi.files import atomic_write_text
from jsbi.methods import BASELINE, NPEConfig, SymmetricConfig, method_config, method_names
from jsbi.methods.plans import phase2_outcome
from jsbi.seeding import seeded

DEV_TASKS = ("two_moons", "gaussian_mixture", "slcp", "gaussian_linear_uniform")
DEV_OBSERVATIONS = range(1, 6)


#: The benchmark's methods: the registry's (:data:`jsbi.methods.METHODS`) and sbi's NPE.
METHODS: tuple[str, ...] = tuple(method_names())
#: The tables' roles: the package default, and jsbi's own NPE that it must never trail.
DEFAULT, REFERENCE = "jeffreys", "npe"
#: ``options["embedding"]``: the embedding of ``x`` every method of a unit reads (sbi's NPE
#: too), built afresh per unit from its seed. ``"mlp"``: an MLP to this many features.
EMBEDDINGS = ("mlp",)
EMBEDDING_FEATURES = 20


def method_options(method: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    r"""The estimator options of ``method`` among ``options`` (every jsbi method's): a
    symmetric method's option does not reach ``npe``, and ``device`` is the unit's."""
    out = {}
    npe = isinstance(method_config(method), NPEConfig)
    for key, value in (options or {}).items():
        if key in ("device", "embedding") or (npe and key in SymmetricConfig.names()):
            continue
        out[key] = value
    return out


def _estimator(method: str, task: Any, options: Mapping[str, Any] | None) -> Any:
    # The estimator a jsbi method trains (nothing trains): its errors name the method.
    from jsbi.estimator import PosteriorEstimator

    try:
        return PosteriorEstimator(task.prior, objective=method, **method_options(method, options))
    except (TypeError, ValueError) as err:
        raise ValueError(f"method {method!r}: {err}") from err


def method_columns(method: str, task: Any, options: Mapping[str, Any] | None = None) -> dict:
    r"""What a unit's rows say of its method: the ``support`` mode (``"sbi"`` for sbi's
    NPE), the flow's ``transforms`` (``"coupling"`` where zuko's ``passes`` is below the
    number of parameters, or ``realnvp``; else ``"autoregressive"``) and what it returns
    (``posterior``: ``"flow"``, ``"proxy"``, ``"mixture"`` or ``"auto"``)."""
    if method == BASELINE:
        return {"support": "sbi", "transforms": "sbi", "posterior": "sbi"}
    est = _estimator(method, task, options)
    fc = est.flow_config
    coupling = str(fc.flow).lower() == "realnvp" or (
        fc.passes is not None and task.dim_theta > fc.passes
    )
    return {
        "support": est.support,
        "transforms": "coupling" if coupling else "autoregressive",
        "posterior": est.method.returns,
    }


_INT = ("num_simulations", "seed", "observation", "epochs")
_FLOAT = (
    "c2st",
    "c2st_rf",
    "distinct",
    "train_seconds",
    "decide_seconds",
    "seconds_per_epoch",
    "simulation_seconds",
    "sample_seconds",
    "imh_acceptance",
    "rhat",
    "drift",
    "mcmc_steps",
    "temperature",
    "coverage_max_deviation",
    "coverage_mean_deviation",
    "tarp_atc",
    "nltp",
    "nltp_se",
)
_BOOL = ("coverage_outside_band", "sbc_in_band")


@functools.cache
def code_version() -> str:
    r"""The code a unit is trained with: the commit of the jsbi checkout (with ``+changes``
    where its ``jsbi/`` has uncommitted changes), or ``jsbi <version>`` outside a checkout.

    A row file is read back whatever code wrote it, so its rows carry this (rows written
    before it lack it): a grid whose units ran under different code says so. Read once
    per process, at its first unit: a commit made while a run goes on does not change
    the code that run has loaded."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parent
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        try:
            return f"jsbi {version('jsbi')}"
        except PackageNotFoundError:  # run from a copy of the source, not installed
            return "jsbi (unknown version)"
    return head + ("+changes" if dirty else "")


def _unit_name(task: str, n: int, seed: int, method: str) -> str:
    return f"{task}_{n}_{seed}_{method}"


class FinishedUnitError(ValueError):
    r"""A finished unit was asked for observations it was not scored on."""


class UnitsFailedError(RuntimeError):
    r"""Some units of a grid raised; the others ran to the end.

    Attributes:
        rows: The rows of the units that finished.
        failures: ``"unit name: error"`` for each unit that raised.
    """

    def __init__(self, rows: list[dict[str, Any]], failures: list[str]) -> None:
        self.rows, self.failures = rows, failures
        super().__init__(
            f"{len(failures)} unit(s) failed (the others finished):\n  " + "\n  ".join(failures)
        )


def _check_method(name: str) -> None:
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")


def _finished_rows(
    done: Path,
    observations: Sequence[int],
    support: str | None = None,
    transforms: str | None = None,
    posterior: str | None = None,
    *,
    embedding: str | None = None,
) -> list[dict[str, Any]] | None:
    r"""The rows of the finished unit whose row file is ``done``, for ``observations``
    (``None`` if it has not finished). A finished unit is read back, never scored again
    (with a line that says so where other code trained it); one trained with another
    ``support``, other ``transforms``, another ``posterior`` setting than the method now
    uses, or another ``embedding`` than asked, is an error."""
    if not done.exists():
        return None
    rows = _read_csv(done)
    trained = sorted({r.get("embedding") or "none" for r in rows})
    if trained != [embedding or "none"]:
        raise FinishedUnitError(
            f"the finished unit {done} was trained with embedding={trained[0]!r}, but this "
            f"run asks for embedding={embedding or 'none'!r}: give it a fresh out folder"
        )
    wanted = {"support": support, "transforms": transforms, "posterior": posterior}
    missing = sorted({c for c in wanted for r in rows if c not in r})
    if missing:
        raise FinishedUnitError(
            f"the finished unit {done} has no {missing[0]!r} column (written by an older "
            "jsbi): give this run a fresh out folder"
        )
    for column, now in wanted.items():
        old = sorted({r[column] for r in rows})
        if now is not None and old != [now]:
            raise FinishedUnitError(
                f"the finished unit {done} was trained with {column}={old[0]!r}, but the "
                f"method now uses {column}={now!r} (the default changed, or an option): "
                "give it a fresh out folder, or pass the old setting"
            )
    scored = {r["observation"] for r in rows}
    if missing := sorted(set(observations) - scored):
        raise FinishedUnitError(
            f"observations {missing} were asked for, but the finished unit {done} was "
            f"scored on {sorted(scored)} and is read back, not scored again: give those "
            "observations a fresh out folder"
        )
    # Read back whatever code trained it: say so where that is not this run's.
    codes = sorted({r.get("code") or "code unrecorded" for r in rows})
    if codes != [code_version()]:
        print(
            f"  {done.stem}: read back, trained by {', '.join(codes)}, not this run's "
            f"{code_version()} (delete {done} to train it again)",
            flush=True,
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
    embedding = unit_embedding((options or {}).get("embedding"), x.shape[1], seed)
    if method == BASELINE:
        trained = train_method(
            SBI_NPE,
            task.prior,
            theta,
            x,
            seed=seed,
            fit_options=fit,
            device=device,
            embedding_net=embedding,
        )
        return trained.posterior, trained.seconds, trained.epochs
    trained = train_method(
        method,
        task.prior,
        theta,
        x,
        seed=seed,
        estimator_options=method_options(method, options),
        fit_options=fit,
        checkpoint=checkpoint,
        device=device,
        embedding_net=embedding,
    )
    # With a checkpoint, the sum of the epochs' times: a resumed run reports the whole run.
    return trained.posterior, trained.seconds, trained.epochs


def unit_embedding(kind: str | None, dim_x: int, seed: int) -> torch.nn.Module | None:
    r"""The embedding of ``x`` a unit's method reads (``kind``: ``None`` or one of
    :data:`EMBEDDINGS`), initialised from the unit's seed: the same for every method."""
    if kind is None:
        return None
    if kind not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS} or None, got {kind!r}")
    from jsbi.flows import MLPEmbedding

    with seeded(seed):
        return MLPEmbedding(dim_x, EMBEDDING_FEATURES)


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
    calibration_pairs: int = 500,
    calibration_samples: int = 200,
    c2st_jobs: int = 1,
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
        options: Extra estimator options of every jsbi method (:func:`method_options`);
            ``"embedding"``: of every method, sbi's too, recorded (:func:`unit_embedding`).
        out: The resumable run's folder (``None``: nothing is written).
        threads: Torch threads of this unit (units run side by side).
        calibration_pairs: Fresh prior-predictive pairs for the calibration columns (the
            same pairs for every method of a cell; 0: none).
        calibration_samples: Posterior samples per calibration pair.
        c2st_jobs: Processes for each C2ST's folds (after the timed work; same scores).

    Returns:
        One row per observation: the unit (task, num_simulations, seed, method), the
        observation, C2ST (``c2st``: sbibm's MLP; ``c2st_rf``: sbi's random forest), the
        share of distinct samples, the times (``simulation_seconds``, ``train_seconds``
        with, for jsbi's methods, the work after the last epoch, ``decide_seconds``, and
        ``sample_seconds``: 10,000 samples at the first observation), what the method
        returned, its code (:func:`code_version`), a recalibrated method's temperature
        (NaN for others) and calibration (:func:`~jsbi.diagnostics.calibration.calibration`).
    """
    from jsbi.simulators import get_task, simulate

    _check_method(method)
    task = get_task(task_name)
    columns = method_columns(method, task, options)
    torch.set_num_threads(threads)
    name = _unit_name(task_name, num_simulations, seed, method)
    done = checkpoint = None
    if out is not None:
        out = Path(out)
        done = out / "rows" / f"{name}.csv"
        embedding = (options or {}).get("embedding")
        finished = _finished_rows(done, observations, *columns.values(), embedding=embedding)
        if finished is not None:
            return finished
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint = out / "checkpoints" / f"{name}.ckpt"
    code = code_version()  # before the work: the code this process loaded
    start = time.perf_counter()
    theta, x = simulate(task, num_simulations, seed=seed, show_progress_bar=False)
    simulated = time.perf_counter() - start
    posterior, seconds, epochs = _train(
        method, task, theta, x, seed, max_epochs, options, checkpoint
    )
    history = getattr(posterior, "history", None) or {}  # sbi's posteriors have none
    decided = history.get("decide_time", math.nan)
    unit = {
        "task": task_name,
        "num_simulations": num_simulations,
        "seed": seed,
        "method": method,
        "simulation_seconds": simulated,
        "train_seconds": seconds,
        # Of which the work after the last epoch (jsbi's methods; older rows lack it).
        "decide_seconds": decided,
        "epochs": epochs,
        "seconds_per_epoch": (seconds - (decided if math.isfinite(decided) else 0.0))
        / max(epochs, 1),
        **columns,
        **({"embedding": options["embedding"]} if (options or {}).get("embedding") else {}),
        **_fit_columns(history, columns["posterior"], code),
        "sample_seconds": _sample_seconds(posterior, task, observations[0], seed),
        **_calibration(posterior, task, seed, calibration_pairs, calibration_samples),
    }
    rows = [
        {**unit, "observation": obs, **_score(posterior, task, obs, num_samples, seed, c2st_jobs)}
        for obs in observations
    ]
    _say(name, rows, columns["posterior"] == "auto")
    if done is not None:
        done.parent.mkdir(parents=True, exist_ok=True)
        write_rows(done, rows)
        checkpoint.unlink(missing_ok=True)
    return rows


def _say(name: str, rows: list[dict[str, Any]], auto: bool) -> None:
    # A finished unit's line in the run's log: mean C2ST, training, what it returned.
    mean, unit = statistics.fmean(row["c2st"] for row in rows), rows[0]
    chose = f", returned the {unit['returned']}" if auto else ""
    seconds, epochs = unit["train_seconds"], unit["epochs"]
    print(f"  {name}: C2ST {mean:.3f} ({seconds:.0f} s, {epochs} epochs{chose})", flush=True)


#: The proxy's last measurement against the flow on the validation pairs, per unit (NaN
#: where none was made: npe, sbi, an abandoned proxy; older rows lack them).
VALIDATION_COLUMNS = (
    "proxy_minus_flow",
    "proxy_minus_flow_se",
    "mixture_minus_flow",
    "mixture_minus_flow_se",
)


def _fit_columns(history: dict, posterior: str, code: str) -> dict:
    # What the fit did and with which code.
    final = history.get("final_proxy") or {}
    return {
        # What auto chose (the flow, the proxy or their mixture); the setting otherwise.
        "returned": history.get("posterior", posterior),
        "phase2": phase2_outcome(history),
        "code": code,
        # The base temperature recalibrate kept (NaN: none fitted; older rows lack it).
        "temperature": history.get("recalibration", {}).get("temperature", math.nan),
        **{f"validation_{k}": final.get(k, math.nan) for k in VALIDATION_COLUMNS},
    }


def _score(
    posterior: Any, task: Any, obs: int, num_samples: int, seed: int, jobs: int = 1
) -> dict:
    # C2ST (both kinds) and the share of distinct samples at one observation.
    from jsbi.diagnostics.c2st import c2st

    # The same draws for every rerun, and the caller's random stream left where it was.
    with seeded(seed, [getattr(posterior, "device", "cpu")]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a proxy's mixing warning is in its own column
        x_o = task.observation(obs)
        samples = posterior.sample((num_samples,), x=x_o, **_no_bar(posterior)).cpu()
        reference = task.reference_samples(obs, num_samples)
    mixing = getattr(posterior, "last_mixing", None)
    return {
        "c2st": c2st(samples, reference, seed=seed, n_jobs=jobs),
        "c2st_rf": c2st(samples, reference, seed=seed, classifier="rf", n_jobs=jobs),
        "distinct": len(torch.unique(samples, dim=0)) / len(samples),
        "imh_acceptance": math.nan if mixing is None else mixing.imh_acceptance,
        "rhat": math.nan if mixing is None else mixing.rhat,
        "drift": math.nan if mixing is None else mixing.drift,
        # The steps the chains ran (more than mcmc_steps only with mcmc_max_steps).
        "mcmc_steps": math.nan if mixing is None else mixing.num_steps,
    }


def _sample_seconds(posterior: Any, task: Any, obs: int, seed: int) -> float:
    # The wall time of 10,000 samples at one observation.
    x_o = task.observation(obs)
    with seeded(seed, [getattr(posterior, "device", "cpu")]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = _no_bar(posterior)  # before the clock
        start = time.perf_counter()
        posterior.sample((10_000,), x=x_o, **quiet)
        return time.perf_counter() - start


def _no_bar(posterior: Any) -> dict[str, bool]:
    # sbi's samplers draw a progress bar unless told not to (where ``sample`` takes it).
    from jsbi.diagnostics.utils import accepted_kwargs

    return accepted_kwargs(posterior.sample, show_progress_bars=False)


def _calibration(posterior: Any, task: Any, seed: int, pairs: int, samples: int) -> dict:
    # The calibration columns on fresh prior-predictive pairs, the same for every method
    # of a cell (seeded by the cell's seed alone).
    from jsbi.diagnostics.calibration import COLUMNS, calibration

    if pairs <= 0:
        return dict.fromkeys(COLUMNS, math.nan)
    with seeded(10_000 + seed):
        theta = task.prior.sample((pairs,))
        x = task.simulate(theta)
    ok = torch.isfinite(x).all(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibration(posterior, theta[ok], x[ok], samples, seed=seed)


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

    Raises:
        UnitsFailedError: After every unit has run, if some raised (a unit's failure does
            not stop the others; its error and the finished units' rows are attached).
    """
    from jsbi.simulators import get_task
    from jsbi.simulators.simulate import parallel_backend

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {sorted(METHODS)}, got {unknown}")
    for m in methods:  # a bad option fails here, before any work
        _check_method(m)
    for name in tasks:
        get_task(name)  # an unknown task fails here, before any work
    if any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be positive, got {list(budgets)}")
    units = [
        (t, int(n), int(s), m) for t in tasks for n in budgets for s in seeds for m in methods
    ]
    # Longest first keeps the workers busy to the end: big budgets, adaptive methods.
    units.sort(key=lambda u: (-u[1], u[3] in (REFERENCE, BASELINE)))
    if out is not None:
        unpack_rows(out)
    for unit in units:  # a refused option, or a finished unit that cannot answer, fails
        # here, before any work
        columns = method_columns(unit[3], get_task(unit[0]), options)
        if out is not None:
            _finished_rows(
                Path(out, "rows", f"{_unit_name(*unit)}.csv"),
                observations,
                *columns.values(),
                embedding=(options or {}).get("embedding"),
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
            joblib.delayed(_run_unit_or_error)(*unit, **kwargs) for unit in units
        )
    rows = [row for result, _ in results for row in result]
    failures = [error for _, error in results if error is not None]
    if failures:
        raise UnitsFailedError(rows, failures)
    return rows


def _run_unit_or_error(*unit: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str | None]:
    # One unit's rows, or its error: a unit that raises does not stop the grid.
    try:
        return run_unit(*unit, **kwargs), None
    except FinishedUnitError:
        raise  # checked before any work; not a unit's failure
    except Exception as e:
        name = _unit_name(*unit)
        print(f"  {name}: FAILED\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return [], f"{name}: {type(e).__name__}: {e}"


def load_rows(*outs: str | os.PathLike) -> list[dict[str, Any]]:
    r"""The rows of every finished unit in one or more runs' folders."""
    rows = []
    for out in outs:
        unpack_rows(out)
        for path in sorted(Path(out, "rows").glob("*.csv")):
            rows.extend(_read_csv(path))
    return rows


def unpack_rows(out: str | os.PathLike) -> None:
    r"""Writes ``rows/<unit>.csv`` for each finished unit of ``out/benchmark.csv`` that has
    none. ``benchmark.csv`` is what is kept (in git); ``rows/`` is the harness's working
    copy, rebuilt from it in a fresh checkout (a column the unit's jsbi did not write
    reads empty, as in ``benchmark.csv``)."""
    record = Path(out, "benchmark.csv")
    if not record.exists():
        return
    units: dict[str, list[dict[str, str]]] = {}
    with open(record, newline="") as f:
        for r in csv.DictReader(f):
            name = _unit_name(r["task"], int(r["num_simulations"]), int(r["seed"]), r["method"])
            units.setdefault(name, []).append(r)
    for name, rows in units.items():
        path = Path(out, "rows", f"{name}.csv")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_rows(path, rows)


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
        npe = [r["seconds_per_epoch"] for r in cell if r["method"] == REFERENCE]
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
    atomic_write_text(
        summary,
        "# jsbi benchmark\n\nC2ST against the reference posterior (sbibm's definition; 0.5 is "
        "perfect), mean ± sd over observations x seeds; `dev` rows are the development set "
        "(tuned on), `held-out` rows were never tuned on.\n\n"
        + (
            f"Regenerate (finished units are read back from `rows/`):\n\n    {command}\n\n"
            if command
            else ""
        )
        + f"{comparison_table(rows, *_table_methods(rows))}\n\nPer method, with training cost:\n\n"
        + f"{summary_table(rows)}\n\n{figures}\n",
    )
    return summary


def _table_methods(
    rows: Sequence[dict[str, Any]],
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    r"""The comparison table's columns (the methods present, in :data:`METHODS`' order) and
    its paired differences: the default method against sbi's NPE (jsbi's ``npe`` where the
    rows have no default), and the default against jsbi's ``npe`` too, where both are
    present (the symmetric objective must never be worse than npe)."""
    present = {r["method"] for r in rows}
    methods = tuple(m for m in METHODS if m in present) + tuple(sorted(present - set(METHODS)))
    first = DEFAULT if DEFAULT in present else REFERENCE
    differences = ((first, BASELINE),)
    if first != REFERENCE and REFERENCE in present:
        differences += ((first, REFERENCE),)
    return methods, differences


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in _INT})
        r.update({k: float(r[k]) if r[k] != "" else math.nan for k in _FLOAT if k in r})
        r.update({k: r[k] == "True" for k in _BOOL if k in r})
    return rows


def write_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    r"""Writes rows (dicts; a column some lack is left empty) as a CSV file, atomically
    (:mod:`jsbi.files`): a crash leaves no half file, and a link planted at a fixed name
    redirects nothing."""
    text = io.StringIO(newline="")
    # Every column of any row (units of an older jsbi lack the newer ones: left empty).
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(text, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
