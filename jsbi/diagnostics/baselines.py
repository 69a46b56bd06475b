r"""The external baseline: sbi's NPE trained on the same simulations.

:func:`train_sbi_npe` trains sbi's ``NPE`` with a zuko neural spline flow
(``posterior_nn(model="zuko_nsf")``) on exactly the pairs given, seeded, and keeps sbi's
TensorBoard logging out of the working tree (a no-op tracker replaces sbi's default
writer to ``./sbi-logs``).

References:
    | Automatic Posterior Transformation for Likelihood-free Inference
    | (Greenberg et al., 2019)
    | https://arxiv.org/abs/1905.07488

    | Neural Spline Flows (Durkan et al., 2019)
    | https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

__all__ = ["train_sbi_npe"]

import time
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from jsbi.seeding import seeded


class NullTracker:
    r"""An sbi ``Tracker`` that records nothing and writes no files."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


def train_sbi_npe(
    theta: Tensor,
    x: Tensor,
    prior: Distribution,
    *,
    seed: int = 0,
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    training_batch_size: int = 200,
    learning_rate: float = 5e-4,
    validation_fraction: float = 0.1,
    stop_after_epochs: int = 20,
    max_num_epochs: int = 2**31 - 1,
    clip_max_norm: float | None = 5.0,
    show_progress_bar: bool = False,
    device: str = "cpu",
    embedding_net: Any = None,
) -> tuple[Any, dict[str, Any]]:
    r"""Trains sbi's NPE (zuko NSF) on the given simulations.

    Arguments:
        theta: Parameters, shape ``(N, d)``.
        x: Simulations, shape ``(N, m)``.
        prior: The prior (a torch distribution).
        seed: Seeds initialisation, the train/validation split and batching.
        hidden_features, num_transforms, num_bins: The flow (sbi's defaults).
        training_batch_size, learning_rate, validation_fraction: sbi's training options
            (sbi's defaults).
        stop_after_epochs, max_num_epochs: sbi's early stopping patience and epoch cap
            (sbi's defaults).
        clip_max_norm: sbi's gradient-norm clip (sbi's default).
        show_progress_bar: Whether sbi prints its training progress.
        device: sbi's training device (sbi wants the prior there too: build it there).
        embedding_net: A module for ``x`` (after sbi's z-scoring), trained jointly
            (``None``: sbi's identity).

    Returns:
        sbi's ``DirectPosterior`` and a history dict named as jsbi's trainer names it:
        ``epoch``, ``train_loss`` and ``validation_loss`` (per epoch, mean negative log
        likelihoods), ``epoch_time`` (seconds since the start, per epoch),
        ``epochs_trained``, ``best_validation_loss``, ``wall_time`` (seconds) and
        ``num_simulations``.

    Example:
        >>> posterior, history = train_sbi_npe(theta, x, task.prior, max_num_epochs=5)
        >>> posterior.sample((1000,), x=task.observation(1)).shape
        torch.Size([1000, 2])
        >>> len(history["validation_loss"]) == history["epochs_trained"]
        True
    """
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    theta = torch.as_tensor(theta, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32)
    if theta.ndim != 2 or x.ndim != 2 or theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"theta and x must have shapes (N, d) and (N, m) with the same N, got "
            f"{tuple(theta.shape)} and {tuple(x.shape)}"
        )
    with seeded(seed, [device]):
        builder = posterior_nn(
            model="zuko_nsf",
            hidden_features=hidden_features,
            num_transforms=num_transforms,
            num_bins=num_bins,
            **({} if embedding_net is None else {"embedding_net": embedding_net}),
        )
        inference = NPE(
            prior=prior,
            density_estimator=builder,
            tracker=NullTracker(),
            show_progress_bars=show_progress_bar,
            device=device,
        )
        inference.append_simulations(theta, x)
        if not show_progress_bar:
            _quiet_convergence(inference)
        start = time.perf_counter()
        estimator = inference.train(
            training_batch_size=training_batch_size,
            learning_rate=learning_rate,
            validation_fraction=validation_fraction,
            stop_after_epochs=stop_after_epochs,
            max_num_epochs=max_num_epochs,
            clip_max_norm=clip_max_norm,
            show_train_summary=False,
        )
        wall = time.perf_counter() - start
        posterior = inference.build_posterior(estimator)
    return posterior, _history(inference.summary, wall, len(theta), max_num_epochs)


def _quiet_convergence(inference: Any) -> None:
    # sbi prints "Neural network successfully converged after N epochs." to stdout, with
    # a carriage return and no newline, even with its progress bars off: it overwrote the
    # report's and the benchmark's own lines. The history says how training stopped
    # (``stopped_by``), so that line is dropped here, for this trainer alone (no global
    # redirect of stdout, which would swallow other threads' output); sbi's warning when
    # the epoch cap ends training is kept.
    report = getattr(inference, "_report_convergence_at_end", None)
    if report is None:  # (another sbi: nothing to quieten)
        return

    def quiet(epoch: int, max_num_epochs: int) -> None:
        if epoch > max_num_epochs:
            report(epoch, max_num_epochs)

    inference._report_convergence_at_end = quiet


def _history(summary: dict, wall: float, n: int, max_num_epochs: int) -> dict[str, Any]:
    # sbi's training summary under the names jsbi's loop logs, so reports treat both alike.
    durations = [float(v) for v in summary["epoch_durations_sec"]]
    history = {
        "epoch": list(range(1, len(durations) + 1)),
        "train_loss": [float(v) for v in summary["training_loss"]],
        "validation_loss": [float(v) for v in summary["validation_loss"]],
        "epoch_time": [float(t) for t in torch.tensor(durations).cumsum(0)],
        "epochs_trained": int(summary["epochs_trained"][-1]),
        "best_validation_loss": float(summary["best_validation_loss"][-1]),
        "wall_time": wall,
        "num_simulations": int(n),
    }
    # As jsbi's histories say it: did sbi's early stopping end training, or the cap?
    capped = history["epochs_trained"] >= int(max_num_epochs)
    history["converged"] = not capped
    history["stopped_by"] = "the epoch cap" if capped else "early stopping"
    return history
