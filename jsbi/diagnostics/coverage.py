r"""Expected coverage of highest-density regions.

For a pair ``(theta*, x*)`` and ``L`` samples ``theta_l ~ q(theta | x*)``, the number
``m`` of samples denser than the truth, ``log q(theta_l | x*) > log q(theta* | x*)``,
says at which highest-density credibility level ``theta*`` is first covered: it lies in
the HPD region of level ``(k + 1) / (L + 1)`` iff ``m <= k``. For the true posterior
``m`` is uniform on ``{0, ..., L}``, so the empirical coverage equals the nominal level
at every level. Empirical coverage below nominal means the regions are too small: the
posterior is over-confident; above nominal, under-confident.

References:
    | Averting A Crisis In Simulation-Based Inference (Hermans et al., 2021)
    | https://arxiv.org/abs/2110.06581
"""

from __future__ import annotations

__all__ = ["CoverageResult", "expected_coverage", "plot_coverage"]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jsbi.diagnostics.sbc import draw_samples, log_prob_batched
from jsbi.diagnostics.utils import (
    MetricRows,
    PosteriorLike,
    band_points,
    check_pairs,
    simultaneous_band,
)


@dataclass
class CoverageResult(MetricRows):
    r"""Expected coverage curve of one posterior.

    Attributes:
        hpd_ranks: Per pair, the number of samples denser than the truth, shape ``(N,)``.
        num_posterior_samples: ``L``.
        levels: Nominal credibility levels (about 100, from 0 to 1).
        coverage: Empirical coverage at ``levels``.
        lower, upper: Simultaneous ``prob`` band of the empirical coverage of a
            calibrated posterior, at ``levels``.
        max_deviation: Empirical minus nominal coverage where its magnitude is largest
            (over all ``L + 1`` levels); negative means over-confident there.
        mean_deviation: Mean of empirical minus nominal coverage over the levels.
        outside_band: Whether the curve leaves the band.
        verdict: ``"calibrated"`` when inside the band, else ``"over-confident"`` (mean
            deviation below zero) or ``"under-confident"``.
    """

    hpd_ranks: Tensor
    num_posterior_samples: int
    levels: np.ndarray
    coverage: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    max_deviation: float
    mean_deviation: float
    outside_band: bool
    verdict: str
    prob: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage_max_deviation": self.max_deviation,
            "coverage_mean_deviation": self.mean_deviation,
            "coverage_outside_band": float(self.outside_band),
            "coverage_overconfident": float(self.verdict == "over-confident"),
            "coverage_underconfident": float(self.verdict == "under-confident"),
        }


def coverage_from_log_probs(
    log_q_samples: Tensor, log_q_true: Tensor, *, prob: float = 0.95
) -> CoverageResult:
    r"""Expected coverage from the log densities of samples and of the true parameters.

    Arguments:
        log_q_samples: ``log q(theta_l | x_i)`` of the samples, shape ``(L, N)``.
        log_q_true: ``log q(theta*_i | x_i)``, shape ``(N,)``.
        prob: Simultaneous coverage of the band.

    Returns:
        A :class:`CoverageResult`.
    """
    log_q_samples, log_q_true = torch.as_tensor(log_q_samples), torch.as_tensor(log_q_true)
    if log_q_samples.ndim != 2 or log_q_true.shape != log_q_samples.shape[1:]:
        raise ValueError(
            f"log_q_samples must have shape (L, N) and log_q_true (N,), got "
            f"{tuple(log_q_samples.shape)} and {tuple(log_q_true.shape)}"
        )
    L, n = log_q_samples.shape
    m = (log_q_samples > log_q_true).sum(dim=0)
    r = np.sort(m.numpy().astype(np.int64))
    # Every level (k + 1) / (L + 1) for the largest deviation; ~100 for curve and band.
    k_all = np.arange(L + 1)
    dev_all = np.searchsorted(r, k_all, side="right") / n - (k_all + 1) / (L + 1)
    k = band_points(L + 1, 100)
    nominal = (k + 1) / (L + 1)
    cov = np.searchsorted(r, k, side="right") / n
    lower, upper = simultaneous_band(n, L, float(prob), 100)
    outside = bool(np.any((cov < lower - 1e-12) | (cov > upper + 1e-12)))
    mean_dev = float(dev_all.mean())
    if not outside:
        verdict = "calibrated"
    else:
        verdict = "over-confident" if mean_dev < 0 else "under-confident"
    return CoverageResult(
        hpd_ranks=m,
        num_posterior_samples=L,
        levels=np.concatenate([[0.0], nominal]),
        coverage=np.concatenate([[0.0], cov]),
        lower=np.concatenate([[0.0], lower]),
        upper=np.concatenate([[0.0], upper]),
        max_deviation=float(dev_all[np.argmax(np.abs(dev_all))]),
        mean_deviation=mean_dev,
        outside_band=outside,
        verdict=verdict,
        prob=prob,
    )


