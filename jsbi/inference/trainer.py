r"""The training loop: one loop for every objective.

:func:`train` owns what every objective shares: checking the data, the seeded
train/validation split, shuffling, batching, the epoch loop, the validation forward NLL of
the flow (always the early-stopping metric), early stopping with patience, restoring the
best state at the end, Ctrl-C handling, the progress bar and the ``history``.

What changes between objectives lives in a :class:`TrainingStep` object, the extension
point. The loop calls, in order::

    step.to(device); step.on_train_start(loop_info)        # build optimisers here
    for epoch in 1, 2, ...:
        step.on_epoch_start(epoch)                          # tau schedules, warm-up switches
        step.train()                                        # modules in training mode
        for each shuffled batch (theta, x):
            logs = step.step(theta, x)                      # one update; dict of floats
        step.eval()
        validation NLL of step.flow (computed by the loop, no grad)
        extra = step.validate(theta_val, x_val)             # optional extra scalars
        step.on_epoch_end(epoch, epoch_logs)                # dual updates, ...
        if NLL improved: best = deepcopy(step.state_dict())
    step.load_state_dict(best)

:class:`NPEStep` is the forward KL step (``F = mean(-log q)``, one Adam optimiser, gradient
clipping). A primal-dual Jeffreys/SRFE step subclasses :class:`TrainingStep`, owns two
optimisers (flow and proxy) and its dual variables, returns ``{"loss": ..., "F": ...,
"C": ..., "lambda": ...}`` from :meth:`TrainingStep.step` (each key is averaged over the
epoch and logged as ``history["train_<key>"]``), and puts everything that must come back
with the best epoch (proxy weights, optimisers, duals) in ``state_dict``. Steps may draw
random numbers: the loop runs under ``torch.manual_seed(seed)`` in a forked RNG, so the
same seed gives the same run without touching the caller's random state.

Example:
    >>> import torch
    >>> from jsbi.inference.flows import build_conditional_flow
    >>> theta = torch.randn(256, 2); x = theta + 0.1 * torch.randn(256, 2)
    >>> flow = build_conditional_flow(theta, x, None, num_transforms=1)
    >>> history = train(NPEStep(flow), theta, x, max_epochs=2, show_progress_bar=False)
    >>> len(history["validation_loss"])
    2
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["NPEStep", "TrainingStep", "check_training_data", "train", "validation_nll"]


class TrainingStep:
    r"""One optimisation step per batch: the objective-specific part of training.

    Subclasses set ``self.flow`` (the :class:`~jsbi.inference.flows.ConditionalFlow`,
    whose validation NLL drives early stopping), implement :meth:`step`, and override the
    hooks they need. ``modules`` lists every ``nn.Module`` the step trains (moved to the
    device, switched between train/eval, saved in :meth:`state_dict`).
    """

    flow: nn.Module

    def modules(self) -> dict[str, nn.Module]:
        r"""The trained modules by name (default: ``{"flow": self.flow}``)."""
        return {"flow": self.flow}

    def to(self, device: torch.device) -> TrainingStep:
        for m in self.modules().values():
            m.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def eval(self) -> None:
        self.train(False)

    def on_train_start(self, info: dict[str, Any]) -> None:
        r"""Called once before the first epoch (``info``: sizes, device, seed)."""

    def on_epoch_start(self, epoch: int) -> None:
        r"""Called before each epoch (1-based)."""

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        r"""Makes one update on a training batch and returns scalars to log."""
        raise NotImplementedError

    def validate(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        r"""Returns extra validation scalars (no grad); the flow NLL is computed by the loop."""
        return {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        r"""Called after validation with the epoch's averaged logs."""

    def state_dict(self) -> dict[str, Any]:
        r"""Everything restored with the best epoch (default: the modules' weights)."""
        return {name: m.state_dict() for name, m in self.modules().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])


