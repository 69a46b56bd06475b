r"""Lotka-Volterra: predator-prey dynamics observed with log-normal noise.

As sbibm defines it: ``(alpha, beta, gamma, delta)`` are LogNormal with locations
``(-0.125, -3, -0.125, -3)`` and scale 0.5; the ODE ``X' = alpha X - beta X Y``,
``Y' = -gamma Y + delta X Y`` from ``(X, Y)(0) = (30, 1)`` is solved for 20 time units and
``x ~ LogNormal(log u, 0.1)`` (``u`` clamped to ``[1e-10, 1e4]``) at times
``t_j = 0, 2.1, ..., 18.9``, first the 10 prey values then the 10 predator values.

sbibm solves the ODE in Julia (DifferentialEquations.jl through diffeqtorch), which is not
available here; this module integrates it with a batched float64 Runge-Kutta 4 scheme
(step 0.005), far more accurate than the 10% observation noise.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (task "lotka_volterra", sbibm 1.1.0)

    | Predator-prey population dynamics: the Lotka-Volterra model in Stan (Carpenter, 2018)
    | https://mc-stan.org/users/documentation/case-studies/lotka-volterra-predator-prey.html
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, LogNormal

from jsbi.simulators.tasks._common import SbibmTask, rk4

__all__: list[str] = []

T_END = 20.0
SAVE_EVERY = 21  # sbibm keeps every 21st value of its 0.1-spaced grid
DT = 0.005


class LotkaVolterra(SbibmTask):
    r"""The Lotka-Volterra task.

    Example:
        >>> t = task()
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 20])
    """

    def __init__(self, name: str = "lotka_volterra") -> None:
        prior = Independent(
            LogNormal(torch.tensor([-0.125, -3.0, -0.125, -3.0]), 0.5 * torch.ones(4)), 1
        )
        times = [round(0.1 * SAVE_EVERY * j, 1) for j in range(10)]
        x_names = [f"prey_t{t}" for t in times] + [f"predator_t{t}" for t in times]
        super().__init__(
            prior,
            self._simulate,
            name=name,
            dim_x=20,
            theta_names=["alpha", "beta", "gamma", "delta"],
            x_names=x_names,
        )

    @staticmethod
    def populations(theta: Tensor) -> Tensor:
        r"""Returns the noiseless prey, then predator values at ``t = 0, 2.1, ..., 18.9``.

        Returns:
            A float64 tensor with shape ``(n, 20)``.
        """
        alpha, beta, gamma, delta = theta.double().unbind(-1)

        def f(u: Tensor) -> Tensor:
            x, y = u[:, 0], u[:, 1]
            return torch.stack((alpha * x - beta * x * y, -gamma * y + delta * x * y), dim=1)

        n = theta.shape[0]
        u0 = torch.tensor([30.0, 1.0], dtype=torch.float64).expand(n, 2)
        u = rk4(f, u0, T_END, DT, every=round(0.1 / DT) * SAVE_EVERY)
        return u[:, :, :10].reshape(n, 20)

    def _simulate(self, theta: Tensor) -> Tensor:
        u = self.populations(theta).float()
        ok = torch.isfinite(u).all(1, keepdim=True)
        loc = torch.log(u.nan_to_num(1.0).clamp(1e-10, 10000.0))
        x = torch.exp(loc + 0.1 * torch.randn_like(loc))
        # sbibm returns NaN rows where the solver fails
        return torch.where(ok, x, torch.nan)


def task(name: str = "lotka_volterra") -> LotkaVolterra:
    r"""Returns the Lotka-Volterra task."""
    return LotkaVolterra(name=name)
