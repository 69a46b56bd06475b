r"""Batched rejection sampling of sbi's direct posteriors, in bounded memory.

sbi's ``DirectPosterior.sample_batched`` and its leakage correction draw candidates for
every observation of a batch until the observation with the lowest acceptance has
enough, and keep every accepted candidate of all the others meanwhile; the leakage
correction's rounds are (samples asked) x (observations) candidates at once, 500,000 for
NLTP at 500 pairs x 1,000 samples. Through them, the benchmark's sbi NPE units on the two
10-parameter tasks (gaussian_linear_uniform, bernoulli_glm) were killed by the kernel
at 19-24 GB in their calibration. Here each observation stops drawing once it has its
samples and keeps no more than it asked for, and a round draws at most
``max_candidates`` candidates over all observations (one round of 419,430 candidates
of a 10-parameter spline flow did not fit in 8 GB), so memory stays at
``num_samples x N x d`` plus one round. The target is sbi's own: the estimator's
distribution restricted to the prior's support, checked by sbi's ``within_support``.

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
    max_proposals: int = 10**7,
) -> tuple[Tensor, Tensor]:
    r"""``num_samples`` samples within the prior's support at each of ``N`` observations.

    Arguments:
        posterior: sbi's ``DirectPosterior``.
        x: Observations, shape ``(N, m)``.
        num_samples: Samples kept per observation ``L``.
        max_candidates: Candidates drawn per round at most, over all observations
            (one per observation where more observations are still short), which bounds
            the memory of a round.
        max_proposals: Candidates per observation after which an observation that still
            lacks samples is an error (its posterior lies almost wholly outside the
            prior's support), rather than a run that never ends.

    Returns:
        The samples, shape ``(L, N, d)``, and each observation's acceptance rate (the
        share of its candidates inside the support: sbi's leakage factor), shape ``(N,)``.
    """
    from sbi.utils.sbiutils import within_support

    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    estimator = posterior.posterior_estimator
    x = torch.as_tensor(x, dtype=torch.float32).to(posterior._device)
    x = x.reshape(-1, *estimator.condition_shape)
    n, d, L = x.shape[0], math.prod(estimator.input_shape), int(num_samples)
    out = torch.empty(L, n, d)
    count = torch.zeros(n, dtype=torch.long)
    proposed = torch.zeros(n, dtype=torch.float64)
    accepted = torch.zeros(n, dtype=torch.float64)
    while (count < L).any():
        active = (count < L).nonzero().squeeze(1)
        rate = float(((accepted[active] + 1) / (proposed[active] + 2)).min())
        need = float((L - count[active]).max())
        m = max(1, min(math.ceil(1.5 * need / rate), max_candidates // len(active)))
        candidates = estimator.sample((m,), condition=x[active]).reshape(m, len(active), d)
        ok = within_support(posterior.prior, candidates).reshape(m, len(active)).cpu()
        candidates = candidates.cpu()
        proposed[active] += m
        accepted[active] += ok.sum(0).double()
        for j, i in enumerate(active.tolist()):
            take = candidates[ok[:, j], j][: L - int(count[i])]
            out[count[i] : count[i] + len(take), i] = take
            count[i] += len(take)
        stuck = (count < L) & (proposed >= max_proposals)
        if stuck.any():
            i = int(stuck.nonzero()[0])
            rate = float(accepted[i] / proposed[i])
            raise RuntimeError(
                f"observation {i} of this batch: {int(count[i])} of {L} samples inside the "
                "prior's support "
                f"after {int(proposed[i])} candidates (acceptance {rate:.2e}); its "
                "posterior lies almost wholly outside the prior"
            )
    return out, (accepted / proposed).float()
