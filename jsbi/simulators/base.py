r"""The simulator and task protocol.

A :class:`Simulator` is a prior (a torch distribution with a known ``support``) and a
batched function ``theta[n, d] -> x[n, m]`` drawing from ``p(x | theta)`` with torch's
(and numpy's) global random state, which :func:`jsbi.simulate` seeds per batch. A
:class:`Task` adds what a benchmark has: numbered observations, true parameters and
reference posterior samples.

Example:
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> sim = wrap(lambda theta: theta + 0.1 * torch.randn_like(theta), prior)
    >>> sim(prior.sample((5,))).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["Simulator", "Task", "wrap"]


class Simulator:
    r"""A prior and a batched simulator.

    Arguments:
        prior: A torch distribution over parameters, with ``sample``, ``log_prob`` and
            ``support``; its event shape is ``(d,)``. Anything else
            :func:`~jsbi.simulators.priors.as_prior` accepts is wrapped.
        simulator: A function drawing ``x ~ p(x | theta)``. With ``vectorized=True`` it
            maps ``theta[n, d]`` to ``x[n, m]``; otherwise it maps one ``theta[d]`` to
            one ``x[m]`` and is called row by row. It may take and return numpy arrays
            or torch tensors (see ``numpy``).
        name: A short name, used in reports and stores.
        theta_names: One name per parameter (default ``theta_1 .. theta_d``).
        x_names: One name per data dimension (default ``x_1 .. x_m``).
        vectorized: Whether ``simulator`` is batched.
        numpy: Whether ``simulator`` takes numpy arrays (it may return either).
        version: A version string for the simulator. A store (``jsbi.simulate(...,
            store=)``) records it, or else a hash of the simulator's source code, and
            refuses to serve its pairs to a simulator that differs.
    """

    def __init__(
        self,
        prior: Distribution,
        simulator: Callable,
        *,
        name: str = "simulator",
        theta_names: Sequence[str] | None = None,
        x_names: Sequence[str] | None = None,
        vectorized: bool = True,
        numpy: bool = False,
        version: str | None = None,
    ) -> None:
        from jsbi.simulators.priors import as_prior

        prior = as_prior(prior)
        if len(prior.event_shape) != 1:
            raise ValueError(
                "prior must have a 1-D event shape (d,), got "
                f"event_shape={tuple(prior.event_shape)}"
            )
        if not callable(simulator):
            raise TypeError("simulator must be callable: theta[n, d] -> x[n, m]")
        self.prior = prior
        self._fn = simulator
        self.name = name
        self.version = version
        self.vectorized = vectorized
        self.numpy = numpy
        self.dim_theta = int(prior.event_shape[0])
        self.theta_names = _names(theta_names, "theta", self.dim_theta, "theta_names")
        self._x_names = None if x_names is None else list(x_names)

    @property
    def x_names(self) -> list[str]:
        if self._x_names is None:
            self._x_names = _names(None, "x", self.dim_x, "x_names")
        return self._x_names

    @property
    def dim_x(self) -> int:
        if self._x_names is not None:
            return len(self._x_names)
        # One simulation at a prior draw tells the data dimension; don't disturb the
        # caller's random stream for it.
        with torch.random.fork_rng():
            state = np.random.get_state()
            try:
                x = self.simulate(self.prior.sample((1,)))
            finally:
                np.random.set_state(state)
        self._x_names = _names(None, "x", x.shape[1], "x_names")
        return len(self._x_names)

    def simulate(self, theta: Tensor) -> Tensor:
        r"""Draws ``x ~ p(x | theta)`` for a batch.

        Arguments:
            theta: Parameters, with shape ``(n, d)``.

        Returns:
            The simulations, a float tensor with shape ``(n, m)``. Rows may be non-finite;
            :func:`jsbi.simulate` drops and counts them.
        """
        theta = torch.as_tensor(theta)
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(
                f"theta must have shape (n, {self.dim_theta}), got {tuple(theta.shape)}"
            )
        n = theta.shape[0]
        if self.vectorized:
            x = self._call(theta)
        else:
            rows = [self._call(t) for t in theta]
            x = torch.stack([torch.as_tensor(r).reshape(-1) for r in rows]) if rows else None
        x = _as_float_tensor(x, self.name)
        if x.ndim == 1 and n > 0 and x.shape[0] == n:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(
                f"simulator '{self.name}' must return shape (n, m) = ({n}, m) for theta of "
                f"shape {tuple(theta.shape)}, got {tuple(x.shape)}"
            )
        if self._x_names is not None and x.shape[1] != len(self._x_names):
            raise ValueError(
                f"simulator '{self.name}' returned m={x.shape[1]} columns but x_names has "
                f"{len(self._x_names)}"
            )
        return x

    __call__ = simulate

    def _call(self, theta: Tensor):
        arg = theta.detach().cpu().numpy() if self.numpy else theta
        return self._fn(arg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim_theta={self.dim_theta})"


class Task(Simulator):
    r"""A benchmark task: a simulator with numbered observations and reference posteriors.

    Subclasses implement :meth:`observation`, :meth:`true_parameters` and
    :meth:`reference_samples` for ``num_observation`` in ``1 .. num_observations``.
    """

    num_observations: int = 10

    def _check_num(self, num_observation: int) -> int:
        if not isinstance(num_observation, (int, np.integer)) or not (
            1 <= num_observation <= self.num_observations
        ):
            raise ValueError(
                f"num_observation must be an int in 1..{self.num_observations}, "
                f"got {num_observation!r}"
            )
        return int(num_observation)

    def observation(self, num_observation: int) -> Tensor:
        r"""Returns observation ``num_observation`` with shape ``(1, m)``."""
        raise NotImplementedError(f"task '{self.name}' has no observations")

    def true_parameters(self, num_observation: int) -> Tensor:
        r"""Returns the parameters that generated the observation, shape ``(1, d)``."""
        raise NotImplementedError(f"task '{self.name}' has no true parameters")

    def reference_samples(self, num_observation: int, num_samples: int | None = None) -> Tensor:
        r"""Returns reference posterior samples for an observation, shape ``(n, d)``."""
        raise NotImplementedError(f"task '{self.name}' has no reference posterior")


def wrap(
    simulator: Callable,
    prior: Distribution,
    *,
    vectorized: bool = True,
    numpy: bool = False,
    name: str | None = None,
    theta_names: Sequence[str] | None = None,
    x_names: Sequence[str] | None = None,
    version: str | None = None,
) -> Simulator:
    r"""Wraps a user's simulator in one line.

    Arguments:
        simulator: ``theta[n, d] -> x[n, m]`` (or ``theta[d] -> x[m]`` with
            ``vectorized=False``), torch or numpy.
        prior: The prior, a torch distribution with event shape ``(d,)``.
        name: A short name (default: the function's ``__name__``).
        version: See :class:`Simulator`.

    Returns:
        A :class:`Simulator`.

    Example:
        >>> import numpy as np, torch
        >>> from sbi.utils import BoxUniform
        >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
        >>> sim = wrap(lambda t: t + np.random.randn(*t.shape), prior, numpy=True)
        >>> sim(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    if name is None:
        name = getattr(simulator, "__name__", "simulator")
        name = "simulator" if name == "<lambda>" else name
    return Simulator(
        prior,
        simulator,
        name=name,
        theta_names=theta_names,
        x_names=x_names,
        vectorized=vectorized,
        numpy=numpy,
        version=version,
    )


def simulator_fingerprint(simulator: Any) -> str:
    r"""What identifies a simulator: its ``version`` if it has one, else a hash of what it
    computes with: the source of its function (the wrapped function, or the object's
    class) and of the module-level functions it calls (to depth 4), and the data it was
    built with: closure cells, ``functools.partial`` arguments, defaults, a callable
    object's public attributes (those not starting with ``_``: counters and caches are
    bookkeeping), a module's weights.

    Objects that are not data (a lock, a random generator, a file) enter by their type.
    Module constants and whatever is read at run time are not hashed: the store
    (:func:`jsbi.simulate`) re-simulates a few seeded rows on resume, which catches them.

    Example:
        >>> import functools
        >>> def model(t, scale): return scale * t
        >>> a = simulator_fingerprint(functools.partial(model, scale=1.0))
        >>> a == simulator_fingerprint(functools.partial(model, scale=100.0))
        False
        >>> simulator_fingerprint(type("S", (), {"version": "2.1"})())
        'version:2.1'
    """
    version = getattr(simulator, "version", None)
    if version is not None:
        return f"version:{version}"
    fn = getattr(simulator, "_fn", None) or simulator
    h = hashlib.sha256()
    _digest(fn, h, 0, set())
    return "code:" + h.hexdigest()[:16]


def legacy_fingerprint(simulator: Any) -> str:
    r"""The fingerprint stores written before :func:`simulator_fingerprint` saw data: the
    hash of the simulate function's source (a store that has it is still resumed)."""
    fn = getattr(simulator, "_fn", None) or getattr(type(simulator), "simulate", None)
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return "name:" + getattr(fn, "__qualname__", type(simulator).__qualname__)
    return "source:" + hashlib.sha256(source.encode()).hexdigest()[:16]


_MAX_DEPTH = 4
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _digest(obj: Any, h: Any, depth: int, seen: set[int]) -> None:
    # Feeds what obj computes with into the hash h (see simulator_fingerprint).
    if isinstance(obj, _SCALARS):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if id(obj) in seen or depth > _MAX_DEPTH:
        h.update(f"<{type(obj).__qualname__}>;".encode())
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        t = t.float() if t.dtype == torch.bfloat16 else t
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.contiguous().numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(f"array{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes() if obj.dtype != object else b"object")
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
        for item in items:
            _digest(item, h, depth, seen)
    elif isinstance(obj, dict):
        h.update(f"dict[{len(obj)}]".encode())
        for key in sorted(obj, key=repr):
            _digest(key, h, depth, seen)
            _digest(obj[key], h, depth, seen)
    elif isinstance(obj, functools.partial):
        h.update(b"partial")
        for part in (obj.func, obj.args, obj.keywords):
            _digest(part, h, depth + 1, seen)
    elif isinstance(obj, types.FunctionType):
        _function(obj, h, depth, seen)
    elif isinstance(obj, types.MethodType):
        _digest(obj.__func__, h, depth, seen)
        _digest(obj.__self__, h, depth + 1, seen)
    elif isinstance(obj, (types.ModuleType, types.BuiltinFunctionType, type)):
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)};".encode())
    else:
        _instance(obj, h, depth, seen)


def _function(fn: types.FunctionType, h: Any, depth: int, seen: set[int]) -> None:
    try:
        h.update(inspect.getsource(fn).encode())
    except (OSError, TypeError):
        h.update(fn.__code__.co_code)
    _digest(fn.__defaults__, h, depth + 1, seen)
    _digest(fn.__kwdefaults__, h, depth + 1, seen)
    for cell in fn.__closure__ or ():
        try:
            _digest(cell.cell_contents, h, depth + 1, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty>")
    # The module-level functions and classes its code names (their code; a global
    # holding data may be a cache: the store's probe sees what it changes).
    names = _code_names(fn.__code__)
    for name in sorted(names):
        value = fn.__globals__.get(name)
        if isinstance(value, (types.FunctionType, functools.partial, type)):
            h.update(name.encode())
            _digest(value, h, depth + 1, seen)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _instance(obj: Any, h: Any, depth: int, seen: set[int]) -> None:
    # A callable object or a simulator class: its class's code and its data.
    cls = type(obj)
    h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    if cls.__module__.split(".")[0] in ("builtins", "threading", "_thread", "io"):
        return
    for name in ("simulate", "__call__", "forward"):
        method = getattr(cls, name, None)
        if isinstance(method, types.FunctionType):
            _function(method, h, depth + 1, seen)
    if isinstance(obj, torch.nn.Module):
        _digest(dict(obj.state_dict()), h, depth + 1, seen)
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        public = {
            k: v
            for k, v in state.items()
            if not k.startswith("_") and not isinstance(v, torch.nn.Module)
        }
        _digest(public, h, depth + 1, seen)


def _names(names: Sequence[str] | None, stem: str, n: int, arg: str) -> list[str]:
    if names is None:
        return [f"{stem}_{i + 1}" for i in range(n)]
    names = list(names)
    if len(names) != n:
        raise ValueError(f"{arg} must have {n} names, got {len(names)}")
    return names


def _as_float_tensor(x, name: str) -> Tensor:
    if x is None:
        return torch.empty(0, 0)
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # noqa: BLE001 - reraised with context
            raise TypeError(f"simulator '{name}' returned a non-numeric {type(x).__name__}") from e
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"simulator '{name}' must return numbers, got an array of dtype {arr.dtype}"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise TypeError(f"simulator '{name}' must return real numbers, got dtype {t.dtype}")
    return t.to(torch.float32)
