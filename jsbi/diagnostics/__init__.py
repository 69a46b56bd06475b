r"""What tells you whether to trust a posterior: SBC, expected coverage, TARP, C2ST, NLTP,
leakage, sbi's NPE as a baseline, and the comparison report.

Every diagnostic takes any posterior with ``sample_batched(shape, x)`` and
``log_prob_batched(theta, x)``: jsbi's :class:`~jsbi.inference.Posterior` and sbi's
``DirectPosterior`` alike.

Example:
    >>> from jsbi.diagnostics import check_sbc, compare, run_sbc
    >>> ranks = run_sbc(posterior, theta, x, num_posterior_samples=100)
    >>> ranks.shape                                  # (pairs, parameters), ranks in [0, 100]
    torch.Size([200, 2])
    >>> type(check_sbc(ranks, 100).calibrated)       # the verdict: True or False
    <class 'bool'>
    >>> compare({"jsbi-npe": posterior, "sbi-npe": baseline}, task).save("report/")
    ... # doctest: +SKIP
"""

from __future__ import annotations

from jsbi.diagnostics.baselines import NullTracker, train_sbi_npe
from jsbi.diagnostics.c2st import NLTPResult, c2st, leakage, nltp
from jsbi.diagnostics.coverage import (
    CoverageResult,
    coverage_from_log_probs,
    expected_coverage,
    plot_coverage,
)
from jsbi.diagnostics.report import MethodResult, Report, compare
from jsbi.diagnostics.sbc import (
    SBCResult,
    check_sbc,
    draw_samples,
    ecdf_band,
    log_prob_batched,
    plot_sbc_ecdf,
    run_sbc,
    sbc_ranks,
)
from jsbi.diagnostics.tarp import TARPResult, plot_tarp, run_tarp, tarp_from_samples

__all__ = [
    "CoverageResult",
    "MethodResult",
    "NLTPResult",
    "NullTracker",
    "Report",
    "SBCResult",
    "TARPResult",
    "c2st",
    "check_sbc",
    "compare",
    "coverage_from_log_probs",
    "draw_samples",
    "ecdf_band",
    "expected_coverage",
    "leakage",
    "log_prob_batched",
    "nltp",
    "plot_coverage",
    "plot_sbc_ecdf",
    "plot_tarp",
    "run_sbc",
    "run_tarp",
    "sbc_ranks",
    "tarp_from_samples",
    "train_sbi_npe",
]


def __getattr__(name: str):
    # run_report simulates and trains: it moved up to the pipeline (jsbi.pipeline), which
    # this layer must not import; the old name still works, with a warning.
    if name == "run_report":
        import warnings

        from jsbi.pipeline import run_report

        warnings.warn(
            "jsbi.diagnostics.run_report moved to jsbi.pipeline.run_report (also jsbi.run_report)",
            FutureWarning,
            stacklevel=2,
        )
        return run_report
    raise AttributeError(f"module 'jsbi.diagnostics' has no attribute {name!r}")
