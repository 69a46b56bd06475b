r"""The contract every flow keeps, for every flow name x every way to respect the support.

The checks zuko runs on its own transforms, on jsbi's whole chain ``theta -> u``
(support map, z-scoring, zuko flow): invertibility, the log-determinant against autograd's
Jacobian, a gradient reaching every parameter, a save/load round trip, and normalisation
of the density on a 2-D grid (the truncated kind renormalised by its accepted mass).
"""

from __future__ import annotations

import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Exponential, Independent, Normal

from jsbi.flows.conditional import FLOWS, build_conditional_flow
from jsbi.flows.support import SUPPORT_MODES
from jsbi.posteriors.io import load_posterior
from jsbi.posteriors.posterior import Posterior

SMALL = {"hidden_features": (16,), "num_transforms": 2, "num_bins": 4}
LOW, HIGH = torch.tensor([0.0, -1.0]), torch.tensor([2.0, 1.0])
COMBOS = [(name, mode) for name in sorted(FLOWS) for mode in SUPPORT_MODES]


def _flow(name: str, mode: str, prior=None, perturb: float = 0.3, seed: int = 0):
    torch.manual_seed(seed)
    prior = BoxUniform(LOW, HIGH) if prior is None else prior
    theta = prior.sample((200,))
    x = theta + 0.3 * torch.randn(200, 2)
    flow = build_conditional_flow(theta, x, prior, flow=name, support=mode, **SMALL)
    with torch.no_grad():  # away from the identity-like initialisation
        for p in flow.parameters():
            p.add_(perturb * torch.randn_like(p))
    return flow.eval(), prior, theta, x


def _inner(prior, n: int, margin: float = 0.05) -> torch.Tensor:
    # Points well inside the box: the transforms are tested, not the float32 edges.
    u = torch.rand(n, 2) * (1 - 2 * margin) + margin
    return prior.base_dist.low + u * (prior.base_dist.high - prior.base_dist.low)


@pytest.mark.parametrize(("name", "mode"), COMBOS)
def test_invertible(name, mode):
    # NAF inverts by bisection on [-10, 10] (zuko's MonotonicTransform): a strongly
    # perturbed network maps some points beyond it, so perturb it less.
    flow, prior, _, x = _flow(name, mode, perturb=0.05 if name == "naf" else 0.3)
    theta = _inner(prior, 64)
    with torch.no_grad():
        u, _ = flow.to_base(theta, x[:64])
        back = flow.from_base(u, x[:64])
    tol = 1e-3 if name == "naf" else 1e-4
    torch.testing.assert_close(back, theta, atol=tol, rtol=tol)


@pytest.mark.parametrize(("name", "mode"), COMBOS)
def test_log_det_matches_autograd_jacobian(name, mode):
    flow, prior, _, x = _flow(name, mode)
    theta = _inner(prior, 6).double()
    flow = flow.double()
    x = x.double()
    for i in range(len(theta)):
        jac = torch.autograd.functional.jacobian(
            lambda t, xi=x[i]: flow.to_base(t, xi)[0], theta[i]
        )
        expected = torch.linalg.slogdet(jac).logabsdet
        u, ladj = flow.to_base(theta[i], x[i])
        torch.testing.assert_close(ladj, expected, atol=1e-6, rtol=1e-6)
        # ... and log_prob is the base density plus that log-determinant.
        base = flow.flow(flow.embed(x[i])).base
        torch.testing.assert_close(
            flow.log_prob(theta[i], x[i]), base.log_prob(u) + ladj, atol=1e-6, rtol=1e-6
        )


@pytest.mark.parametrize(("name", "mode"), COMBOS)
def test_gradient_reaches_every_parameter(name, mode):
    flow, _, theta, x = _flow(name, mode, perturb=0.0)
    flow.train()
    (-flow.log_prob(theta, x).mean()).backward()
    for pname, p in flow.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "mode"), COMBOS)
