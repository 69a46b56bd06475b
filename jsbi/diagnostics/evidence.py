r"""Which simulator explains the data better: log Bayes factors from the posteriors'
likelihood proxies (docs/method.md).

Each posterior trained with a likelihood proxy carries the evidence of the model it
learned, :math:`Z(x) = \int \pi(\theta) \, l(x \mid \theta) \, d\theta`
(:meth:`~jsbi.posteriors.Posterior.log_evidence`). Two such posteriors fitted to two
simulators give, at the same data :math:`x_o`, the log Bayes factor
:math:`\log Z_A(x_o) - \log Z_B(x_o)`, with a standard error that combines both
importance-sampling errors.

Example:
    >>> bf = compare_models({"A": posterior_a, "B": posterior_b}, x_o)  # doctest: +SKIP
    >>> bf.log_bayes_factor("A", "B"), bf.best                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ModelComparison", "compare_models"]


@dataclass
class ModelComparison:
    r"""The evidence of several models at one dataset.

    Attributes:
        log_evidence: Model name -> :math:`\log Z(x_o)`.
        se: Model name -> its standard error.
    """

    log_evidence: dict[str, float]
    se: dict[str, float]

    def log_bayes_factor(self, a: str, b: str) -> tuple[float, float]:
        r""":math:`\log Z_a - \log Z_b` and its standard error (positive: ``a`` explains
        the data better)."""
        for name in (a, b):
            if name not in self.log_evidence:
                raise KeyError(f"no model {name!r}; the models are {list(self.log_evidence)}")
        value = self.log_evidence[a] - self.log_evidence[b]
        return value, math.hypot(self.se[a], self.se[b])

    @property
    def best(self) -> str:
        r"""The model of the largest evidence."""
        return max(self.log_evidence, key=self.log_evidence.__getitem__)

    def table(self) -> str:
        r"""A text table: each model's log evidence, and its log Bayes factor against the
        best with the factor's standard error."""
        best = self.best
        rows = [("model", "log evidence", "log BF vs best")]
        for name in self.log_evidence:
            bf, se = self.log_bayes_factor(name, best)
            rows.append(
                (
                    name,
                    f"{self.log_evidence[name]:.3f} ± {self.se[name]:.3f}",
                    f"{bf:+.3f} ± {se:.3f}",
                )
            )
        widths = [max(len(r[j]) for r in rows) for j in range(3)]
        return "\n".join(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        )


def compare_models(posteriors: Mapping[str, Any], x: Tensor) -> ModelComparison:
    r"""The evidence of each model (a posterior with a likelihood proxy) at the data ``x``.

    Arguments:
        posteriors: Model name -> posterior trained on that model's simulations with a
            likelihood proxy (:meth:`~jsbi.posteriors.Posterior.log_evidence`).
        x: The data, one observation of shape ``(m,)``.

    Returns:
        A :class:`ModelComparison` (``log_bayes_factor(a, b)``, ``best``, ``table()``).
    """
    if len(posteriors) < 2:
        raise ValueError(f"compare_models needs at least two models, got {len(posteriors)}")
    x = torch.as_tensor(x, dtype=torch.float32)
    log_z, se = {}, {}
    for name, posterior in posteriors.items():
        value, error = posterior.log_evidence(x.reshape(-1))
        log_z[name], se[name] = float(value[0]), float(error[0])
    return ModelComparison(log_z, se)
