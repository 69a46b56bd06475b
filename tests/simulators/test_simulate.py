from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, Uniform

from jsbi.simulators.base import wrap
from jsbi.simulators.simulate import simulate

PRIOR = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)


def noisy(theta):
    # Uses both torch's and numpy's global generators, so both must be seeded.
    eps = torch.from_numpy(np.random.standard_normal(theta.shape)).float()
    return torch.cat([theta + 0.1 * torch.randn_like(theta), eps], dim=1)


def simulator(name="noisy", prior=PRIOR):
    return wrap(noisy, prior, name=name)


class Counting:
    r"""A simulator counting its calls, failing (when asked) on call ``fail_at``."""

    def __init__(self, fail_at=None, error=RuntimeError):
        self.prior, self.name = PRIOR, "noisy"
        # Private: bookkeeping, not the model (the store's fingerprint skips them).
        self._calls, self._fail_at, self._error = 0, fail_at, error

    @property
    def calls(self):
        return self._calls

    def simulate(self, theta):
        self._calls += 1
        if self._calls == self._fail_at:
            raise self._error("simulator crashed")
        return noisy(theta)


def test_same_seed_same_pairs():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    theta, x = simulate(simulator(), 25, seed=3, batch_size=10)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])

    again = simulate(simulator(), 25, seed=3, batch_size=10)
    other = simulate(simulator(), 25, seed=4, batch_size=10)
    assert torch.equal(theta, again[0]) and torch.equal(x, again[1])
    assert not torch.equal(theta, other[0]) and not torch.equal(x, other[1])
    # Batches are seeded independently: a shorter campaign is a prefix of a longer one.
    prefix = simulate(simulator(), 10, seed=3, batch_size=10)
    assert torch.equal(prefix[1], x[:10])
    # Rows within and across batches differ (no repeated seeds).
    assert len(torch.unique(theta[:, 0])) == 25


def slow_noisy(theta):
    # 0.6 s a batch: too slow for the in-process shortcut, so workers run it.
    time.sleep(0.6)
    return torch.cat([noisy(theta), torch.full((len(theta), 1), float(os.getpid()))], 1)


@pytest.mark.parametrize(
    "kwargs", [{"n_jobs": 2}, {"n_jobs": 2, "backend": "threading"}], ids=["loky", "threading"]
)
def test_parallel_same_pairs(kwargs):
    sim = wrap(slow_noisy, PRIOR, name="slow")
    theta, x = simulate(sim, 25, seed=3, batch_size=10)
    theta_p, x_p = simulate(sim, 25, seed=3, batch_size=10, **kwargs)
    assert torch.equal(theta, theta_p) and torch.equal(x[:, :-1], x_p[:, :-1])
    pids = set(x_p[10:, -1].tolist())  # the batches after the first, timed, one
    if "backend" not in kwargs:
        assert os.getpid() not in pids  # on loky's worker processes
    assert x_p[:10, -1].eq(os.getpid()).all()  # the first batch: timed in-process


def test_a_cheap_campaign_stays_in_process_whatever_n_jobs():
    def where(theta):
        return torch.full((len(theta), 1), float(os.getpid()))

    sim = wrap(where, PRIOR, name="where")
    _, x = simulate(sim, 100, seed=0, batch_size=10, n_jobs=2)
    assert x.eq(os.getpid()).all()


def test_shapes_dtypes():
    prior = Independent(Uniform(torch.zeros(3), torch.ones(3)), 1)
    sim = wrap(lambda t: np.repeat(t.sum(1, keepdims=True), 4, axis=1), prior, numpy=True)
    theta, x = simulate(sim, 23, batch_size=5)
    assert theta.shape == (23, 3) and x.shape == (23, 4)
    assert theta.dtype == x.dtype == torch.float32
    assert torch.allclose(x[:, 0], theta.sum(1))

    # A (simulator, prior) pair is wrapped.
    theta, x = simulate((lambda t: 2 * t, prior), 7, batch_size=3)
    assert torch.equal(x, 2 * theta)


def nan_right(theta):
    x = theta.clone()
    x[theta[:, 0] > 0.5, 1] = float("nan")
    x[theta[:, 0] < -1.0, 0] = float("inf")
    return x


