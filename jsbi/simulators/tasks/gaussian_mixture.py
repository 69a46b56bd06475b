r"""Gaussian mixture: infer the common mean of a two-component Gaussian mixture, in 2-D.

As sbibm defines it: ``theta ~ U([-10, 10]^2)``,
``x | theta ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "gaussian_mixture", sbibm 1.1.0)

    | Approximate Bayesian Computation via Population Monte Carlo (Sisson et al., 2007)
    | https://doi.org/10.1073/pnas.0607208104
"""

from __future__ import annotations

import torch
from torch import Tensor

from jsbi.simulators.tasks._common import SbibmTask, box_prior

__all__: list[str] = []


class GaussianMixture(SbibmTask):
    r"""The Gaussian mixture task.

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 2])
    """

    def __init__(self, name: str = "gaussian_mixture") -> None:
        super().__init__(box_prior(-10.0, 10.0, 2), self._simulate, name=name, dim_x=2)

    @staticmethod
    def _simulate(theta: Tensor) -> Tensor:
        # component 0 has scale 1, component 1 scale 0.1, each with weight 0.5
        narrow = torch.rand(theta.shape[0], 1, dtype=theta.dtype) < 0.5
        scale = torch.where(narrow, 0.1, 1.0).to(theta.dtype)
        return theta + scale * torch.randn_like(theta)


def task(name: str = "gaussian_mixture") -> GaussianMixture:
    r"""Returns the Gaussian mixture task."""
    return GaussianMixture(name=name)
