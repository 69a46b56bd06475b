r"""jsbi: simulation-based inference with adaptive symmetric objectives.

The public API, re-exported lazily so that ``import jsbi`` stays fast (sbi and the
plotting stack load only when used).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "simulate": "jsbi.simulators.simulate",
    "get_task": "jsbi.simulators",
    "wrap": "jsbi.simulators",
    "as_prior": "jsbi.simulators",
    "Simulator": "jsbi.simulators",
    "Task": "jsbi.simulators",
    "PosteriorEstimator": "jsbi.estimator",
    "DensityEstimator": "jsbi.density",
    "FlowConfig": "jsbi.flows",
    "SymmetricConfig": "jsbi.methods",
    "NPEConfig": "jsbi.methods",
    "TrainConfig": "jsbi.training",
    "Posterior": "jsbi.posteriors",
    "ProxyPosterior": "jsbi.posteriors",
    "MixturePosterior": "jsbi.posteriors",
    "TruncatedProposal": "jsbi.posteriors",
    "load_posterior": "jsbi.posteriors",
    "compare_models": "jsbi.diagnostics",
    "train_method": "jsbi.pipeline",
    "run_report": "jsbi.pipeline",
}
_SUBPACKAGES = (
    "simulators",
    "flows",
    "proxies",
    "methods",
    "training",
    "posteriors",
    "diagnostics",
)
#: The old layout's face, importable for one release (jsbi.inference), not public.
_DEPRECATED = ("inference",)

__all__ = [*_EXPORTS, *_SUBPACKAGES]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES or name in _DEPRECATED:
        return importlib.import_module(f"jsbi.{name}")
    raise AttributeError(f"module 'jsbi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
