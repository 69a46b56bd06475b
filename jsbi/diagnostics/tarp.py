r"""Tests of accuracy with random points (TARP), through sbi.

The computation is sbi's (``sbi.diagnostics.tarp``): for each pair a random reference
point defines balls centred on it; the fraction of posterior samples closer to the
reference than the truth is uniform when the posterior is right, and the expected
coverage probability (ECP) curve is its CDF. Samples are drawn here in chunks of pairs
with :func:`jsbi.diagnostics.sbc.draw_samples`, so any posterior with ``sample_batched``
works (sbi's ``run_tarp`` passes sbi-only keyword arguments and draws all pairs in one
call).

References:
    | Sampling-Based Accuracy Testing of Posterior Estimators for General Inference
    | (Lemos et al., 2023)
    | https://arxiv.org/abs/2302.03026
"""

from __future__ import annotations

__all__ = ["TARPResult", "plot_tarp", "run_tarp"]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jsbi.diagnostics.sbc import draw_samples
from jsbi.diagnostics.utils import (
    MetricRows,
    PosteriorLike,
    check_pairs,
    no_sbi_options,
    sbi_order,
    seeded,
)


@dataclass
class TARPResult(MetricRows):
    r"""TARP of one posterior.

    Attributes:
        ecp: Expected coverage probability at ``alpha``.
        alpha: Credibility levels.
        atc: Area between ECP and the diagonal for ``alpha > 0.5`` (sbi's ``check_tarp``):
            near 0 when calibrated, negative when over-confident, positive when
            under-confident.
        ks_pvalue: sbi's Kolmogorov-Smirnov p-value between ECP and ``alpha``.
    """

    ecp: np.ndarray
    alpha: np.ndarray
    atc: float
    ks_pvalue: float

    def to_dict(self) -> dict[str, Any]:
        return {"tarp_atc": self.atc, "tarp_ks_pvalue": self.ks_pvalue}


def tarp_from_samples(
    samples: Tensor,
    theta: Tensor,
    *,
    references: Tensor | None = None,
    num_bins: int | None = None,
    z_score_theta: bool = True,
    seed: int | None = 0,
) -> TARPResult:
    r"""TARP from posterior samples already drawn.

    Arguments:
        samples: Posterior samples, shape ``(L, N, d)``.
        theta: True parameters, shape ``(N, d)``.
        references: Reference points, shape ``(N, d)`` (default: uniform over the box
            spanned by ``theta``, as sbi).
        num_bins: Bins of the ECP curve (default ``N // 10``).
        z_score_theta: Rescale parameters to the unit box first (sbi's option).
        seed: Seeds the reference points.

    Returns:
        A :class:`TARPResult`.
    """
    from sbi.diagnostics.tarp import _run_tarp, check_tarp, get_tarp_references

    theta = torch.as_tensor(theta, dtype=torch.float32)
    samples = torch.as_tensor(samples, dtype=torch.float32)
    if samples.ndim != 3 or samples.shape[1:] != theta.shape:
        raise ValueError(
            f"samples must have shape (L, N, d) = (L, {', '.join(map(str, theta.shape))}), "
            f"got {tuple(samples.shape)}"
        )
    if theta.shape[0] < 10:
        raise ValueError(f"TARP needs at least 10 pairs, got N = {theta.shape[0]}")
    with seeded(seed):
        if references is None:
            references = get_tarp_references(theta)
        ecp, alpha = _run_tarp(
            samples, theta, references, num_bins=num_bins, z_score_theta=z_score_theta
        )
    atc, ks = check_tarp(ecp, alpha)
    return TARPResult(ecp=ecp.numpy(), alpha=alpha.numpy(), atc=float(atc), ks_pvalue=float(ks))


def run_tarp(
    posterior: PosteriorLike | Tensor,  # sbi's order: thetas first
    theta: Tensor,
    x: Tensor | PosteriorLike,  # sbi's order: the posterior third
    num_posterior_samples: int = 1000,
    *,
    batch_size: int = 100,
    num_bins: int | None = None,
    z_score_theta: bool = True,
    seed: int | None = 0,
    **sbi_kwargs: Any,
) -> TARPResult:
    r"""TARP of a posterior over prior-predictive pairs.

    Called in sbi's argument order, ``run_tarp(thetas, xs, posterior, ...)``, this is
    ``sbi.diagnostics.run_tarp`` itself (sbi's options and its ``(ecp, alpha)`` return).

    Arguments:
        posterior: Any posterior with ``sample_batched`` (jsbi or sbi).
        theta: True parameters drawn from the prior, shape ``(N, d)``.
        x: Their simulations, shape ``(N, m)``.
        num_posterior_samples: Samples per pair.
        batch_size: Pairs per ``sample_batched`` call.
        num_bins: Bins of the ECP curve (default ``N // 10``).
        z_score_theta: Rescale parameters to the unit box first.
        seed: Seeds sampling and reference points.

    Returns:
        A :class:`TARPResult`.

    Example:
        >>> result = run_tarp(posterior, theta, x, 100)
        >>> bool(-1 <= result.atc <= 1)                  # |ATC| < 0.05: calibrated
        True
    """
    if sbi_order(posterior, x):
        from sbi.diagnostics import run_tarp as sbi_run_tarp

        kwargs = {"num_posterior_samples": num_posterior_samples, "num_bins": num_bins}
        return sbi_run_tarp(
            posterior, theta, x, z_score_theta=z_score_theta, **kwargs, **sbi_kwargs
        )
    no_sbi_options("run_tarp", sbi_kwargs, "run_tarp(thetas, xs, posterior)")
    theta, x = check_pairs(theta, x)
    samples = draw_samples(posterior, x, num_posterior_samples, batch_size=batch_size, seed=seed)
    return tarp_from_samples(
        samples, theta, num_bins=num_bins, z_score_theta=z_score_theta, seed=seed
    )


def plot_tarp(
    results: TARPResult | Mapping[str, TARPResult] | Tensor, ax: Any = None, title: Any = None
) -> Any:
    r"""ECP against credibility level, one curve per method, with the diagonal.

    Called in sbi's form, ``plot_tarp(ecp, alpha, title=None)`` with tensors (what
    ``sbi.diagnostics.run_tarp`` returns), this is ``sbi.analysis.plot_tarp`` itself.

    Arguments:
        results: One result or a mapping ``method -> result``.
        ax: A matplotlib axis (created when ``None``).

    Returns:
        The axis (in sbi's form, sbi's ``(figure, axis)``).
    """
    import matplotlib.pyplot as plt

    if isinstance(results, Tensor):
        from sbi.analysis import plot_tarp as sbi_plot_tarp

        return sbi_plot_tarp(results, ax, title)
    if isinstance(results, TARPResult):
        results = {"posterior": results}
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, res in results.items():
        ax.plot(res.alpha, res.ecp, lw=1.5, label=f"{name} (ATC {res.atc:+.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage (TARP)")
    ax.set_title("TARP")
    ax.legend(fontsize=7, loc="upper left")
    return ax