def test_nonfinite():
    sim = wrap(nan_right, PRIOR)
    with pytest.warns(UserWarning, match="marked False in the mask"):
        theta, x, mask = simulate(sim, 40, batch_size=16, return_mask=True)
    expected = (theta[:, 0] <= 0.5) & (theta[:, 0] >= -1.0)
    num_bad = int((~expected).sum())
    assert 0 < num_bad < 40
    assert theta.shape == (40, 2) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    assert torch.isfinite(x[mask]).all() and not torch.isfinite(x[~mask]).all(dim=1).any()

    with pytest.warns(UserWarning, match=f"dropped {num_bad} of 40 simulations"):
        theta_d, x_d = simulate(sim, 40, batch_size=16)
    assert torch.equal(theta_d, theta[mask]) and torch.equal(x_d, x[mask])

    with pytest.warns(UserWarning, match=f"{num_bad} of 40 .* kept"):
        _, x_k = simulate(sim, 40, batch_size=16, on_nonfinite="keep")
    assert x_k.shape == (40, 2)

    with pytest.raises(ValueError, match=f"{num_bad} of 40 .*non-finite"):
        simulate(sim, 40, batch_size=16, on_nonfinite="raise")

    with pytest.raises(ValueError, match="all 5 of 5"):
        simulate(wrap(lambda t: t * float("nan"), PRIOR), 5)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_store_resume(tmp_path, error):
    store = tmp_path / "campaign"
    # Calls 1 and 2 are the store's probe (the same seeded rows twice); the third batch
    # is call 5.
    with pytest.raises(error):
        simulate(Counting(fail_at=5, error=error), 45, seed=2, batch_size=10, store=store)
    assert sorted(p.name for p in store.iterdir()) == [
        "batch_00000.pt",
        "batch_00001.pt",
        "meta.json",
        "probe.pt",
    ]
    meta = json.loads((store / "meta.json").read_text())
    assert meta["seed"] == 2 and meta["batch_size"] == 10 and meta["simulator"] == "noisy"
    assert meta["num_simulations"] == 45 and meta["dim_theta"] == 2 and meta["dim_x"] == 4

    # An interrupted write's temporary file goes; a file that is not the store's stays.
    (store / ".batch_00002.pt.k3j9.tmp").write_bytes(b"half")
    (store / ".notes.tmp").write_text("the user's")
    resumed = Counting()
    theta, x = simulate(resumed, 45, seed=2, batch_size=10, store=store)
    assert resumed.calls == 4  # the probe once, then batches 2, 3 and 4 only
    assert sorted(p.name for p in store.glob(".*")) == [".notes.tmp"]

    reference = simulate(simulator(), 45, seed=2, batch_size=10)
    assert torch.equal(theta, reference[0]) and torch.equal(x, reference[1])

    # Everything is stored now: no batch simulated, same pairs.
    again = Counting()
    theta_s, x_s = simulate(again, 45, seed=2, batch_size=10, store=store)
    assert again.calls == 1 and torch.equal(x_s, x)  # the probe alone

    # Extending the campaign re-simulates the short last batch and adds one.
    more = Counting()
    _, x_more = simulate(more, 55, seed=2, batch_size=10, store=store)
    assert more.calls == 3 and torch.equal(x_more[:40], x[:40])


