r"""Richer post-hoc recalibrations of npe (1,000 simulations unless told), measured where the
calibration target is: coverage and SBC on 1,000 fresh pairs.

For each task, trains npe (seed 0) on the simulations, then changes only the flow's base
distribution (the density stays exact and normalised: the transform is kept, the base is
another normalised density) and scores each variant with
:func:`~jsbi.diagnostics.calibration.calibration` on 1,000 fresh prior-predictive pairs
(seed 10,000, the benchmark rows' pairs), 200 posterior samples each:

- ``none``: the trained flow, ``z ~ N(0, I)``;
- ``w1-temperature``: :meth:`~jsbi.posteriors.Posterior.recalibrate` with
  ``nll_tolerance=None`` (a temperature chosen on the validation pairs by the credibility
  levels' distance to uniform alone);
- ``guarded-temperature``: ``recalibrate`` as it is by default: the same distance, among
  the temperatures whose validation NLL is not worse than the trained flow's by more than
  one standard error of the paired difference;
- ``mle-temperature``: the maximum-likelihood temperature of the validation pairs' latent
  codes ``z* = f(theta*; x*)``, :math:`T^2 = \overline{|z^*|^2} / d` (a calibrated flow
  maps the joint's pairs to its base, so ``z*`` should be ``N(0, I)``; the Jacobian does
  not depend on the base, so this is also the optimum of the flow's validation NLL
  before any truncation to the prior's support);
- ``student-t``: pyro's multivariate Student-t ``t_nu(0, T^2 I)`` as the base (heavier
  tails, still radially decreasing, so credible regions keep their shape), ``(T, nu)`` by maximum
  likelihood of the latent codes over a grid.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/recalibration_families.py \
        --tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform \
        --out benchmarks/results/recalibration_families/families_1k.csv
    OMP_NUM_THREADS=1 python benchmarks/recalibration_families.py \
        --tasks two_moons,gaussian_mixture --num-simulations 10000 \
        --out benchmarks/results/recalibration_families/families_10k.csv
"""

from __future__ import annotations

import math
import types

import per_task
import torch
from pyro.distributions import MultivariateStudentT
from zuko.distributions import NormalizingFlow

import jsbi
from jsbi.diagnostics.calibration import calibration
from jsbi.seeding import seeded
from jsbi.simulators import get_task, simulate
from jsbi.training.config import TrainConfig
from jsbi.training.data import split_indices

DOFS = (1, 2, 3, 4, 6, 8, 12, 20, 35, 60, 100, 1000)
SCALES = torch.exp(torch.linspace(math.log(0.3), math.log(4.0), 200))


def student_t(loc: torch.Tensor, scale: float, nu: float) -> MultivariateStudentT:
    r"""The multivariate Student-t ``t_nu(loc, scale^2 I)`` over the last dimension (pyro's)."""
    eye = torch.eye(loc.shape[-1], dtype=loc.dtype)
    return MultivariateStudentT(torch.tensor(float(nu), dtype=loc.dtype), loc, scale * eye)


def set_base(post: jsbi.Posterior, scale: float = 1.0, nu: float | None = None) -> None:
    r"""``N(0, scale^2 I)`` (``nu=None``) or ``t_nu(0, scale^2 I)`` as the flow's base."""
    flow = post.flow
    flow.__dict__.pop("_dist", None)  # the class's Gaussian base
    flow.set_temperature(scale if nu is None else 1.0)
    post._mass.clear()  # the accepted masses of the old base (a truncated flow's NLTP)
    if nu is not None:

        def _dist(self: object, c: torch.Tensor) -> NormalizingFlow:
            dist = self.flow(c)
            return NormalizingFlow(dist.transform, student_t(dist.base.base_dist.loc, scale, nu))

        flow._dist = types.MethodType(_dist, flow)


def rows_for(name: str, n: int) -> list[dict]:
    task = get_task(name)
    theta, x = simulate(task, n, seed=0, show_progress_bar=False)
    post = jsbi.PosteriorEstimator(task.prior, seed=0).fit(theta, x, show_progress_bar=False)
    val, _ = split_indices(n, TrainConfig().validation_fraction, 0)  # the fit's own
    with seeded(10_000):
        theta_f = task.prior.sample((1000,))
        x_f = task.simulate(theta_f)
    ok = torch.isfinite(x_f).all(-1)
    with torch.no_grad():
        z, _ = post.flow.to_base(theta[val], x[val])
    d = z.shape[-1]
    zero = torch.zeros(d)
    fits = [
        (student_t(zero, s, nu).log_prob(z).sum().item(), s, nu)
        for nu in DOFS
        for s in SCALES.tolist()
    ]
    _, t_scale, t_nu = max(fits)
    w1 = post.recalibrate(theta[val], x[val], nll_tolerance=None)
    set_base(post, 1.0)  # the guard's reference is the trained flow
    guarded = post.recalibrate(theta[val], x[val])
    variants = {
        "none": (1.0, None),
        "w1-temperature": (w1, None),
        "guarded-temperature": (guarded, None),
        "mle-temperature": (math.sqrt((z**2).sum(-1).mean().item() / d), None),
        "student-t": (t_scale, t_nu),
    }
    rows = []
    for variant, (scale, nu) in variants.items():
        set_base(post, scale, nu)
        row = {"task": name, "num_simulations": n, "variant": variant, "scale": round(scale, 4)}
        row["nu"] = nu if nu is not None else math.inf
        row.update(calibration(post, theta_f[ok], x_f[ok], 200, seed=0))
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    p = per_task.parser(__doc__, "two_moons,gaussian_mixture", "recalibration_families.csv")
    per_task.run(p, lambda task, args: rows_for(task, args.num_simulations))


if __name__ == "__main__":
    main()
