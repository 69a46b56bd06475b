r"""Simulation-based calibration (SBC).

For pairs ``(theta*_i, x*_i)`` drawn from the joint ``pi(theta) p(x | theta)``, the rank
of each coordinate of ``theta*_i`` among ``L`` samples of ``q(theta | x*_i)`` is uniform on
``{0, ..., L}`` when ``q`` is the true posterior. Uniformity is checked per dimension with
a Kolmogorov-Smirnov and a chi-square test, and graphically with the ECDF-difference plot
and its simultaneous confidence band (arviz), which also decides per dimension whether
the ranks are compatible with uniformity.

Sampling is batched: :func:`draw_samples` calls ``posterior.sample_batched`` on chunks of
``batch_size`` pairs, so ``N x L`` samples never go through a Python loop over pairs and
memory stays bounded by ``batch_size x L``. sbi's direct posteriors are sampled (and their
leakage factor estimated) by :func:`jsbi.diagnostics.rejection.rejection_sample`, whose
memory stays bounded where one pair's posterior leaks out of the prior's support.

References:
    | Validating Bayesian Inference Algorithms with Simulation-Based Calibration
    | (Talts et al., 2018)
    | https://arxiv.org/abs/1804.06788

    | Graphical Test for Discrete Uniformity and its Applications in Goodness of Fit
    | Evaluation and Multiple Sample Comparison (Sailynoja et al., 2022)
    | https://arxiv.org/abs/2103.10522
"""

from __future__ import annotations

__all__ = ["SBCResult", "check_sbc", "plot_sbc_ecdf", "run_sbc"]

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from jsbi.diagnostics.rejection import is_sbi_direct, rejection_sample
from jsbi.diagnostics.utils import (
    MetricRows,
    PosteriorLike,
    accepted_kwargs,
    band_points,
    check_pairs,
    no_sbi_options,
    sbi_order,
    seeded,
    simultaneous_band,
)


