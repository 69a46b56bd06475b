r"""The free MLP energy: the ``mlp`` proxy (no prior term, an optional confinement)."""

from __future__ import annotations

from torch import Tensor

from jsbi.proxies.base import ConditionalEnergy

__all__ = ["MLPEnergy"]


class MLPEnergy(ConditionalEnergy):
    r"""A free MLP energy.

    .. math:: E_\psi(\theta, x) = h_\psi(\tilde\theta, \mathrm{embed}(\tilde x))
        + \frac{\kappa}{2} \|\tilde\theta\|^2

    with :math:`\tilde\theta, \tilde x` standardised. The optional confinement
    :math:`\kappa \ge 0` keeps :math:`e^{-E}` integrable on an unbounded domain (an MLP
    alone need not be); there is no prior term.

    Arguments:
        dim_theta: The parameter dimension ``d``.
        dim_x: The data dimension ``m``.
        confinement: :math:`\kappa \ge 0`.
        kwargs: Passed to :class:`ConditionalEnergy` (``hidden_features``,
            ``activation``, ``embedding``, ``zero_init``, statistics).

    Example:
        >>> energy = MLPEnergy(2, 3)
        >>> energy(torch.randn(10, 4, 2), torch.randn(4, 3)).shape
        torch.Size([10, 4])
    """

    def __init__(self, dim_theta: int, dim_x: int, confinement: float = 0.0, **kwargs) -> None:
        super().__init__(dim_theta, dim_x, **kwargs)
        if confinement < 0:
            raise ValueError(f"confinement must be non-negative, got {confinement}")
        self.confinement = float(confinement)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The energy :math:`E_\psi(\theta, x)`, shape ``(..., B)``."""
        energy = self.h(theta, x)
        if self.confinement > 0:
            z = (theta - self.theta_loc) / self.theta_scale
            energy = energy + 0.5 * self.confinement * z.square().sum(-1)
        return energy
