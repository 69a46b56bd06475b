r"""An ensemble of conditional flows as one module, its members batched with ``vmap``.

:class:`FlowEnsemble` holds ``K`` :class:`~jsbi.flows.ConditionalFlow` s of one
architecture, each from its own initialisation, as one set of parameters with a leading
member dimension (``torch.func.stack_module_state``); one ``vmap``-ed ``functional_call``
evaluates every member at once, so ``K`` members train in one loop, one batch at a time,
not as ``K`` fits. The module is the equal-weight mixture :math:`q = \frac{1}{K}\sum_k
q_k`: ``log_prob`` by ``logsumexp``, ``sample`` by member. Mixtures are wider than their
members, which is why ensembles tend to be less over-confident (Hermans et al. 2022).
sbi trains ensemble members one by one and combines them after the fact
(``EnsemblePosterior``).

Example:
    >>> import torch
    >>> from jsbi.flows import build_conditional_flow
    >>> theta = torch.randn(200, 2); x = theta + 0.3 * torch.randn(200, 2)
    >>> members = []
    >>> for k in range(3):
    ...     _ = torch.manual_seed(k)
    ...     members.append(build_conditional_flow(theta, x, None, num_transforms=1))
    >>> ensemble = FlowEnsemble(members)
    >>> ensemble.member_log_prob(theta[:5], x[:5]).shape, ensemble.log_prob(theta[:5], x[:5]).shape
    (torch.Size([3, 5]), torch.Size([5]))

References:
    | A Trust Crisis in Simulation-Based Inference? (Hermans et al., 2022), arXiv:2110.06581
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from jsbi.flows.conditional import ConditionalFlow

__all__ = ["FlowEnsemble"]


def _key(name: str) -> str:
    # A parameter's dotted name as a ParameterDict key.
    return name.replace(".", "__")


class FlowEnsemble(nn.Module):
    r"""``K`` conditional flows of one architecture as one module with a member dimension.

    Arguments:
        members: The flows, ``K >= 2`` (each keeps its own initialisation).
    """

    def __init__(self, members: Sequence[ConditionalFlow]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        params, buffers = stack_module_state(list(members))
        self.names = list(params)
        self.weights = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in params.items()})
        for k, v in buffers.items():
            self.register_buffer("member__" + _key(k), v)
        self.buffer_names = list(buffers)
        # The architecture (not a submodule: every call takes the members' tensors).
        self._base = [copy.deepcopy(members[0])]
        first = members[0]
        self.num_members = len(members)
        self.dim_theta, self.dim_x = first.dim_theta, first.dim_x
        self.support, self.support_mode = first.support, first.support_mode
        self.leaks, self.maps = first.leaks, first.maps
        self.temperable = first.temperable
        self.config = {**first.config, "ensemble": len(members)}

    # -- the members ------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params = {k: self.weights[_key(k)] for k in self.names}
        buffers = {k: getattr(self, "member__" + _key(k)) for k in self.buffer_names}
        return params, buffers

    @property
    def theta_loc(self) -> Tensor:
        # The device the ensemble lives on (a posterior reads it there).
        return getattr(self, "member__" + _key("theta_loc"))[0]

    @property
    def temperature(self) -> Tensor:
        r"""The members' base temperature (all set together by :meth:`set_temperature`)."""
        return self.get_buffer("member__temperature")[0]

    def set_temperature(self, value: float) -> None:
        r"""Sets every member's base temperature ``T`` (``z ~ N(0, T^2 I)``)."""
        self.get_buffer("member__temperature").fill_(value)

    def member(self, k: int) -> ConditionalFlow:
        r"""Member ``k`` as a :class:`~jsbi.flows.ConditionalFlow` of its own (a copy)."""
        params, buffers = self._state()
        flow = copy.deepcopy(self._base[0]).to(self.theta_loc.device)
        with torch.no_grad():
            for name, t in {**params, **buffers}.items():
                flow.get_parameter(name).copy_(t[k]) if name in params else (
                    flow.get_buffer(name).copy_(t[k])
                )
        return flow.eval()

    def member_log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log q_k(\theta \mid x)` of every member, shape ``(K, *batch)``."""
        params, buffers = self._state()
        base = self._base[0].to(self.theta_loc.device)

        def one(p: dict, b: dict) -> Tensor:
            return functional_call(base, (p, b), (theta, x))

        return vmap(one)(params, buffers)

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""The mixture's :math:`\log \frac{1}{K} \sum_k q_k(\theta \mid x)`."""
        return torch.logsumexp(self.member_log_prob(theta, x), 0) - math.log(self.num_members)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        return self.log_prob(theta, x)

    @torch.no_grad()
    def sample(self, shape: Sequence[int], x: Tensor) -> Tensor:
        r"""Samples of the mixture: each draw, at each ``x``, from a member chosen uniformly
        (independently per draw and per row of ``x``)."""
        shape = tuple(shape)
        n = math.prod(shape)
        batch = x.shape[:-1]
        pick = torch.randint(self.num_members, (n, *batch), device=self.theta_loc.device)
        out = None
        for k in range(self.num_members):
            mask = pick == k
            m = int(mask.reshape(n, -1).sum(0).max())
            if m == 0:
                continue
            drawn = self.member(k).sample((m,), x)  # (m, *batch, d)
            if out is None:
                out = drawn.new_zeros((n, *drawn.shape[1:]))
            # The j-th draw of member k at a row goes to that row's j-th pick of k.
            rank = (mask.long().cumsum(0) - 1).clamp_min(0)
            index = rank[..., None].expand(*rank.shape, drawn.shape[-1])
            out = torch.where(mask[..., None], torch.gather(drawn, 0, index), out)
        return out.reshape(*shape, *out.shape[1:])

    def rsample_and_log_prob(self, shape: Sequence[int], x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Samples of the mixture and its log density there, without a gradient through
        the samples (an ensemble is trained by its forward KL only)."""
        theta = self.sample(shape, x)
        return theta, self.log_prob(theta, x)

    def embed(self, x: Tensor) -> Tensor:
        r"""The first member's standardised, embedded ``x`` (a typicality statistic)."""
        return self.member(0).embed(x)

    def clip_(self, max_norm: float) -> None:
        r"""Clips each member's gradient norm to ``max_norm``, as its own fit would."""
        grads = [p.grad for p in self.weights.values() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([g.reshape(len(g), -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.reshape(-1, *[1] * (g.ndim - 1)))

    @classmethod
    def from_config(cls, config: dict[str, Any], build: Any) -> FlowEnsemble:
        r"""Rebuilds an (untrained) ensemble from its config; ``build(member_config)``
        makes one member."""
        member = {k: v for k, v in config.items() if k != "ensemble"}
        return cls([build(member) for _ in range(int(config["ensemble"]))])


def build_flows(
    config: Any,
    theta: Tensor,
    x: Tensor,
    prior: Any,
    embedding_net: nn.Module | None,
    seed: int,
) -> nn.Module:
    r"""The flow a :class:`~jsbi.flows.FlowConfig` describes, standardised on ``(theta, x)``:
    one :class:`~jsbi.flows.ConditionalFlow` (on the current random stream), or with
    ``config.ensemble = K > 1`` a :class:`FlowEnsemble` whose member ``k >= 1`` is
    initialised from ``seed + k`` (with its own re-initialised copy of the embedding)."""
    from jsbi.flows.conditional import build_conditional_flow
    from jsbi.seeding import seeded

    members = []
    for k in range(config.ensemble):
        with contextlib.nullcontext() if k == 0 else seeded(seed + k, [theta.device]):
            members.append(
                build_conditional_flow(
                    theta,
                    x,
                    prior,
                    flow=config.flow,
                    embedding_net=embedding_net if k == 0 else _fresh_copy(embedding_net),
                    support=config.support,
                    **config.kwargs(),
                )
            )
    return members[0] if config.ensemble == 1 else FlowEnsemble(members)


def _fresh_copy(module: nn.Module | None) -> nn.Module | None:
    # A copy of the user's embedding for a further member, re-initialised (on the
    # member's seed) where its layers can reset themselves.
    if module is None:
        return None
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return twin
