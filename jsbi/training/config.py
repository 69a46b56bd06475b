r"""How a posterior trains: :class:`TrainConfig`, the loop's one config object.

Example:
    >>> config = TrainConfig(learning_rate=1e-3, max_epochs=100)
    >>> config.batch_size
    200
    >>> TrainConfig.from_options({"learning_rte": 1e-3})
    Traceback (most recent call last):
    ...
    ValueError: unknown training option 'learning_rte': did you mean 'learning_rate'?
"""

from __future__ import annotations

import dataclasses

from jsbi.config import Config, option

__all__ = ["NO_EPOCH_CAP", "TrainConfig"]

#: ``max_epochs`` meaning "no cap: early stopping ends training".
NO_EPOCH_CAP = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    r"""How a posterior trains (see :func:`~jsbi.training.train`).

    Arguments:
        learning_rate: Adam's learning rate, finite and > 0.
        batch_size: Training batch size, >= 1.
        validation_fraction: Held-out fraction for early stopping, in (0, 1).
        stop_after_epochs: Early-stopping patience in epochs, >= 1.
        max_epochs: Epoch cap, >= 1 (:data:`NO_EPOCH_CAP`: none).
        clip_max_norm: Gradient-norm clip, finite and > 0, or ``None`` (off).
        recalibrate: After training, fit the flow's base temperature on the validation
            pairs (:meth:`~jsbi.posteriors.Posterior.recalibrate`); a symmetric method's
            ``posterior="auto"`` then returns the proxy or the flow, never the mixture.
    """

    what = "training"

    learning_rate: float = option(5e-4, "Adam learning rate", positive=True)
    batch_size: int = option(200, "training batch size", minimum=1)
    validation_fraction: float = option(
        0.1, "fraction of the pairs held out for early stopping", open_unit=True, advanced=True
    )
    stop_after_epochs: int = option(
        20, "early-stopping patience: epochs without a better validation loss", minimum=1
    )
    max_epochs: int = option(
        NO_EPOCH_CAP,
        "upper bound on training epochs; early stopping usually ends sooner",
        minimum=1,
    )
    clip_max_norm: float | None = option(
        5.0, "gradient-norm clip (none: off)", positive=True, optional=True, advanced=True
    )
    recalibrate: bool = option(
        False,
        "after training, fit the flow's base temperature on the validation pairs so that "
        "its credible regions cover as claimed",
    )

    @property
    def capped(self) -> bool:
        r"""Whether ``max_epochs`` is a real cap (not :data:`NO_EPOCH_CAP`)."""
        return self.max_epochs < NO_EPOCH_CAP
