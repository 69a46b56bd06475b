r"""One way to seed: a block with its own torch random stream.

Every seeded computation in jsbi runs inside :func:`seeded`: the block's draws depend on
``seed`` only, and the caller's random stream is where it was before the block. This is
the package's rule (the same seed gives the same numbers; a call never moves your RNG).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(
    seed: int | None, devices: Sequence[torch.device | str | int] | None = None
) -> Iterator[None]:
    r"""Seeds torch inside the block without moving the caller's random stream.

    Arguments:
        seed: The block's seed (``None``: no seeding, no fork; the caller's stream is
            used and moves).
        devices: Devices whose streams are forked and seeded too: pass the device a
            computation runs on (CUDA entries count; CPU ones are always included).

    Example:
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if seed is None:
        yield
        return
    cuda = [d for d in (devices or []) if torch.device(d).type == "cuda"]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        yield
