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
        if NLL improved: best = copy_state(step.state_dict())
    step.load_state_dict(best)

:class:`NPEStep` is the forward KL step (``F = mean(-log q)``, one Adam optimiser, gradient
clipping). :class:`AdaptiveStep` is the primal-dual Jeffreys/SRFE/reverse step of
``METHOD.md`` section 4: it owns two optimisers (flow and proxy) and the dual variable,
returns ``{"loss", "F", "C", "R", "lambda", "u", "ess", "tau", ...}`` from
:meth:`TrainingStep.step` (each key is averaged over the epoch and logged as
``history["train_<key>"]``), keeps warm-up epochs out of the best-state selection
(:meth:`TrainingStep.selectable`), and puts everything that must come back with the best
epoch (proxy weights, optimisers, dual) in ``state_dict``. Steps may draw
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

import dataclasses
import hashlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from jsbi.inference.config import AdaptiveConfig
from jsbi.inference.dual import DualVariable, FaultRecovery
from jsbi.inference.objectives import forward_kl, primal_losses
from jsbi.inference.optimizers import PrimalOptimizers
from jsbi.inference.reverse import ReverseEstimator
from jsbi.inference.schedules import make_schedule, measure_proxy, own_fit, own_fit_name
from jsbi.inference.state import copy_state
from jsbi.seeding import seeded

