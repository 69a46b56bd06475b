r"""A posterior's calibration in one call: what every benchmark row and report carries.

:func:`calibration` draws ``num_posterior_samples`` samples at each of ``N`` held-out
prior-predictive pairs, once, and reads from them the expected coverage (its largest and
mean deviation from the nominal level, and whether the curve leaves its simultaneous 95 %
band), SBC (whether every parameter's rank ECDF stays inside its band), TARP's area to
the curve, and the negative log probability of the true parameters (NLTP) with its
standard error. An accuracy claim comes with these numbers.

Example:
    >>> cal = calibration(posterior, theta_test[:100], x_test[:100], 50)
    >>> sorted(cal)[:3]
    ['coverage_max_deviation', 'coverage_mean_deviation', 'coverage_outside_band']
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from jsbi.diagnostics.c2st import NLTPResult, nltp
from jsbi.diagnostics.coverage import coverage_from_log_probs
from jsbi.diagnostics.sbc import check_sbc, draw_samples, log_prob_batched, sbc_ranks
from jsbi.diagnostics.tarp import tarp_from_samples
from jsbi.diagnostics.utils import PosteriorLike
from jsbi.posteriors.posterior import UnnormalisableError

__all__ = ["calibration"]

#: The columns :func:`calibration` returns.
COLUMNS = (
    "coverage_max_deviation",
    "coverage_mean_deviation",
    "coverage_outside_band",
    "sbc_in_band",
    "tarp_atc",
    "nltp",
    "nltp_se",
)


def calibration(
    posterior: PosteriorLike,
    theta: Tensor,
    x: Tensor,
    num_posterior_samples: int = 200,
    *,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    r"""The calibration of ``posterior`` on held-out pairs ``(theta, x)``.

    Arguments:
        posterior: Any posterior with ``sample_batched`` and ``log_prob_batched``.
        theta: True parameters, shape ``(N, d)`` (``N >= 10``; at least 500 for a
            benchmark row).
        x: Their simulations, shape ``(N, m)``.
        num_posterior_samples: Samples per pair ``L``: coverage and SBC resolve ``1 / L``.
        batch_size: Pairs per batched sampling call.
        seed: Seeds the sampling and TARP's reference points.

    Returns:
        ``coverage_max_deviation`` (empirical minus nominal coverage where largest in
        magnitude; negative: over-confident), ``coverage_mean_deviation``,
        ``coverage_outside_band`` (bool), ``sbc_in_band`` (bool, every parameter),
        ``tarp_atc`` (near 0 when calibrated, negative when over-confident), ``nltp`` and
        ``nltp_se`` (NaN, with a warning, where a truncated flow has no draw inside the
        prior's support at some pair: its density there cannot be normalised).
    """
    theta = torch.as_tensor(theta, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32)
    L = int(num_posterior_samples)
    samples = draw_samples(posterior, x, L, batch_size=batch_size, seed=seed)
    sbc = check_sbc(sbc_ranks(samples, theta), L)
    both = torch.cat([theta[None].to(samples), samples])
    lq = log_prob_batched(posterior, both, x, batch_size=batch_size, normalize=False)
    cov = coverage_from_log_probs(lq[1:], lq[0])
    tarp = tarp_from_samples(samples, theta, seed=seed)
    try:
        loss = nltp(posterior, theta, x)
    except UnnormalisableError as e:
        # The other columns stand; the NLTP would need the density at every pair.
        warnings.warn(f"NLTP not computed (NaN): {e}", stacklevel=2)
        loss = NLTPResult(math.nan, math.nan, torch.full((len(theta),), math.nan))
    return {
        "coverage_max_deviation": cov.max_deviation,
        "coverage_mean_deviation": cov.mean_deviation,
        "coverage_outside_band": cov.outside_band,
        "sbc_in_band": sbc.calibrated,
        "tarp_atc": tarp.atc,
        "nltp": loss.mean,
        "nltp_se": loss.stderr,
    }
