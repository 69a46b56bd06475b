r"""Bernoulli GLM: a 10-parameter generalised linear model of a spiking neuron.

As sbibm defines it: an offset and a 9-tap linear filter of a fixed white-noise stimulus
(100 time steps) give ``psi = X theta``; the spikes are ``y_t ~ Bernoulli(sigmoid(psi_t))``.
The prior is ``N(0, B)`` with precision ``B^-1 = diag(0.5, F^T F)``,
``F = D D + diag(sqrt(arange(9) / 9))`` and ``D`` the first-difference matrix, which favours
smooth filters. ``bernoulli_glm`` returns 10 summary statistics (the spike count and the
spike-triggered sums at lags 0..8); ``bernoulli_glm_raw`` returns the 100 binary values.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (tasks "bernoulli_glm", "bernoulli_glm_raw", sbibm 1.1.0)

    | Flexible statistical inference for mechanistic models of neural dynamics
    | (Lueckmann et al., 2017) https://arxiv.org/abs/1711.01861
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import MultivariateNormal

from jsbi.simulators.tasks._common import SbibmTask, task_data

__all__: list[str] = []

DIM = 10
DURATION = 100


def prior_precision() -> Tensor:
    r"""Returns the prior precision matrix ``(10, 10)``, built as in sbibm."""
    M = DIM - 1
    D = torch.diag(torch.ones(M)) - torch.diag(torch.ones(M - 1), -1)
    Fm = D @ D + torch.diag(1.0 * torch.arange(M) / M) ** 0.5
    Binv = torch.zeros(M + 1, M + 1)
    Binv[0, 0] = 0.5  # offset
    Binv[1:, 1:] = Fm.T @ Fm  # filter
    return Binv


def stimulus() -> Tensor:
    r"""Returns sbibm's frozen input stimulus ``(100,)`` (white noise, seed 42)."""
    return torch.tensor(task_data("bernoulli_glm")["stimulus"], dtype=torch.float32)


def design_matrix() -> Tensor:
    r"""Returns the design matrix ``(100, 10)``: a column of ones, then the lagged stimulus."""
    stim = stimulus()
    X = torch.zeros(DURATION, DIM)
    X[:, 0] = 1.0
    for j in range(DIM - 1):
        X[j:, j + 1] = stim[: DURATION - j]
    return X


class BernoulliGLM(SbibmTask):
    r"""The Bernoulli GLM task, with summary statistics or raw spikes.

    Arguments:
        name: ``"bernoulli_glm"`` (10 summaries) or ``"bernoulli_glm_raw"`` (100 spikes).

    Example:
        >>> t = task("bernoulli_glm_raw")
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 100])
    """

    def __init__(self, name: str = "bernoulli_glm") -> None:
        if name not in ("bernoulli_glm", "bernoulli_glm_raw"):
            raise ValueError(f"name must be 'bernoulli_glm' or 'bernoulli_glm_raw', got {name!r}")
        self.raw = name == "bernoulli_glm_raw"
        self.design = design_matrix()
        self.stimulus = stimulus()
        prior = MultivariateNormal(torch.zeros(DIM), precision_matrix=prior_precision())
        theta_names = ["offset"] + [f"filter_{j + 1}" for j in range(DIM - 1)]
        x_names = (
            [f"y_{t + 1}" for t in range(DURATION)]
            if self.raw
            else ["num_spikes"] + [f"sta_{j}" for j in range(DIM - 1)]
        )
        super().__init__(
            prior,
            self._simulate,
            name=name,
            dim_x=len(x_names),
            theta_names=theta_names,
            x_names=x_names,
        )

    def _simulate(self, theta: Tensor) -> Tensor:
        psi = theta.float() @ self.design.T
        y = (torch.rand(psi.shape) < torch.sigmoid(psi)).float()
        if self.raw:
            return y
        return summary_statistics(y, self.stimulus)


def summary_statistics(y: Tensor, stim: Tensor) -> Tensor:
    r"""Returns sbibm's summaries of spike trains ``y (n, 100)``: count and 9 STA lags."""
    sta = F.conv1d(y[:, None, :], stim.reshape(1, 1, -1), padding=DIM - 2)[:, 0, -(DIM - 1) :]
    return torch.cat((y.sum(dim=1, keepdim=True), sta), dim=1)


def task(name: str = "bernoulli_glm") -> BernoulliGLM:
    r"""Returns the Bernoulli GLM task (``name="bernoulli_glm"``) or its raw variant."""
    return BernoulliGLM(name=name)