__all__ = [
    "AdaptiveStep",
    "DualVariable",
    "EarlyStopping",
    "FaultRecovery",
    "NPEStep",
    "TrainingStep",
    "check_training_data",
    "split_indices",
    "train",
    "validation_nll",
]


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

    def selectable(self, epoch: int) -> bool:
        r"""Whether ``epoch`` may be kept as the best state (``False`` during warm-up)."""
        return True

    def on_converged(self, best_state: dict[str, Any] | None) -> bool | int:
        r"""Called when early stopping ends a phase, with the best state so far.

        Return ``True`` to go on with a new phase (the patience restarts; the best state
        is still kept over all phases), an integer to go on with that patience, ``False``
        to stop (default).
        """
        return False

    def summary(self) -> dict[str, Any]:
        r"""Scalars about the whole run, added to the history at the end (default: none)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        r"""The settings that make this step's run this run, for the checkpoint (default:
        its scalar attributes, and a dataclass config by its fields; an object in one, such
        as a tau schedule, by its class and settings, never by its address)."""
        config: dict[str, Any] = {}
        for k, v in sorted(vars(self).items()):
            if isinstance(v, _SCALAR):
                config[k] = v
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                config[k] = {f.name: _setting(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return config

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
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
        if clip_max_norm is not None and not (math.isfinite(clip_max_norm) and clip_max_norm > 0):
            raise ValueError(f"clip_max_norm must be finite and > 0 or None, got {clip_max_norm}")
        self.flow = flow
        self.learning_rate = float(learning_rate)
        self.clip_max_norm = clip_max_norm
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.learning_rate)

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        loss = forward_kl(self.flow.log_prob(theta, x))
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


class AdaptiveStep(TrainingStep):
    r"""The symmetric step for ``jeffreys``, ``srfe``, ``reverse`` and ``distill``
    (METHOD.md sections 4 and 4b).

    The flow :math:`q_\phi` and the energy-based proxy :math:`r_\psi` solve

    .. math:: \min_{\phi, \psi, u \ge 0} F(\phi) + R(\phi, \psi) + \tfrac{\alpha}{2} u^2
        \quad \text{s.t.} \quad C(\psi) - \bar F \le \epsilon + u

    with :math:`R` the reverse KL (``jeffreys``, ``reverse``), :math:`S_\tau` (``srfe``) or
    the forward KL from the proxy by self-normalised importance sampling (``distill``).
    The method is in three places, each one concept: what each model descends is
    :func:`~jsbi.inference.objectives.primal_losses`; the reverse term's estimate from the
    flow's samples is :class:`~jsbi.inference.reverse.ReverseEstimator`; when the reverse
    term is on, and how strongly, is the schedule (:mod:`jsbi.inference.schedules`):
    ``"joint"`` (warm-up, then the primal-dual objective) or ``"npe-first"`` (``npe`` up
    to its early stop, then the gated reverse term from its best state; the loop keeps the
    best validation NLL over both phases, and ``history["best_phase"]`` says which won).
    This class orchestrates them: the two optimisers
    (:class:`~jsbi.inference.optimizers.PrimalOptimizers`), the dual variable, the update
    and logging.

    A reverse-term sample outside the prior's support has infinite energy: it is left out
    of the term (never a NaN), and counted in ``history["train_outside"]``. A joint batch
    whose importance sampling collapsed updates the flow on :math:`F` only
    (``history["train_collapsed"]``). A non-finite loss or a dual above ``max_lambda``
    is a fault (METHOD.md section 6): :class:`~jsbi.inference.dual.FaultRecovery`
    restores the last finished epoch with smaller steps and warns, and stops training
    after ``max_restores`` (the loop then returns the best state, never a NaN posterior).

    Arguments:
        flow: The conditional flow :math:`q_\phi`.
        proxy: The conditional energy :math:`E_\psi` (see :mod:`jsbi.inference.ebm`).
        config: The step's options, an :class:`~jsbi.inference.config.AdaptiveConfig`
            (checked there); ``None`` builds one from ``options``.
        prior: The prior :math:`\pi` (for ``num_prior_samples > 0``, ``distill`` and
            the gate).
        learning_rate: The flow's Adam learning rate.
        clip_max_norm: Gradient norm clip for both models (``None``: off).
        options: :class:`~jsbi.inference.config.AdaptiveConfig`'s fields as keywords
            (``objective="srfe"``, ``schedule="npe-first"``, ``num_proxy_samples=4``,
            ...), with ``config=None``.

    References:
        | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025),
          arXiv:2511.11159
        | Resilient Constrained Learning (Hounie, Ribeiro & Chamon, 2023),
          arXiv:2306.02426
        | Sticking the Landing (Roeder, Wu & Duvenaud, 2017), arXiv:1703.09194
    """

    def __init__(
        self,
        flow: nn.Module,
        proxy: nn.Module,
        config: AdaptiveConfig | None = None,
        *,
        prior: Distribution | None = None,
        learning_rate: float = 5e-4,
        clip_max_norm: float | None = 5.0,
        **options: Any,
    ) -> None:
        c = self.config = AdaptiveConfig.coerce(config, options)
        if prior is None and (needs := c.needs_prior()):
            raise ValueError(f"{needs[0]} needs the prior: pass prior=")
        self.optim = PrimalOptimizers(
            flow, proxy, learning_rate, c.proxy_learning_rate, clip_max_norm
        )
        self.flow, self.proxy, self.prior = flow, proxy, prior
        self.objective, self.schedule, self.gate = c.objective, c.schedule, c.gated
        self.reverse = ReverseEstimator(flow, proxy, prior, c)
        self.plan = make_schedule(c)
        joint = c.joint()
        self.dual = DualVariable(
            joint["lambda_init"], joint["alpha"], joint["dual_lr"], joint["adaptive"], c.max_lambda
        )
        self.faults = FaultRecovery(self, c.max_restores)
        self.epoch = 0
        self.tau: float | None = None

    # -- bookkeeping -------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"flow": self.flow, "proxy": self.proxy}

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.optim.start()
        self.dual.reset()
        self.plan.start(self)
        self.faults.start()

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.tau = epoch, self.plan.tau(epoch)

    def selectable(self, epoch: int) -> bool:
        return self.plan.selectable(self, epoch)

    def validate(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        return self.plan.validate(self, theta, x)

    def measure_proxy(
        self, theta: Tensor, x: Tensor, num_samples: int | None = None
    ) -> dict[str, float]:
        r"""The gate's measurement on pairs: :func:`~jsbi.inference.schedules.measure_proxy`."""
        return measure_proxy(self, theta, x, num_samples)

    def summary(self) -> dict[str, Any]:
        return dict(self.plan.summary)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), **self.optim.settings()}

    def on_converged(self, best_state: dict[str, Any] | None) -> bool | int:
        return self.plan.converged(self, best_state)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.faults.epoch_finished(logs)

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), **self.optim.state_dict()}
        return {**state, "lambda": self.dual.value, "schedule": self.plan.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optim.load_state_dict(state)
        self.dual.value = float(state.get("lambda", self.dual.value))
        if "schedule" in state:
            self.plan.load_state_dict(state["schedule"])

    # -- the update ----------------------------------------------------------------------
    def _npe_step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        # The flow on F, the proxy on its own fit when due (warm-up, phase 1, gated off).
        F = forward_kl(self.flow.log_prob(theta, x))
        self.plan.steps += 1
        fit = own_fit(self, theta, x, self.reverse.batch(x)) if self.plan.fit_due(self) else None
        self.optim.descend(F, fit)
        logs = {"loss": F.item(), "F": F.item()}
        if fit is not None:
            logs[own_fit_name(self.proxy)] = fit.item()
        if self.plan.phase:
            logs["phase"] = float(self.plan.phase)
        return logs

    def step(self, theta: Tensor, x: Tensor) -> dict[str, float]:
        if not self.plan.symmetric(self.epoch):
            return self._npe_step(theta, x)
        if self.plan.skips_reverse(self):
            return {**self._npe_step(theta, x), "phase": 2.0, "gate": self.plan.gate_value}
        F = forward_kl(self.flow.log_prob(theta, x))
        xr = self.reverse.batch(x)
        r = self.reverse(xr, tau=self.tau, needs_log_z=self.plan.needs_log_z)
        fit = self.plan.fit(self, theta, x, xr, r.log_z)
        ess = math.nan if r.ess is None else float(r.ess.mean())
        w = self.plan.weights(self, ess)
        forward = self.objective != "reverse"  # reverse: R alone, collapsed or not
        loss_flow, loss_proxy = primal_losses(
            F, r.flow, fit, r.proxy, forward=forward, **w.kwargs()
        )
        if not all(torch.isfinite(v) for v in (loss_flow, loss_proxy) if v is not None):
            return self.faults.restore("non-finite loss")
        self.optim.descend(loss_flow, loss_proxy)
        logs = _symmetric_logs(self, loss_flow, F, r, fit, w.collapsed, ess)
        fault = self.plan.finish(self, logs, fit, F)
        if fault is not None:
            return self.faults.restore(fault)
        self.faults.last_logs = logs
        return logs


def _symmetric_logs(
    step: AdaptiveStep,
    loss: Tensor,
    F: Tensor,
    r: Any,
    fit: Tensor | None,
    collapsed: bool,
    ess: float,
) -> dict[str, float]:
    # One symmetric step's scalars: what the flow descended (loss), its terms, the dual,
    # the faults seen and, where the term has importance weights, their ESS.
    logs = {
        "loss": loss.item(),
        "F": F.item(),
        "R": r.flow.item(),
        "lambda": step.dual.value,
        "u": step.dual.slack,
        "collapsed": float(collapsed),
        "outside": float(r.outside),
        "faults": 0.0,
    }
    if fit is not None:  # None: the proxy's own early stopping ended its fit
        logs[step.plan.fit_name(step)] = fit.item()
    if r.ess is not None:
        logs["ess"] = ess
    if step.tau is not None:
        logs["tau"] = step.tau
    return logs


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


def split_indices(
    n: int, validation_fraction: float, generator: torch.Generator | int
) -> tuple[Tensor, Tensor]:
    r"""The seeded train/validation split of :func:`train`: ``(validation, training)`` indices.

    Arguments:
        n: The number of pairs.
        validation_fraction: The held-out fraction, in ``(0, 1)``.
        generator: A seed or a generator (advanced by the split).

    Example:
        >>> val, tr = split_indices(10, 0.2, 0)
        >>> len(val), len(tr)
        (2, 8)
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(int(generator))
    n_val = int(validation_fraction * n)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"too few training pairs ({n}) for validation_fraction={validation_fraction}: "
            "need at least one validation and one training pair"
        )
    perm = torch.randperm(n, generator=generator)
    return perm[:n_val], perm[n_val:]


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
    checkpoint: str | os.PathLike | None = None,
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
        checkpoint: A file where the run is saved after every epoch (the step's state,
            the best state, the history and the random states). If it exists when
            training starts, training resumes from it, so a crash loses at most one
            epoch and the resumed run equals an uninterrupted one.

    Returns:
        The history: per-epoch lists ``epoch``, ``train_loss``, ``validation_loss``,
        ``epoch_time`` and ``train_<key>`` / ``validation_<key>`` for every extra scalar the
        step logs, plus ``best_epoch``, ``best_validation_loss``, ``epochs_trained``,
        ``converged``, ``interrupted``, ``num_train``, ``num_validation``,
        ``num_dropped``. JSON-serialisable. On return, ``step`` holds its best state.
    """
    theta, x, dropped = check_training_data(theta, x, getattr(step.flow, "dim_theta", None))
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(stop_after_epochs) < 1 or int(max_epochs) < 1:
        raise ValueError(
            f"stop_after_epochs and max_epochs must be >= 1, got {stop_after_epochs}, {max_epochs}"
        )
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    val_idx, tr_idx = split_indices(len(theta), validation_fraction, generator)
    theta, x = theta.to(device), x.to(device)
    val, tr = (theta[val_idx], x[val_idx]), (theta[tr_idx], x[tr_idx])
    if show_progress_bar is None:
        show_progress_bar = sys.stderr.isatty()
    # A total when there is a real cap; the bar stays, with a summary line after it.
    total = max_epochs if max_epochs < 2**31 - 1 else None
    bar = tqdm(desc="Training", unit="epoch", total=total, disable=not show_progress_bar)
    stopping = EarlyStopping(stop_after_epochs)
    with seeded(seed, [device]):
        step.to(device)
        step.on_train_start(
            {
                "num_train": len(tr_idx),
                "num_validation": len(val_idx),
                "device": device,
                "seed": int(seed),
            }
        )
        saver = _Checkpoint(checkpoint, step, theta, x, seed, batch_size, validation_fraction)
        history, epoch = saver.resume(step, stopping, generator, bar)
        loop = _EpochLoop(step, tr, val, generator, batch_size, stopping, saver, bar)
        stopped, interrupted = loop.run(history, epoch, max_epochs, callback)
        if show_progress_bar:
            tqdm.write(
                f"Training: best epoch {stopping.best_epoch} of {len(history['epoch'])}, "
                f"validation NLL {stopping.best_loss:.4g}; stopped by {stopped}",
                file=sys.stderr,
            )
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
        saver: _Checkpoint,
        bar: tqdm,
    ) -> None:
        self.step, self.tr, self.val, self.generator = step, tr, val, generator
        self.batch_size, self.stopping, self.saver, self.bar = batch_size, stopping, saver, bar

    def run(
        self,
        history: dict[str, Any],
        epoch: int,
        max_epochs: int,
        callback: Callable[[int, dict[str, float]], bool | None] | None,
    ) -> tuple[str, bool]:
        r"""Trains from ``epoch`` on; returns what stopped it and whether an interrupt."""
        stopping, stopped = self.stopping, "the epoch cap"
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
        except FloatingPointError as err:
            stopped = "repeated faults"
            # A step that cannot recover (repeated blow-ups) ends training; the best
            # finite state is restored below, never a NaN model.
            _trim_history(history)
            warnings.warn(
                f"training stopped at epoch {epoch}: {err}; returning the best state "
                f"(epoch {stopping.best_epoch})",
                stacklevel=3,
            )
        except KeyboardInterrupt:
            _trim_history(history)
            if stopping.best_state is None:
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
                f"(epoch {stopping.best_epoch}, validation loss {stopping.best_loss:.4g})",
                stacklevel=3,
            )
            return "an interrupt", True
        finally:
            self.bar.close()
        return stopped, False

    def epoch(self, history: dict[str, Any], epoch: int) -> tuple[str | None, dict[str, float]]:
        r"""One epoch; returns why training stops after it (``"next phase"``: it goes on
        in the step's next phase; ``None``: it goes on) and the epoch's logs."""
        stopping = self.stopping
        start = time.perf_counter()
        logs = _run_epoch(self.step, epoch, self.tr, self.val, self.generator, self.batch_size)
        _append_epoch(history, epoch, time.perf_counter() - start, logs)
        stopping.record(self.step, epoch, logs["validation_loss"])
        self.bar.update(1)
        self.bar.set_postfix(
            train=f"{logs.get('train_loss', math.nan):.4g}",
            val=f"{logs['validation_loss']:.4g}",
            best=f"{stopping.best_loss:.4g}",
        )
        self.saver.save(epoch, self.step, stopping, history, self.generator)
        if not math.isfinite(logs.get("train_loss", 0.0)):
            if stopping.best_state is not None:
                warnings.warn(
                    f"non-finite training loss at epoch {epoch}; stopping and "
                    f"restoring the best state (epoch {stopping.best_epoch})",
                    stacklevel=4,
                )
            return "a non-finite training loss", logs
        if stopping.exhausted(epoch):
            if stopping.next_phase(self.step, epoch):
                return "next phase", logs
            reason = f"early stopping ({stopping.patience} epochs without a better validation NLL)"
            return reason, logs
        return None, logs


