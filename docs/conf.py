r"""Sphinx configuration of jsbi's documentation (``make docs``).

The API reference is generated at build time from the package itself: every name in a
module's ``__all__`` is documented once, under the shortest public path that exports it
(``jsbi.inference.Posterior`` rather than ``jsbi.posteriors.posterior.Posterior``), so a
new public name cannot be left out, and none is documented twice.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import jsbi  # noqa: E402

project = "jsbi"
author = "the jsbi developers"
release = version = jsbi.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax bundled into _static: the formulas render offline (clusters, laptops).
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "myst_parser",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# _generated/ holds the tutorials' outputs (docs/run_tutorials.py), included by the pages.
exclude_patterns = ["_build", "_generated"]
html_theme = "furo"
html_title = f"jsbi {release}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Private helpers and the data-making script are not API.
_SKIP = ("jsbi.simulators.tasks._common", "jsbi.simulators.data")
#: The API index's sections, in the order a user meets them.
_GROUPS = (
    ("The front door", ("jsbi",)),
    ("Simulate", ("jsbi.simulators",)),
    (
        "Estimate",
        ("jsbi.estimator", "jsbi.density", "jsbi.flows", "jsbi.methods", "jsbi.training"),
    ),
    ("Sample, save and trust a posterior", ("jsbi.posteriors",)),
    ("Check and compare", ("jsbi.diagnostics", "jsbi.pipeline", "jsbi.benchmark")),
    ("The proxies", ("jsbi.proxies",)),
)


def _modules() -> list[str]:
    names = ["jsbi"]
    for info in pkgutil.walk_packages(jsbi.__path__, "jsbi."):
        if not info.name.startswith(_SKIP):
            names.append(info.name)
    return names


def _public(module: str) -> list[str]:
    return list(getattr(importlib.import_module(module), "__all__", []))


def _owner(modules: list[str]) -> dict[tuple[int, str], str]:
    r"""(object id, name) -> the shortest public path's module (the top level excluded: its
    names are listed there and documented in their subpackage). Keyed by name too, so an
    alias (``SupportTransform = Support``) gets its own entry ("alias of ...")."""
    owner: dict[tuple[int, str], str] = {}
    for module in sorted(modules, key=lambda m: (m.count("."), m)):
        if module == "jsbi":
            continue
        mod = importlib.import_module(module)
        for name in _public(module):
            owner.setdefault((id(getattr(mod, name)), name), module)
    return owner


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "autofunction"
    return "autodata"


def _page(module: str, owner: dict[tuple[int, str], str]) -> str:
    mod = importlib.import_module(module)
    # A submodule named like a function of its package (jsbi.diagnostics.c2st): the
    # function keeps the name as a cross-reference target.
    parent, _, last = module.rpartition(".")
    shadowed = bool(parent) and getattr(importlib.import_module(parent), last, mod) is not mod
    lines = [module, "=" * len(module), "", f".. automodule:: {module}", "   :no-members:"]
    if shadowed:
        # Its docstring as text: even with :no-index:, automodule would register the name.
        lines[3:] = [f".. currentmodule:: {parent}", "", inspect.getdoc(mod) or "", ""]
    else:
        lines.append("")
    if module == "jsbi":
        lines += ["Importing ``jsbi`` is fast: these names load their subpackage when used.", ""]
        for name in _public(module):
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                lines.append(f"* ``jsbi.{name}``: :doc:`{obj.__name__}`")
            else:
                lines.append(f"* ``jsbi.{name}``: :py:obj:`{owner[id(obj), name]}.{name}`")
        return "\n".join(lines) + "\n"
    elsewhere = []
    for name in _public(module):
        obj = getattr(mod, name)
        if owner[id(obj), name] != module:
            elsewhere.append(f"* :py:obj:`{name} <{owner[id(obj), name]}.{name}>`")
            continue
        kind = _directive(obj)
        if kind == "autodata":
            # Registries and constants: their value says what they hold (a dict's own
            # docstring would say nothing).
            value = sorted(obj) if isinstance(obj, (dict, set, frozenset)) else obj
            lines += [f".. py:data:: {name}", f"   :module: {module}", "", f"   ``{value!r}``", ""]
            continue
        lines.append(f".. {kind}:: {module}.{name}")
        # A named tuple's fields are its documented attributes already.
        if kind == "autoclass" and not hasattr(obj, "_fields"):
            lines.append("   :members:")
        lines.append("")
    if elsewhere:
        lines += ["Also exported here, documented where first exported:", "", *elsewhere, ""]
    return "\n".join(lines) + "\n"


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    # "jsbi" is the top-level page alone; a subpackage owns its submodules.
    return any(module == q or (q != "jsbi" and module.startswith(q + ".")) for q in prefixes)


def write_api(app=None) -> None:
    modules = _modules()
    owner = _owner(modules)
    out = HERE / "api"
    out.mkdir(exist_ok=True)
    pages = []
    for module in modules:
        if not _public(module):
            continue
        (out / f"{module}.rst").write_text(_page(module, owner))
        pages.append(module)
    index = [
        "API reference",
        "=============",
        "",
        "Every public name (a module's ``__all__``), once, under the shortest public path",
        "that exports it, grouped by what you do with it.",
        "",
    ]
    placed: set[str] = set()
    for title, prefixes in _GROUPS:
        members = [p for p in pages if p not in placed and _within(p, prefixes)]
        placed.update(members)
        if members:
            index += [title, "-" * len(title), "", ".. toctree::", "   :maxdepth: 1", ""]
            index += [f"   {p}" for p in members] + [""]
    rest = [p for p in pages if p not in placed]
    if rest:
        index += ["Everything else", "---------------", "", ".. toctree::", "   :maxdepth: 1", ""]
        index += [f"   {p}" for p in rest] + [""]
    (out / "index.rst").write_text("\n".join(index))


def setup(app):
    app.connect("builder-inited", write_api)
