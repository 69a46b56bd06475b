r"""The training checkpoint: a run saved after every epoch, resumed bit for bit.

A checkpoint resumes only the run it belongs to: the same data, the same step config, the
same training options and seed (its fingerprint). Writes go to a fresh temporary file in
the same folder (``tempfile.mkstemp``), then replace the checkpoint, so a crash mid-write
leaves the previous one intact and a planted link at a fixed name redirects nothing.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import Tensor

from jsbi.files import atomic_save
from jsbi.methods.base import TrainingStep
from jsbi.training.config import TrainConfig
from jsbi.training.stopping import EarlyStopping

__all__: list[str] = []


class Checkpoint:
    r"""The training checkpoint of one run (``path=None``: none): resumed from when it
    exists, saved after every epoch; it resumes only the run with the same fingerprint."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        step: TrainingStep,
        theta: Tensor,
        x: Tensor,
        seed: int,
        config: TrainConfig,
    ) -> None:
        self.path = path
        self.run: dict[str, Any] = {"seed": int(seed), "n": len(theta), "fingerprint": None}
        if path is not None:
            self.run["fingerprint"] = _fingerprint(step, theta, x, seed, config)

    def resume(
        self, step: TrainingStep, stopping: EarlyStopping, generator: torch.Generator, bar: Any
    ) -> tuple[dict[str, Any], int]:
        r"""The history and the last finished epoch: the saved ones (the step, early
        stopping and the random states restored), or a fresh history and epoch 0."""
        if self.path is None or not os.path.exists(self.path):
            return {"epoch": [], "train_loss": [], "validation_loss": [], "epoch_time": []}, 0
        r = self.run
        saved = _load_checkpoint(self.path, seed=r["seed"], n=r["n"], fingerprint=r["fingerprint"])
        step.load_state_dict(saved["state"])
        stopping.load(saved)
        torch.set_rng_state(saved["rng"])
        generator.set_state(saved["generator"])
        bar.update(saved["epoch"])
        return saved["history"], saved["epoch"]

    def save(
        self,
        epoch: int,
        step: TrainingStep,
        stopping: EarlyStopping,
        history: dict[str, Any],
        generator: torch.Generator,
    ) -> None:
        if self.path is not None:
            _save_checkpoint(self.path, self.run, epoch, step, stopping, history, generator)


_CHECKPOINT_FORMAT = "jsbi-training-checkpoint-4"


def _fingerprint(
    step: TrainingStep,
    theta: Tensor,
    x: Tensor,
    seed: int,
    config: TrainConfig,
) -> str:
    r"""What makes a run this run: the data, the step's configuration and the seed.

    A checkpoint resumes only a run with the same fingerprint. ``max_epochs`` is left out
    on purpose: a finished run may be extended.
    """
    h = hashlib.sha256()
    for t in (theta, x):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    settings = step.fingerprint()
    settings["step"] = type(step).__name__
    for name, module in step.modules().items():
        settings[f"{name}:class"] = type(module).__name__
        settings[f"{name}:config"] = getattr(module, "config", None)
        settings[f"{name}:parameters"] = [tuple(p.shape) for p in module.parameters()]
    # The training options but the caps (a finished run may be extended).
    loop = config.asdict()
    for name in ("max_epochs", "stop_after_epochs"):
        loop.pop(name)
    settings.update(seed=int(seed), train=loop)
    h.update(repr(settings).encode())
    return h.hexdigest()


def _save_checkpoint(
    path: str | os.PathLike,
    run: dict[str, Any],
    epoch: int,
    step: TrainingStep,
    stopping: EarlyStopping,
    history: dict[str, Any],
    generator: torch.Generator,
) -> None:
    # Everything a resumed run needs to equal an uninterrupted one (run: its seed, size
    # and fingerprint). Write then rename: a crash mid-write leaves the previous
    # checkpoint intact.
    payload = {
        "format": _CHECKPOINT_FORMAT,
        **run,
        "epoch": epoch,
        "state": step.state_dict(),
        **stopping.state(),
        "history": history,
        "rng": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    atomic_save(payload, path)


def _load_checkpoint(
    path: str | os.PathLike, *, seed: int, n: int, fingerprint: str | None = None
) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {os.fspath(path)!r} cannot be read: {err}") from err
    if (
        isinstance(saved, dict)
        and str(saved.get("format", "")).startswith("jsbi-training-checkpoint-")
        and saved["format"] != _CHECKPOINT_FORMAT
    ):
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} was written by another version of jsbi "
            f"({saved['format']}): remove it to start afresh, or pick another path"
        )
    if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a jsbi training checkpoint")
    if saved["seed"] != seed or saved["n"] != n:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to another run (seed {saved['seed']}, "
            f"{saved['n']} pairs; this run: seed {seed}, {n} pairs): remove it or pick "
            "another path"
        )
    if fingerprint is not None and saved.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to another run: same seed and number of "
            "pairs, but other training data or another configuration (objective, flow, "
            "options). Resuming it would return that run's posterior: remove it or pick "
            "another path"
        )
    return saved