class _Checkpoint:
    r"""The training checkpoint of one run (``path=None``: none): resumed from when it
    exists, saved after every epoch; it resumes only the run with the same fingerprint."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        step: TrainingStep,
        theta: Tensor,
        x: Tensor,
        seed: int,
        batch_size: int,
        validation_fraction: float,
    ) -> None:
        self.path = path
        self.run: dict[str, Any] = {"seed": int(seed), "n": len(theta), "fingerprint": None}
        if path is not None:
            self.run["fingerprint"] = _fingerprint(
                step, theta, x, seed, batch_size, validation_fraction
            )

    def resume(
        self, step: TrainingStep, stopping: EarlyStopping, generator: torch.Generator, bar: tqdm
    ) -> tuple[dict[str, Any], int]:
        r"""The history and the last finished epoch: the saved ones (the step, early
        stopping and the random states restored), or a fresh history and epoch 0."""
        if self.path is None or not os.path.exists(self.path):
            return {"epoch": [], "train_loss": [], "validation_loss": [], "epoch_time": []}, 0
        r = self.run
        saved = _load_checkpoint(self.path, seed=r["seed"], n=r["n"], fingerprint=r["fingerprint"])
        step.load_state_dict(saved["state"])
        stopping.load(saved)
        torch.set_rng_state(saved["rng"])
        generator.set_state(saved["generator"])
        bar.update(saved["epoch"])
        return saved["history"], saved["epoch"]

    def save(
        self,
        epoch: int,
        step: TrainingStep,
        stopping: EarlyStopping,
        history: dict[str, Any],
        generator: torch.Generator,
    ) -> None:
        if self.path is not None:
            _save_checkpoint(self.path, self.run, epoch, step, stopping, history, generator)


class EarlyStopping:
    r"""The early stopping of :func:`train`: the best state over all phases, and the
    patience that ends a phase.

    ``record`` keeps an epoch's state when it is selectable and its validation NLL is the
    best so far (an epoch that is not selectable, such as warm-up, restarts the patience);
    ``exhausted`` says when ``patience`` epochs passed without a better one; then
    ``next_phase`` asks the step (:meth:`TrainingStep.on_converged`) whether a new phase
    begins, with the patience it returns.

    Arguments:
        patience: Epochs without improvement before a phase ends.
    """

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict[str, Any] | None = None
        self.patience_from = 0
        self.converged = False

    def record(self, step: TrainingStep, epoch: int, loss: float) -> None:
        if not step.selectable(epoch):
            self.patience_from = epoch
        elif math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            self.best_state = copy_state(step.state_dict())

    def exhausted(self, epoch: int) -> bool:
        return epoch - max(self.best_epoch, self.patience_from) >= self.patience

    def next_phase(self, step: TrainingStep, epoch: int) -> bool:
        r"""Whether training goes on in a new phase; otherwise it has converged."""
        nxt = step.on_converged(self.best_state)
        if not nxt:
            self.converged = True
            return False
        self.patience_from = epoch
        if not isinstance(nxt, bool):
            self.patience = int(nxt)
        return True

    def state(self) -> dict[str, Any]:
        r"""What a checkpoint keeps (the keys of the checkpoint format)."""
        return {
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "patience_from": self.patience_from,
            # A phase may have changed the patience (npe-first's phase2_patience).
            "stop_after_epochs": self.patience,
        }

    def load(self, saved: dict[str, Any]) -> None:
        self.best_state, self.best_loss = saved["best_state"], saved["best_loss"]
        self.best_epoch, self.patience_from = saved["best_epoch"], saved["patience_from"]
        self.patience = int(saved.get("stop_after_epochs", self.patience))


def _run_epoch(
    step: TrainingStep,
    epoch: int,
    train_pairs: tuple[Tensor, Tensor],
    validation_pairs: tuple[Tensor, Tensor],
    generator: torch.Generator,
    batch_size: int,
) -> dict[str, float]:
    # One epoch: the step's hooks, the training pass, validation; the averaged logs.
    step.on_epoch_start(epoch)
    means = _train_epoch(step, *train_pairs, generator, batch_size)
    val_loss, extra, diverged = _validate_epoch(step, *validation_pairs)
    if diverged:  # a NaN epoch: the loop stops on it, the best state kept
        means["loss"] = math.nan
    logs = {f"train_{k}": v for k, v in means.items()}
    logs["validation_loss"] = val_loss
    logs.update({f"validation_{k}": float(v) for k, v in extra.items()})
    step.on_epoch_end(epoch, logs)
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
        "learning rate too "
        f"large for the data, or x values too large for float32 (largest |x| in the "
        f"training data: {float(x.abs().max()):.3g}); try a smaller learning_rate or "
        "rescale x"
    )


def _train_epoch(
    step: TrainingStep,
    theta: Tensor,
    x: Tensor,
    generator: torch.Generator,
    batch_size: int,
) -> dict[str, float]:
    # One pass over the training pairs in a seeded order: each of the step's logs averaged
    # over the pairs of the batches that logged it (a term on some batches only, e.g.
    # proxy_every's fit or reverse_every's R, is its mean where it was computed).
    step.train()
    n = len(theta)
    sums: dict[str, float] = {}
    seen: dict[str, int] = {}
    order = torch.randperm(n, generator=generator).to(theta.device)
    # A short last batch would give one noisy step per epoch; like sbi, drop it (its pairs
    # are in other batches in other epochs).
    n_seen = n - n % batch_size if n >= batch_size else n
    for i in range(0, n_seen, batch_size):
        idx = order[i : i + batch_size]
        try:
            logs = step.step(theta[idx], x[idx])
        except ValueError as err:
            # Diverged weights make torch's argument checks fail on NaN inside the flow: a
            # non-finite loss, handled by the loop, not a crash.
            if not _diverged(err, step.flow):
                raise
            logs = {"loss": math.nan}
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            seen[k] = seen.get(k, 0) + len(idx)
    return {k: v / seen[k] for k, v in sums.items()}


def _validate_epoch(
    step: TrainingStep, theta: Tensor, x: Tensor
) -> tuple[float, dict[str, float], bool]:
    # The flow's validation NLL, the step's own validation scalars, and whether the
    # weights diverged (then NaN and nothing).
    step.eval()
    try:
        if not _finite_weights(step.flow):
            raise FloatingPointError
        val_loss = validation_nll(step.flow, theta, x)
        with torch.no_grad():
            extra = step.validate(theta, x)
    except (FloatingPointError, ValueError) as err:
        if isinstance(err, ValueError) and not _diverged(err, step.flow):
            raise
        return math.nan, {}, True
    return val_loss, extra, False


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


_CHECKPOINT_FORMAT = "jsbi-training-checkpoint-3"


def _fingerprint(
    step: TrainingStep,
    theta: Tensor,
    x: Tensor,
    seed: int,
    batch_size: int,
    validation_fraction: float,
) -> str:
    r"""What makes a run this run: the data, the step's configuration and the seed.

    A checkpoint resumes only a run with the same fingerprint. ``max_epochs`` is left out
    on purpose: a finished run may be extended.
    """
    h = hashlib.sha256()
    for t in (theta, x):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    config = step.fingerprint()
    config["step"] = type(step).__name__
    for name, module in step.modules().items():
        config[f"{name}:class"] = type(module).__name__
        config[f"{name}:config"] = getattr(module, "config", None)
        config[f"{name}:parameters"] = [tuple(p.shape) for p in module.parameters()]
    config.update(seed=int(seed), batch_size=int(batch_size), fraction=validation_fraction)
    h.update(repr(config).encode())
    return h.hexdigest()


_SCALAR = (int, float, str, bool, type(None))


def _setting(value: Any) -> Any:
    # A value as the fingerprint sees it: scalars (and tuples of them) as they are, an
    # object as its class and its scalar attributes.
    if isinstance(value, _SCALAR) or (
        isinstance(value, tuple) and all(isinstance(v, _SCALAR) for v in value)
    ):
        return value
    attributes = sorted(getattr(value, "__dict__", {}).items())
    return type(value).__qualname__, {k: v for k, v in attributes if isinstance(v, _SCALAR)}


def _save_checkpoint(
    path: str | os.PathLike,
    run: dict[str, Any],
    epoch: int,
    step: TrainingStep,
    stopping: EarlyStopping,
    history: dict[str, Any],
    generator: torch.Generator,
) -> None:
    # Everything a resumed run needs to equal an uninterrupted one (run: its seed, size
    # and fingerprint). Write then rename: a crash mid-write leaves the previous
    # checkpoint intact.
    payload = {
        "format": _CHECKPOINT_FORMAT,
        **run,
        "epoch": epoch,
        "state": step.state_dict(),
        **stopping.state(),
        "history": history,
        "rng": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(
    path: str | os.PathLike, *, seed: int, n: int, fingerprint: str | None = None
) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {os.fspath(path)!r} cannot be read: {err}") from err
    if (
        isinstance(saved, dict)
        and str(saved.get("format", "")).startswith("jsbi-training-checkpoint-")
        and saved["format"] != _CHECKPOINT_FORMAT
    ):
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} was written by another version of jsbi "
            f"({saved['format']}): remove it to start afresh, or pick another path"
        )
    if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a jsbi training checkpoint")
    if saved["seed"] != seed or saved["n"] != n:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to another run (seed {saved['seed']}, "
            f"{saved['n']} pairs; this run: seed {seed}, {n} pairs): remove it or pick "
            "another path"
        )
    if fingerprint is not None and saved.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to another run: same seed and number of "
            "pairs, but other training data or another configuration (objective, flow, "
            "options). Resuming it would return that run's posterior: remove it or pick "
            "another path"
        )
    return saved
