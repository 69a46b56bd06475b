"""The defects of the paths added with the proxies, each as a class, on the real
component: a store that knows its simulator, a proxy posterior that never answers with
the prior or NaN, writes that a planted link cannot redirect, a backend that cannot hang,
small units, and hostile files."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

import jsbi
from jsbi.posteriors.io import PosteriorLoadError

GAUSS = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
BOX = BoxUniform(-torch.ones(2), torch.ones(2))


def _pairs(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 2, generator=g) - 1
    return theta, theta + 0.1 * torch.randn(n, 2, generator=g)


# 1. The store serves only its own simulator's pairs ----------------------------------


def model(t, scale):
    return scale * t + 0.1 * torch.randn_like(t)


def factory(scale):
    def sim(t):
        return scale * t + 0.1 * torch.randn_like(t)

    return sim


class Scaled:
    def __init__(self, scale):
        self.scale = scale
        self.lock = threading.Lock()  # not data: enters by its type

    def __call__(self, t):
        return self.scale * t + 0.1 * torch.randn_like(t)


@pytest.mark.parametrize(
    "make",
    [lambda s: functools.partial(model, scale=s), factory, Scaled],
    ids=["partial", "closure", "callable-object"],
)
def test_a_store_refuses_the_same_code_with_other_data(tmp_path, make):
    store = tmp_path / "campaign"
    _, xa = jsbi.simulate(jsbi.wrap(make(1.0), GAUSS), 30, seed=1, store=store)
    with pytest.raises(ValueError, match="another version of simulator"):
        jsbi.simulate(jsbi.wrap(make(100.0), GAUSS), 30, seed=1, store=store)
    # The same model resumes, and serves the same pairs.
    _, again = jsbi.simulate(jsbi.wrap(make(1.0), GAUSS), 30, seed=1, store=store)
    assert torch.equal(xa, again)


def test_a_store_from_before_the_probe_checks_its_first_batch(tmp_path):
    # A store written before fingerprints saw data or probes existed: meta.json holds the
    # source-only fingerprint, and there is no probe.pt.
    import json

    from jsbi.simulators.base import legacy_fingerprint

    store = tmp_path / "old"
    one = jsbi.wrap(functools.partial(model, scale=1.0), GAUSS)
    _, xa = jsbi.simulate(one, 30, seed=1, batch_size=10, store=store)
    meta = json.loads((store / "meta.json").read_text())
    meta["simulator_code"] = legacy_fingerprint(one)
    (store / "meta.json").write_text(json.dumps(meta))
    (store / "probe.pt").unlink()
    other = jsbi.wrap(functools.partial(model, scale=100.0), GAUSS)
    assert legacy_fingerprint(other) == meta["simulator_code"]  # the source is the same
    with pytest.raises(ValueError, match="holds another model's pairs: re-simulating its first"):
        jsbi.simulate(other, 30, seed=1, batch_size=10, store=store)
    # The model that wrote it resumes, serves the same pairs and records its probe.
    _, again = jsbi.simulate(one, 30, seed=1, batch_size=10, store=store)
    assert torch.equal(xa, again) and (store / "probe.pt").exists()


def from_environment(t):
    # What no hash of the code sees: a value read at run time.
    return float(os.environ["JSBI_TEST_SCALE"]) * t + 0.1 * torch.randn_like(t)


def test_a_store_resimulates_its_probe_and_refuses_a_changed_model(tmp_path, monkeypatch):
    store = tmp_path / "campaign"
    monkeypatch.setenv("JSBI_TEST_SCALE", "1.0")
    jsbi.simulate(jsbi.wrap(from_environment, GAUSS), 30, seed=1, store=store)
    jsbi.simulate(jsbi.wrap(from_environment, GAUSS), 40, seed=1, store=store)  # resumes
    monkeypatch.setenv("JSBI_TEST_SCALE", "100.0")
    with pytest.raises(ValueError, match="holds another model's pairs: re-simulating"):
        jsbi.simulate(jsbi.wrap(from_environment, GAUSS), 40, seed=1, store=store)


def unseeded(t):
    rng = np.random.default_rng()  # randomness jsbi cannot seed
    return t + torch.as_tensor(rng.normal(size=tuple(t.shape)), dtype=t.dtype)


def test_an_unseeded_simulator_needs_a_version_for_a_store(tmp_path):
    with pytest.raises(ValueError, match="gives different x for the same seed.*version="):
        jsbi.simulate(jsbi.wrap(unseeded, GAUSS), 20, store=tmp_path / "a")
    theta, _ = jsbi.simulate(jsbi.wrap(unseeded, GAUSS, version="1"), 20, store=tmp_path / "b")
    assert theta.shape == (20, 2)


def test_a_tampered_batch_is_resimulated_not_served(tmp_path):
    sim = jsbi.wrap(factory(1.0), GAUSS)
    theta, x = jsbi.simulate(sim, 30, seed=3, batch_size=10, store=tmp_path)
    path = tmp_path / "batch_00001.pt"
    data = torch.load(path, weights_only=True)
    data["x"][0, 0] += 1.0  # what one flipped byte does, its checksum kept
    torch.save(data, path)
    with pytest.warns(UserWarning, match="batch_00001.pt.*checksum does not match"):
        theta2, x2 = jsbi.simulate(sim, 30, seed=3, batch_size=10, store=tmp_path)
    assert torch.equal(x2, x) and torch.equal(theta2, theta)


# 2. and 3. The proxy posterior: never the prior, never NaN --------------------------


@pytest.fixture(scope="module")
def proxy_posterior():
    theta, x = _pairs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jsbi.PosteriorEstimator(BOX, objective="jeffreys", posterior="proxy", seed=0).fit(
            theta,
            x,
            max_epochs=30,
            stop_after_epochs=2,
            learning_rate=5e-3,
            batch_size=50,
            show_progress_bar=False,
        )


def test_an_observation_beyond_the_proxys_domain_never_gets_the_prior(proxy_posterior):
    post = proxy_posterior
    assert not bool(post.proxy.in_domain(torch.tensor([[3.0, 3.0]])))
    # At (3, 3) the proxy would be the prior (mean 0), and the flow has no mass inside
    # the box: a clear error, after a warning that says why.
    with pytest.warns(UserWarning, match="outside the likelihood proxy's domain"):
        with pytest.raises(ValueError, match="far from every simulation"):
            post.sample((200,), x=torch.tensor([3.0, 3.0]))
    # Just outside the data: the misspecification check says so.
    for v in (1.6, 2.2):
        assert post.observation_p_value(torch.tensor([v, v])) < post.misspecification_threshold
        with pytest.warns(UserWarning, match="atypical of the simulations"):
            post.sample((50,), x=torch.tensor([v, v]))
    assert post.observation_p_value(torch.tensor([0.3, -0.2])) > 0.05


def test_the_proxys_leakage_is_zero_without_sampling_and_the_flows_beyond_its_domain(
    proxy_posterior, monkeypatch
):
    from jsbi.diagnostics import leakage

    post = proxy_posterior

    def no_sampler(*args, **kwargs):
        raise AssertionError("the leakage of the proxy needs no sampler run")

    monkeypatch.setattr(post, "_sample_proxy", no_sampler)
    # Inside the domain: the proxy's density is zero outside the prior.
    assert leakage(post, torch.tensor([[0.3, -0.2]]), BOX, 500).tolist() == [0.0]
    # At (3, 3) the flow answers for the proxy, and none of its mass is inside the box.
    assert leakage(post, torch.tensor([[3.0, 3.0]]), BOX, 500).tolist() == [1.0]


def test_beyond_the_proxys_domain_the_flow_answers_normalised(proxy_posterior, monkeypatch):
    from jsbi.posteriors import Posterior

    post = proxy_posterior
    flow = Posterior(post.flow, BOX)
    x0 = torch.tensor([0.3, -0.2])
    monkeypatch.setattr(post.proxy, "in_domain", lambda x: torch.zeros(len(x), dtype=torch.bool))
    theta = BOX.sample((20,))
    mass = flow.accepted_mass(x0)
    assert post.flow.leaks and float(mass.mass[0]) < 1  # the truncation matters here
    # The flow's density, renormalised by its mass inside the box (not left at one).
    assert torch.equal(post.accepted_mass(x0).mass, mass.mass)
    with pytest.warns(UserWarning, match="outside the likelihood proxy's domain"):
        lp = post.log_prob(theta, x=x0)
    assert torch.allclose(lp, flow.log_prob(theta, x=x0))
    assert post.leakage(x0) == pytest.approx(1 - float(mass.mass[0]))


def test_rows_beyond_the_proxys_domain_ask_the_flow_for_those_rows_alone(
    proxy_posterior, monkeypatch
):
    from jsbi.posteriors import Posterior

    post = proxy_posterior
    xs = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    theta = BOX.sample((2,))
    inside = post.log_prob(theta[:1], x=xs[:1])  # row 0 alone, in the proxy's domain
    # Row 1 (second coordinate > 0) beyond the domain: the flow answers there only.
    monkeypatch.setattr(post.proxy, "in_domain", lambda x: x[:, 1] < 0)
    post._mass.clear()
    with pytest.warns(UserWarning, match="outside the likelihood proxy's domain"):
        lp = post.log_prob(theta, x=xs)
    assert torch.allclose(lp[0], inside[0])
    assert torch.allclose(lp[1:], Posterior(post.flow, BOX).log_prob(theta[1:], x=xs[1]))
    assert len(post._mass) == 1  # the flow's mass at the outside row alone


def test_huge_finite_rows_give_a_finite_proxy_or_none():
    theta, x = _pairs()
    x3 = x.clone()
    x3[:3, 0] = 3e38
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = jsbi.PosteriorEstimator(BOX, objective="jeffreys", seed=0).fit(
            theta, x3, max_epochs=5, show_progress_bar=False
        )
    assert torch.isfinite(post.log_prob(theta[:3], x=x[0])).all()
    if post.proxy is not None:
        assert all(torch.isfinite(p).all() for p in post.proxy.parameters())


def test_a_file_with_non_finite_weights_does_not_load(tmp_path):
    theta, x = _pairs(200)
    post = jsbi.PosteriorEstimator(BOX, num_transforms=1).fit(
        theta, x, max_epochs=1, show_progress_bar=False
    )
    with torch.no_grad():
        next(post.flow.parameters()).fill_(float("nan"))
    post.save(tmp_path / "nan.pt")
    with pytest.raises(PosteriorLoadError, match="non-finite flow weights"):
        jsbi.load_posterior(tmp_path / "nan.pt")


# 4. jsbi run refuses what it could not save, before simulating ----------------------


def test_jsbi_run_refuses_an_unsaveable_proxy_before_simulating(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jsbi", "run", "--task", "two_moons", "--objective"]
    cmd += ["jeffreys", "--proxy", "ratio", "--posterior", "proxy", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "only the likelihood proxy's can be saved" in done.stderr
    assert not (out / "run.json").exists()


# 5. A backend cannot hang on a simulator it cannot send ----------------------------


def test_dask_refuses_an_unpicklable_simulator_at_once():
    distributed = pytest.importorskip("distributed")
    sim = jsbi.wrap(Scaled(1.0), GAUSS, name="locked")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        with pytest.raises(TypeError, match="simulator 'locked' cannot be pickled"):
            jsbi.simulate(sim, 20, batch_size=10, backend="dask")
    # Threads need no pickling.
    theta, _ = jsbi.simulate(sim, 20, batch_size=10, backend="threading", n_jobs=2)
    assert theta.shape == (20, 2)


# 6. Small units are data, not constants -------------------------------------------


def test_x_in_nanometres_trains_as_x_in_units():
    theta, x = _pairs()
    fits = []
    for scale in (1.0, 1e-9):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = jsbi.PosteriorEstimator(BOX, seed=0, num_transforms=2)
            post = est.fit(theta, scale * x, max_epochs=5, show_progress_bar=False)
        assert not [w for w in caught if "constant" in str(w.message)]
        fits.append(post.history["best_validation_loss"])
    assert fits[0] == pytest.approx(fits[1], abs=1e-3)


# 7. Hostile files --------------------------------------------------------------------


def test_no_write_follows_a_planted_link(tmp_path):
    from jsbi.benchmark import write_rows
    from jsbi.files import atomic_save

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("rows.csv", "rows.csv.tmp", "post.pt", "post.pt.tmp", "ckpt.pt.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_rows(tmp_path / "rows.csv", [{"a": 1}])
    theta, x = _pairs(200)
    post = jsbi.PosteriorEstimator(BOX, num_transforms=1).fit(
        theta, x, max_epochs=1, show_progress_bar=False
    )
    post.save(tmp_path / "post.pt")
    atomic_save({"a": 1}, tmp_path / "ckpt.pt")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "rows.csv").is_symlink() and not (tmp_path / "post.pt").is_symlink()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_posterior_file_imports_no_module_named_like_zuko(tmp_path, monkeypatch):
    theta, x = _pairs(200)
    post = jsbi.PosteriorEstimator(BOX, num_transforms=1).fit(
        theta, x, max_epochs=1, show_progress_bar=False
    )
    state = post._state()
    state["config"]["flow"] = "zuko_extras:Evil"
    torch.save(state, tmp_path / "post.pt")
    marker = tmp_path / "imported"
    (tmp_path / "zuko_extras.py").write_text(f"open({str(marker)!r}, 'w').close()\nEvil = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises((PosteriorLoadError, ValueError), match="not a zuko class"):
        jsbi.load_posterior(tmp_path / "post.pt")
    assert not marker.exists()


def test_compare_refuses_observation_keys_that_are_not_ints():
    from jsbi.diagnostics import compare

    theta, x = _pairs(200)
    post = jsbi.PosteriorEstimator(BOX, num_transforms=1).fit(
        theta, x, max_epochs=1, show_progress_bar=False
    )
    with pytest.raises((TypeError, ValueError), match="observations"):
        compare({"npe": post}, jsbi.get_task("two_moons"), observations={1: x[0], 1.7: x[1]})
