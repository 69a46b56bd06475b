r"""Any prior a scientist has, as the torch distribution jsbi needs.

jsbi's prior is a :class:`torch.distributions.Distribution` with event shape ``(d,)`` and a
``support`` (the flow respects the support: see :mod:`jsbi.flows.support`). :func:`as_prior`
turns what sbi accepts into one: a torch distribution without ``support`` (given as
``support=``), any object with ``sample`` and ``log_prob`` (wrapped by sbi's
``process_prior``, the way sbi takes a "custom prior"), or a frozen scipy distribution
(``rvs`` and ``logpdf``). :class:`~jsbi.PosteriorEstimator`, :func:`jsbi.wrap` and
:func:`jsbi.simulate` call it on their ``prior``.

Example:
    >>> import torch
    >>> from scipy import stats
    >>> prior = as_prior(stats.multivariate_normal(mean=[0.0, 0.0]))
    >>> prior.sample((3,)).shape, prior.event_shape
    (torch.Size([3, 2]), torch.Size([2]))
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

__all__ = ["as_prior"]


def as_prior(prior: Any, support: Any = None) -> Distribution:
    r"""The prior as a torch distribution with event shape ``(d,)`` and a ``support``.

    Arguments:
        prior: A torch distribution; or any object with ``sample(shape)`` and
            ``log_prob(theta)`` (torch or numpy); or a frozen scipy distribution.
        support: Its support when it has none: a torch constraint
            (``constraints.real``, ``constraints.independent(constraints.interval(lo,
            hi), 1)``, ...), or a pair ``(lower, upper)`` of bounds (``None``: the prior's
            own, else the real line for a custom prior).

    Returns:
        A torch distribution (``prior`` itself when it needs nothing).
    """
    if isinstance(support, tuple):
        support = _box(*support)
    if isinstance(prior, Distribution):
        if support is not None:
            return _WithSupport(prior, support)
        _check_support(prior)
        return prior
    if hasattr(prior, "rvs") and hasattr(prior, "logpdf") and not hasattr(prior, "sample"):
        prior = _Scipy(prior)
    if not (
        callable(getattr(prior, "sample", None)) and callable(getattr(prior, "log_prob", None))
    ):
        raise TypeError(
            f"prior must be a torch distribution (e.g. sbi.utils.BoxUniform or "
            "Independent(Normal(loc, scale), 1)), an object with sample(shape) and "
            "log_prob(theta), or a frozen scipy distribution; got "
            f"{type(prior).__name__}"
        )
    from sbi.utils import process_prior

    kwargs = {}
    if support is not None:
        lower, upper = _bounds(support)
        kwargs = {"lower_bound": lower, "upper_bound": upper}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi's notes on wrapping it
        wrapped, _, _ = process_prior(prior, custom_prior_wrapper_kwargs=kwargs)
    return wrapped


def _check_support(prior: Distribution) -> None:
    try:
        prior.support  # noqa: B018 - a property that may raise
    except NotImplementedError:
        raise ValueError(
            f"prior ({type(prior).__name__}) has no .support, which jsbi needs to keep the "
            "posterior inside it: pass it as jsbi.as_prior(prior, support=...) with a torch "
            "constraint (constraints.real, or constraints.independent(constraints.interval("
            "lower, upper), 1)) or a pair (lower, upper), or define a support property"
        ) from None


def _box(lower: Any, upper: Any) -> Any:
    lower, upper = (
        torch.as_tensor(lower, dtype=torch.float32),
        torch.as_tensor(upper, dtype=torch.float32),
    )
    return constraints.independent(constraints.interval(lower, upper), 1)


def _bounds(support: Any) -> tuple[Tensor | None, Tensor | None]:
    base = getattr(support, "base_constraint", support)
    if isinstance(base, constraints._Real):
        return None, None
    lower, upper = getattr(base, "lower_bound", None), getattr(base, "upper_bound", None)
    if lower is None or upper is None:
        raise ValueError(f"support must be real or an interval for a custom prior, got {support}")
    return torch.as_tensor(lower, dtype=torch.float32), torch.as_tensor(upper, dtype=torch.float32)


class _WithSupport(Distribution):
    r"""A torch distribution with the support it lacked."""

    def __init__(self, prior: Distribution, support: Any) -> None:
        self.prior, self._given = prior, support
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)

    @property
    def support(self) -> Any:
        return self._given

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        return self.prior.sample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.prior.log_prob(value)


class _Scipy:
    r"""A frozen scipy distribution with torch's ``sample``/``log_prob`` names (numpy
    arrays; sbi's wrapper converts them)."""

    def __init__(self, dist: Any) -> None:
        self.dist = dist

    def sample(self, sample_shape: tuple = ()) -> np.ndarray:
        n = int(np.prod(sample_shape)) if len(sample_shape) else 1
        draws = np.asarray(self.dist.rvs(size=n), dtype=np.float32).reshape(n, -1)
        return draws.reshape(*sample_shape, -1) if len(sample_shape) else draws[0]

    def log_prob(self, theta: Any) -> np.ndarray:
        theta = np.asarray(theta)
        lp = np.asarray(self.dist.logpdf(theta), dtype=np.float32)
        return lp.reshape(theta.shape[:-1])  # scipy drops a batch of one
