r"""Progress where a scientist looks: a terminal or a notebook.

:func:`interactive` is what ``show_progress_bar=None`` means everywhere in jsbi: a
terminal (stderr is a TTY) or a Jupyter kernel, where stderr is not a TTY but a person
still watches. :func:`progress_bar` is ``tqdm.auto``'s bar (a widget in a notebook), or
tqdm's text bar where ipywidgets is missing, without tqdm's ``IProgress`` warning.
:func:`processes` reads an ``n_jobs``-style count of processes;
:func:`caught_warnings` and :func:`raise_again` carry a worker process's warnings back to
the caller, where the worker's own would be lost.

Example:
    >>> bar = progress_bar(total=3, desc="Simulating", disable=True)
    >>> bar.update(3); bar.close()
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["interactive", "progress_bar"]


def in_notebook() -> bool:
    r"""Whether this process is a Jupyter (IPython) kernel."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    r"""Whether someone is watching: stderr is a terminal, or this is a notebook kernel."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        tty = False
    return tty or in_notebook()


def progress_bar(**kwargs: Any) -> Any:
    r"""A tqdm bar: the notebook widget when ipywidgets is installed, else the text bar
    (in a notebook too, rather than tqdm's ``IProgress not found`` warning)."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(**kwargs)


def processes(n_jobs: Any, name: str = "n_jobs") -> int:
    r"""The processes an ``n_jobs``-style argument asks for: ``None`` or ``1`` is this
    process alone, a negative count joblib's meaning (``-1``: every core, ``-2``: all but
    one); zero or a non-integer is an error naming the argument."""
    import numbers

    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"{name} must be a nonzero int (-1: every core) or None, got {n_jobs!r}")
    from joblib import effective_n_jobs

    return max(1, int(effective_n_jobs(int(n_jobs))))


@contextlib.contextmanager
def caught_warnings() -> Iterator[list]:
    r"""In a worker process: records every warning raised inside, as picklable
    ``(message, category, filename, lineno, module)`` tuples, for :func:`raise_again`."""
    caught: list = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield caught
    for w in records:
        caught.append((str(w.message), w.category, w.filename, w.lineno, _module(w.filename)))


@functools.lru_cache(maxsize=256)
def _module(filename: str) -> str:
    # The dotted name of the module a warning came from (a filter's ``module`` matches
    # it, e.g. "jsbi.posteriors.proxy"), or the file's stem where none is loaded from it;
    # once per file, not per warning.
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return os.path.splitext(os.path.basename(filename))[0]


_INSIDE = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.sep + "torch" + os.sep)


def user_stacklevel() -> int:
    r"""The ``stacklevel`` that makes a warning raised by the calling function point at
    the first frame outside jsbi (and torch's wrappers, e.g. ``no_grad``): the user's
    line, however many of jsbi's frames (a subclass's sampler, a wrapper) lie between."""
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in frame.f_code.co_filename for part in _INSIDE):
        frame, level = frame.f_back, level + 1
    return level


def raise_again(caught: list) -> None:
    r"""In the caller: raises the warnings :func:`caught_warnings` recorded, each once,
    from where the worker raised it, so that the caller's filters apply as to its own."""
    for message, category, filename, lineno, module in dict.fromkeys(caught):
        warnings.warn_explicit(message, category, filename, lineno, module=module)


def side_by_side(function: Any, calls: list[tuple], jobs: int) -> Iterator[Any]:
    r"""``function(*call)`` for every call, in ``jobs`` loky processes that share the
    caller's torch threads; yields the results in order, each as it is ready, after
    raising again the warnings its worker raised (:func:`raise_again`)."""
    import torch
    from joblib import Parallel, delayed

    threads = max(1, torch.get_num_threads() // jobs)

    def run(*call: Any) -> tuple[Any, list]:
        torch.set_num_threads(threads)
        with caught_warnings() as caught:
            out = function(*call)
        return out, caught

    for out, caught in Parallel(n_jobs=jobs, backend="loky", return_as="generator")(
        delayed(run)(*call) for call in calls
    ):
        raise_again(caught)
        yield out
