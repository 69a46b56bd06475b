r"""Gaussian linear: infer the mean of a Gaussian under a Gaussian prior, in 10-D.

As sbibm defines it: ``theta ~ N(0, 0.1 I_10)``, ``x | theta ~ N(theta, 0.1 I_10)``. The
posterior is Gaussian in closed form (see :func:`jsbi.simulators.reference.analytic_posterior`).

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "gaussian_linear", sbibm 1.1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from jsbi.simulators.tasks._common import SbibmTask

__all__: list[str] = []


class GaussianLinear(SbibmTask):
    r"""The Gaussian linear task (10-D, Gaussian prior).

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 10])
    """

    dim: int = 10
    prior_var: float = 0.1  # sbibm's "prior_scale" is a variance: precision = inv(0.1 I)
    noise_var: float = 0.1

    def __init__(self, name: str = "gaussian_linear") -> None:
        prior = MultivariateNormal(
            torch.zeros(self.dim), covariance_matrix=self.prior_var * torch.eye(self.dim)
        )
        super().__init__(prior, self._simulate, name=name, dim_x=self.dim)

    def _simulate(self, theta: Tensor) -> Tensor:
        return theta + self.noise_var**0.5 * torch.randn_like(theta)


def task(name: str = "gaussian_linear") -> GaussianLinear:
    r"""Returns the Gaussian linear task."""
    return GaussianLinear(name=name)
