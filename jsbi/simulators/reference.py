r"""Reference posteriors of the built-in tasks.

Exact where the posterior has a closed form (``gaussian_linear``: Gaussian;
``gaussian_linear_uniform``: a Gaussian restricted to the prior box), and otherwise the
10,000 reference samples that sbibm ships with each observation (sbibm's
``reference_posterior_samples.csv.bz2``; rejection sampling, MCMC or SIR+rejection as
sbibm documents per task). Those files are read straight from the installed sbibm package,
which is located but never imported (importing it is fragile).

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, constraints

from jsbi.simulators.base import Task
from jsbi.simulators.tasks import TASKS

__all__: list[str] = []

ANALYTIC = ("gaussian_linear", "gaussian_linear_uniform")

# jsbi task name -> sbibm folder holding its reference samples: the task's module's name
# (a variant, e.g. slcp_distractors, lives in its base's module and shares its references).
SBIBM_FOLDERS: dict[str, str] = dict(TASKS)

SBIBM_INSTALL = 'pip install "jsbi[sbibm]" && pip install --no-deps sbibm==1.1.0'
DEFAULT_NUM_SAMPLES = 10_000


def _task(task: Task | str) -> Task:
    if isinstance(task, str):
        from jsbi.simulators.tasks import get_task

        return get_task(task)
    return task


def analytic_posterior(task: Task | str, x: Tensor) -> Distribution:
    r"""Returns the exact posterior ``p(theta | x)`` of a Gaussian-linear task.

    For ``gaussian_linear`` (prior ``N(0, p I)``, noise ``N(0, s I)``) the posterior is
    ``N(x p / (p + s), p s / (p + s) I)``; for ``gaussian_linear_uniform`` it is
    ``N(x, s I)`` restricted to the prior box (a :class:`BoxTruncatedNormal`).

    Arguments:
        task: The task, or its name (``"gaussian_linear"`` or ``"gaussian_linear_uniform"``).
        x: Observations, with shape ``(m,)`` or ``(n, m)``; the distribution's batch shape
            follows ``x.shape[:-1]``.

    Returns:
        A torch distribution with event shape ``(d,)``, with ``sample`` and ``log_prob``.

    Example:
        >>> post = analytic_posterior("gaussian_linear", torch.zeros(3, 10))
        >>> post.sample((5,)).shape
        torch.Size([5, 3, 10])
    """
    task = _task(task)
    if task.name not in ANALYTIC:
        raise ValueError(
            f"task must be one of {ANALYTIC} for an analytic posterior, got {task.name!r}"
        )
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != task.dim_x:
        raise ValueError(
            f"x must have shape ({task.dim_x},) or (n, {task.dim_x}), got {tuple(x.shape)}"
        )
    s = task.noise_var
    if task.name == "gaussian_linear":
        p = task.prior_var
        var = p * s / (p + s)
        scale_tril = math.sqrt(var) * torch.eye(task.dim_theta)
        return MultivariateNormal(x * (p / (p + s)), scale_tril=scale_tril)
    low = torch.full((task.dim_theta,), task.low)
    high = torch.full((task.dim_theta,), task.high)
    return BoxTruncatedNormal(x, math.sqrt(s), low, high)


class BoxTruncatedNormal(Distribution):
    r"""A diagonal Gaussian restricted to a box, sampled exactly by inverse CDF.

    Arguments:
        loc: Means, with shape ``(..., d)``.
        scale: Standard deviation (scalar or ``(d,)``), the same for all batch entries.
        low: Lower corner of the box, shape ``(d,)``.
        high: Upper corner of the box, shape ``(d,)``.

    Example:
        >>> q = BoxTruncatedNormal(torch.zeros(2), 1.0, -torch.ones(2), torch.ones(2))
        >>> bool(q.sample((100,)).abs().max() <= 1)
        True
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, loc: Tensor, scale: float | Tensor, low: Tensor, high: Tensor) -> None:
        self.loc = torch.as_tensor(loc)
        self.scale = torch.as_tensor(scale, dtype=self.loc.dtype).expand(self.loc.shape[-1:])
        self.low, self.high = torch.as_tensor(low), torch.as_tensor(high)
        # Computed in float64 and mirrored so that the box never sits far in the upper tail,
        # where Phi(a) ~ 1 would lose all precision.
        loc64, scale64 = self.loc.double(), self.scale.double()
        a = (self.low.double() - loc64) / scale64
        b = (self.high.double() - loc64) / scale64
        self._flip = a > 0
        self._a = torch.where(self._flip, -b, a)
        self._b = torch.where(self._flip, -a, b)
        log_cdf_a = torch.special.log_ndtr(self._a)
        log_cdf_b = torch.special.log_ndtr(self._b)
        self._log_z = log_cdf_b + torch.log1p(-torch.exp(log_cdf_a - log_cdf_b))
        super().__init__(
            batch_shape=self.loc.shape[:-1], event_shape=self.loc.shape[-1:], validate_args=False
        )

    @property
    def support(self):
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    @property
    def mean(self) -> Tensor:
        phi_a = torch.exp(-0.5 * self._a**2 - self._log_z) / math.sqrt(2 * math.pi)
        phi_b = torch.exp(-0.5 * self._b**2 - self._log_z) / math.sqrt(2 * math.pi)
        shift = (phi_a - phi_b) * torch.where(self._flip, -1.0, 1.0)
        return (self.loc.double() + self.scale.double() * shift).to(self.loc.dtype)

    def sample(self, sample_shape: tuple[int, ...] | torch.Size = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=torch.float64)
        cdf_a, cdf_b = torch.special.ndtr(self._a), torch.special.ndtr(self._b)
        z = torch.special.ndtri(cdf_a + u * (cdf_b - cdf_a))
        z = torch.minimum(torch.maximum(z, self._a), self._b)  # rounding at the edges
        z = torch.where(self._flip, -z, z)
        return (self.loc.double() + self.scale.double() * z).to(self.loc.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        value = torch.as_tensor(value)
        z = (value.double() - self.loc.double()) / self.scale.double()
        lp = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - self.scale.double().log() - self._log_z
        inside = (value >= self.low) & (value <= self.high)
        lp = torch.where(inside, lp, -math.inf).sum(-1)
        return lp.to(self.loc.dtype)


def reference_samples(
    task: Task | str, num_observation: int, num_samples: int | None = None
) -> Tensor:
    r"""Returns reference posterior samples for one of a task's observations.

    Analytic tasks (:data:`ANALYTIC`) are sampled exactly with torch's global random state;
    the others return the first ``num_samples`` of sbibm's 10,000 stored samples.

    Arguments:
        task: A built-in task or its name.
        num_observation: The observation, in ``1 .. 10``.
        num_samples: How many samples (default 10,000, all that sbibm stores).

    Returns:
        The samples, a float32 tensor with shape ``(num_samples, d)``.

    Example:
        >>> reference_samples("gaussian_linear", 1, 100).shape
        torch.Size([100, 10])
    """
    task = _task(task)
    num_observation = task._check_num(num_observation)
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if task.name in ANALYTIC:
        n = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
        x = task.observation(num_observation)[0]
        return analytic_posterior(task, x).sample((n,))
    samples = sbibm_reference_samples(task.name, num_observation)
    if num_samples is None:
        return samples
    if num_samples > len(samples):
        raise ValueError(
            f"sbibm stores {len(samples)} reference samples for {task.name!r}, "
            f"num_samples={num_samples} asks for more"
        )
    return samples[:num_samples]


def sbibm_reference_samples(name: str, num_observation: int) -> Tensor:
    r"""Reads sbibm's stored reference samples, without importing sbibm.

    Arguments:
        name: The sbibm task name (e.g. ``"two_moons"``, ``"slcp_distractors"``).
        num_observation: The observation, in ``1 .. 10``.

    Returns:
        The 10,000 stored samples, float32, shape ``(10000, d)`` (a fresh copy).
    """
    if name not in SBIBM_FOLDERS:
        raise ValueError(
            f"sbibm has no reference samples for {name!r}; known: {sorted(SBIBM_FOLDERS)}"
        )
    if not isinstance(num_observation, int) or not 1 <= num_observation <= 10:
        raise ValueError(f"num_observation must be an int in 1..10, got {num_observation!r}")
    return torch.from_numpy(_read_sbibm_samples(SBIBM_FOLDERS[name], num_observation).copy())


def _sbibm_tasks_dir() -> Path:
    spec = importlib.util.find_spec("sbibm")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "reference posterior samples of this task come from sbibm, which is not "
            f"installed; install it with: {SBIBM_INSTALL}"
        )
    return Path(spec.origin).parent / "tasks"


@lru_cache(maxsize=64)
def _read_sbibm_samples(folder: str, num_observation: int) -> np.ndarray:
    path = (
        _sbibm_tasks_dir()
        / folder
        / "files"
        / f"num_observation_{num_observation}"
        / "reference_posterior_samples.csv.bz2"
    )
    if not path.exists():
        raise FileNotFoundError(f"sbibm's reference samples are missing: {path}")
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
