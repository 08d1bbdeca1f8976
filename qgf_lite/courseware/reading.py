"""Reading a submitted notebook without trusting it.

A submission is parsed (JSON, then each code cell's Python) only here, in a child started by
:func:`qgf_lite.courseware.limited.run_limited` with CPU, memory and file-size limits: a deeply nested
document, a 7 MB cell or a parser crash costs that submission's row, never the grader's threads. What comes back
is a plain description of the cells (which is an exercise, a check, a cheap helper), the assignment named in the
notebook's metadata, and which forbidden package functions each exercise's code mentions (a report for the
teacher, not a defence: the sandbox has no qgf_lite to call).

Run by path (``python -I reading.py``), this file imports only the standard library and ``assignments.py`` next
to it; :func:`read_submission` is the grader's side.
"""

from __future__ import annotations

import ast
import json
import os
import sys

MAX_NOTEBOOK_BYTES = 20 * 2**20
MAX_CELL_CHARS = 200_000  # a longer cell is never parsed or run
READ_TIMEOUT = 30.0
READ_MEMORY = 1536 * 2**20


def _assignments():
    if __name__ == "__main__":
        import assignments  # this folder is on sys.path (see the bottom of the file)

        return assignments
    from qgf_lite.courseware import assignments

    return assignments


class _Cell(dict):
    """Enough of nbformat's NotebookNode for the helpers in assignments.py."""

    def __getattr__(self, name):
        return self.get(name)


def _text(value) -> str:
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _qgf_bindings(trees) -> tuple[set, dict]:
    """Names bound to qgf_lite modules, and {name: attribute} for names imported from qgf_lite."""
    modules, imported = {"qgf_lite", "checks"}, {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "qgf_lite":
                        modules.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qgf_lite":
                for alias in node.names:
                    imported[alias.asname or alias.name] = alias.name
                    modules.add(alias.asname or alias.name)
    return modules, imported


def find_reference_uses(source: str, forbidden, other_sources=()) -> list[str]:
    """The forbidden ``module:attribute`` references an exercise's code mentions (read, never run)."""
    attrs = {path.partition(":")[2]: path for path in forbidden}
    if not attrs:
        return []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    others = []
    for other in other_sources:
        try:
            others.append(ast.parse(other))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    modules, imported = _qgf_bindings([tree, *others])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qgf_lite":
            found += [attrs[a.name] for a in node.names if a.name in attrs]
        elif isinstance(node, ast.Attribute) and node.attr in attrs:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(attrs[node.attr])
        elif isinstance(node, ast.Name) and imported.get(node.id) in attrs:
            found.append(attrs[imported[node.id]])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in attrs:
            found.append(attrs[node.value])  # getattr(qgf_lite, "euler_sample")
    return sorted(set(found))


def _python(a, source: str) -> str:
    if "%" not in source and "!" not in source:
        return source  # plain Python: IPython's transformer would return it unchanged
    try:
        return a.to_python(source)
    except Exception:
        return source


def describe(path: str, forbidden: dict | None = None) -> dict:
    """{"assignment", "cells": [...], "reference_uses": {id: [...]}} or {"error": "..."} for one notebook file."""
    a = _assignments()
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return {"error": f"unreadable: {err.strerror}"}
    if size > MAX_NOTEBOOK_BYTES:
        return {
            "error": f"unreadable: the file is {size / 2**20:.1f} MiB, more than a notebook of "
            f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MiB the grader reads"
        }
    try:
        with open(path, "rb") as handle:
            nb = json.loads(handle.read().decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        return {"error": f"unreadable: not a Jupyter notebook (invalid JSON: {str(err)[:120]})"}
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return {"error": "unreadable: not a Jupyter notebook of format 4 (no list of cells)"}
    metadata = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    stored = metadata.get(a.METADATA_KEY)
    assignment = stored.get("assignment") if isinstance(stored, dict) else None
    cells = []
    for index, raw in enumerate(nb["cells"]):
        raw = raw if isinstance(raw, dict) else {}
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        tags = [t for t in meta.get("tags", []) if isinstance(t, str)] if isinstance(meta.get("tags"), list) else []
        cell = _Cell(cell_type=raw.get("cell_type"), source=_text(raw.get("source")), metadata={"tags": tags})
        entry = {
            "index": index,
            "type": cell.cell_type if isinstance(cell.cell_type, str) else "?",
            "check": None,
            "header": None,
            "python": "",
            "setup_code": False,
            "too_large": False,
        }
        if entry["type"] == "code":
            entry["check"] = a.check_id(cell)
            header = a.exercise_header(cell, anywhere=True)
            entry["header"] = list(header) if header else None
            if len(cell.source) > MAX_CELL_CHARS:
                entry["too_large"] = True
            else:
                entry["python"] = _python(a, cell.source)
                if entry["check"] is None and header is None:
                    try:
                        entry["setup_code"] = a.is_setup_code(entry["python"])
                    except (RecursionError, MemoryError, ValueError):
                        entry["setup_code"] = False
        cells.append(entry)
    last = {}
    for entry in cells:
        if entry["header"] and entry["check"] is None:
            last[entry["header"][0]] = entry
    helpers = [c["python"] for c in cells if c["setup_code"]]
    uses = {
        ex_id: find_reference_uses(last[ex_id]["python"], paths, helpers)
        for ex_id, paths in (forbidden or {}).items()
        if ex_id in last
    }
    return {"assignment": assignment if isinstance(assignment, str) else None, "cells": cells, "reference_uses": uses}


def handle(request: dict) -> dict:
    return describe(str(request["path"]), request.get("forbidden") or {})


def read_submission(path, forbidden: dict | None = None) -> dict:
    """The grader's side: :func:`describe` run in a limited child. Never raises for a bad file."""
    from qgf_lite.courseware.limited import LimitedFailed, run_limited

    try:
        return run_limited(
            "reading.py",
            {"path": os.path.abspath(path), "forbidden": forbidden or {}},
            timeout=READ_TIMEOUT,
            memory=READ_MEMORY,
        )
    except LimitedFailed as err:
        return {"error": f"unreadable: reading the notebook failed ({err})"}


__all__ = [
    "describe",
    "find_reference_uses",
    "handle",
    "MAX_CELL_CHARS",
    "MAX_NOTEBOOK_BYTES",
    "READ_MEMORY",
    "read_submission",
    "READ_TIMEOUT",
]


if __name__ == "__main__":  # pragma: no cover - the limited child
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from limited import serve

    serve(handle)
