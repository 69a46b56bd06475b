r"""The training pairs: checked, made float32, non-finite rows dropped; the seeded split.

Example:
    >>> val, tr = split_indices(10, 0.2, 0)
    >>> len(val), len(tr)
    (2, 8)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__: list[str] = []


def check_training_data(
    theta: Tensor,
    x: Tensor,
    dim_theta: int | None = None,
    dim_x: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    r"""Validates training pairs, converts them to float32 and drops non-finite rows.

    Integer (or boolean, or float64) inputs are converted to float32 silently for floats
    and with a warning for integers, since counts are legitimate data but integer
    parameters usually indicate a mistake. Rows where ``theta`` or ``x`` has a NaN/inf are
    dropped with a warning giving their number.

    Arguments:
        theta: Parameters, shape ``(n, d)``.
        x: Data, shape ``(n, m)``.
        dim_theta: The expected ``d`` (the prior's event size), if known.
        dim_x: The expected ``m``, if known.

    Returns:
        The finite ``theta`` and ``x`` (float32) and the number of dropped rows.
    """
    theta = _as_tensor(theta, "theta")
    x = _as_tensor(x, "x")
    if theta.ndim == 1 and dim_theta == 1:
        theta = theta[:, None]
    if x.ndim == 1 and dim_x in (None, 1) and len(x) == len(theta):
        x = x[:, None]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, d), got {tuple(theta.shape)}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, m), got {tuple(x.shape)}")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"theta and x must have the same number of rows, got theta {tuple(theta.shape)} "
            f"and x {tuple(x.shape)}"
        )
    if dim_theta is not None and theta.shape[1] != dim_theta:
        raise ValueError(
            f"theta must have shape (n, {dim_theta}) to match the prior's event shape, "
            f"got {tuple(theta.shape)}"
        )
    if dim_x is not None and x.shape[1] != dim_x:
        raise ValueError(f"x must have shape (n, {dim_x}), got {tuple(x.shape)}")
    finite = torch.isfinite(theta).all(dim=1) & torch.isfinite(x).all(dim=1)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(
            f"dropped {dropped} of {len(finite)} training pairs with NaN or inf in theta or x",
            stacklevel=3,
        )
        theta, x = theta[finite], x[finite]
    if len(theta) == 0:
        raise ValueError("no finite training pairs (theta, x) left")
    return theta, x, dropped


def _as_tensor(value: Any, name: str) -> Tensor:
    t = torch.as_tensor(value)
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if not t.is_floating_point():
        warnings.warn(
            f"{name} has dtype {t.dtype}; converting to float32", UserWarning, stacklevel=4
        )
    return t.to(torch.float32)


def split_indices(
    n: int, validation_fraction: float, generator: torch.Generator | int
) -> tuple[Tensor, Tensor]:
    r"""The seeded train/validation split of :func:`train`: ``(validation, training)`` indices.

    Arguments:
        n: The number of pairs.
        validation_fraction: The held-out fraction, in ``(0, 1)``.
        generator: A seed or a generator (advanced by the split).

    Example:
        >>> val, tr = split_indices(10, 0.2, 0)
        >>> len(val), len(tr)
        (2, 8)
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(int(generator))
    n_val = int(validation_fraction * n)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"too few training pairs ({n}) for validation_fraction={validation_fraction}: "
            "need at least one validation and one training pair"
        )
    perm = torch.randperm(n, generator=generator)
    return perm[:n_val], perm[n_val:]


@torch.no_grad()
def validation_nll(flow: nn.Module, theta: Tensor, x: Tensor, batch_size: int = 4096) -> float:
    r"""Returns the mean ``-log q(theta | x)`` over pairs, in batches."""
    total = 0.0
    for i in range(0, len(theta), batch_size):
        total += -flow.log_prob(theta[i : i + batch_size], x[i : i + batch_size]).sum().item()
    return total / max(len(theta), 1)
