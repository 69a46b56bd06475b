r"""Embedding networks for ``x``: an MLP, and a permutation-invariant set embedding.

Each built-in embedding keeps a ``config`` so that a saved posterior can rebuild it
(:func:`embedding_from_spec`); a user's own module is saved as weights only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import zuko
from torch import Tensor

__all__ = ["MLPEmbedding", "SetEmbedding"]


class MLPEmbedding(nn.Module):
    r"""A multi-layer perceptron embedding of ``x``.

    Arguments:
        in_features: The data dimension :math:`m`.
        out_features: The embedding dimension.
        hidden_features: The hidden layer widths.

    Example:
        >>> MLPEmbedding(10, 4)(torch.randn(3, 10)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 20,
        hidden_features: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.config = {
            "in_features": int(in_features),
            "out_features": int(out_features),
            "hidden_features": [int(h) for h in hidden_features],
        }
        self.net = zuko.nn.MLP(in_features, out_features, hidden_features=hidden_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SetEmbedding(nn.Module):
    r"""A permutation-invariant (DeepSets) embedding of a set of iid rows.

    The input is the flat vector jsbi's simulators return: ``(..., n_set * item_dim)``,
    read as ``n_set`` items of ``item_dim`` numbers each (item ``j`` is columns
    ``j * item_dim`` to ``(j + 1) * item_dim``). Each item goes through the same MLP
    :math:`\phi`, items are mean-pooled (so the output does not depend on their order) and
    an MLP :math:`\rho` maps the pool to the embedding. An input of shape ``(..., n_set,
    item_dim)`` is not accepted: flatten it first, so ``x`` stays one row per simulation.

    With ``moments=True`` (the default) the output also carries the items' mean and
    standard deviation per item dimension, appended to :math:`\rho`'s output: the
    sufficient statistics of the commonest iid models are then there from the first
    epoch, so the embedding does not have to learn them from few simulations.

    Arguments:
        item_dim: The number of numbers per item.
        out_features: The learned embedding dimension (the output has ``2 * item_dim``
            more with ``moments=True``).
        hidden_features: The hidden widths of :math:`\phi` and :math:`\rho`.
        latent_features: The width of the pooled representation.
        moments: Whether to append the items' mean and standard deviation.

    References:
        | Deep Sets (Zaheer et al., 2017), arXiv:1703.06114

    Example:
        >>> emb = SetEmbedding(item_dim=2, out_features=4)
        >>> x = torch.randn(5, 10 * 2)
        >>> emb(x).shape  # 4 learned + mean and std of each of the 2 item dimensions
        torch.Size([5, 8])
        >>> perm = torch.randperm(10)
        >>> x_perm = x.reshape(5, 10, 2)[:, perm].reshape(5, 20)
        >>> torch.allclose(emb(x), emb(x_perm), atol=1e-5)
        True
    """

    def __init__(
        self,
        item_dim: int,
        out_features: int = 20,
        hidden_features: Sequence[int] = (64, 64),
        latent_features: int = 64,
        moments: bool = True,
    ) -> None:
        super().__init__()
        self.config = {
            "item_dim": int(item_dim),
            "out_features": int(out_features),
            "hidden_features": [int(h) for h in hidden_features],
            "latent_features": int(latent_features),
            "moments": bool(moments),
        }
        self.item_dim = int(item_dim)
        self.moments = bool(moments)
        self.phi = zuko.nn.MLP(item_dim, latent_features, hidden_features=hidden_features)
        self.rho = zuko.nn.MLP(latent_features, out_features, hidden_features=hidden_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.item_dim != 0:
            raise ValueError(
                f"SetEmbedding expects x of shape (..., n_set * {self.item_dim}), "
                f"got last dimension {x.shape[-1]}"
            )
        items = x.reshape(*x.shape[:-1], -1, self.item_dim)
        out = self.rho(self.phi(items).mean(dim=-2))
        if self.moments:
            mean = items.mean(dim=-2)
            std = (items - mean.unsqueeze(-2)).square().mean(dim=-2).sqrt()
            out = torch.cat([out, mean, std], dim=-1)
        return out


_EMBEDDINGS: dict[str, type[nn.Module]] = {
    "MLPEmbedding": MLPEmbedding,
    "SetEmbedding": SetEmbedding,
}


def qualname(obj: Any) -> str:
    r"""``module:QualName`` of a class."""
    return f"{obj.__module__}:{obj.__qualname__}"


def embedding_spec(embedding_net: nn.Module | None) -> dict[str, Any] | None:
    r"""What a saved posterior records of its embedding: a built-in's type and
    options, a custom module's class name, ``None`` for none."""
    if embedding_net is None or isinstance(embedding_net, nn.Identity):
        return None
    name = type(embedding_net).__name__
    if type(embedding_net) in _EMBEDDINGS.values():
        return {"type": name, "kwargs": dict(embedding_net.config)}
    return {"type": "custom", "class": qualname(type(embedding_net))}


def embedding_from_spec(spec: dict[str, Any] | None) -> nn.Module | None:
    r"""Rebuilds a built-in embedding from its saved spec (``None`` for a custom one)."""
    if spec is None:
        return nn.Identity()
    if spec["type"] in _EMBEDDINGS:
        kwargs = dict(spec["kwargs"])
        if spec["type"] == "SetEmbedding":
            kwargs.setdefault("moments", False)  # saved before moments existed
        return _EMBEDDINGS[spec["type"]](**kwargs)
    return None
