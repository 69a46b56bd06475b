r"""Architecture figures of the jsbi package: files and lines per folder, longest functions,
public names (the union of every module's ``__all__``) and objective-name string comparisons.

Usage:
    python benchmarks/code_metrics.py jsbi
"""

import ast
import collections
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "jsbi"
per_folder = collections.defaultdict(lambda: [0, 0])
funcs = []
comparisons = []
names = set()
OBJ = {"npe", "jeffreys", "srfe", "reverse", "distill", "sbi-npe", "jsbi-npe"}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".py"):
            continue
        p = os.path.join(dirpath, f)
        src = open(p).read()
        n = src.count("\n")
        folder = os.path.relpath(dirpath, os.path.dirname(root) or ".")
        per_folder[folder][0] += 1
        per_folder[folder][1] += n
        tree = ast.parse(src)
        for node in tree.body:  # __all__ = [...] or __all__: list[str] = [...]
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                target = node.target
            if getattr(target, "id", None) == "__all__":
                try:
                    names |= set(ast.literal_eval(node.value))
                except ValueError:  # built from other names
                    pass
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                funcs.append((node.end_lineno - start + 1, f"{p}:{node.name}"))
            if isinstance(node, ast.Compare):
                vals = [node.left, *node.comparators]
                for v in vals:
                    consts = []
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        consts = [v.value]
                    elif isinstance(v, (ast.Tuple, ast.List, ast.Set)):
                        consts = [
                            e.value
                            for e in v.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)
                        ]
                    if any(c in OBJ for c in consts) and any(
                        isinstance(o, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for o in node.ops
                    ):
                        comparisons.append(f"{p}:{node.lineno}")
                        break
print("files and lines per folder:")
tot = [0, 0]
for k in sorted(per_folder):
    print(f"  {k}: {per_folder[k][0]} files, {per_folder[k][1]} lines")
    tot[0] += per_folder[k][0]
    tot[1] += per_folder[k][1]
print(f"  total: {tot[0]} files, {tot[1]} lines")
funcs.sort(reverse=True)
print("largest functions:", ", ".join(f"{n} {name}" for n, name in funcs[:5]))
print("functions over 100 lines:", sum(1 for n, _ in funcs if n > 100))
print("objective-name string comparisons:", len(comparisons))
print("distinct names in every module's __all__:", len(names))
