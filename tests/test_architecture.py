"""The house's rules (DESIGN.md), checked on the source: one way for data and imports, no
import cycle, short functions, a small front door, and one list of methods."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import jsbi

ROOT = Path(jsbi.__file__).parent

#: The layers, lowest first (DESIGN.md: simulators -> flows / proxies -> methods ->
#: training -> posteriors -> diagnostics -> report). A module imports its own layer and
#: those below, never one above.
LAYERS = [
    ("jsbi.config", "jsbi.files", "jsbi.progress", "jsbi.seeding", "jsbi.objectives", "jsbi.tau"),
    ("jsbi.simulators",),
    ("jsbi.flows",),
    ("jsbi.proxies",),
    ("jsbi.methods",),
    ("jsbi.training",),
    ("jsbi.posteriors",),
    ("jsbi.options", "jsbi.estimator", "jsbi.density"),
    ("jsbi.diagnostics",),
    ("jsbi.pipeline",),
    ("jsbi.benchmark",),
    ("jsbi.cli", "jsbi.inference", "jsbi"),
]


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text())
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    # Every jsbi module this one imports, at any depth of its code.
    package = name if (ROOT.parent / name.replace(".", "/") / "__init__.py").exists() else None
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                anchor = (package or name.rpartition(".")[0]).split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + [node.module])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != name}


def _layer(module: str) -> int:
    best = (-1, -1)
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), i))
    assert best[1] >= 0, f"{module} is in no layer"
    return best[1]


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{name} -> {target}"
        for name, tree in MODULES.items()
        for target in _imports(name, tree)
        if _layer(target) > _layer(name)
    ]
    assert not upward, upward


def test_no_import_cycle():
    graph = {name: _imports(name, tree) for name, tree in MODULES.items()}
    # The top face and the old face import lazily, by name, on demand: not a cycle.
    graph["jsbi"] = set()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_no_function_is_over_100_lines():
    long = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > 100:
                    long.append(f"{name}.{node.name}: {node.end_lineno - start + 1}")
    assert not long, long


def test_the_front_door_is_small():
    params = inspect.signature(jsbi.PosteriorEstimator.__init__).parameters
    named = [p for p in params.values() if p.kind is not p.VAR_KEYWORD and p.name != "self"]
    assert len(named) <= 8, [p.name for p in named]


def test_the_public_surface_is_about_a_hundred_names():
    names = set()
    for tree in MODULES.values():
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign) and node.value is not None
                else []
            )
            if any(getattr(t, "id", None) == "__all__" for t in targets):
                try:
                    names |= set(ast.literal_eval(node.value))
                except ValueError:  # built from other names: the top face
                    names |= set(jsbi.__all__)
    assert len(names) <= 120, len(names)


def test_objective_names_are_not_compared_as_strings():
    from jsbi.methods import METHODS

    objectives = set(METHODS) | {"sbi-npe"}
    compared = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            values = []
            for v in (node.left, *node.comparators):
                if isinstance(v, ast.Constant):
                    values.append(v.value)
                elif isinstance(v, (ast.Tuple, ast.List, ast.Set)):
                    values += [e.value for e in v.elts if isinstance(e, ast.Constant)]
            if objectives & {v for v in values if isinstance(v, str)}:
                compared.append(f"{name}:{node.lineno}")
    assert len(compared) <= 5, compared


def test_the_registry_the_cli_and_the_benchmark_list_the_same_methods():
    from jsbi.benchmark import METHODS as BENCHMARK
    from jsbi.cli import build_parser
    from jsbi.methods import BASELINE, METHODS, method_config
    from jsbi.methods.config import NPEConfig, SymmetricConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    run = next(a for a in sub.choices["run"]._actions if a.dest == "objective")
    assert list(run.choices) == list(METHODS)
    assert list(BENCHMARK) == [*METHODS, BASELINE]
    report = next(a for a in sub.choices["report"]._actions if a.dest == "objectives")
    assert all(name in report.help for name in BENCHMARK)
    # The same defaults: each name is one config, wherever it is built.
    prior = jsbi.get_task("two_moons").prior
    for name, config in METHODS.items():
        assert isinstance(config, (NPEConfig, SymmetricConfig))
        assert method_config(name) == config
        assert jsbi.PosteriorEstimator(prior, objective=name).method == config, name


@pytest.mark.parametrize("name", ["jeffreys", "srfe"])
def test_a_preset_is_its_config_and_a_config_is_accepted_whole(name):
    from jsbi.methods import METHODS

    prior = jsbi.get_task("two_moons").prior
    config = METHODS[name]
    est = jsbi.PosteriorEstimator(prior, objective=config)
    assert est.method is config
    changed = jsbi.PosteriorEstimator(prior, objective=config, gate_every=2).method
    assert changed == dataclasses.replace(config, gate_every=2)
