r"""Does a set embedding lose to raw ``x`` on iid data? A check of SetEmbedding's defaults.

The model: ``theta = (mu, sigma)`` with a box prior ``[-3, 3] x [0.1, 3]``, and ``x`` is
``n_set = 10`` iid draws of ``N(mu, sigma^2)``. The exact posterior is computed on a
400 x 400 grid, which gives:

* the exact held-out NLTP (the floor every method's NLTP is compared with);
* at observations near the prior's lower bound on ``sigma`` (``sigma = 0.15``), the exact
  posterior mean of ``sigma``, against which each method's error is measured.

Each method (jsbi ``npe`` on raw ``x``, or with a :class:`~jsbi.inference.SetEmbedding`
variant) trains on the same simulations with the same seed.

Example:
    $ python benchmarks/set_embedding.py --num-simulations 2000 --seeds 0 --support transform
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

import torch
from sbi.utils import BoxUniform

from jsbi.diagnostics.c2st import nltp
from jsbi.estimator import PosteriorEstimator
from jsbi.flows.embeddings import SetEmbedding

LOW, HIGH = torch.tensor([-3.0, 0.1]), torch.tensor([3.0, 3.0])
N_SET = 10


def simulate(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    eps = torch.randn(len(theta), N_SET, generator=generator)
    return theta[:, :1] + theta[:, 1:] * eps


def exact_log_posterior(theta: torch.Tensor, x: torch.Tensor, k: int = 400) -> torch.Tensor:
    r"""``log p(theta_i | x_i)`` by normalising prior x likelihood on a ``k x k`` grid."""
    g0 = LOW[0] + (torch.arange(k) + 0.5) * (HIGH[0] - LOW[0]) / k
    g1 = LOW[1] + (torch.arange(k) + 0.5) * (HIGH[1] - LOW[1]) / k
    grid = torch.cartesian_prod(g0, g1).double()
    cell = float((HIGH - LOW).prod()) / k**2
    out = []
    for t, xi in zip(theta.double(), x.double(), strict=True):
        ll_grid = _log_lik(grid, xi)
        log_z = torch.logsumexp(ll_grid, 0) + math.log(cell)
        out.append(_log_lik(t[None], xi)[0] - log_z)
    return torch.stack(out).float()


def exact_mean(x: torch.Tensor, k: int = 400) -> torch.Tensor:
    r"""The exact posterior mean of ``theta`` at one ``x`` (grid), shape ``(2,)``."""
    g0 = LOW[0] + (torch.arange(k) + 0.5) * (HIGH[0] - LOW[0]) / k
    g1 = LOW[1] + (torch.arange(k) + 0.5) * (HIGH[1] - LOW[1]) / k
    grid = torch.cartesian_prod(g0, g1).double()
    w = torch.softmax(_log_lik(grid, x.double()), 0)
    return (w[:, None] * grid).sum(0).float()


def _log_lik(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mu, sigma = theta[:, :1], theta[:, 1:]
    z = (x[None] - mu) / sigma
    return (-0.5 * z.square() - sigma.log()).sum(-1)


VARIANTS = {
    "raw x": None,
    "SetEmbedding()": {},
    "SetEmbedding(out_features=8)": {"out_features": 8},
    "SetEmbedding(moments=False)": {"moments": False},
    "SetEmbedding(out_features=8, moments=False)": {"out_features": 8, "moments": False},
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-simulations", type=int, default=2000)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--num-test", type=int, default=500)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument(
        "--support", default=None, choices=["transform", "truncate"], help="the flow's support"
    )
    args = p.parse_args(argv)
    prior = BoxUniform(LOW, HIGH)
    print(f"{'method':<46} {'seed':>4} {'NLTP - exact':>13} {'|E sigma err|':>14} {'s':>6}")
    for seed in args.seeds:
        g = torch.Generator().manual_seed(seed)
        theta = LOW + (HIGH - LOW) * torch.rand(args.num_simulations, 2, generator=g)
        x = simulate(theta, g)
        g_test = torch.Generator().manual_seed(10_000 + seed)
        theta_t = LOW + (HIGH - LOW) * torch.rand(args.num_test, 2, generator=g_test)
        x_t = simulate(theta_t, g_test)
        exact = -exact_log_posterior(theta_t, x_t).mean()
        # Observations near the lower bound of sigma.
        theta_o = torch.tensor([[-1.0, 0.15], [0.0, 0.15], [1.0, 0.15], [2.0, 0.15]])
        x_o = simulate(theta_o, torch.Generator().manual_seed(20_000 + seed))
        means = torch.stack([exact_mean(xi) for xi in x_o])
        for name in args.variants:
            kw = VARIANTS[name]
            emb = None if kw is None else SetEmbedding(item_dim=1, **kw)
            est = PosteriorEstimator(prior, embedding_net=emb, seed=seed, support=args.support)
            start = time.perf_counter()
            post = est.fit(theta, x, show_progress_bar=False)
            t = time.perf_counter() - start
            gap = nltp(post, theta_t, x_t).mean - float(exact)
            torch.manual_seed(seed)
            err = [
                abs(float(post.sample((4000,), xi)[:, 1].mean() - m[1]))
                for xi, m in zip(x_o, means, strict=True)
            ]
            print(
                f"{name:<46} {seed:>4} {gap:>13.3f} {sum(err) / len(err):>14.4f} {t:>6.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
