r"""Simulation campaigns: batched, seeded, parallel, stored on disk, resumable.

A campaign of ``num_simulations`` pairs is cut into batches of ``batch_size``. Batch
``b`` draws its parameters from the prior and runs the simulator under its own seed,
derived from ``(seed, b)`` with :class:`numpy.random.SeedSequence`, so the pairs depend
on ``seed`` and ``batch_size`` only: not on ``n_jobs``, the joblib backend (local
processes, Dask, Ray), the order in which batches finish, or whether the campaign was
interrupted and resumed from its store.

Example:
    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> from jsbi.simulators import wrap
    >>> prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    >>> sim = wrap(lambda theta: theta + 0.1 * torch.randn_like(theta), prior, name="noisy")
    >>> theta, x = simulate(sim, 2_500, seed=1, batch_size=1_000)
    >>> theta.shape, x.shape
    (torch.Size([2500, 2]), torch.Size([2500, 2]))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from jsbi.files import atomic_save, atomic_write_text
from jsbi.progress import interactive, progress_bar
from jsbi.simulators.base import Simulator, legacy_fingerprint, simulator_fingerprint, wrap

__all__ = ["simulate"]

BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "dask", "ray")
NONFINITE_POLICIES = ("drop", "raise", "keep")
_STORE_VERSION = 1

# The global RNGs are process-wide: with a threaded backend (joblib's "threading",
# Dask with ``processes=False``) two batches seeding them at once would interleave
# their streams. Batches therefore hold this lock; in worker processes it is free.
_RNG_LOCK = threading.Lock()


def simulate(
    task_or_simulator: Simulator | tuple[Callable, Distribution],
    num_simulations: int,
    *,
    seed: int = 0,
    n_jobs: int | None = 1,
    batch_size: int = 1000,
    backend: str | None = None,
    store: str | os.PathLike | None = None,
    on_nonfinite: str = "drop",
    return_mask: bool = False,
    show_progress_bar: bool | None = None,
    proposal: Distribution | None = None,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    r"""Simulates ``num_simulations`` pairs ``theta ~ p(theta)``, ``x ~ p(x | theta)``.

    The same ``(seed, batch_size)`` gives the same pairs whatever ``n_jobs`` and
    ``backend`` (see the module's docstring).

    Arguments:
        task_or_simulator: A :class:`~jsbi.simulators.base.Simulator` or
            :class:`~jsbi.simulators.base.Task` (anything with ``.prior`` and
            ``.simulate(theta[n, d]) -> x[n, m]``), or a pair ``(simulator, prior)`` of a
            batched torch function and a torch distribution, wrapped with
            :func:`~jsbi.simulators.base.wrap`.
        num_simulations: The number of pairs, a positive int.
        seed: The campaign's seed, a non-negative int.
        n_jobs: The number of batches simulated at once (joblib's ``n_jobs``; ``-1`` for
            all cores). ``None`` defers to an enclosing ``joblib.parallel_config``. With
            a process backend, a cheap campaign stays in this process: when the first
            batch, timed here, says the rest would take under ``IN_PROCESS_SECONDS`` (1 s),
            starting worker processes would cost more than it saves (same pairs).
        batch_size: The number of simulations per batch (and per seed), a positive int.
        backend: A joblib backend: ``None`` (joblib's default, or the one set by an
            enclosing ``joblib.parallel_config``), ``"loky"``, ``"threading"``,
            ``"multiprocessing"``, ``"sequential"``, ``"dask"`` (needs a running
            ``dask.distributed.Client``; the cluster's workers set the parallelism) or
            ``"ray"`` (registers ray's joblib backend).
        store: A directory where each finished batch is written; calling again with the
            same arguments simulates only the missing batches, and ``num_simulations``
            may change between calls. A store of another campaign is an error.
        on_nonfinite: What to do with simulations containing NaN or infinity: ``"drop"``
            them (with a warning giving the count), ``"raise"`` an error, or ``"keep"``
            them (with a warning).
        return_mask: If ``True``, nothing is dropped: returns all rows and a boolean mask
            of the finite ones (with a warning giving the count of the others).
        show_progress_bar: A progress bar over batches (``None``: on a terminal, with
            more than one batch to simulate).
        proposal: Draw the parameters from this distribution instead of the prior, e.g. a
            :class:`~jsbi.posteriors.TruncatedProposal` for a second round (TSNPE).

    Returns:
        ``(theta, x)``, float32 tensors with shapes ``(n, d)`` and ``(n, m)``, where ``n``
        is ``num_simulations`` less the dropped rows; or ``(theta, x, mask)`` with
        ``return_mask=True``, where ``mask`` has shape ``(num_simulations,)``.

    Example:
        >>> import torch
        >>> from sbi.utils import BoxUniform
        >>> prior = BoxUniform(-torch.ones(3), torch.ones(3))
        >>> theta, x, mask = simulate((lambda t: t / t[:, :1], prior), 100, return_mask=True)
        >>> x.shape, mask.shape
        (torch.Size([100, 3]), torch.Size([100]))
    """
    simulator = _as_simulator(task_or_simulator)
    num_simulations = _check_positive_int(num_simulations, "num_simulations")
    batch_size = _check_positive_int(batch_size, "batch_size")
    seed = _check_options(seed, n_jobs, backend, on_nonfinite)
    name = str(getattr(simulator, "name", type(simulator).__name__))
    _check_picklable(simulator, name, backend, n_jobs)
    dim_theta = _dim_theta(simulator.prior)
    if proposal is not None and tuple(getattr(proposal, "event_shape", ())) != (dim_theta,):
        raise ValueError(
            f"proposal must be a distribution with event shape ({dim_theta},), like the "
            f"prior; got {type(proposal).__name__} with event shape "
            f"{tuple(getattr(proposal, 'event_shape', ()))}"
        )
    num_batches = math.ceil(num_simulations / batch_size)
    sizes = [min(batch_size, num_simulations - b * batch_size) for b in range(num_batches)]
    campaign = _Campaign(simulator, name, seed, sizes, proposal)
    done, meta = {}, None
    if store is not None:
        store = Path(store)
        sizes = (batch_size, num_simulations, dim_theta)
        meta = _open_store(store, name, seed, *sizes, *_fingerprints(simulator))
        _check_probe(simulator, name, store, seed)
        _write_json(store / "meta.json", meta)  # upgraded only once its pairs are checked
        done = campaign.resume(store, meta)
    todo = [b for b in range(num_batches) if b not in done]
    if show_progress_bar is None:
        show_progress_bar = len(todo) > 1 and interactive()
    if todo:
        campaign.run(todo, done, store, meta, n_jobs, backend, show_progress_bar)
    theta, x = campaign.assemble(done)
    return _nonfinite(theta, x, name, on_nonfinite, return_mask)


def _check_options(seed: int, n_jobs: int | None, backend: str | None, on_nonfinite: str) -> int:
    # The campaign's options, each checked and named; the seed as an int.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0
    ):
        raise ValueError(
            f"n_jobs must be a non-zero int (-1 for all cores) or None, got {n_jobs!r}"
        )
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
    return int(seed)


def _fingerprints(simulator: Simulator) -> tuple[str, str]:
    return simulator_fingerprint(simulator), legacy_fingerprint(simulator)


def _check_picklable(
    simulator: Simulator, name: str, backend: str | None, n_jobs: int | None
) -> None:
    # Worker processes and clusters receive the simulator pickled: one that cannot be
    # would make Dask retry forever (and loky, ray fail late). Checked before anything.
    if backend in ("threading", "sequential"):
        return
    if backend not in ("dask", "ray"):
        if n_jobs == 1:
            return
        if backend is None:
            from joblib._parallel_backends import SequentialBackend, ThreadingBackend

            active, _ = joblib.parallel.get_active_backend()
            if isinstance(active, (SequentialBackend, ThreadingBackend)):
                return
    import cloudpickle

    try:
        cloudpickle.dumps(simulator)
    except Exception as e:  # noqa: BLE001 - reraised with context
        raise TypeError(
            f"simulator '{name}' cannot be pickled ({type(e).__name__}: {e}), so it cannot be "
            f"sent to the worker processes of backend={backend or 'loky'!r}: create what it "
            "holds (a lock, a file, a connection) inside the call, or simulate in this "
            "process (n_jobs=1, or backend='threading')"
        ) from e


class _Campaign:
    r"""One campaign's batches: those a store holds, those simulated now, and the pairs."""

    def __init__(
        self,
        simulator: Simulator,
        name: str,
        seed: int,
        sizes: list[int],
        proposal: Distribution | None,
    ) -> None:
        self.simulator, self.name, self.seed, self.sizes = simulator, name, seed, sizes
        self.proposal = proposal

    def resume(self, store: Path, meta: dict) -> dict[int, tuple[Tensor, Tensor]]:
        r"""The stored batches of this campaign (a batch file of another is redone, never
        served)."""
        done = _load_batches(store, self.sizes, _dim_theta(self.simulator.prior), meta)
        proposal, seed = self.proposal, self.seed
        source = self.simulator.prior if proposal is None else proposal
        what = "prior" if proposal is None else "proposal"
        for b in sorted(done):
            if not _same_theta(source, seed, b, done[b][0], 0 if proposal is None else 1):
                if b == min(done):
                    raise ValueError(
                        f"the parameters stored in batch {b} are not the {what} draws of "
                        f"this call (seed={seed}): the {what} changed since the store "
                        f"{store} was written. Use another store directory rather than "
                        "mixing campaigns."
                    )
                warnings.warn(
                    f"stored batch {b} of {store} does not hold this campaign's prior draws: "
                    "simulating it again",
                    stacklevel=3,
                )
                del done[b]
        return done

    def run(
        self,
        todo: list[int],
        done: dict[int, tuple[Tensor, Tensor]],
        store: Path | None,
        meta: dict | None,
        n_jobs: int | None,
        backend: str | None,
        show_progress_bar: bool,
    ) -> None:
        r"""Simulates the batches ``todo`` into ``done`` (and the store)."""
        bar = progress_bar(
            total=len(self.sizes),
            initial=len(done),
            desc=f"Simulating {self.name}",
            unit="batch",
            disable=not show_progress_bar,
        )
        with bar, parallel_backend(backend):
            drawn = None
            if self.proposal is not None:
                drawn = {}
                for b in todo:
                    with _seeded(self.seed, b, stream=1):
                        drawn[b] = _draw_theta(self.proposal, self.sizes[b])
            # Process backends only: threads start at no cost, and a cluster's workers
            # (dask, ray) are where the user asked the work to run.
            probe = backend in (None, "loky", "multiprocessing")
            batches = _run(self.simulator, todo, self.sizes, self.seed, n_jobs, drawn, probe)
            for b, theta, x in batches:
                if meta is not None:
                    meta = _store_batch(store, meta, b, theta, x)
                done[b] = (theta, x)
                bar.update(1)

    def assemble(self, done: dict[int, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        r"""The pairs of every batch, in order, ``x`` on ``theta``'s device."""
        batches = range(len(self.sizes))
        theta = torch.cat([done[b][0] for b in batches])
        widths = {done[b][1].shape[1] for b in batches}
        if len(widths) > 1:
            raise ValueError(
                f"simulator '{self.name}' returned x with different numbers of columns across "
                f"batches: {sorted(widths)}; it must return shape (n, m) with a fixed m"
            )
        # x on the device of theta (the prior's), whatever device the simulator returned.
        return theta, torch.cat([done[b][1] for b in batches]).to(theta.device)


def _nonfinite(
    theta: Tensor, x: Tensor, name: str, on_nonfinite: str, return_mask: bool
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    # The simulations with NaN or inf: dropped, kept or refused, and always counted.
    mask = torch.isfinite(x).all(dim=1) & torch.isfinite(theta).all(dim=1)
    num_bad, n = int((~mask).sum()), len(mask)
    if num_bad:
        what = f"{num_bad} of {n} simulations of '{name}' have non-finite values"
        if on_nonfinite == "raise":
            raise ValueError(f"{what} (NaN or inf); pass on_nonfinite='drop' to drop them")
        if return_mask:
            warnings.warn(f"{what}; they are kept and marked False in the mask", stacklevel=3)
        elif on_nonfinite == "keep":
            warnings.warn(f"{what}; they are kept (on_nonfinite='keep')", stacklevel=3)
        else:
            if num_bad == n:
                raise ValueError(f"all {what}: nothing left to return")
            warnings.warn(
                f"dropped {num_bad} of {n} simulations of '{name}' with non-finite values "
                "(NaN or inf)",
                stacklevel=3,
            )
            theta, x = theta[mask], x[mask]
    return (theta, x, mask) if return_mask else (theta, x)


def _as_simulator(obj) -> Simulator:
    if isinstance(obj, tuple) and len(obj) == 2 and callable(obj[0]):
        fn, prior = obj
        return wrap(fn, prior, name=getattr(fn, "__name__", "simulator"))
    if hasattr(obj, "prior") and callable(getattr(obj, "simulate", None)):
        return obj
    raise TypeError(
        "task_or_simulator must be a jsbi Simulator or Task (with .prior and "
        ".simulate(theta[n, d]) -> x[n, m]) or a pair (simulator, prior), "
        f"got {type(obj).__name__}; wrap a function with jsbi.wrap(simulator, prior)"
    )


def _check_positive_int(value, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return int(value)


def _dim_theta(prior) -> int:
    event_shape = tuple(getattr(prior, "event_shape", ()))
    if len(event_shape) != 1:
        raise ValueError(
            f"the simulator's prior must have a 1-D event shape (d,), got {event_shape}"
        )
    return int(event_shape[0])


# Seeding and one batch


def _seeds(seed: int, b: int, stream: int = 0) -> tuple[int, np.ndarray, int]:
    # Stream 0 draws the prior's parameters and then the simulator's noise; stream 1 a
    # proposal's parameters, which must not share random numbers with that noise.
    ss = np.random.SeedSequence(seed, spawn_key=(b,) if stream == 0 else (b, stream))
    state = ss.generate_state(6, dtype=np.uint32)
    torch_seed = int(state[0]) << 32 | int(state[1])
    return torch_seed, state[2:5], int(state[5])


@contextlib.contextmanager
def _seeded(seed: int, b: int, stream: int = 0) -> Iterator[None]:
    torch_seed, numpy_seed, python_seed = _seeds(seed, b, stream)
    # Forking CUDA would initialise it in every worker; a simulator that uses CUDA has
    # initialised it already.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(torch_seed)
            np.random.seed(numpy_seed)
            random.seed(python_seed)
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _draw_theta(prior, n: int) -> Tensor:
    theta = torch.as_tensor(prior.sample((n,)))
    return theta.detach().reshape(n, -1).to(torch.float32)


def _run_batch(
    simulator: Simulator,
    b: int,
    start: int,
    n: int,
    seed: int,
    main: tuple[int, int],
    theta: Tensor | None = None,
) -> tuple[int, Tensor, Tensor]:
    # A worker runs alongside others: one torch thread each avoids oversubscription. The
    # caller's own process and thread (n_jobs=1) keeps its threads.
    in_worker = (os.getpid(), threading.get_ident()) != main
    num_threads = torch.get_num_threads()
    with _seeded(seed, b):
        if in_worker:
            torch.set_num_threads(1)
        try:
            if theta is None:
                theta = _draw_theta(simulator.prior, n)
            try:
                x = simulator.simulate(theta)
            except (ValueError, TypeError) as e:
                if type(e) not in (ValueError, TypeError):
                    raise
                raise type(e)(
                    f"batch {b} (simulations {start}..{start + n - 1}, seed={seed}): {e}"
                ) from e
        finally:
            if in_worker:
                torch.set_num_threads(num_threads)
    x = _check_x(x, n, b, getattr(simulator, "name", "simulator"))
    return b, theta, x


def _check_x(x, n: int, b: int, name: str) -> Tensor:
    try:
        x = torch.as_tensor(x)
    except Exception as e:  # noqa: BLE001 - reraised with context
        raise TypeError(
            f"batch {b}: simulator '{name}' returned a non-numeric {type(x).__name__}"
        ) from e
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"batch {b}: simulator '{name}' must return real numbers, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(
            f"batch {b}: simulator '{name}' must return x with shape (n, m) = ({n}, m), "
            f"got {tuple(x.shape)}"
        )
    return x.detach().cpu().to(torch.float32)


# Parallel execution


@contextlib.contextmanager
def parallel_backend(backend: str | None) -> Iterator[None]:
    r"""Runs the block under a joblib backend (``None``: joblib's default or the one set by
    an enclosing ``joblib.parallel_config``); ``"dask"`` needs a running
    ``dask.distributed`` client, ``"ray"`` registers ray's backend."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    if backend is None:
        yield
        return
    if backend == "dask":
        try:
            import distributed
        except ImportError as e:
            raise ImportError(
                'backend="dask" needs dask.distributed: pip install "jsbi[dask]"'
            ) from e
        try:
            distributed.get_client()
        except ValueError as e:
            raise RuntimeError(
                'backend="dask" needs a running dask.distributed.Client: start one with '
                "`from dask.distributed import Client; client = Client()` (or connect to "
                "your cluster) before running jsbi in parallel"
            ) from e
    elif backend == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError as e:
            raise ImportError('backend="ray" needs ray: pip install "jsbi[ray]"') from e
        register_ray()
    with joblib.parallel_config(backend=backend):
        yield


def _run(
    simulator: Simulator,
    todo: list[int],
    sizes: list[int],
    seed: int,
    n_jobs: int | None,
    drawn: dict[int, Tensor] | None = None,
    probe: bool = False,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    main = (os.getpid(), threading.get_ident())
    starts = np.cumsum([0, *sizes]).tolist()
    drawn = drawn or {}

    def tasks(batches):
        return (
            joblib.delayed(_run_batch)(simulator, b, starts[b], sizes[b], seed, main, drawn.get(b))
            for b in batches
        )

    if probe and len(todo) > 1 and n_jobs not in (None, 1):
        # Worker processes cost seconds to start (each imports torch). Time the first
        # batch here: when the rest would take under a second in this process, they stay
        # here too. The pairs are the same either way (each batch has its own seeds).
        start = time.perf_counter()
        b = todo[0]
        first = _run_batch(simulator, b, starts[b], sizes[b], seed, main, drawn.get(b))
        # Timed before the caller stores the batch: the simulation's cost alone.
        seconds = time.perf_counter() - start
        yield first
        todo = todo[1:]
        if seconds * len(todo) < IN_PROCESS_SECONDS:
            n_jobs = 1

    try:
        parallel = joblib.Parallel(n_jobs=n_jobs, batch_size=1, return_as="generator_unordered")
    except ValueError as e:
        if "return_as" not in str(e):
            raise
    else:
        # Batches are yielded as they finish, so the store and progress bar follow.
        yield from parallel(tasks(todo))
        return

    # Backends without generators (multiprocessing, ray) return whole lists: run the
    # campaign in waves so finished batches still reach the store as it goes.
    wave = 2 * max(1, joblib.effective_n_jobs(n_jobs))
    for i in range(0, len(todo), wave):
        yield from joblib.Parallel(n_jobs=n_jobs, batch_size=1)(tasks(todo[i : i + wave]))


#: With a process backend and ``n_jobs != 1``, a campaign whose remaining batches would take
#: less than this many seconds in-process (timed on its first batch) stays in-process.
IN_PROCESS_SECONDS = 1.0


# The on-disk store


def _open_store(
    store: Path,
    name: str,
    seed: int,
    batch_size: int,
    num_simulations: int,
    dim_theta: int,
    code: str | None = None,
    legacy: str | None = None,
) -> dict:
    # Checks the store against this campaign and returns its meta, written by the caller
    # once the store's pairs are checked too.
    if store.exists() and not store.is_dir():
        raise ValueError(f"store must be a directory, got the file {store}")
    store.mkdir(parents=True, exist_ok=True)
    meta = {
        "jsbi_store": _STORE_VERSION,
        "simulator": name,
        "seed": seed,
        "batch_size": batch_size,
        "num_simulations": num_simulations,
        "dim_theta": dim_theta,
        "dim_x": None,
        "simulator_code": code,
    }
    path = store / "meta.json"
    if path.exists():
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"the store's {path} cannot be read ({e}): the store is damaged; delete the "
                "folder to start a new campaign, or pass another store="
            ) from e
        if old.get("simulator_code") not in (None, code, legacy):
            raise ValueError(
                f"store {store} was written by another version of simulator '{name}' (its "
                f"code fingerprint is {old['simulator_code']}, this one's {code}). Its pairs "
                "would mix two models: pass another store= to start a new campaign (or give "
                "the simulator a version= to say they are the same)."
            )
        for key in ("jsbi_store", "simulator", "seed", "batch_size", "dim_theta"):
            if old.get(key) != meta[key]:
                raise ValueError(
                    f"store {store} holds another campaign: its {key} is {old.get(key)!r} "
                    f"but this call has {meta[key]!r}. Use another store directory (or "
                    "delete this one) rather than mixing campaigns."
                )
        meta["dim_x"] = old.get("dim_x")
        meta["simulator_code"] = code
    elif any(store.glob("batch_*.pt")):
        raise ValueError(f"store {store} holds batch files but no meta.json: not a jsbi store")
    for tmp in store.glob(".*.tmp"):  # left by an interrupted write of the store's own
        if _STORE_TMP.fullmatch(tmp.name):
            tmp.unlink(missing_ok=True)
    return meta


#: The temporary files of the store's own writes (:func:`jsbi.files.atomic_write`'s names).
_STORE_TMP = re.compile(r"\.(batch_\d{5,}\.pt|probe\.pt|meta\.json)\..+\.tmp")


def _batch_path(store: Path, b: int) -> Path:
    return store / f"batch_{b:05d}.pt"


def _load_batches(
    store: Path, sizes: list[int], dim_theta: int, meta: dict
) -> dict[int, tuple[Tensor, Tensor]]:
    done = {}
    for b, n in enumerate(sizes):
        path = _batch_path(store, b)
        if not path.exists():
            continue
        try:
            data = torch.load(path, weights_only=True)
            theta, x = data["theta"], data["x"]
            if "sha256" in data and data["sha256"] != _checksum(theta, x):
                raise ValueError("its checksum does not match its pairs (a damaged file)")
        except Exception as e:  # noqa: BLE001 - a damaged batch is redone
            warnings.warn(
                f"cannot read stored batch {path} ({e}): simulating it again", stacklevel=3
            )
            continue
        if theta.shape[0] != n:
            # The last batch of a campaign of another size: simulated again.
            continue
        if (
            theta.shape != (n, dim_theta)
            or x.ndim != 2
            or x.shape[0] != n
            or (meta["dim_x"] is not None and x.shape[1] != meta["dim_x"])
        ):
            warnings.warn(
                f"stored batch {path} has theta {tuple(theta.shape)} and x {tuple(x.shape)}, "
                f"expected ({n}, {dim_theta}) and ({n}, {meta['dim_x']}): simulating it again",
                stacklevel=3,
            )
            continue
        done[b] = (theta, x)
    return done


def _same_theta(prior, seed: int, b: int, stored: Tensor, stream: int = 0) -> bool:
    with _seeded(seed, b, stream):
        theta = _draw_theta(prior, stored.shape[0])
    return torch.equal(theta, stored)


def _store_batch(store: Path, meta: dict, b: int, theta: Tensor, x: Tensor) -> dict:
    if meta["dim_x"] is None:
        meta = {**meta, "dim_x": int(x.shape[1])}
        _write_json(store / "meta.json", meta)
    elif x.shape[1] != meta["dim_x"]:
        raise ValueError(
            f"batch {b}: simulator '{meta['simulator']}' returned m={x.shape[1]} columns "
            f"but the store {store} holds m={meta['dim_x']}: it is another simulator"
        )
    path = _batch_path(store, b)
    # Atomic: a batch file is complete or absent.
    atomic_save({"theta": theta, "x": x, "batch": b, "sha256": _checksum(theta, x)}, path)
    return meta


def _checksum(theta: Tensor, x: Tensor) -> str:
    # torch.load does not check the zip's CRCs: a flipped byte would be served.
    h = hashlib.sha256()
    for t in (theta, x):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


#: Rows the store re-simulates to check that it serves this simulator's pairs.
PROBE_ROWS = 4


def _probe(simulator: Simulator, seed: int) -> tuple[Tensor, Tensor]:
    # PROBE_ROWS seeded pairs on their own stream (2): the same x every call from a
    # simulator that draws its randomness from the seeded global generators.
    with _seeded(seed, 0, stream=2):
        theta = _draw_theta(simulator.prior, PROBE_ROWS)
        x = simulator.simulate(theta)
    return theta, _check_x(x, PROBE_ROWS, 0, getattr(simulator, "name", "simulator"))


def _check_probe(simulator: Simulator, name: str, store: Path, seed: int) -> None:
    r"""Checks that the store serves this simulator's pairs, whatever its fingerprint saw.

    A new store re-simulates ``PROBE_ROWS`` seeded rows twice: a simulator whose rows
    differ draws randomness jsbi does not seed, and needs a ``version=`` to tell its
    campaigns apart. A resumed store re-simulates them and compares them with those it
    recorded: a changed constant, helper or library gives other numbers. A simulator with
    a ``version`` is trusted (and saves the probe's simulations).
    """
    if getattr(simulator, "version", None) is not None:
        return
    path = store / "probe.pt"
    theta, x = _probe(simulator, seed)
    if path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            same_theta = torch.equal(saved["theta"], theta)
            same = same_theta and _same_x(saved["x"], x)
        except Exception as e:  # noqa: BLE001 - reraised with context
            raise ValueError(
                f"the store's {path} cannot be read ({e}): the store is damaged; pass "
                "another store= to start a new campaign"
            ) from e
        if not same_theta:
            raise ValueError(
                f"the store {store}'s probe parameters are not the prior draws of this call "
                f"(seed={seed}): the prior changed since the store was written. Use another "
                "store directory rather than mixing campaigns."
            )
        if not same:
            raise ValueError(
                f"store {store} holds another model's pairs: re-simulating its "
                f"{PROBE_ROWS} seeded probe rows with simulator '{name}' gives other x than "
                "it recorded (a constant, a helper or a library changed). Pass another "
                "store= to start a new campaign, or give the simulator a version= to say "
                "they are the same model"
            )
        return
    theta2, x2 = _probe(simulator, seed)
    if not (torch.equal(theta, theta2) and _same_x(x, x2)):
        raise ValueError(
            f"simulator '{name}' gives different x for the same seed: it draws randomness "
            "that jsbi does not seed (its own generator?), so a store cannot check that it "
            "serves this simulator's pairs. Draw from torch's or numpy's global generator, "
            "or give it a version= (jsbi.wrap(..., version='1')) to name the model"
        )
    _check_first_batch(simulator, name, store, seed)
    atomic_save({"theta": theta, "x": x}, path)


def _check_first_batch(simulator: Simulator, name: str, store: Path, seed: int) -> None:
    # A store written before probes existed has batches but no probe, and its fingerprint
    # saw only the simulator's source: re-simulate its batch 0 (seeded, so the same pairs
    # from the same model) once, before the probe is recorded and trusted from then on.
    path = _batch_path(store, 0)
    try:
        data = torch.load(path, weights_only=True)
        theta0, x0 = data["theta"], data["x"]
    except Exception:  # noqa: BLE001 - none, or a damaged one that resuming redoes
        return
    if "sha256" in data and data["sha256"] != _checksum(theta0, x0):
        return  # damaged: resuming redoes it
    # Drawn from the prior: the seeded draw; from a proposal: its stored parameters.
    given = None if _same_theta(simulator.prior, seed, 0, theta0) else theta0
    main = (os.getpid(), threading.get_ident())
    _, _, x = _run_batch(simulator, 0, 0, len(theta0), seed, main, theta=given)
    if not _same_x(x, x0):
        raise ValueError(
            f"store {store} holds another model's pairs: re-simulating its first batch with "
            f"simulator '{name}' gives other x than it holds (the store was written before "
            "jsbi recorded a probe, by a simulator with the same source but other data). "
            "Pass another store= to start a new campaign, or give the simulator a version= "
            "to say they are the same model"
        )


def _same_x(a: Tensor, b: Tensor) -> bool:
    # Equal up to float noise of a different machine's BLAS.
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True))


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))
