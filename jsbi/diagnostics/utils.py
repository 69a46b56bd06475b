r"""What the diagnostics share: argument checks, sbi's calling conventions, the ECDF band.

One module, so that no diagnostic imports another's private names. The seeding helper is
the package's own, :func:`jsbi.seeding.seeded`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from jsbi.seeding import seeded as seeded  # the diagnostics use it from here


@runtime_checkable
class PosteriorLike(Protocol):
    r"""What the diagnostics need of a posterior: batched sampling and batched densities.

    jsbi's :class:`~jsbi.posteriors.Posterior` and sbi's posteriors both qualify (sbi's
    extra keywords, such as ``show_progress_bars``, are passed only where accepted).
    """

    def sample_batched(self, sample_shape: Any, x: Tensor, **kwargs: Any) -> Tensor:
        r"""Samples of shape ``(*sample_shape, B, d)`` for each of ``B`` observations."""
        ...

    def log_prob_batched(self, theta: Tensor, x: Tensor, **kwargs: Any) -> Tensor:
        r"""Log densities of ``theta`` (``(S, B, d)``) under each observation's posterior."""
        ...


class MetricRows:
    r"""Mixin of the diagnostics' result classes: their :meth:`to_dict` metrics as long-format
    rows, the shape of a report's ``results.csv``."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def rows(self, method: str, observation: str = "all") -> list[dict[str, Any]]:
        r"""One row per metric: ``{"method", "observation", "metric", "value"}``."""
        return [
            {"method": method, "observation": observation, "metric": k, "value": v}
            for k, v in self.to_dict().items()
        ]


__all__: list[str] = []


def accepted_kwargs(fn: Any, **candidates: Any) -> dict[str, Any]:
    r"""Keeps the keyword arguments that ``fn`` accepts (sbi's posteriors take progress
    bar and batch size options that jsbi's do not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return candidates
    return {k: v for k, v in candidates.items() if k in params}


def check_pairs(theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    theta, x = torch.as_tensor(theta), torch.as_tensor(x)
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (N, d), got {tuple(theta.shape)}")
    if x.ndim < 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(
            f"x must have shape (N, m) with N = {theta.shape[0]} as theta, got {tuple(x.shape)}"
        )
    return theta, x


def sbi_order(first: Any, third: Any) -> bool:
    r"""Whether a ``run_sbc`` / ``run_tarp`` call uses sbi's argument order
    ``(thetas, xs, posterior)`` rather than jsbi's ``(posterior, theta, x)``."""
    return isinstance(first, Tensor) and not isinstance(third, Tensor)


def no_sbi_options(name: str, options: dict[str, Any], sbi_call: str) -> None:
    if options:
        raise TypeError(
            f"{name} got unexpected keyword(s) {sorted(options)}: sbi's options apply in "
            f"sbi's argument order, {sbi_call}"
        )


def band_points(num_ranks: int, npoints: int) -> np.ndarray:
    r"""Ranks ``k_j`` at which to evaluate the ECDF of ranks uniform on ``{0, ..., L}``:
    fixed in advance (not data-dependent) so that the simultaneous band is calibrated."""
    n = min(npoints, num_ranks)
    k = np.ceil(np.arange(1, n + 1) * num_ranks / n).astype(int) - 1
    return np.unique(k)


@functools.lru_cache(maxsize=32)
def simultaneous_band(n: int, L: int, prob: float, npoints: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The band depends on ``N``, ``L`` and the points only: computed once (arviz's
    optimisation takes about a second without numba)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz's notices on import
        from arviz.stats.ecdf_utils import ecdf_confidence_band

    k = band_points(L + 1, npoints)
    lower, upper = ecdf_confidence_band(n, k, (k + 1) / (L + 1), prob=prob, method="optimized")
    lower.flags.writeable = False
    upper.flags.writeable = False
    return lower, upper