class NPEStep(TrainingStep):
    r"""Neural posterior estimation: minimises the forward KL ``F = mean(-log q(theta | x))``.

    Arguments:
        flow: The conditional flow.
        learning_rate: Adam's learning rate (sbi's default 5e-4).
        clip_max_norm: The gradient norm clip (``None``: no clipping).

    References:
        | Automatic Posterior Transformation for Likelihood-Free Inference (Greenberg et
          al., 2019), arXiv:1905.07488
    """

    def __init__(
        self,
        flow: nn.Module,
        learning_rate: float = 5e-4,
        clip_max_norm: float | None = 5.0,
    ) -> None:
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.flow = flow
        self.learning_rate = float(learning_rate)
        self.clip_max_norm = clip_max_norm
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.learning_rate)

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        loss = -self.flow.log_prob(theta, x).mean()
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_max_norm is not None:
            nn.utils.clip_grad_norm_(self.flow.parameters(), self.clip_max_norm)
        self.optimizer.step()
        return {"loss": loss.item()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


def check_training_data(
    theta: Tensor,
    x: Tensor,
    dim_theta: int | None = None,
    dim_x: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    r"""Validates training pairs, converts them to float32 and drops non-finite rows.

    Integer (or boolean, or float64) inputs are converted to float32 silently for floats
    and with a warning for integers, since counts are legitimate data but integer
    parameters usually indicate a mistake. Rows where ``theta`` or ``x`` has a NaN/inf are
    dropped with a warning giving their number.

    Arguments:
        theta: Parameters, shape ``(n, d)``.
        x: Data, shape ``(n, m)``.
        dim_theta: The expected ``d`` (the prior's event size), if known.
        dim_x: The expected ``m``, if known.

    Returns:
        The finite ``theta`` and ``x`` (float32) and the number of dropped rows.
    """
    theta = _as_tensor(theta, "theta")
    x = _as_tensor(x, "x")
    if theta.ndim == 1 and dim_theta == 1:
        theta = theta[:, None]
    if x.ndim == 1 and dim_x in (None, 1) and len(x) == len(theta):
        x = x[:, None]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, d), got {tuple(theta.shape)}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, m), got {tuple(x.shape)}")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"theta and x must have the same number of rows, got theta {tuple(theta.shape)} "
            f"and x {tuple(x.shape)}"
        )
    if dim_theta is not None and theta.shape[1] != dim_theta:
        raise ValueError(
            f"theta must have shape (n, {dim_theta}) to match the prior's event shape, "
            f"got {tuple(theta.shape)}"
        )
    if dim_x is not None and x.shape[1] != dim_x:
        raise ValueError(f"x must have shape (n, {dim_x}), got {tuple(x.shape)}")
    finite = torch.isfinite(theta).all(dim=1) & torch.isfinite(x).all(dim=1)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(
            f"dropped {dropped} of {len(finite)} training pairs with NaN or inf in theta or x",
            stacklevel=3,
        )
        theta, x = theta[finite], x[finite]
    if len(theta) == 0:
        raise ValueError("no finite training pairs (theta, x) left")
    return theta, x, dropped


def _as_tensor(value: Any, name: str) -> Tensor:
    t = torch.as_tensor(value)
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if not t.is_floating_point():
        warnings.warn(
            f"{name} has dtype {t.dtype}; converting to float32", UserWarning, stacklevel=4
        )
    return t.to(torch.float32)


@torch.no_grad()
def validation_nll(flow: nn.Module, theta: Tensor, x: Tensor, batch_size: int = 4096) -> float:
    r"""Returns the mean ``-log q(theta | x)`` over pairs, in batches."""
    total = 0.0
    for i in range(0, len(theta), batch_size):
        total += -flow.log_prob(theta[i : i + batch_size], x[i : i + batch_size]).sum().item()
    return total / max(len(theta), 1)


