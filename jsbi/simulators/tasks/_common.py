r"""What the sbibm tasks share: the vendored observations, box priors, a Task base class."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources

import torch
from sbi.utils import BoxUniform
from torch import Tensor
from torch.distributions import Distribution

from jsbi.simulators.base import Task

__all__: list[str] = []

DATA_FILE = "sbibm_tasks.json"


@lru_cache(maxsize=1)
def _all_data() -> dict:
    text = resources.files("jsbi.simulators").joinpath("data", DATA_FILE).read_text()
    return json.loads(text)["tasks"]


def task_data(name: str) -> dict:
    r"""Returns the vendored sbibm data of a task (observations, true parameters, ...).

    Arguments:
        name: An sbibm task name, e.g. ``"two_moons"``.

    Returns:
        A dict with lists ``observations`` and ``true_parameters`` (10 rows each).
    """
    data = _all_data()
    if name not in data:
        raise KeyError(f"no vendored sbibm data for task {name!r}; have {sorted(data)}")
    return data[name]


def box_prior(low: float, high: float, dim: int) -> BoxUniform:
    r"""Returns the uniform prior on the box ``[low, high]^dim`` (sbi's ``BoxUniform``)."""
    return BoxUniform(low * torch.ones(dim), high * torch.ones(dim))


def rk4(f: Callable[[Tensor], Tensor], u0: Tensor, t_end: float, dt: float, every: int) -> Tensor:
    r"""Integrates the batched ODE ``du/dt = f(u)`` with classical Runge-Kutta 4.

    Arguments:
        f: The autonomous vector field, ``(n, k) -> (n, k)``.
        u0: The initial states, shape ``(n, k)``.
        t_end: The end time; the number of steps is ``round(t_end / dt)``.
        dt: The step.
        every: Save one state every ``every`` steps (``t = 0`` included).

    Returns:
        The saved states, shape ``(n, k, num_saved)``.
    """
    steps = round(t_end / dt)
    u, saved = u0, [u0]
    for i in range(1, steps + 1):
        k1 = f(u)
        k2 = f(u + 0.5 * dt * k1)
        k3 = f(u + 0.5 * dt * k2)
        k4 = f(u + dt * k3)
        u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i % every == 0:
            saved.append(u)
    return torch.stack(saved, dim=-1)


class SbibmTask(Task):
    r"""A task from sbibm: its observations and true parameters come from the vendored data.

    Subclasses pass their prior and a vectorised simulator; reference posteriors are looked
    up by :func:`jsbi.simulators.reference.reference_samples`.

    Arguments:
        prior: The prior, with event shape ``(d,)``.
        simulator: ``theta[n, d] -> x[n, m]``, drawing with torch's global random state.
        name: The sbibm name of the task.
        dim_x: The data dimension ``m``.
        theta_names: One name per parameter (default ``theta_1 .. theta_d``).
        x_names: One name per data dimension (default ``x_1 .. x_m``).
    """

    def __init__(
        self,
        prior: Distribution,
        simulator: Callable[[Tensor], Tensor],
        *,
        name: str,
        dim_x: int,
        theta_names: Sequence[str] | None = None,
        x_names: Sequence[str] | None = None,
    ) -> None:
        if x_names is None:
            x_names = [f"x_{i + 1}" for i in range(dim_x)]
        super().__init__(prior, simulator, name=name, theta_names=theta_names, x_names=x_names)

    def observation(self, num_observation: int) -> Tensor:
        i = self._check_num(num_observation)
        return torch.tensor([task_data(self.name)["observations"][i - 1]], dtype=torch.float32)

    def true_parameters(self, num_observation: int) -> Tensor:
        i = self._check_num(num_observation)
        rows = task_data(self.name)["true_parameters"]
        return torch.tensor([rows[i - 1]], dtype=torch.float32)

    def reference_samples(self, num_observation: int, num_samples: int | None = None) -> Tensor:
        from jsbi.simulators.reference import reference_samples

        return reference_samples(self, num_observation, num_samples)