def test_save_load_round_trip(name, mode, tmp_path):
    flow, prior, theta, x = _flow(name, mode, perturb=0.0 if name == "naf" else 0.3)
    post = Posterior(flow, prior, num_mass_samples=2000)
    post.save(tmp_path / "p.pt")
    same = load_posterior(tmp_path / "p.pt")
    assert same.flow.support_mode == mode and same.flow.leaks == post.flow.leaks
    assert same.num_mass_samples == 2000
    torch.testing.assert_close(same.log_prob(theta[:20], x[0]), post.log_prob(theta[:20], x[0]))
    torch.manual_seed(3)
    a = post.sample((50,), x[0])
    torch.manual_seed(3)
    b = same.sample((50,), x[0])
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("name", "mode"), COMBOS)
def test_density_integrates_to_one_on_a_2d_grid(name, mode):
    # Mildly perturbed, so the density is smooth enough for a 1000 x 1000 grid near the
    # box's edges. NAF is slow: unperturbed (its sampler inverts by bisection on [-10,
    # 10]), so smooth enough for a 400 x 400 grid, and fewer mass samples.
    naf = name == "naf"
    flow, prior, _, x = _flow(name, mode, perturb=0.0 if naf else 0.05)
    post = Posterior(flow, prior, num_mass_samples=20_000 if naf else 200_000)
    k = 400 if naf else 1000  # midpoints of a k x k grid over the box
    g0 = LOW[0] + (torch.arange(k) + 0.5) * (HIGH[0] - LOW[0]) / k
    g1 = LOW[1] + (torch.arange(k) + 0.5) * (HIGH[1] - LOW[1]) / k
    grid = torch.cartesian_prod(g0, g1)
    cell = float((HIGH - LOW).prod()) / k**2
    mass = float(post.log_prob(grid, x[0]).exp().sum()) * cell
    se = float(post.accepted_mass(x[0]).log_mass_se[0])  # 0 unless truncated
    assert abs(mass - 1) < 1e-2 + 3 * se
    if post.flow.leaks:
        # The raw flow's mass inside the box is the accepted mass, not 1.
        raw = float(flow.log_prob(grid, x[0]).detach().exp().sum()) * cell
        torch.testing.assert_close(
            torch.tensor(raw), post.accepted_mass(x[0]).mass[0], atol=1e-2 + 3 * se, rtol=0
        )


@pytest.mark.parametrize("mode", SUPPORT_MODES)
@pytest.mark.parametrize("kind", ["half-line", "real"])
def test_other_supports_invertible_and_normalised(mode, kind):
    if kind == "half-line":
        prior = Independent(Exponential(torch.ones(2)), 1)
    else:
        prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    flow, prior, theta, x = _flow("nsf", mode, prior=prior, perturb=0.1)
    with torch.no_grad():
        u, _ = flow.to_base(theta[:32], x[:32])
        torch.testing.assert_close(flow.from_base(u, x[:32]), theta[:32], atol=1e-4, rtol=1e-4)
    assert flow.support.is_bounded == (kind == "half-line")
    assert flow.leaks == (kind == "half-line" and mode == "truncate")
    post = Posterior(flow, prior, num_mass_samples=200_000)
    samples = post.sample((500,), x[0])
    assert post.flow.support.contains(samples).all()
    # Integrate on a 2-D grid; on the half-line in log theta (a change of variables made
    # here, independent of the flow's), where the density has no spike at 0 or long tail.
    k = 600
    if kind == "half-line":
        s = -14.0 + (torch.arange(k) + 0.5) * 20.0 / k
        grid = torch.cartesian_prod(s, s)
        theta, jac, cell = grid.exp(), grid.sum(-1), (20.0 / k) ** 2
    else:
        g = -12.0 + (torch.arange(k) + 0.5) * 24.0 / k
        theta, jac, cell = torch.cartesian_prod(g, g), 0.0, (24.0 / k) ** 2
    mass = float((post.log_prob(theta, x[0]) + jac).exp().sum()) * cell
    se = float(post.accepted_mass(x[0]).log_mass_se[0])
    assert abs(mass - 1) < 1e-2 + 3 * se
