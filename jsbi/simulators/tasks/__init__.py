r"""Built-in benchmark tasks, one module each, matching sbibm's definitions."""

from __future__ import annotations

import importlib

from jsbi.simulators.base import Task

__all__ = ["TASKS", "get_task"]

# name -> module under jsbi.simulators.tasks; each module defines `Task` subclass `task()`.
TASKS: dict[str, str] = {
    "gaussian_linear": "gaussian_linear",
    "gaussian_linear_uniform": "gaussian_linear_uniform",
    "two_moons": "two_moons",
    "gaussian_mixture": "gaussian_mixture",
    "slcp": "slcp",
    "slcp_distractors": "slcp",
    "bernoulli_glm": "bernoulli_glm",
    "bernoulli_glm_raw": "bernoulli_glm",
    "sir": "sir",
    "lotka_volterra": "lotka_volterra",
}


def get_task(name: str, **kwargs) -> Task:
    r"""Returns the built-in task called ``name`` (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    module = importlib.import_module(f"jsbi.simulators.tasks.{TASKS[name]}")
    return module.task(name=name, **kwargs)
