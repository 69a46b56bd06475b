r"""The docs site: the tutorials run (smallest settings), and the site builds from
their outputs with warnings as errors, documenting every public name."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
pytest.importorskip("sphinx")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(tmp_path: Path, settings: str) -> tuple[Path, Path]:
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "_generated", "api"))
    runner = _load(src / "run_tutorials.py", "run_tutorials")
    times = runner.main(["--settings", settings, "--out", str(src / "_generated")])
    assert set(times) == set(runner.TUTORIALS)
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", src, out],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return src / "_generated", out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("docs"), "small")


def test_tutorials_print_what_they_promise(built):
    generated, _ = built
    first = (generated / "first_posterior" / "output.txt").read_text()
    assert "simulated 300 pairs" in first and "\nuse: " in first
    assert (generated / "first_posterior" / "report" / "index.html").stat().st_size > 0
    second = (generated / "choosing_objective" / "output.txt").read_text()
    assert "best phase:" in second and "NLTP" in second and "jeffreys returned the " in second
    third = (generated / "scaling_out" / "output.txt").read_text()
    # The same pairs whatever runs the campaign, and resumes equal uninterrupted runs.
    assert "same pairs as in-process: {'joblib': True, 'dask': True" in third
    assert "resumed: same pairs as an uninterrupted campaign: True" in third
    assert "resumed at epoch 4; validation losses identical to an uninterrupted run: True" in third
    fourth = (generated / "comparing_models" / "output.txt").read_text()
    # The data are an exponential decay: the evidence favours that model, beyond its error.
    found = re.search(r"log Bayes factor, exponential over linear: (-?[\d.]+) ± ([\d.]+)", fourth)
    assert found, fourth
    assert float(found[1]) > 2 * float(found[2]), found[0]
    assert "posterior mean under exponential" in fourth


def test_site_shows_the_tutorials_figures(built):
    generated, html = built
    images = {p.name for p in (html / "_images").iterdir()}
    for name in ("phases.png", "sbc_ecdf.png", "coverage.png", "campaign_seconds.png"):
        assert name in images
    page = (html / "tutorials" / "scaling_out.html").read_text()
    assert "same pairs as in-process" in page  # the run's own output, not a pasted one


def test_api_reference_has_every_public_name(built):
    import types

    from sphinx.util.inventory import InventoryFile

    import jsbi

    _, html = built
    with open(html / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for entries in inv.values() for name in entries}
    skip = ("jsbi.simulators.tasks._common", "jsbi.simulators.data")
    walk = pkgutil.walk_packages(jsbi.__path__, "jsbi.")
    modules = ["jsbi"] + [m.name for m in walk if not m.name.startswith(skip)]
    exported = {m: getattr(importlib.import_module(m), "__all__", []) for m in modules}
    missing = []
    for module, names in exported.items():
        for name in names:
            obj = getattr(importlib.import_module(module), name)
            if isinstance(obj, types.ModuleType):
                found = obj.__name__ in documented
            else:
                # Documented once, under some module that exports the same object.
                found = any(
                    f"{m}.{name}" in documented
                    for m, ns in exported.items()
                    if name in ns and getattr(importlib.import_module(m), name) is obj
                )
            if not found:
                missing.append(f"{module}.{name}")
    assert not missing, missing
    assert {"jsbi.objectives", "jsbi.estimator.PosteriorEstimator"} <= documented


def test_cli_reference_lists_every_command(built):
    from jsbi.cli import COMMANDS

    _, html = built
    text = re.sub(r"<[^>]+>", "", (html / "cli.html").read_text())
    for command in COMMANDS:
        assert f"jsbi {command} [-h]" in text


@pytest.mark.slow
def test_tutorials_at_full_settings(tmp_path):
    generated, _ = _build(tmp_path, "full")
    assert "\nuse: " in (generated / "first_posterior" / "output.txt").read_text()


def test_the_math_renders_offline(built):
    # MathJax is bundled with the site: no page asks a CDN for it.
    _, out = built
    page = (out / "method.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in page and "cdn." not in page
    assert (out / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    assert (out / "results.html").exists()
