r"""One pipeline: train a method by name on given pairs, and simulate-train-report.

"Train this method on these pairs" is one function, :func:`train_method`, whether the
method is one of jsbi's objectives or sbi's NPE (``"sbi-npe"``); the CLI, the benchmark
harness and :func:`run_report` all go through it, so a method means the same thing
everywhere. This module sits above the estimator and :mod:`jsbi.diagnostics`.

Example:
    >>> trained = train_method("npe", task.prior, theta, x, seed=0, fit_options={"max_epochs": 3})
    >>> trained.name, trained.epochs, trained.posterior.sample((100,), x=x_o).shape
    ('jsbi-npe', 3, torch.Size([100, 2]))
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.distributions import Distribution

from jsbi.methods.registry import BASELINE
from jsbi.progress import interactive, processes, side_by_side
from jsbi.simulators import get_task, simulate

__all__ = ["TrainedMethod", "run_report", "train_method"]

#: The external baseline's name: sbi's NPE (zuko NSF, sbi's defaults).
SBI_NPE = BASELINE

# jsbi's fit() option -> sbi's train() spelling.
_SBI_FIT = {
    "max_epochs": "max_num_epochs",
    "batch_size": "training_batch_size",
    "learning_rate": "learning_rate",
    "stop_after_epochs": "stop_after_epochs",
    "validation_fraction": "validation_fraction",
    "clip_max_norm": "clip_max_norm",
}


@dataclass
class TrainedMethod:
    r"""A trained method.

    Attributes:
        name: The method's label (``"jsbi-<objective>"`` or ``"sbi-npe"``).
        posterior: The posterior (jsbi's :class:`~jsbi.posteriors.Posterior` or sbi's).
        history: The training history (per-epoch series, ``epochs_trained``, and
            ``wall_time``).
        seconds: Training wall time; for a run resumed from its checkpoint, the sum of
            all its epochs' times and of the work after the last (``decide_time``).
        epochs: Epochs trained.
        estimator: The :class:`~jsbi.PosteriorEstimator` (``None`` for sbi).
    """

    name: str
    posterior: Any
    history: dict[str, Any]
    seconds: float
    epochs: int
    estimator: Any = None


def method_label(method: str) -> str:
    r"""``"npe"`` -> ``"jsbi-npe"``; ``"sbi-npe"`` and ``"jsbi-..."`` unchanged."""
    return method if method == SBI_NPE or method.startswith("jsbi-") else f"jsbi-{method}"


def train_method(
    method: str,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    *,
    seed: int = 0,
    estimator_options: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    embedding_net: nn.Module | None = None,
) -> TrainedMethod:
    r"""Trains one method on ``(theta, x)``.

    Arguments:
        method: A jsbi objective (``"npe"``, ``"jeffreys"``, ..., optionally prefixed
            ``"jsbi-"``) or ``"sbi-npe"``.
        prior: The prior.
        theta: Parameters, shape ``(n, d)``.
        x: Simulations, shape ``(n, m)``.
        seed: Seeds the initialisation, the split and the batches.
        estimator_options: :class:`~jsbi.PosteriorEstimator` options (jsbi
            methods only: an error with ``"sbi-npe"``).
        fit_options: :meth:`~jsbi.PosteriorEstimator.fit` options
            (``max_epochs``, ``batch_size``, ``learning_rate``, ``stop_after_epochs``,
            ``validation_fraction``, ...); for ``"sbi-npe"`` they are passed under sbi's
            names and any other is an error.
        checkpoint: jsbi methods: a file the run is saved to after every epoch, and
            resumed from.
        device: Where to train (``None``: the estimator option's, else the CPU); for
            ``"sbi-npe"``, sbi's ``device``.
        embedding_net: A module for ``x``, trained jointly, for every method (sbi's NPE
            too, so that the methods compare with the same embedding).

    Returns:
        A :class:`TrainedMethod`.
    """
    fit_options = dict(fit_options or {})
    # torch imports torch._dynamo when a process builds its first optimiser (3 s on a
    # 2-core CPU): done before any clock starts, so that the first method trained in a
    # process is not charged for it.
    importlib.import_module("torch._dynamo")

    if method == SBI_NPE:
        from jsbi.diagnostics.baselines import train_sbi_npe

        if estimator_options:
            raise ValueError(
                f"estimator options {sorted(estimator_options)} apply to jsbi's methods, "
                "not to sbi-npe (sbi's defaults)"
            )
        if fit_options.pop("recalibrate", False):
            raise ValueError(
                "recalibrate applies to jsbi's posteriors (a flow's temperature), not to sbi-npe"
            )
        unknown = sorted(set(fit_options) - set(_SBI_FIT) - {"show_progress_bar"})
        if unknown:
            raise ValueError(f"sbi-npe takes no fit option {unknown}")
        kwargs = {_SBI_FIT.get(k, k): v for k, v in fit_options.items()}
        start = time.perf_counter()
        if device is not None:
            kwargs["device"] = str(device)
        if embedding_net is not None:
            kwargs["embedding_net"] = embedding_net
        posterior, history = train_sbi_npe(theta, x, prior, seed=seed, **kwargs)
        seconds = time.perf_counter() - start
        return TrainedMethod(SBI_NPE, posterior, history, seconds, history["epochs_trained"])
    from jsbi.estimator import PosteriorEstimator

    objective = method.removeprefix("jsbi-")
    options = dict(estimator_options or {})
    options.setdefault("objective", objective)
    if device is not None:
        options["device"] = device
    if embedding_net is not None:
        options["embedding_net"] = embedding_net
    if options["objective"] != objective:
        raise ValueError(f"method {method!r} and objective={options['objective']!r} disagree")
    est = PosteriorEstimator(prior, seed=seed, **options)
    fit_options.setdefault("show_progress_bar", False)
    start = time.perf_counter()
    posterior = est.fit(theta, x, checkpoint=checkpoint, **fit_options)
    history = dict(posterior.history)
    # The epochs' own times and the work after them: a run resumed from its checkpoint
    # reports the whole run.
    if checkpoint:
        seconds = float(sum(history["epoch_time"])) + history.get("decide_time", 0.0)
    else:
        seconds = time.perf_counter() - start
    history.setdefault("wall_time", seconds)
    return TrainedMethod(
        method_label(method), posterior, history, seconds, history["epochs_trained"], est
    )


def run_report(
    task_name: str,
    num_simulations: int,
    objectives: Sequence[str] = ("npe", SBI_NPE),
    out: str | Path = "report",
    seed: int = 0,
    *,
    observations: Sequence[int] = (1, 2, 3),
    num_sbc: int = 1000,
    num_posterior_samples: int = 1000,
    num_c2st_samples: int = 10_000,
    c2st_classifier: str = "rf",
    max_epochs: int | None = None,
    estimator_kwargs: Mapping[str, Any] | None = None,
    n_jobs: int | None = 1,
    device: str | None = None,
    show_progress_bar: bool | None = False,
    fit_options: Mapping[str, Any] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    method_jobs: int | None = -1,
) -> Any:
    r"""Simulates a built-in task, trains every method on the same pairs, runs
    :func:`~jsbi.diagnostics.compare` and saves the report.

    Arguments:
        task_name: A built-in task.
        num_simulations: Training pairs.
        objectives: jsbi objectives (``"npe"``, ``"jeffreys"``, ...) and/or
            ``"sbi-npe"`` (sbi's NPE, :func:`~jsbi.diagnostics.baselines.train_sbi_npe`).
        out: The report's directory.
        seed: Seeds the simulations, the training and the diagnostics.
        observations, num_sbc, num_posterior_samples, num_c2st_samples, c2st_classifier:
            See :func:`~jsbi.diagnostics.compare`.
        max_epochs: Epoch cap of every method (``None``: ``fit_options``' or none).
        estimator_kwargs: Options of every jsbi estimator.
        n_jobs: Simulation workers.
        device: Where every method trains (see :func:`train_method`).
        show_progress_bar: Progress bars (``None``: only on a terminal).
        fit_options: Every method's :class:`~jsbi.training.TrainConfig` fields.
        method_options: Estimator options of single methods, by name in ``objectives``
            (``{"jeffreys": {"proxy": "ratio"}}``), over ``estimator_kwargs``; each
            checked before anything is simulated.
        method_jobs: Methods trained, then diagnosed, side by side, one process each
            (``-1``: as many as there are methods and cores; ``1`` or ``None``: one after
            the other; always one at a time on a GPU). Every method seeds its own
            training and diagnostics, so the report does not depend on it.

    Returns:
        The :class:`~jsbi.diagnostics.Report` (already saved to ``out``).

    Example:
        >>> run_report("two_moons", 10_000, ("npe", "jeffreys", "sbi-npe"), "report/")
        ... # doctest: +SKIP
    """
    from jsbi.diagnostics.report import compare

    if show_progress_bar is None:
        show_progress_bar = interactive()
    task = get_task(task_name)
    fit, options = _checked(
        task, objectives, fit_options, max_epochs, estimator_kwargs, method_options
    )
    devices = {device, *(options[m].get("device") for m in objectives if m != SBI_NPE)}
    jobs = _method_jobs(method_jobs, len(objectives), devices)
    theta, x = simulate(
        task, num_simulations, seed=seed, n_jobs=n_jobs, show_progress_bar=show_progress_bar
    )

    one = functools.partial(_train_one, task.prior, theta, x, seed, options, fit, device)
    trained_all = _train_all(objectives, jobs, show_progress_bar, one)
    posteriors = {t.name: t.posterior for t in trained_all}
    histories = {t.name: t.history for t in trained_all}
    report = compare(
        posteriors,
        task,
        observations=observations,
        num_sbc=num_sbc,
        num_posterior_samples=num_posterior_samples,
        num_c2st_samples=num_c2st_samples,
        c2st_classifier=c2st_classifier,
        histories=histories,
        seed=seed,
        show_progress_bar=show_progress_bar,
        n_jobs=method_jobs,
    )
    report.settings["num_simulations"] = int(theta.shape[0])
    if estimator_kwargs:
        report.settings["estimator_options"] = dict(estimator_kwargs)
    per_method = {k: dict(v) for k, v in (method_options or {}).items()}
    if per_method:
        report.settings["method_options"] = per_method
    # What each jsbi method returned, the flow, the proxy or their mixture
    # (posterior="auto" decides after training).
    returned = {name: h["posterior"] for name, h in histories.items() if "posterior" in h}
    if returned:
        report.settings["returned"] = returned
    report.save(out)
    return report


def _train_one(
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    seed: int,
    options: dict,
    fit: dict,
    device: str | None,
    method: str,
    bar: bool,
) -> TrainedMethod:
    # One of the report's methods, trained on the report's pairs.
    return train_method(
        method,
        prior,
        theta,
        x,
        seed=seed,
        estimator_options=None if method == SBI_NPE else options[method],
        fit_options={**fit, "show_progress_bar": bar},
        device=device,
    )


def _train_all(
    objectives: Sequence[str],
    jobs: int,
    show_progress_bar: bool,
    train_one: Any,
) -> list[TrainedMethod]:
    # Every method trained by train_one(method, bar): in turn, or side by side in `jobs`
    # processes, without bars (several processes' bars would overwrite each other).
    if jobs == 1:
        trained_all = []
        for method in objectives:
            if show_progress_bar:
                print(f"training {method_label(method)} ...", file=sys.stderr)
            trained_all.append(train_one(method, show_progress_bar))
        return trained_all
    if show_progress_bar:
        names = ", ".join(method_label(m) for m in objectives)
        print(f"training {names} side by side in {jobs} processes ...", file=sys.stderr)
    return list(side_by_side(train_one, [(m, False) for m in objectives], jobs))


def _method_jobs(method_jobs: int | None, num_methods: int, devices: set) -> int:
    # Processes that train the methods: never more than methods, nor cores; one where
    # any method trains on a GPU.
    jobs = processes(method_jobs, "method_jobs")
    on_cpu = all(d is None or str(d) == "cpu" for d in devices)
    return min(jobs, num_methods) if on_cpu else 1


def _checked(
    task: Any,
    objectives: Sequence[str],
    fit_options: Mapping[str, Any] | None,
    max_epochs: int | None,
    estimator_kwargs: Mapping[str, Any] | None,
    method_options: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    # Every method's training options and estimator options, each checked before anything
    # is simulated (a bad one fails here, naming it).
    from jsbi.estimator import PosteriorEstimator
    from jsbi.training import TrainConfig

    fit = dict(fit_options or {})
    if max_epochs is not None:
        fit["max_epochs"] = max_epochs
    fit = TrainConfig.from_options(fit).asdict()
    per_method = {k: dict(v) for k, v in (method_options or {}).items()}
    unknown = sorted(set(per_method) - set(objectives))
    if unknown or SBI_NPE in per_method:
        raise ValueError(
            f"method_options must name jsbi methods among objectives {tuple(objectives)}, "
            f"got {sorted(per_method)}"
        )
    options = {m: {**(estimator_kwargs or {}), **per_method.get(m, {})} for m in objectives}
    for method in objectives:
        if method != SBI_NPE:
            PosteriorEstimator(
                task.prior, objective=method.removeprefix("jsbi-"), **options[method]
            )
    return fit, options
