"""The package's import graph: no cycles (also none hidden in function-local imports), every module importable on
its own, no process-wide side effects at import (warnings filters), ``MUJOCO_GL`` set only where mujoco is first
imported, and an explicit ``__all__``."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import qgf_lite

PACKAGE = Path(qgf_lite.__file__).parent


def _modules() -> dict[str, Path]:
    found = {"qgf_lite": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="qgf_lite."):
        spec = info.module_finder.find_spec(info.name)
        found[info.name] = Path(spec.origin)
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> set[str]:
    """qgf_lite modules ``module`` imports anywhere in its source (module level or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from pkg import name` needs only pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import qgf_lite.x.y` as its deepest known module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _parent_packages(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_even_through_function_local_imports():
    # A package's __init__ importing its submodules and a submodule importing `from pkg.sub import x` is the
    # normal shape (Python imports the parent package first); what must not exist is a loop between modules.
    graph = {m: {d for d in _imported(m, p) if d not in _parent_packages(m)} for m, p in MODULES.items()}
    assert _cycles(graph) == []


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'qgf_lite' or m.startswith('qgf_lite.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    names = [m for m in MODULES if not m.endswith((".child", "__main__"))]  # these run, they are not imported
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def _module_level(tree: ast.Module):
    """Statements that run at import (module body, including inside if/try blocks at that level)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_process_wide_side_effect_at_import(module):
    tree = ast.parse(MODULES[module].read_text())
    for node in _module_level(tree):
        for call in ast.walk(node) if isinstance(node, ast.Expr) else ():
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                assert call.func.attr not in ("filterwarnings", "simplefilter"), (
                    f"{module} changes the warnings filters of the whole process at import (line {call.lineno}); "
                    "filter inside the function that causes the warning, with warnings.catch_warnings()"
                )


def _sets_mujoco_gl(tree: ast.Module) -> bool:
    """os.environ.setdefault("MUJOCO_GL", ...) or os.environ["MUJOCO_GL"] = ... anywhere in the code (text that
    only mentions it, such as a generated notebook cell, does not count)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "MUJOCO_GL"
        ):
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and t.slice.value == "MUJOCO_GL"
            for t in node.targets
        ):
            return True
    return False


def test_mujoco_gl_is_set_only_where_mujoco_is_first_imported():
    setters = sorted(m for m, p in MODULES.items() if _sets_mujoco_gl(ast.parse(p.read_text())))
    assert setters == ["qgf_lite.ogbench.environments"], setters
    assert _sets_mujoco_gl(ast.parse('import os\nos.environ["MUJOCO_GL"] = "egl"'))
    assert not _sets_mujoco_gl(ast.parse('text = \'os.environ.setdefault("MUJOCO_GL", "egl")\''))


def test_every_public_module_declares_its_all():
    for module, path in MODULES.items():
        if module.rpartition(".")[2].startswith("_") or module.endswith("__main__") or module.endswith(".child"):
            continue
        tree = ast.parse(path.read_text())
        declared = [
            n
            for n in tree.body
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
        ]
        assert declared, f"{module} has no __all__"
        assert isinstance(declared[-1].value, (ast.List, ast.Tuple)), f"{module}'s __all__ is computed, not listed"