def test_store_mismatch(tmp_path):
    simulate(simulator(), 20, seed=0, batch_size=10, store=tmp_path)
    with pytest.raises(ValueError, match="its seed is 0 but this call has 1"):
        simulate(simulator(), 20, seed=1, batch_size=10, store=tmp_path)
    with pytest.raises(ValueError, match="its batch_size is 10"):
        simulate(simulator(), 20, seed=0, batch_size=5, store=tmp_path)
    with pytest.raises(ValueError, match="its simulator is 'noisy'"):
        simulate(simulator("other"), 20, seed=0, batch_size=10, store=tmp_path)
    shifted = Independent(Normal(torch.ones(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="prior changed"):
        simulate(simulator(prior=shifted), 20, seed=0, batch_size=10, store=tmp_path)
    wider = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    with pytest.raises(ValueError, match="its dim_theta is 2"):
        simulate(simulator(prior=wider), 20, seed=0, batch_size=10, store=tmp_path)


def shifted_noisy(theta):
    return noisy(theta) + 1.0


def test_store_refuses_another_simulators_code_under_the_same_name(tmp_path):
    simulate(simulator(), 20, seed=0, batch_size=10, store=tmp_path)
    other = wrap(shifted_noisy, PRIOR, name="noisy")  # same name and dimensions
    with pytest.raises(ValueError, match="another version of simulator 'noisy'.*store="):
        simulate(other, 30, seed=0, batch_size=10, store=tmp_path)
    # A user-given version says which code counts as the same model.
    store = tmp_path / "versioned"
    simulate(wrap(noisy, PRIOR, name="noisy", version="1"), 20, seed=0, batch_size=10, store=store)
    with pytest.raises(ValueError, match="another version"):
        simulate(
            wrap(noisy, PRIOR, name="noisy", version="2"), 20, seed=0, batch_size=10, store=store
        )
    simulate(
        wrap(shifted_noisy, PRIOR, name="noisy", version="1"),
        20,
        seed=0,
        batch_size=10,
        store=store,
    )
    # wrap names a simulator after its function, not "simulator" for all.
    assert wrap(noisy, PRIOR).name == "noisy"


def test_store_redoes_a_corrupt_or_foreign_batch(tmp_path):
    expected = simulate(simulator(), 30, seed=0, batch_size=10, store=tmp_path / "a")
    simulate(simulator(), 30, seed=4, batch_size=10, store=tmp_path / "b")
    (tmp_path / "a" / "batch_00001.pt").write_bytes(b"not a torch file")
    (tmp_path / "b" / "batch_00002.pt").replace(tmp_path / "a" / "batch_00002.pt")
    with pytest.warns(UserWarning) as record:
        theta, x = simulate(simulator(), 30, seed=0, batch_size=10, store=tmp_path / "a")
    messages = " ".join(str(w.message) for w in record)
    assert "batch_00001.pt" in messages and "batch 2" in messages
    assert torch.equal(theta, expected[0]) and torch.equal(x, expected[1])
    (tmp_path / "a" / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta.json cannot be read"):
        simulate(simulator(), 30, seed=0, batch_size=10, store=tmp_path / "a")


def on_dask_worker(theta):
    import distributed

    distributed.get_worker()  # raises ValueError outside a Dask worker
    return noisy(theta)


def test_dask():
    distributed = pytest.importorskip("distributed")

    with pytest.raises(RuntimeError, match="running dask.distributed.Client"):
        simulate(simulator(), 10, backend="dask")

    expected = simulate(simulator(), 25, seed=5, batch_size=10)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        sim = wrap(on_dask_worker, PRIOR, name="noisy")
        theta, x = simulate(sim, 25, seed=5, batch_size=10, backend="dask")
    assert torch.equal(theta, expected[0]) and torch.equal(x, expected[1])


def on_ray_worker(theta):
    import ray

    if ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        raise RuntimeError("not on a ray worker")
    return noisy(theta)


def test_ray():
    # A real local Ray, started here: the same pairs as n_jobs=1, computed on its workers.
    ray = pytest.importorskip("ray")

    expected = simulate(simulator(), 25, seed=5, batch_size=10)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as err:  # noqa: BLE001 - the machine cannot host Ray, not a jsbi fault
        pytest.skip(f"a local Ray could not start here: {type(err).__name__}: {err}")
    try:
        sim = wrap(on_ray_worker, PRIOR, name="noisy")
        theta, x = simulate(sim, 25, seed=5, batch_size=10, backend="ray", n_jobs=2)
    finally:
        ray.shutdown()
    assert torch.equal(theta, expected[0]) and torch.equal(x, expected[1])
    with pytest.raises(RuntimeError, match="not on a ray worker"):
        on_ray_worker(PRIOR.sample((2,)))


def test_progress_bar(capsys):
    simulate(simulator(), 30, batch_size=10, show_progress_bar=True)
    assert "Simulating noisy" in capsys.readouterr().err
    simulate(simulator(), 30, batch_size=10, show_progress_bar=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_simulations": 0}, "num_simulations must be a positive int"),
        ({"num_simulations": 2.5}, "num_simulations must be a positive int"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"n_jobs": 0}, "n_jobs must be a non-zero int"),
        ({"backend": "spark"}, "backend must be None or one of"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"num_simulations": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate(simulator(), **kwargs)


def test_bad_simulators(tmp_path):
    with pytest.raises(TypeError, match="task_or_simulator must be a jsbi Simulator"):
        simulate(noisy, 10)

    calls = []

    def fail_second(theta):
        calls.append(1)
        return theta if len(calls) == 1 else theta[1:]

    with pytest.raises(ValueError, match=r"batch 1 \(simulations 5..9.*\(n, m\) = \(5, m\)"):
        simulate(wrap(fail_second, PRIOR, name="short"), 12, batch_size=5)

    strings = wrap(lambda t: np.full((len(t), 2), "a"), PRIOR, numpy=True)
    with pytest.raises(TypeError, match="batch 0 .*must return numbers"):
        simulate(strings, 4)

    class Flat:
        prior, name = PRIOR, "flat"

        def simulate(self, theta):
            return theta.reshape(-1)

    with pytest.raises(ValueError, match=r"batch 0: .*\(4, m\), got \(8,\)"):
        simulate(Flat(), 4)

    class Ragged(Flat):
        # m = 2 for the first `wide` calls, then m = 1.
        def __init__(self, wide=1):
            self.calls, self.wide = 0, wide

        def simulate(self, theta):
            self.calls += 1
            return theta if self.calls <= self.wide else theta[:, :1]

    with pytest.raises(ValueError, match="different numbers of columns"):
        simulate(Ragged(), 4, batch_size=2)
    # With a store, its two probe calls come first (and must agree).
    with pytest.raises(ValueError, match="gives different x for the same seed"):
        simulate(Ragged(wide=1), 4, batch_size=2, store=tmp_path / "a")
    with pytest.raises(ValueError, match="returned m=1 columns but the store"):
        simulate(Ragged(wide=3), 4, batch_size=2, store=tmp_path / "b")
