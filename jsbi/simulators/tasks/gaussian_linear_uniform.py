r"""Gaussian linear uniform: infer the mean of a Gaussian under a uniform prior, in 10-D.

As sbibm defines it: ``theta ~ U([-1, 1]^10)``, ``x | theta ~ N(theta, 0.1 I_10)``. The
posterior is ``N(x, 0.1 I)`` restricted to the box (see
:func:`jsbi.simulators.reference.analytic_posterior`).

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "gaussian_linear_uniform", sbibm 1.1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from jsbi.simulators.tasks._common import SbibmTask, box_prior

__all__: list[str] = []


class GaussianLinearUniform(SbibmTask):
    r"""The Gaussian linear task with a box-uniform prior (10-D).

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 10])
    """

    dim: int = 10
    low: float = -1.0
    high: float = 1.0
    noise_var: float = 0.1

    def __init__(self, name: str = "gaussian_linear_uniform") -> None:
        prior = box_prior(self.low, self.high, self.dim)
        super().__init__(prior, self._simulate, name=name, dim_x=self.dim)

    def _simulate(self, theta: Tensor) -> Tensor:
        return theta + self.noise_var**0.5 * torch.randn_like(theta)


def task(name: str = "gaussian_linear_uniform") -> GaussianLinearUniform:
    r"""Returns the Gaussian linear uniform task."""
    return GaussianLinearUniform(name=name)
