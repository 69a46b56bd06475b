r"""Closed forms for Gaussians: KL, the log Chernoff coefficient and SRFE.

Exact values of what :mod:`jsbi.objectives` estimates by Monte Carlo, for
tests and examples (``gaussian_srfe`` is SRFE between two Gaussians, for instance).
"""

from __future__ import annotations

__all__ = ["gaussian_kl", "gaussian_log_chernoff", "gaussian_srfe"]


import torch
from torch import Tensor

from jsbi.tau import check_tau


def _gaussian_args(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> None:
    d = m1.shape[-1]
    for name, m in (("m1", m1), ("m2", m2)):
        if m.shape[-1] != d:
            raise ValueError(f"{name} must have last dimension d = {d}, got {tuple(m.shape)}")
    for name, S in (("S1", S1), ("S2", S2)):
        if S.shape[-2:] != (d, d):
            raise ValueError(f"{name} must have shape (..., {d}, {d}), got {tuple(S.shape)}")


def _logdet(S: Tensor) -> Tensor:
    return 2 * torch.linalg.cholesky(S).diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _quad(S: Tensor, v: Tensor) -> Tensor:
    r""":math:`v^\top S^{-1} v` by Cholesky."""
    L = torch.linalg.cholesky(S)
    z = torch.linalg.solve_triangular(L, v.unsqueeze(-1), upper=False)
    return z.squeeze(-1).square().sum(-1)


def gaussian_kl(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> Tensor:
    r"""Exact :math:`\mathrm{KL}(\mathcal{N}(m_1, S_1) \,\|\, \mathcal{N}(m_2, S_2))`.

    .. math:: \frac{1}{2} \Big[\operatorname{tr}(S_2^{-1} S_1)
        + (m_2 - m_1)^\top S_2^{-1} (m_2 - m_1) - d
        + \log \det S_2 - \log \det S_1\Big]

    Arguments:
        m1, m2: Means, shape ``(..., d)``.
        S1, S2: Covariances (symmetric positive definite), shape ``(..., d, d)``.

    Returns:
        The divergence, shape ``(...)`` (batch dimensions broadcast).

    Example:
        >>> I = torch.eye(2)
        >>> gaussian_kl(torch.zeros(2), I, torch.ones(2), I)
        tensor(1.)
    """
    _gaussian_args(m1, S1, m2, S2)
    d = m1.shape[-1]
    L2 = torch.linalg.cholesky(S2)
    trace = torch.cholesky_solve(S1, L2).diagonal(dim1=-2, dim2=-1).sum(-1)
    return 0.5 * (trace + _quad(S2, m2 - m1) - d + _logdet(S2) - _logdet(S1))


def gaussian_log_chernoff(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor, tau: float) -> Tensor:
    r"""Exact log Chernoff coefficient of two Gaussians.

    For :math:`p = \mathcal{N}(m_1, S_1)` (raised to :math:`\tau`) and
    :math:`q = \mathcal{N}(m_2, S_2)`, with :math:`M = (1 - \tau) S_1 + \tau S_2`,

    .. math:: \log c_\tau = \log \int p^\tau q^{1-\tau} \, d\theta
        = -\frac{\tau (1 - \tau)}{2} (m_1 - m_2)^\top M^{-1} (m_1 - m_2)
        - \frac{1}{2} \Big[\log \det M - (1 - \tau) \log \det S_1
        - \tau \log \det S_2\Big] .

    (The product :math:`p^\tau q^{1-\tau}` is a Gaussian kernel of precision
    :math:`\tau S_1^{-1} + (1 - \tau) S_2^{-1} = S_1^{-1} M S_2^{-1}`.)

    Arguments:
        m1, m2: Means, shape ``(..., d)``.
        S1, S2: Covariances, shape ``(..., d, d)``.
        tau: The exponent of ``p``, in :math:`[0, 1]`.

    Returns:
        :math:`\log c_\tau \le 0`, shape ``(...)``.

    Example:
        >>> I = torch.eye(1)
        >>> gaussian_log_chernoff(torch.zeros(1), I, torch.ones(1), I, 0.5)
        tensor(-0.1250)
    """
    _gaussian_args(m1, S1, m2, S2)
    tau = float(tau)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    M = (1 - tau) * S1 + tau * S2
    quad = _quad(M, m1 - m2)
    logdets = _logdet(M) - (1 - tau) * _logdet(S1) - tau * _logdet(S2)
    return -0.5 * tau * (1 - tau) * quad - 0.5 * logdets


def gaussian_srfe(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor, tau: float) -> Tensor:
    r"""Exact SRFE of two Gaussians, :math:`\mathrm{SRFE}_\tau(p \| q)`.

    .. math:: \mathrm{SRFE}_\tau(p \| q) = -\frac{\log c_\tau}{\tau (1 - \tau)},
        \qquad c_\tau = \int p^\tau q^{1-\tau}

    for :math:`p = \mathcal{N}(m_1, S_1)`, :math:`q = \mathcal{N}(m_2, S_2)`. Since
    :math:`\frac{d}{d\tau} \log c_\tau = \mathbb{E}_{p_\tau}[\log p/q]` (escort
    :math:`p_\tau \propto p^\tau q^{1-\tau}`), it tends to :math:`\mathrm{KL}(p \| q)`
    as :math:`\tau \to 1` and to :math:`\mathrm{KL}(q \| p)` as :math:`\tau \to 0`;
    by the Gibbs variational form
    :math:`\min_s [\mathrm{KL}(s \| p) / (1 - \tau) + \mathrm{KL}(s \| q) / \tau]`
    it is at most :math:`\min(\mathrm{KL}(p \| q) / \tau, \mathrm{KL}(q \| p) / (1 - \tau))`.
    In jsbi :math:`p` is the proxy ``r``, and :func:`srfe` estimates this quantity.

    Arguments:
        m1, m2: Means, shape ``(..., d)``.
        S1, S2: Covariances, shape ``(..., d, d)``.
        tau: :math:`\tau \in (0, 1)`.

    Returns:
        :math:`\mathrm{SRFE}_\tau(p \| q) \ge 0`, shape ``(...)``.

    Example:
        >>> I = torch.eye(1)
        >>> gaussian_srfe(torch.zeros(1), I, torch.ones(1), I, 0.5)
        tensor(0.5000)

    References:
        | Surprisal-Rényi Free Energy (Matsumoto et al., 2026)
        | https://arxiv.org/abs/2603.03405
    """
    tau = check_tau(tau)
    return -gaussian_log_chernoff(m1, S1, m2, S2, tau) / (tau * (1 - tau))