@torch.no_grad()
def draw_samples(
    posterior: PosteriorLike,
    x: Tensor,
    num_samples: int,
    *,
    batch_size: int = 100,
    seed: int | None = None,
) -> Tensor:
    r"""Draws ``num_samples`` posterior samples for each of ``N`` observations.

    Arguments:
        posterior: Any posterior with ``sample_batched(sample_shape, x)`` (jsbi or sbi).
        x: Observations, with shape ``(N, m)``.
        num_samples: Samples per observation ``L``.
        batch_size: Observations per ``sample_batched`` call; memory scales with
            ``batch_size x L``.
        seed: Seeds torch for the draw (the caller's random state is left as it was).

    Returns:
        The samples, with shape ``(L, N, d)``.

    Example:
        >>> draw_samples(posterior, x[:10], 100).shape      # (L, N, d)
        torch.Size([100, 10, 2])
    """
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, m), got {tuple(x.shape)}")
    if num_samples < 1 or batch_size < 1:
        raise ValueError(
            f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}"
        )
    chunks = []
    sbi_direct = is_sbi_direct(posterior)
    with seeded(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(batched sampling|Capping).*")
        for xb in x.split(batch_size):
            if sbi_direct:  # sbi's own batched rejection can take many GB
                chunks.append(rejection_sample(posterior, xb, num_samples)[0])
                continue
            kwargs = accepted_kwargs(
                posterior.sample_batched,
                show_progress_bars=False,
                max_sampling_batch_size=100_000,
            )
            s = posterior.sample_batched((num_samples,), x=xb, **kwargs)
            if s.ndim != 3 or s.shape[:2] != (num_samples, len(xb)):
                raise ValueError(
                    f"posterior.sample_batched returned shape {tuple(s.shape)}, expected "
                    f"({num_samples}, {len(xb)}, d)"
                )
            chunks.append(s.detach().cpu())
    return torch.cat(chunks, dim=1)


@torch.no_grad()
def log_prob_batched(
    posterior: PosteriorLike,
    theta: Tensor,
    x: Tensor,
    *,
    batch_size: int = 100,
    normalize: bool = True,
    num_leakage_samples: int = 1000,
) -> Tensor:
    r"""Evaluates ``log q(theta[l, i] | x[i])`` in chunks of observations.

    Arguments:
        posterior: Any posterior with ``log_prob_batched(theta, x)``.
        theta: Parameters, with shape ``(L, N, d)``.
        x: Observations, with shape ``(N, m)``.
        batch_size: Observations per call.
        normalize: For sbi posteriors, whether to renormalise for mass leaking out of
            the prior (``norm_posterior``, estimated with ``num_leakage_samples``
            samples per observation). Ranks within one observation don't need it;
            NLTP does.
        num_leakage_samples: Samples per observation for sbi's leakage correction.

    Returns:
        The log densities, with shape ``(L, N)``.
    """
    theta, x = torch.as_tensor(theta), torch.as_tensor(x)
    if theta.ndim != 3 or theta.shape[1] != x.shape[0]:
        raise ValueError(
            f"theta must have shape (L, N, d) with N = {x.shape[0]} as x, got {tuple(theta.shape)}"
        )
    kwargs = accepted_kwargs(
        posterior.log_prob_batched,
        norm_posterior=normalize,
        leakage_correction_params={
            "num_rejection_samples": num_leakage_samples,
            "rejection_sampling_batch_size": num_leakage_samples,
        },
    )
    if not normalize:
        kwargs.pop("leakage_correction_params", None)
    out = []
    own_leakage = normalize and is_sbi_direct(posterior)  # sbi's factor, in bounded memory
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(posterior samples are within|Only).*")
        for tb, xb in zip(theta.split(batch_size, dim=1), x.split(batch_size), strict=True):
            if own_leakage:
                accept = rejection_sample(posterior, xb, num_leakage_samples)[1]
                lp = posterior.log_prob_batched(tb, x=xb, norm_posterior=False)
                lp = lp.cpu() - accept.log()
            else:
                lp = posterior.log_prob_batched(tb, x=xb, **kwargs)
            if lp.shape != tb.shape[:2]:
                raise ValueError(
                    f"posterior.log_prob_batched returned shape {tuple(lp.shape)}, "
                    f"expected {tuple(tb.shape[:2])}"
                )
            out.append(lp.detach().cpu())
    return torch.cat(out, dim=1)


def sbc_ranks(samples: Tensor, theta: Tensor) -> Tensor:
    r"""Per-dimension ranks of the true parameters among posterior samples.

    Arguments:
        samples: Posterior samples, with shape ``(L, N, d)``.
        theta: True parameters, with shape ``(N, d)``.

    Returns:
        The number of samples below ``theta`` per pair and dimension, an integer tensor
        in ``[0, L]`` with shape ``(N, d)``.
    """
    if samples.ndim != 3 or samples.shape[1:] != theta.shape:
        raise ValueError(
            f"samples must have shape (L, N, d) = (L, {', '.join(map(str, theta.shape))}), "
            f"got {tuple(samples.shape)}"
        )
    return (samples < theta.to(samples)).sum(dim=0)


def run_sbc(
    posterior: PosteriorLike | Tensor,  # sbi's order: thetas first
    theta: Tensor,
    x: Tensor | PosteriorLike,  # sbi's order: the posterior third
    num_posterior_samples: int = 1000,
    *,
    batch_size: int = 100,
    seed: int | None = None,
    **sbi_kwargs: Any,
) -> Tensor:
    r"""Computes SBC ranks over prior-predictive pairs with batched sampling.

    Called in sbi's argument order, ``run_sbc(thetas, xs, posterior, ...)``, this is
    ``sbi.diagnostics.run_sbc`` itself (sbi's options and its ``(ranks, dap_samples)``
    return), so code written for sbi runs unchanged.

    Arguments:
        posterior: Any posterior with ``sample_batched`` (jsbi or sbi).
        theta: True parameters drawn from the prior, with shape ``(N, d)``.
        x: Their simulations, with shape ``(N, m)``.
        num_posterior_samples: Samples per pair ``L``.
        batch_size: Pairs per ``sample_batched`` call.
        seed: Seeds the posterior sampling.

    Returns:
        The ranks, an integer tensor with shape ``(N, d)`` and values in ``[0, L]``.

    Example:
        >>> ranks = run_sbc(posterior, theta, x, 100)
        >>> int(ranks.min()) >= 0 and int(ranks.max()) <= 100
        True
        >>> type(check_sbc(ranks, 100).calibrated)       # the verdict: True or False
        <class 'bool'>
    """
    if sbi_order(posterior, x):
        from sbi.diagnostics import run_sbc as sbi_run_sbc

        return sbi_run_sbc(posterior, theta, x, num_posterior_samples, **sbi_kwargs)
    no_sbi_options("run_sbc", sbi_kwargs, "run_sbc(thetas, xs, posterior)")
    theta, x = check_pairs(theta, x)
    samples = draw_samples(posterior, x, num_posterior_samples, batch_size=batch_size, seed=seed)
    return sbc_ranks(samples, theta)


def ecdf_band(
    ranks: np.ndarray | Tensor,
    num_posterior_samples: int,
    *,
    prob: float = 0.95,
    npoints: int = 100,
) -> dict[str, np.ndarray]:
    r"""ECDF difference of ranks against the discrete uniform, with arviz's simultaneous
    confidence band.

    Arguments:
        ranks: Ranks of one dimension, shape ``(N,)``, values in ``[0, L]``.
        num_posterior_samples: ``L``.
        prob: Simultaneous coverage of the band.
        npoints: Number of evaluation points.

    Returns:
        A dict with ``x`` (fractional ranks ``k / L``), ``diff`` (ECDF minus CDF),
        ``lower`` and ``upper`` (band, as differences) and ``outside`` (a bool array).
    """
    r = np.sort(np.asarray(ranks, dtype=np.int64).ravel())
    L = int(num_posterior_samples)
    if r.size == 0 or r.min() < 0 or r.max() > L:
        raise ValueError(f"ranks must be non-empty and lie in [0, {L}]")
    k = band_points(L + 1, npoints)
    cdf = (k + 1) / (L + 1)
    ecdf = np.searchsorted(r, k, side="right") / r.size
    lower, upper = simultaneous_band(r.size, L, float(prob), int(npoints))
    return {
        "x": k / max(L, 1),
        "diff": ecdf - cdf,
        "lower": lower - cdf,
        "upper": upper - cdf,
        "outside": (ecdf < lower - 1e-12) | (ecdf > upper + 1e-12),
    }


def dimension_prob(prob: float, d: int) -> float:
    r"""Each of ``d`` dimensions' band coverage for a verdict of coverage ``prob`` over all
    of them (Bonferroni: ``1 - (1 - prob) / d``)."""
    if not 0 < prob < 1:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    return 1 - (1 - float(prob)) / max(int(d), 1)


@dataclass
class SBCResult(MetricRows):
    r"""Ranks and uniformity checks of one posterior.

    Attributes:
        ranks: Integer ranks, shape ``(N, d)``.
        num_posterior_samples: ``L``.
        ks_pvalues: Kolmogorov-Smirnov p-values per dimension (as ``sbi.check_sbc``).
        chi2_pvalues: Chi-square p-values per dimension over ``num_bins`` rank bins.
        outside_band: Per dimension, whether the ECDF leaves its simultaneous band (of
            coverage :func:`dimension_prob`).
        prob: The verdict's simultaneous coverage over all dimensions.
        theta_names: One name per dimension.
    """

    ranks: Tensor
    num_posterior_samples: int
    ks_pvalues: np.ndarray
    chi2_pvalues: np.ndarray
    outside_band: np.ndarray
    prob: float = 0.95
    theta_names: list[str] = field(default_factory=list)

    @property
    def calibrated(self) -> bool:
        r"""Whether every dimension's ECDF stays inside its band: a calibrated posterior
        fails this with probability about ``1 - prob`` (:func:`dimension_prob`)."""
        return not bool(np.any(self.outside_band))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, name in enumerate(self.theta_names):
            out[f"sbc_ks_pvalue[{name}]"] = float(self.ks_pvalues[i])
            out[f"sbc_chi2_pvalue[{name}]"] = float(self.chi2_pvalues[i])
            out[f"sbc_outside_band[{name}]"] = float(self.outside_band[i])
        out["sbc_calibrated"] = float(self.calibrated)
        return out


def check_sbc(
    ranks: Tensor,
    num_posterior_samples: int,
    *sbi_args: Any,
    prob: float = 0.95,
    num_bins: int | None = None,
    theta_names: Sequence[str] | None = None,
    **sbi_kwargs: Any,
) -> SBCResult:
    r"""Tests the uniformity of SBC ranks per dimension.

    Called in sbi's argument order, ``check_sbc(ranks, prior_samples, dap_samples, ...)``,
    this is ``sbi.diagnostics.check_sbc`` itself, with sbi's dict of statistics.

    Arguments:
        ranks: Ranks from :func:`run_sbc`, shape ``(N, d)``, values in ``[0, L]``.
        num_posterior_samples: ``L``.
        prob: Simultaneous coverage of the verdict over all ``d`` dimensions: each
            dimension's ECDF band has coverage ``1 - (1 - prob) / d`` (Bonferroni), so a
            calibrated posterior is called out of band with probability about
            ``1 - prob`` whatever ``d`` (with one band of ``prob`` per dimension it would
            be about ``1 - prob^d``: 40% with ten parameters).
        num_bins: Rank bins of the chi-square test (default ``min(20, N // 10)``, at
            least 2).
        theta_names: One name per dimension (default ``theta_1 .. theta_d``).

    Returns:
        An :class:`SBCResult`.
    """
    if isinstance(num_posterior_samples, Tensor):
        from sbi.diagnostics import check_sbc as sbi_check_sbc

        return sbi_check_sbc(ranks, num_posterior_samples, *sbi_args, **sbi_kwargs)
    if sbi_args:
        raise TypeError(
            "check_sbc takes ranks and num_posterior_samples positionally (then keywords); "
            "sbi's order is check_sbc(ranks, prior_samples, dap_samples, ...)"
        )
    no_sbi_options("check_sbc", sbi_kwargs, "check_sbc(ranks, prior_samples, dap_samples)")
    ranks = torch.as_tensor(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must have shape (N, d), got {tuple(ranks.shape)}")
    L = int(num_posterior_samples)
    r = ranks.cpu().numpy().astype(np.int64)
    if r.min() < 0 or r.max() > L:
        raise ValueError(f"ranks must lie in [0, num_posterior_samples={L}]")
    n, d = r.shape
    names = list(theta_names) if theta_names is not None else [f"theta_{i + 1}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"theta_names must have {d} names, got {len(names)}")
    bins = max(2, min(20, n // 10, L + 1)) if num_bins is None else int(num_bins)
    # Bin edges on the integer grid; expected counts follow the exact bin widths, so the
    # test is right even when L + 1 is not a multiple of the number of bins.
    edges = np.unique(np.round(np.linspace(0, L + 1, bins + 1)).astype(int))
    expected = np.diff(edges) / (L + 1) * n
    per_dimension = dimension_prob(prob, d)
    ks, chi2, outside = [], [], []
    for j in range(d):
        ks.append(stats.kstest(r[:, j], stats.uniform(loc=0, scale=L).cdf).pvalue)
        counts = np.histogram(r[:, j], bins=edges - 0.5)[0]
        chi2.append(stats.chisquare(counts, expected).pvalue)
        outside.append(bool(ecdf_band(r[:, j], L, prob=per_dimension)["outside"].any()))
    return SBCResult(
        ranks=ranks,
        num_posterior_samples=L,
        ks_pvalues=np.asarray(ks),
        chi2_pvalues=np.asarray(chi2),
        outside_band=np.asarray(outside),
        prob=prob,
        theta_names=names,
    )


def plot_sbc_ecdf(
    result: SBCResult, axes: Any = None, *, label: str | None = None, color: str | None = None
) -> Any:
    r"""ECDF-difference plots of the ranks with simultaneous bands, one axis per dimension.

    Drawn with ``arviz.plot_ecdf`` at the same evaluation points as :func:`ecdf_band`.

    Arguments:
        result: From :func:`check_sbc`.
        axes: A sequence of ``d`` matplotlib axes (created when ``None``).
        label: A title prefix (e.g. the method).
        color: The curve's and the band's colour (the method's, in a report).

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    r = result.ranks.cpu().numpy().astype(np.int64)
    L = result.num_posterior_samples
    d = r.shape[1]
    if axes is None:
        _, axes = plt.subplots(1, d, figsize=(3.2 * d, 2.8), squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    if len(axes) != d:
        raise ValueError(f"axes must hold {d} axes, one per dimension, got {len(axes)}")
    k = band_points(L + 1, 100)
    for j, ax in enumerate(axes):
        # Fractional ranks k / L; the CDF maps them back to the integer grid.
        az.plot_ecdf(
            r[:, j] / L,
            eval_points=k / L,
            cdf=lambda v: (np.rint(np.asarray(v) * L) + 1) / (L + 1),
            difference=True,
            confidence_bands="optimized",
            ci_prob=dimension_prob(result.prob, d),  # the verdict's band
            ax=ax,
            plot_kwargs=None if color is None else {"color": color},
            fill_kwargs=None if color is None else {"color": color, "alpha": 0.2},
        )
        bad = "outside band" if result.outside_band[j] else "inside band"
        title = f"{result.theta_names[j]}: {bad}"
        ax.set_title(f"{label}: {title}" if label else title, fontsize=9)
        ax.set_xlabel("fractional rank")
    axes[0].set_ylabel("ECDF difference")
    return axes
