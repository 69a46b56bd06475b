r"""Unconditional density estimation with the same objectives and the same training loop.

A density :math:`q_\phi(\theta)` is a posterior with nothing to condition on: the
:class:`DensityEstimator` trains a :class:`~jsbi.flows.conditional.ConditionalFlow` on the
samples paired with a constant one-column context, through
:class:`~jsbi.estimator.PosteriorEstimator` and
:func:`~jsbi.training.loop.train`. The adaptive objectives use the free energy
:class:`~jsbi.proxies.mlp.MLPEnergy` as the proxy (there is no prior to multiply), which
warms up on its data fit :math:`C`.

Example:
    >>> import torch
    >>> data = torch.randn(300, 2)
    >>> est = DensityEstimator(objective="jeffreys", num_transforms=2, warmup_epochs=2)
    >>> density = est.fit(data, max_epochs=5, show_progress_bar=False)
    >>> density.log_prob(data[:4]).shape, density.sample((7,)).shape
    (torch.Size([4]), torch.Size([7, 2]))

References:
    | Adaptive Symmetrization of the KL Divergence (Ben-Dov & Chamon, 2025),
      arXiv:2511.11159
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from jsbi.estimator import PosteriorEstimator
from jsbi.flows.conditional import ConditionalFlow
from jsbi.methods import NPEConfig, method_config

__all__ = ["Density", "DensityEstimator"]


class Density:
    r"""A trained unconditional density :math:`q(\theta)`.

    Arguments:
        flow: The flow, trained with a constant context.
        history: The training history (see :func:`~jsbi.training.loop.train`).
    """

    def __init__(self, flow: ConditionalFlow, history: dict[str, Any] | None = None) -> None:
        self.flow = flow.eval()
        self.history = history or {}
        self._context = torch.zeros(1, device=flow.theta_loc.device)

    def log_prob(self, theta: Tensor) -> Tensor:
        r"""Returns :math:`\log q(\theta)` for ``theta`` of shape ``(..., d)``."""
        theta = torch.as_tensor(theta, dtype=torch.float32, device=self._context.device)
        if theta.shape[-1:] != (self.flow.dim_theta,):
            raise ValueError(
                f"theta must have shape (..., {self.flow.dim_theta}), got {tuple(theta.shape)}"
            )
        with torch.no_grad():
            return self.flow.log_prob(theta, self._context)

    def sample(self, shape: Sequence[int] = ()) -> Tensor:
        r"""Draws samples of shape ``(*shape, d)``."""
        return self.flow.sample(tuple(shape), self._context)


class DensityEstimator:
    r"""Fits :math:`q_\phi(\theta)` to samples with ``npe`` (maximum likelihood) or an
    adaptive symmetric objective (``jeffreys``, ``srfe``, ``reverse``).

    Arguments:
        objective: As for :class:`~jsbi.estimator.PosteriorEstimator`.
        flow: A flow name or zuko flow class.
        seed: Seeds initialisation, validation split and shuffling.
        options: Further :class:`~jsbi.estimator.PosteriorEstimator` options
            (``num_transforms``, ``hidden_features``, ``warmup_epochs``, ``eps``, ...).
    """

    def __init__(
        self, objective: str = "jeffreys", flow: str | type = "nsf", seed: int = 0, **options: Any
    ) -> None:
        self.objective = str(objective).lower()
        self.flow_name = flow
        self.seed = int(seed)
        if not isinstance(method_config(self.objective), NPEConfig):
            # No simulator, hence no likelihood: a free energy, in the paper's joint
            # primal-dual scheme (docs/method.md).
            options.setdefault("proxy", "mlp")
            options.setdefault("schedule", "joint")
        self.options = options
        self.estimator: PosteriorEstimator | None = None

    def fit(
        self,
        samples: Tensor,
        *,
        held_out: Tensor | None = None,
        callback: Callable[[int, dict[str, float]], bool | None] | None = None,
        **fit_kwargs: Any,
    ) -> Density:
        r"""Trains on ``samples`` of shape ``(n, d)``.

        Arguments:
            samples: The data.
            held_out: Optional test samples ``(n', d)``: their mean NLL under the flow is
                recorded after every epoch in ``history["held_out_nll"]``.
            callback: ``callback(epoch, logs)``, as for ``PosteriorEstimator.fit``.
            fit_kwargs: ``PosteriorEstimator.fit`` options (``max_epochs``,
                ``learning_rate``, ``stop_after_epochs``, ...).

        Returns:
            The trained :class:`Density`.
        """
        samples = torch.as_tensor(samples, dtype=torch.float32)
        if samples.ndim != 2 or len(samples) < 2:
            raise ValueError(f"samples must have shape (n >= 2, d), got {tuple(samples.shape)}")
        if held_out is not None:
            held_out = torch.as_tensor(held_out, dtype=torch.float32)
            if held_out.ndim != 2 or held_out.shape[1] != samples.shape[1]:
                raise ValueError(
                    f"held_out must have shape (n', {samples.shape[1]}), "
                    f"got {tuple(held_out.shape)}"
                )
        # Only a shape: its support is the real line, and a free energy never reads it.
        reference = Independent(Normal(torch.zeros(samples.shape[1]), 1.0), 1)
        est = PosteriorEstimator(
            reference,
            flow=self.flow_name,
            objective=self.objective,
            support="truncate",
            seed=self.seed,
            **self.options,
        )
        self.estimator = est
        curve: list[float] = []

        if held_out is not None:
            held_out = held_out.to(est.device)  # once, not every epoch
        context_1 = torch.zeros(1, device=est.device)

        def track(epoch: int, logs: dict[str, float]) -> bool | None:
            if held_out is not None:
                with torch.no_grad():
                    curve.append(float(-est.flow.log_prob(held_out, context_1).mean()))
            return callback(epoch, logs) if callback is not None else None

        context = torch.zeros(len(samples), 1)
        est.fit(samples, context, callback=track, **fit_kwargs)
        history = dict(est.history or {})
        if held_out is not None:
            history["held_out_nll"] = curve
        return Density(est.flow, history)