def expected_coverage(
    posterior: PosteriorLike,
    theta: Tensor,
    x: Tensor,
    num_posterior_samples: int = 1000,
    *,
    batch_size: int = 100,
    seed: int | None = None,
    prob: float = 0.95,
    samples: Tensor | None = None,
) -> CoverageResult:
    r"""Expected coverage of the posterior's highest-density regions.

    Arguments:
        posterior: Any posterior with ``sample_batched`` and ``log_prob_batched``.
        theta: True parameters drawn from the prior, shape ``(N, d)``.
        x: Their simulations, shape ``(N, m)``.
        num_posterior_samples: Samples per pair ``L``.
        batch_size: Pairs per batched call.
        seed: Seeds the posterior sampling.
        prob: Simultaneous coverage of the band.
        samples: Samples already drawn, shape ``(L, N, d)`` (e.g. those of SBC).

    Returns:
        A :class:`CoverageResult`.

    Example:
        >>> result = expected_coverage(posterior, theta, x, 100)
        >>> result.verdict in ("calibrated", "over-confident", "under-confident")
        True
    """
    theta, x = check_pairs(theta, x)
    if samples is None:
        samples = draw_samples(
            posterior, x, num_posterior_samples, batch_size=batch_size, seed=seed
        )
    elif samples.ndim != 3 or samples.shape[1:] != theta.shape:
        raise ValueError(
            f"samples must have shape (L, {theta.shape[0]}, {theta.shape[1]}), "
            f"got {tuple(samples.shape)}"
        )
    # One call for truth and samples; normalising constants cancel within an observation.
    lq = log_prob_batched(
        posterior,
        torch.cat([theta[None].to(samples), samples]),
        x,
        batch_size=batch_size,
        normalize=False,
    )
    return coverage_from_log_probs(lq[1:], lq[0], prob=prob)


def plot_coverage(results: CoverageResult | Mapping[str, CoverageResult], ax: Any = None) -> Any:
    r"""Empirical against nominal coverage, one curve per method, with the diagonal and
    the band of a calibrated posterior.

    Arguments:
        results: One result or a mapping ``method -> result``.
        ax: A matplotlib axis (created when ``None``).

    Returns:
        The axis.
    """
    import matplotlib.pyplot as plt

    if isinstance(results, CoverageResult):
        results = {"posterior": results}
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    first = next(iter(results.values()))
    ax.fill_between(
        first.levels,
        first.lower,
        first.upper,
        color="0.85",
        label=f"{first.prob:.0%} band (calibrated)",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, res in results.items():
        ax.plot(res.levels, res.coverage, lw=1.5, label=f"{name} ({res.verdict})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("credibility level")
    ax.set_ylabel("empirical coverage")
    ax.set_title("expected coverage (HPD)")
    ax.legend(fontsize=7, loc="upper left")
    return ax
