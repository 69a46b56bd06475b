r"""Copies of training state: the best epoch's, a fault's restore point, the proxy's best.

:func:`copy_state` is :func:`copy.deepcopy` for the nested ``state_dict`` s the trainer keeps
(modules', optimisers', the schedule's), an order of magnitude faster: it clones tensors
directly instead of going through deepcopy's per-object machinery. The loop copies its
state on every improving epoch, which made deepcopy a measurable share of a small
flow's training time.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> saved = copy_state(net.state_dict())
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> bool(torch.equal(saved["weight"] + 1.0, net.weight))
    True
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import torch

__all__: list[str] = []


def copy_state(state: Any) -> Any:
    r"""A deep copy of ``state``: tensors cloned (detached, same device and dtype), plain
    dicts and ordered dicts (with a module state dict's ``_metadata``), lists and tuples
    rebuilt, anything else (a subclass included) deep-copied."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if type(state) in (dict, collections.OrderedDict):
        out = type(state)((k, copy_state(v)) for k, v in state.items())
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:
            out._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return out
    if type(state) is list:
        return [copy_state(v) for v in state]
    if type(state) is tuple:
        return tuple(copy_state(v) for v in state)
    return copy.deepcopy(state)
