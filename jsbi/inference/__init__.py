r"""The old ``jsbi.inference`` face, kept for one release: its names and submodules
(``jsbi.inference.flows``, ``jsbi.inference.estimator``, ...) still import, each with a
:class:`DeprecationWarning` that names the new place.

The package is split by concept now: :mod:`jsbi.flows`, :mod:`jsbi.proxies`,
:mod:`jsbi.methods`, :mod:`jsbi.training`, :mod:`jsbi.posteriors`, with
:mod:`jsbi.objectives` and :mod:`jsbi.tau` below them and :class:`jsbi.PosteriorEstimator`
above.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

__all__: list[str] = []

#: Each old submodule -> the new modules that hold its names.
MODULES: dict[str, tuple[str, ...]] = {
    "objectives": ("jsbi.objectives",),
    "tau": ("jsbi.tau",),
    "support": ("jsbi.flows.support",),
    "flows": ("jsbi.flows.conditional", "jsbi.flows.embeddings", "jsbi.flows.support"),
    "config": ("jsbi.training.config", "jsbi.flows.config", "jsbi.methods.config"),
    "ebm": (
        "jsbi.proxies.base",
        "jsbi.proxies.ratio",
        "jsbi.proxies.likelihood",
        "jsbi.proxies.residual",
        "jsbi.proxies.mlp",
    ),
    "importance": ("jsbi.proxies.importance",),
    "estimator": ("jsbi.estimator", "jsbi.proxies.build"),
    "density": ("jsbi.density",),
    "dual": ("jsbi.methods.dual", "jsbi.training.faults"),
    "optimizers": ("jsbi.training.optimizers",),
    "state": ("jsbi.training.state",),
    "schedules": ("jsbi.methods.plans",),
    "reverse": ("jsbi.methods.reverse",),
    "trainer": (
        "jsbi.training.loop",
        "jsbi.training.data",
        "jsbi.training.stopping",
        "jsbi.methods.base",
        "jsbi.methods.npe",
        "jsbi.methods.symmetric",
    ),
    "posterior": ("jsbi.posteriors.posterior", "jsbi.posteriors.io", "jsbi.posteriors.spec"),
    "proxy_posterior": ("jsbi.posteriors.proxy",),
    "sequential": ("jsbi.posteriors.sequential",),
}

#: Names that changed.
RENAMED = {"AdaptiveConfig": "SymmetricConfig", "AdaptiveStep": "SymmetricStep"}

#: The old face's own names -> their modules now.
NAMES = {
    "PosteriorEstimator": "jsbi.estimator",
    "DensityEstimator": "jsbi.density",
    "Density": "jsbi.density",
    "Posterior": "jsbi.posteriors",
    "PosteriorLoadError": "jsbi.posteriors",
    "ProxyPosterior": "jsbi.posteriors",
    "TruncatedProposal": "jsbi.posteriors",
    "load_posterior": "jsbi.posteriors",
    "ConditionalFlow": "jsbi.flows",
    "MLPEmbedding": "jsbi.flows",
    "SetEmbedding": "jsbi.flows",
    "FlowConfig": "jsbi.flows",
    "FLOWS": "jsbi.flows",
    "Support": "jsbi.flows",
    "SUPPORT_MODES": "jsbi.flows.support",
    "build_conditional_flow": "jsbi.flows",
    "build_flow": "jsbi.flows",
    "TrainConfig": "jsbi.training",
    "train": "jsbi.training",
    "NPEStep": "jsbi.methods",
    "TrainingStep": "jsbi.methods",
    "AdaptiveConfig": "jsbi.methods",
    "AdaptiveStep": "jsbi.methods",
}


def _lookup(name: str, modules: tuple[str, ...], where: str) -> Any:
    new = RENAMED.get(name, name)
    for module in modules:
        mod = importlib.import_module(module)
        if hasattr(mod, new):
            warnings.warn(
                f"{where}.{name} moved to {module}.{new}; the old path goes in the next release",
                DeprecationWarning,
                stacklevel=3,
            )
            return getattr(mod, new)
    raise AttributeError(f"module {where!r} has no attribute {name!r}")


def __getattr__(name: str) -> Any:
    if name in NAMES:
        return _lookup(name, (NAMES[name],), __name__)
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _OldModule(types.ModuleType):
    r"""An old submodule: every name looked up in the new modules, with a warning."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _lookup(name, MODULES[self.__name__.rsplit(".", 1)[1]], self.__name__)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    r"""Imports ``jsbi.inference.<old>`` as an :class:`_OldModule`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        prefix, _, leaf = fullname.rpartition(".")
        if prefix == __name__ and leaf in MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _OldModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} is the old layout; its names live in "
            f"{', '.join(MODULES[module.__name__.rsplit('.', 1)[1]])} now",
            DeprecationWarning,
            stacklevel=2,
        )


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
