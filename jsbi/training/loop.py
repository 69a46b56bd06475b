r"""The training loop: one loop for every method.

:func:`train` owns what every method shares: checking the data, the seeded
train/validation split, shuffling, batching, the epoch loop, the validation forward NLL of
the flow (always the early-stopping metric), early stopping with patience, restoring the
best state at the end, the optimisers, fault recovery, checkpoints, Ctrl-C handling, the
progress bar and the ``history``. What changes between methods lives in the
:class:`~jsbi.methods.TrainingStep` it drives.

Steps may draw random numbers: the loop runs under ``torch.manual_seed(seed)`` in a forked
RNG, so the same seed gives the same run without touching the caller's random state.

Example:
    >>> import torch
    >>> from jsbi.flows import build_conditional_flow
    >>> from jsbi.methods import NPEStep
    >>> theta = torch.randn(256, 2); x = theta + 0.1 * torch.randn(256, 2)
    >>> flow = build_conditional_flow(theta, x, None, num_transforms=1)
    >>> history = train(NPEStep(flow), theta, x, max_epochs=2, show_progress_bar=False)
    >>> len(history["validation_loss"]), history["stopped_by"]
    (2, 'the epoch cap')
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from jsbi.methods.base import StepFault, TrainingStep
from jsbi.progress import interactive, progress_bar
from jsbi.seeding import seeded
from jsbi.training.checkpoint import Checkpoint
from jsbi.training.config import TrainConfig
from jsbi.training.data import check_training_data, split_indices, validation_nll
from jsbi.training.faults import FaultRecovery
from jsbi.training.optimizers import Optimizers
from jsbi.training.stopping import EarlyStopping

__all__ = ["train"]

Callback = Callable[[int, dict[str, float]], "bool | None"]


def train(
    step: TrainingStep,
    theta: Tensor,
    x: Tensor,
    config: TrainConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress_bar: bool | None = None,
    callback: Callback | None = None,
    num_dropped: int = 0,
    checkpoint: str | os.PathLike | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    r"""Trains ``step`` on ``(theta, x)`` with early stopping on the flow's validation NLL.

    Arguments:
        step: The method's step (e.g. :class:`~jsbi.methods.NPEStep`).
        theta: Parameters, shape ``(n, d)``.
        x: Data, shape ``(n, m)``.
        config: The :class:`~jsbi.training.TrainConfig` (default: its defaults).
        seed: Seeds the split, the shuffling and any sampling inside ``step``.
        device: Where to train.
        show_progress_bar: A tqdm bar with the losses (``None``: in a terminal or a
            notebook, :func:`jsbi.progress.interactive`).
        callback: Called as ``callback(epoch, logs)`` after each epoch; returning ``True``
            stops training.
        num_dropped: Rows already dropped upstream, recorded in the history.
        checkpoint: A file where the run is saved after every epoch; if it exists when
            training starts, training resumes from it, and the resumed run equals an
            uninterrupted one.
        overrides: :class:`~jsbi.training.TrainConfig` fields that replace ``config``'s.

    Returns:
        The history: per-epoch lists ``epoch``, ``train_loss``, ``validation_loss``,
        ``epoch_time`` and ``train_<key>`` / ``validation_<key>`` for every scalar the step
        logs, plus ``best_epoch``, ``best_validation_loss``, ``epochs_trained``,
        ``converged``, ``stopped_by``, ``interrupted``, ``num_train``, ``num_validation``,
        ``num_dropped``. JSON-serialisable. On return, ``step`` holds its best state.
    """
    config = (config or TrainConfig()).replace(**overrides)
    theta, x, dropped = check_training_data(theta, x, getattr(step.flow, "dim_theta", None))
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    val_idx, tr_idx = split_indices(len(theta), config.validation_fraction, generator)
    theta, x = theta.to(device), x.to(device)
    if show_progress_bar is None:
        show_progress_bar = interactive()
    # A total when there is a real cap.
    total = config.max_epochs if config.capped else None
    bar = progress_bar(desc="Training", unit="epoch", total=total, disable=not show_progress_bar)
    stopping = EarlyStopping(config.stop_after_epochs)
    with seeded(seed, [device]):
        step.to(device)
        info = {"num_train": len(tr_idx), "num_validation": len(val_idx), "device": device}
        optimizers = Optimizers(step.parameter_groups(config.learning_rate), config.clip_max_norm)
        step.start(optimizers, {**info, "seed": int(seed)})
        faults = FaultRecovery(
            step.state_dict, step.load_state_dict, step.shrink, step.max_restores
        )
        faults.start()
        saver = Checkpoint(checkpoint, step, theta, x, seed, config)
        history, epoch = saver.resume(step, stopping, generator, bar)
        pairs = (theta[tr_idx], x[tr_idx]), (theta[val_idx], x[val_idx])
        loop = _EpochLoop(step, *pairs, generator, config.batch_size, stopping, saver, bar, faults)
        stopped, interrupted = loop.run(history, epoch, config.max_epochs, callback)
        if stopping.best_state is not None:
            step.load_state_dict(stopping.best_state)
        step.eval()
    _check_result(step, history, stopping, x)
    history.update(step.summary())
    if "train_phase" in history and stopping.best_epoch > 0:
        history["best_phase"] = int(history["train_phase"][stopping.best_epoch - 1])
    history.update(
        best_epoch=stopping.best_epoch,
        best_validation_loss=stopping.best_loss if math.isfinite(stopping.best_loss) else None,
        epochs_trained=len(history["epoch"]),
        converged=stopping.converged,
        stopped_by=stopped,
        interrupted=interrupted,
        num_train=len(tr_idx),
        num_validation=len(val_idx),
        num_dropped=num_dropped + dropped,
    )
    return history


class _EpochLoop:
    r"""The epochs of :func:`train`: each one trained and validated, recorded in the
    history, early stopping and the checkpoint, then the reasons to stop (a non-finite
    loss, the patience spent in the last phase, the callback; repeated faults and an
    interrupt end it too, with the best state kept)."""

    def __init__(
        self,
        step: TrainingStep,
        tr: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        generator: torch.Generator,
        batch_size: int,
        stopping: EarlyStopping,
        saver: Checkpoint,
        bar: Any,
        faults: FaultRecovery,
    ) -> None:
        self.step, self.tr, self.val, self.generator = step, tr, val, generator
        self.batch_size, self.stopping, self.saver, self.bar = batch_size, stopping, saver, bar
        self.faults = faults

    def run(
        self,
        history: dict[str, Any],
        epoch: int,
        max_epochs: int,
        callback: Callback | None,
    ) -> tuple[str, bool]:
        r"""Trains from ``epoch`` on; returns what stopped it and whether an interrupt."""
        try:
            while epoch < max_epochs:
                epoch += 1
                reason, logs = self.epoch(history, epoch)
                if reason == "next phase":
                    continue
                if reason is None and callback is not None and callback(epoch, logs):
                    reason = "the callback"
                if reason is not None:
                    return reason, False
        except KeyboardInterrupt:
            _trim_history(history)
            if self.stopping.best_state is None:
                # Untrained (or never selectable) weights are not a posterior: say so
                # rather than hand them back.
                self.bar.close()
                where = self.saver.path
                raise KeyboardInterrupt(
                    f"training interrupted at epoch {epoch}, before any epoch gave a "
                    "selectable state: there is no trained posterior to return"
                    + (f" (the run so far is in {os.fspath(where)!r})" if where else "")
                ) from None
            warnings.warn(
                f"training interrupted at epoch {epoch}; returning the best state so far "
                f"(epoch {self.stopping.best_epoch}, validation loss "
                f"{self.stopping.best_loss:.4g})",
                stacklevel=3,
            )
            return "an interrupt", True
        finally:
            self.bar.close()
        return "the epoch cap", False

    def epoch(self, history: dict[str, Any], epoch: int) -> tuple[str | None, dict[str, float]]:
        r"""One epoch; returns why training stops after it (``"next phase"``: it goes on
        in the step's next phase; ``None``: it goes on) and the epoch's logs."""
        stopping, step = self.stopping, self.step
        start = time.perf_counter()
        step.on_epoch_start(epoch)
        means, fault = self._train_epoch(epoch)
        if fault is not None:
            # Repeated faults: the half-finished epoch is not recorded.
            _trim_history(history)
            warnings.warn(
                f"training stopped at epoch {epoch}: {fault}: {self.faults.max_restores} "
                f"restores already; returning the best state (epoch {stopping.best_epoch})",
                stacklevel=4,
            )
            return "repeated faults", {}
        logs = self._validate_epoch(means)
        step.on_epoch_end(epoch, logs)
        if self.faults.max_restores:
            self.faults.epoch_finished(logs)
        _append_epoch(history, epoch, time.perf_counter() - start, logs)
        stopping.record(step, epoch, logs["validation_loss"])
        self.bar.update(1)
        self.bar.set_postfix(
            train=f"{logs.get('train_loss', math.nan):.4g}",
            val=f"{logs['validation_loss']:.4g}",
            best=f"{stopping.best_loss:.4g}",
        )
        self.saver.save(epoch, step, stopping, history, self.generator)
        if not math.isfinite(logs.get("train_loss", 0.0)):
            if stopping.best_state is not None:
                warnings.warn(
                    f"non-finite training loss at epoch {epoch}; stopping and "
                    f"restoring the best state (epoch {stopping.best_epoch})",
                    stacklevel=4,
                )
            return "a non-finite training loss", logs
        if stopping.exhausted(epoch):
            if stopping.next_phase(step, epoch):
                self.faults.start()
                return "next phase", logs
            reason = f"early stopping ({stopping.patience} epochs without a better validation NLL)"
            return reason, logs
        return None, logs

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], str | None]:
        # One pass over the training pairs in a seeded order: each of the step's logs
        # averaged over the pairs of the batches that logged it (a term on some batches
        # only, e.g. proxy_every's fit, is its mean where it was computed). A fault beyond
        # the restores allowed ends the pass: its reason comes back.
        step, (theta, x), batch_size = self.step, self.tr, self.batch_size
        step.train()
        n = len(theta)
        sums: dict[str, float] = {}
        seen: dict[str, int] = {}
        order = torch.randperm(n, generator=self.generator).to(theta.device)
        # A short last batch would give one noisy step per epoch; like sbi, drop it (its
        # pairs are in other batches in other epochs).
        n_seen = n - n % batch_size if n >= batch_size else n
        for i in range(0, n_seen, batch_size):
            idx = order[i : i + batch_size]
            logs = self._batch(theta[idx], x[idx], epoch)
            if logs is None:
                return {}, self._fault
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                seen[k] = seen.get(k, 0) + len(idx)
        return {k: v / seen[k] for k, v in sums.items()}, None

    def _batch(self, theta: Tensor, x: Tensor, epoch: int) -> dict[str, float] | None:
        # One step; a fault restores the last good state (None: no restores left).
        try:
            logs = self.step.step(theta, x)
        except StepFault as fault:
            self._fault = str(fault)
            return self.faults.restore(self._fault, epoch)
        except ValueError as err:
            # Diverged weights make torch's argument checks fail on NaN inside the flow: a
            # non-finite loss, handled by the loop, not a crash.
            if not _diverged(err, self.step.flow):
                raise
            return {"loss": math.nan}
        self.faults.last_logs = logs
        return logs

    def _validate_epoch(self, means: dict[str, float]) -> dict[str, float]:
        # The epoch's logs: the training means, the flow's validation NLL and the step's
        # own validation scalars (NaN and nothing when the weights diverged).
        step, (theta, x) = self.step, self.val
        step.eval()
        val_loss, extra, diverged = math.nan, {}, not _finite_weights(step.flow)
        if not diverged:
            try:
                val_loss = validation_nll(step.flow, theta, x)
                with torch.no_grad():
                    extra = step.validate(theta, x)
            except ValueError as err:
                if not _diverged(err, step.flow):
                    raise
                val_loss, extra, diverged = math.nan, {}, True
        if diverged:  # a NaN epoch: the loop stops on it, the best state kept
            means["loss"] = math.nan
        logs = {f"train_{k}": v for k, v in means.items()}
        logs["validation_loss"] = val_loss
        logs.update({f"validation_{k}": float(v) for k, v in extra.items()})
        return logs


def _check_result(
    step: TrainingStep, history: dict[str, Any], stopping: EarlyStopping, x: Tensor
) -> None:
    # No epoch had a finite validation loss, or the weights are not finite: the posterior
    # would give NaN samples. Never hand that back.
    finite_epoch = any(math.isfinite(v) for v in history["validation_loss"])
    if _finite_weights(step.flow) and (
        stopping.best_state is not None or not history["epoch"] or finite_epoch
    ):
        return
    raise FloatingPointError(
        f"training diverged: no epoch of {len(history['epoch'])} gave a finite posterior "
        "(validation loss and weights), so there is none to return. Likely causes: a "
        "learning rate too large for the data, or x values too large for float32 (largest "
        f"|x| in the training data: {float(x.abs().max()):.3g}); try a smaller "
        "learning_rate or rescale x"
    )


def _append_epoch(
    history: dict[str, Any], epoch: int, seconds: float, logs: dict[str, float]
) -> None:
    # Every series gets one value per epoch: NaN where a key was not logged that epoch.
    history["epoch"].append(epoch)
    history["epoch_time"].append(seconds)
    for k, v in logs.items():
        history.setdefault(k, [math.nan] * (epoch - 1)).append(v)
    for v in history.values():
        if len(v) < epoch:
            v.append(math.nan)


def _trim_history(history: dict[str, Any]) -> None:
    # A half-finished epoch leaves the lists ragged: keep the finished epochs.
    done = len(history["epoch"])
    for v in history.values():
        del v[done:]


def _finite_weights(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _diverged(err: ValueError, flow: nn.Module) -> bool:
    # torch's distribution argument check on NaN values, or weights no longer finite.
    return "found invalid values" in str(err) or not _finite_weights(flow)
