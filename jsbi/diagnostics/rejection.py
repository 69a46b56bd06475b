r"""Batched rejection sampling of sbi's direct posteriors, in bounded memory.

sbi's ``DirectPosterior.sample_batched`` and its leakage correction draw candidates for
every observation of a batch until the observation with the lowest acceptance has
enough, and keep every accepted candidate of all the others meanwhile; the leakage
correction's rounds are (samples asked) x (observations) candidates at once, 500,000 for
NLTP at 500 pairs x 1,000 samples. Through them, the benchmark's sbi NPE units on the two
10-parameter tasks (gaussian_linear_uniform, bernoulli_glm) were killed by the kernel
at 19-24 GB in their calibration. Here the rounds are jsbi's own rejection sampler's
(:func:`jsbi.flows.support.rejection_rounds`: each observation stops drawing once it has
its samples and keeps no more than it asked for), and the flow draws at most
``max_candidates`` candidates per call (one call of 419,430 candidates of a 10-parameter
spline flow did not fit in 8 GB), so memory stays at ``num_samples x N x d`` plus one
round's candidates. The target is sbi's own: the estimator's distribution restricted to
the prior's support, checked by sbi's ``within_support``.

Example:
    >>> samples, acceptance = rejection_sample(baseline, x_test[:20], 50)  # sbi's NPE
    >>> samples.shape, acceptance.shape
    (torch.Size([50, 20, 2]), torch.Size([20]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []


def is_sbi_direct(posterior: Any) -> bool:
    r"""Whether ``posterior`` is sbi's ``DirectPosterior`` (sampled here, not by sbi)."""
    try:
        from sbi.inference.posteriors.direct_posterior import DirectPosterior
    except ImportError:  # pragma: no cover - sbi is a dependency
        return False
    return isinstance(posterior, DirectPosterior)


@torch.no_grad()
def rejection_sample(
    posterior: Any,
    x: Tensor,
    num_samples: int,
    *,
    max_candidates: int = 2**14,
    max_rounds: int = 1000,
) -> tuple[Tensor, Tensor]:
    r"""``num_samples`` samples within the prior's support at each of ``N`` observations.

    Arguments:
        posterior: sbi's ``DirectPosterior``.
        x: Observations, shape ``(N, m)``.
        num_samples: Samples kept per observation ``L``.
        max_candidates: Candidates the flow draws per call at most, which bounds its
            memory: a round that needs more makes several calls, one or more
            observations each (one observation's round may be larger by itself).
        max_rounds: Rounds after which an observation that still lacks samples is an
            error (its posterior lies almost wholly outside the prior's support), rather
            than a run that never ends.

    Returns:
        The samples, shape ``(L, N, d)``, and each observation's acceptance rate (the
        share of its candidates inside the support: sbi's leakage factor), shape ``(N,)``.
    """
    from sbi.utils.sbiutils import within_support

    from jsbi.flows.support import rejection_rounds

    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    estimator = posterior.posterior_estimator
    x = torch.as_tensor(x, dtype=torch.float32).to(posterior._device)
    x = x.reshape(-1, *estimator.condition_shape)
    d = math.prod(estimator.input_shape)

    def draw(k: int, cols: Tensor) -> Tensor:
        # k candidates per observation in cols, at most max_candidates per flow call.
        per_call = max(1, int(max_candidates) // k)
        parts = [
            estimator.sample((k,), condition=x[c]).reshape(k, len(c), d)
            for c in cols.split(per_call)
        ]
        return torch.cat(parts, dim=1)

    def contains(candidates: Tensor) -> Tensor:
        ok = within_support(posterior.prior, candidates.reshape(-1, d))
        return ok.reshape(candidates.shape[:2])

    out, accepted, drawn = rejection_rounds(
        draw,
        contains,
        int(num_samples),
        len(x),
        d,
        device=x.device,
        max_rounds=max_rounds,
        hint="its posterior lies almost wholly outside the prior",
    )
    return out.cpu(), (accepted / drawn).float().cpu()
