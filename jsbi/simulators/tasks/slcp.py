r"""SLCP: simple likelihood, complex posterior (5 parameters, 4 bivariate Gaussian draws).

As sbibm defines it: ``theta ~ U([-3, 3]^5)``; ``x`` is 4 i.i.d. draws of
``N(m, S)`` flattened to 8 values, with ``m = (theta_1, theta_2)``, ``s_1 = theta_3^2``,
``s_2 = theta_4^2``, ``rho = tanh(theta_5)`` and
``S = [[s_1^2 + 1e-6, rho s_1 s_2], [rho s_1 s_2, s_2^2 + 1e-6]]``.

``slcp_distractors`` appends 92 distractor dimensions drawn from a fixed mixture of 20
multivariate Student-t distributions (df = 2) and shuffles the 100 columns with a fixed
permutation. sbibm drew both with ``numpy.random.seed(42)`` and pickled them
(``gmm.torch``, ``permutation_idx.torch``); :func:`distractor_parameters` redraws them from
the same seed with sbibm's code, so no pickle is loaded.

References:
    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653 (tasks "slcp", "slcp_distractors", sbibm 1.1.0)

    | Sequential Neural Likelihood (Papamakarios et al., 2019)
    | https://arxiv.org/abs/1805.07226
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from jsbi.simulators.tasks._common import SbibmTask, box_prior

__all__: list[str] = []

NUM_DRAWS = 4
NOISE_DIM = 92
NUM_COMPONENTS = 20
DF = 2.0


@lru_cache(maxsize=1)
def distractor_parameters() -> tuple[Tensor, Tensor, Tensor]:
    r"""Returns the distractors' mixture and the column permutation of ``slcp_distractors``.

    Redrawn exactly as sbibm's ``SLCP._generate_noise_dist_parameters`` drew them, from a
    private ``numpy.random.RandomState(42)`` (the global numpy state is left alone).

    Returns:
        The component locations ``(20, 92)`` and Cholesky factors ``(20, 92, 92)``
        (float64; the components are Student-t with df = 2 and equal weights), and the
        permutation ``(100,)`` (int64) applied to ``[data (8), noise (92)]``.
    """
    rng = np.random.RandomState(42)
    loc = np.array([15 * rng.normal(size=NOISE_DIM) for _ in range(NUM_COMPONENTS)])
    tril = [
        np.tril(rng.normal(size=(NOISE_DIM, NOISE_DIM)))
        + np.diag(np.exp(rng.normal(size=NOISE_DIM)))
        for _ in range(NUM_COMPONENTS)
    ]
    scale_tril = 3 * np.array(tril)
    permutation = rng.permutation(NOISE_DIM + 2 * NUM_DRAWS)
    return torch.from_numpy(loc), torch.from_numpy(scale_tril), torch.from_numpy(permutation)


class SLCP(SbibmTask):
    r"""The SLCP task, with or without the 92 distractor dimensions.

    Arguments:
        name: ``"slcp"`` or ``"slcp_distractors"``.

    Example:
        >>> t = task("slcp_distractors")
        >>> t.simulate(t.prior.sample((3,))).shape
        torch.Size([3, 100])
    """

    def __init__(self, name: str = "slcp") -> None:
        if name not in ("slcp", "slcp_distractors"):
            raise ValueError(f"name must be 'slcp' or 'slcp_distractors', got {name!r}")
        self.distractors = name == "slcp_distractors"
        dim_x = 2 * NUM_DRAWS + (NOISE_DIM if self.distractors else 0)
        super().__init__(box_prior(-3.0, 3.0, 5), self._simulate, name=name, dim_x=dim_x)

    def _simulate(self, theta: Tensor) -> Tensor:
        n = theta.shape[0]
        t = theta.double()
        s1, s2, rho = t[:, 2] ** 2, t[:, 3] ** 2, torch.tanh(t[:, 4])
        eps = 1e-6  # sbibm adds it to the diagonal
        var1, var2, cov = s1**2 + eps, s2**2 + eps, rho * s1 * s2
        # closed-form Cholesky factor of the 2x2 covariance
        l11 = var1.sqrt()
        l21 = cov / l11
        l22 = (var2 - l21**2).clamp(min=0.0).sqrt()
        z = torch.randn(n, NUM_DRAWS, 2, dtype=torch.float64)
        x1 = t[:, None, 0] + l11[:, None] * z[..., 0]
        x2 = t[:, None, 1] + l21[:, None] * z[..., 0] + l22[:, None] * z[..., 1]
        data = torch.stack((x1, x2), dim=-1).reshape(n, 2 * NUM_DRAWS).to(theta.dtype)
        if not self.distractors:
            return data
        noise = _sample_distractors(n).to(theta.dtype)
        permutation = distractor_parameters()[2]
        return torch.cat((data, noise), dim=1)[:, permutation]


def _sample_distractors(n: int) -> Tensor:
    loc, scale_tril, _ = distractor_parameters()
    k = torch.randint(NUM_COMPONENTS, (n,))
    z = torch.randn(n, NOISE_DIM, dtype=torch.float64)
    chi2 = torch.distributions.Chi2(torch.tensor(DF, dtype=torch.float64)).sample((n,))
    y = z * torch.rsqrt(chi2 / DF)[:, None]
    out = torch.empty(n, NOISE_DIM, dtype=torch.float64)
    # one matmul per component, rather than gathering n (92, 92) factors
    for j in range(NUM_COMPONENTS):
        idx = (k == j).nonzero(as_tuple=True)[0]
        if len(idx):
            out[idx] = loc[j] + y[idx] @ scale_tril[j].T
    return out


def task(name: str = "slcp") -> SLCP:
    r"""Returns the SLCP task (``name="slcp"``) or its distractor variant."""
    return SLCP(name=name)
