r"""What tells you whether to trust a posterior: SBC, expected coverage, TARP, C2ST, NLTP,
leakage, sbi's NPE as a baseline, and the comparison report.

Every diagnostic takes any posterior with ``sample_batched(shape, x)`` and
``log_prob_batched(theta, x)``: jsbi's :class:`~jsbi.posteriors.Posterior` and sbi's
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

from jsbi.diagnostics.baselines import train_sbi_npe
from jsbi.diagnostics.c2st import NLTPResult, c2st, leakage, nltp
from jsbi.diagnostics.calibration import calibration
from jsbi.diagnostics.coverage import CoverageResult, expected_coverage, plot_coverage
from jsbi.diagnostics.evidence import ModelComparison, compare_models
from jsbi.diagnostics.report import MethodResult, Report, compare
from jsbi.diagnostics.sbc import SBCResult, check_sbc, plot_sbc_ecdf, run_sbc
from jsbi.diagnostics.tarp import TARPResult, plot_tarp, run_tarp

__all__ = [
    "CoverageResult",
    "MethodResult",
    "ModelComparison",
    "NLTPResult",
    "Report",
    "SBCResult",
    "TARPResult",
    "c2st",
    "calibration",
    "compare_models",
    "check_sbc",
    "compare",
    "expected_coverage",
    "leakage",
    "nltp",
    "plot_coverage",
    "plot_sbc_ecdf",
    "plot_tarp",
    "run_sbc",
    "run_tarp",
    "train_sbi_npe",
]
