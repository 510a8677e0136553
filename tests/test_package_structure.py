"""The package's shape: no import cycles (module level or inside functions), no class too big."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "upsampler"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            targets = [root] + [f"{root}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def test_no_import_cycles():
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(path, name, modules) - {"upsampler"} for name, path in files.items()}
    cycles = []

    def visit(node, stack, seen):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_no_class_is_too_big():
    """Modules a newcomer can hold in their head: no class longer than 250 lines."""
    big = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                big.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not big, big


def test_the_default_training_path_uses_no_private_keras_attribute():
    """The steps, the feed, the run directory and the loop reach Keras only through its public API:
    a ``_name`` attribute is one this module defines itself (a method or an assigned attribute)."""
    offenders = []
    for name in ("training/steps_tf.py", "training/steps_jax.py", "training/feed.py", "training/rundir.py",
                 "training/train.py", "training/trainer.py", "training/budget.py", "archs/srgan.py",
                 "losses/srgan.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        own |= {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in own):
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
