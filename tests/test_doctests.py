"""Every docstring example in jsbi runs, and shows what it prints.

Each module's examples run with :mod:`doctest` against one seeded namespace, in a
temporary working folder (examples that save write there). The names the examples use
without defining them are those of a user mid-analysis: ``task`` (two_moons), ``prior``,
``theta`` and ``x`` (200 simulations), ``theta_test`` and ``x_test`` (200 more), ``x_o``
(observation 1), ``posterior`` (jsbi's npe) and ``baseline`` (sbi's NPE), both trained for
a few epochs: the examples show calls and shapes, not accuracy. An example that takes
minutes (a whole report or benchmark grid) is marked ``# doctest: +SKIP`` in its module.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest
import torch

import jsbi

_SKIP = ("jsbi.simulators.tasks._common", "jsbi.simulators.data")
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(jsbi.__path__, "jsbi.")
    if not m.name.startswith(_SKIP) and not m.name.endswith("__main__")
)


@pytest.fixture(scope="module")
def namespace():
    from jsbi.diagnostics.baselines import train_sbi_npe

    torch.manual_seed(0)
    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, 200, seed=0, show_progress_bar=False)
    theta_test, x_test = jsbi.simulate(task, 200, seed=1, show_progress_bar=False)
    posterior = jsbi.PosteriorEstimator(task.prior, seed=0).fit(
        theta, x, max_epochs=5, show_progress_bar=False
    )
    baseline, _ = train_sbi_npe(theta, x, task.prior, max_num_epochs=5)
    return {
        "jsbi": jsbi,
        "torch": torch,
        "task": task,
        "prior": task.prior,
        "theta": theta,
        "x": x,
        "theta_test": theta_test,
        "x_test": x_test,
        "x_o": task.observation(1),
        "posterior": posterior,
        "baseline": baseline,
        "PosteriorEstimator": jsbi.PosteriorEstimator,
    }


def test_the_modules_are_found():
    assert {"jsbi.objectives", "jsbi.diagnostics.c2st", "jsbi.pipeline"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name, namespace, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    tests = [t for t in tests if t.examples]
    if not tests:
        pytest.skip(f"{name} has no examples")
    monkeypatch.chdir(tmp_path)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    report: list[str] = []
    for test in tests:
        # The module's own names first (as --doctest-modules gives them), then the
        # analysis' names; every test starts from the same seed.
        test.globs = {**namespace, **vars(module)}
        torch.manual_seed(0)
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
    assert not os.path.exists(tmp_path / "sbi-logs")