def train(
    step: TrainingStep,
    theta: Tensor,
    x: Tensor,
    *,
    batch_size: int = 200,
    validation_fraction: float = 0.1,
    stop_after_epochs: int = 20,
    max_epochs: int = 2**31 - 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress_bar: bool | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    num_dropped: int = 0,
) -> dict[str, Any]:
    r"""Trains ``step`` on ``(theta, x)`` with early stopping on the flow's validation NLL.

    Arguments:
        step: The objective (e.g. :class:`NPEStep`).
        theta: Parameters, shape ``(n, d)``, checked by :func:`check_training_data`.
        x: Data, shape ``(n, m)``.
        batch_size: Training batch size.
        validation_fraction: Fraction of pairs held out for early stopping.
        stop_after_epochs: Patience: stop after this many epochs without improvement.
        max_epochs: Upper bound on epochs.
        seed: Seeds the split, the shuffling and any sampling inside ``step``.
        device: Where to train.
        show_progress_bar: A tqdm bar with the losses (``None``: only on a TTY).
        callback: Called as ``callback(epoch, logs)`` after each epoch; returning ``True``
            stops training.
        num_dropped: Rows already dropped upstream, recorded in the history.

    Returns:
        The history: per-epoch lists ``epoch``, ``train_loss``, ``validation_loss``,
        ``epoch_time`` and ``train_<key>`` / ``validation_<key>`` for every extra scalar the
        step logs, plus ``best_epoch``, ``best_validation_loss``, ``epochs_trained``,
        ``converged``, ``interrupted``, ``num_train``, ``num_validation``,
        ``num_dropped``. JSON-serialisable. On return, ``step`` holds its best state.
    """
    theta, x, dropped = check_training_data(theta, x, getattr(step.flow, "dim_theta", None))
    num_dropped += dropped
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(stop_after_epochs) < 1 or int(max_epochs) < 1:
        raise ValueError(
            f"stop_after_epochs and max_epochs must be >= 1, got {stop_after_epochs}, {max_epochs}"
        )
    n = len(theta)
    n_val = int(validation_fraction * n)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"too few training pairs ({n}) for validation_fraction={validation_fraction}: "
            "need at least one validation and one training pair"
        )
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    theta, x = theta.to(device), x.to(device)
    theta_val, x_val = theta[perm[:n_val]], x[perm[:n_val]]
    theta_tr, x_tr = theta[perm[n_val:]], x[perm[n_val:]]
    n_tr = len(theta_tr)

    history: dict[str, Any] = {
        "epoch": [],
        "train_loss": [],
        "validation_loss": [],
        "epoch_time": [],
    }
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty()
    bar = tqdm(desc="Training", unit="epoch", disable=not show_progress_bar, leave=False)

    best_loss, best_epoch, best_state = math.inf, 0, None
    interrupted = converged = False
    epoch = 0
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(int(seed))
        step.to(device)
        step.on_train_start(
            {"num_train": n_tr, "num_validation": n_val, "device": device, "seed": int(seed)}
        )
        try:
            while epoch < max_epochs:
                epoch += 1
                start = time.perf_counter()
                step.on_epoch_start(epoch)
                step.train()
                sums: dict[str, float] = {}
                order = torch.randperm(n_tr, generator=generator).to(device)
                for i in range(0, n_tr, batch_size):
                    idx = order[i : i + batch_size]
                    logs = step.step(theta_tr[idx], x_tr[idx])
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                step.eval()
                val_loss = validation_nll(step.flow, theta_val, x_val)
                with torch.no_grad():
                    extra = step.validate(theta_val, x_val)
                epoch_logs = {f"train_{k}": v / n_tr for k, v in sums.items()}
                epoch_logs["validation_loss"] = val_loss
                epoch_logs.update({f"validation_{k}": float(v) for k, v in extra.items()})
                step.on_epoch_end(epoch, epoch_logs)

                history["epoch"].append(epoch)
                history["epoch_time"].append(time.perf_counter() - start)
                for k, v in epoch_logs.items():
                    history.setdefault(k, [math.nan] * (epoch - 1)).append(v)
                for v in history.values():
                    if len(v) < epoch:
                        v.append(math.nan)

                if math.isfinite(val_loss) and val_loss < best_loss:
                    best_loss, best_epoch = val_loss, epoch
                    best_state = copy.deepcopy(step.state_dict())
                bar.update(1)
                bar.set_postfix(
                    train=f"{epoch_logs.get('train_loss', math.nan):.4g}",
                    val=f"{val_loss:.4g}",
                    best=f"{best_loss:.4g}",
                )
                if not math.isfinite(epoch_logs.get("train_loss", 0.0)):
                    warnings.warn(
                        f"non-finite training loss at epoch {epoch}; stopping and restoring "
                        f"the best state (epoch {best_epoch})",
                        stacklevel=2,
                    )
                    break
                if epoch - best_epoch >= stop_after_epochs:
                    converged = True
                    break
                if callback is not None and callback(epoch, epoch_logs):
                    break
        except KeyboardInterrupt:
            interrupted = True
            # A half-finished epoch leaves the lists ragged: trim to the finished epochs.
            done = len(history["epoch"])
            for v in history.values():
                del v[done:]
            warnings.warn(
                f"training interrupted at epoch {epoch}; returning the best state so far "
                f"(epoch {best_epoch}, validation loss {best_loss:.4g})"
                if best_state is not None
                else f"training interrupted at epoch {epoch} before any epoch finished; "
                "returning the current (untrained) weights",
                stacklevel=2,
            )
        finally:
            bar.close()
        if best_state is not None:
            step.load_state_dict(best_state)
        step.eval()

    history.update(
        best_epoch=best_epoch,
        best_validation_loss=best_loss if math.isfinite(best_loss) else None,
        epochs_trained=len(history["epoch"]),
        converged=converged,
        interrupted=interrupted,
        num_train=n_tr,
        num_validation=n_val,
        num_dropped=num_dropped,
    )
    return history
