r"""What produces ``(theta, x)``: the simulator protocol, built-in tasks, campaigns."""

from __future__ import annotations

from jsbi.simulators.base import Simulator, Task, wrap
from jsbi.simulators.priors import as_prior
from jsbi.simulators.simulate import simulate
from jsbi.simulators.tasks import TASKS, get_task

__all__ = ["TASKS", "Simulator", "Task", "as_prior", "get_task", "simulate", "wrap"]
