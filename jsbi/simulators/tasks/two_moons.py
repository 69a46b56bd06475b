r"""Two moons: a 2-D task with a bimodal, crescent-shaped posterior.

As sbibm defines it: ``theta ~ U([-1, 1]^2)``; ``a ~ U(-pi/2, pi/2)``,
``r ~ N(0.1, 0.01^2)``, ``p = (r cos(a) + 0.25, r sin(a))`` and
``x = p + (-|theta_1 + theta_2| / sqrt(2), (-theta_1 + theta_2) / sqrt(2))``.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "two_moons", sbibm 1.1.0)

    | Automatic Posterior Transformation for Likelihood-Free Inference (Greenberg et al., 2019)
    | https://arxiv.org/abs/1905.07488
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from jsbi.simulators.tasks._common import SbibmTask, box_prior

__all__: list[str] = []


class TwoMoons(SbibmTask):
    r"""The two moons task.

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 2])
    """

    def __init__(self, name: str = "two_moons") -> None:
        super().__init__(box_prior(-1.0, 1.0, 2), self._simulate, name=name, dim_x=2)

    @staticmethod
    def _simulate(theta: Tensor) -> Tensor:
        n = theta.shape[0]
        a = (torch.rand(n, dtype=theta.dtype) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n, dtype=theta.dtype)
        p = torch.stack((torch.cos(a) * r + 0.25, torch.sin(a) * r), dim=1)
        # rotation by -pi/4, as in sbibm's _map_fun
        c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
        z0 = c * theta[:, 0] - s * theta[:, 1]
        z1 = s * theta[:, 0] + c * theta[:, 1]
        return p + torch.stack((-z0.abs(), z1), dim=1)


def task(name: str = "two_moons") -> TwoMoons:
    r"""Returns the two moons task."""
    return TwoMoons(name=name)
