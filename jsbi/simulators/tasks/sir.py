r"""SIR: an epidemic model with contact rate ``beta`` and recovery rate ``gamma``.

As sbibm defines it: ``beta ~ LogNormal(log 0.4, 0.5)``, ``gamma ~ LogNormal(log 0.125, 0.2)``;
the SIR ODE ``S' = -beta S I / N``, ``I' = beta S I / N - gamma I``, ``R' = gamma I`` with
``N = 10^6``, ``(S, I, R)(0) = (N - 1, 1, 0)`` is solved for 160 days, and
``x_j ~ Binomial(1000, I(t_j) / N)`` at days ``t_j = 0, 17, ..., 153``.

sbibm solves the ODE in Julia (DifferentialEquations.jl through diffeqtorch), which is not
available here; this module integrates it with a batched float64 Runge-Kutta 4 scheme
(step 0.05 days), far more accurate than the binomial noise.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "sir", sbibm 1.1.0)

    | A contribution to the mathematical theory of epidemics (Kermack & McKendrick, 1927)
    | https://doi.org/10.1098/rspa.1927.0118
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Independent, LogNormal

from jsbi.simulators.tasks._common import SbibmTask, rk4

__all__: list[str] = []

POPULATION = 1_000_000.0
DAYS = 160.0
EVERY_DAYS = 17  # sbibm keeps every 17th daily value of I
TOTAL_COUNT = 1000
DT = 0.05


class SIR(SbibmTask):
    r"""The SIR task.

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 10])
    """

    def __init__(self, name: str = "sir") -> None:
        prior = Independent(
            LogNormal(torch.tensor([math.log(0.4), math.log(0.125)]), torch.tensor([0.5, 0.2])),
            1,
        )
        x_names = [f"I_day_{d}" for d in range(0, int(DAYS), EVERY_DAYS)]
        super().__init__(
            prior,
            self._simulate,
            name=name,
            dim_x=len(x_names),
            theta_names=["beta", "gamma"],
            x_names=x_names,
        )

    @staticmethod
    def infected(theta: Tensor) -> Tensor:
        r"""Returns the ODE's infected count ``I`` at days ``0, 17, ..., 153``, ``(n, 10)``."""
        beta, gamma = theta.double().unbind(-1)

        def f(u: Tensor) -> Tensor:
            s, i = u[:, 0], u[:, 1]
            infection = beta * s * i / POPULATION
            return torch.stack((-infection, infection - gamma * i, gamma * i), dim=1)

        n = theta.shape[0]
        u0 = torch.tensor([POPULATION - 1.0, 1.0, 0.0], dtype=torch.float64).expand(n, 3)
        per_day = round(1 / DT)
        u = rk4(f, u0, DAYS, DT, every=per_day * EVERY_DAYS)
        return u[:, 1, :10]

    def _simulate(self, theta: Tensor) -> Tensor:
        i = self.infected(theta).float()
        probs = (i / POPULATION).clamp(0.0, 1.0)
        x = torch.distributions.Binomial(TOTAL_COUNT, probs=probs.nan_to_num(0.0)).sample()
        # sbibm returns NaN rows where the solver fails
        return torch.where(torch.isfinite(i).all(1, keepdim=True), x, torch.nan)


def task(name: str = "sir") -> SIR:
    r"""Returns the SIR task."""
    return SIR(name=name)
