"""Reading submissions without parsing them here, and a report of near-identical exercise cells.

The grader's process never parses a student's notebook: :func:`inspect_notebooks` asks a child started with
:func:`~qgf_lite.courseware.limited.run_limited` (CPU, memory and file-size limits; this module's ``__main__``)
to read each file (at most :data:`MAX_NOTEBOOK_BYTES`) and answer, per file, the assignment its metadata
names (``metadata["qgf_courseware"]["assignment"]``) and a normalised form of each exercise cell. The files go in
batches of :data:`BATCH` to one child (this file run as a script, standard library only: about 50 ms to start);
if a child fails as a whole (a crash, a limit), its batch is split in halves and retried, so a hostile file costs
its own answer only.

Similarity (:func:`similar_pairs`, written to ``similarity.csv`` beside ``grades.csv``): the exercise cell (the
code cell whose header line is ``# EXERCISE <id>: ...``) is parsed, docstrings are dropped (comments never reach
the AST), and every name the cell binds (arguments, local variables, loop targets, nested functions; not the
exercise's own top-level function names, not globals such as ``jnp``) is renamed to ``v0, v1, ...`` in order of
first appearance. Two cells of the same exercise whose normalised AST dumps have a ``difflib`` ratio of at
least :data:`THRESHOLD` are reported, and so is a cell that close to the reference solution (the autograder
notebook's exercise cell). Cells of fewer than :data:`MIN_NODES` AST nodes (after normalising; exercise 1.1's
two-line solution has 35) are not compared: a two-line exercise has one natural answer, so a match there says
nothing. The report is for the teacher to judge; it
changes no score. The comparison runs in a limited child too.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

# This file is also the limited child's script (``python -I similarity.py``): it imports only the standard
# library at module level; the trusted side imports qgf_lite inside its functions.
SCRIPT = "similarity.py"
MAX_NOTEBOOK_BYTES = 20 * 2**20  # larger files are not read (the row says so); the grader's own limit too
MAX_TOKENS = 5000  # per exercise cell, after normalising
MAX_FILE_TOKENS = 20_000  # per notebook (what the gradebook's state keeps for the next run stays small)
MAX_TOKEN_CHARS = 40
MAX_EXERCISES = 50
THRESHOLD = 0.9
MIN_NODES = 40
BATCH = 64
COMPARE_SECONDS = 300.0  # all comparisons of one run; past it the report says where it stopped
MAX_PAIRS = 2000  # per exercise
SECONDS_PER_FILE = 5.0
CHILD_MEMORY = 2 * 2**30
_HEADER = re.compile(r"^\s*#\s*EXERCISE\s+([0-9A-Za-z][0-9A-Za-z._-]{0,49})\s*:")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S")


# ---------------------------------------------------------------------------
# Child side (runs in the limited process)
# ---------------------------------------------------------------------------


class _Binder(ast.NodeVisitor):
    """Names the cell binds, in order of first appearance (source order), except top-level def/class names."""

    def __init__(self):
        self.order: list[str] = []
        self.depth = 0

    def _bind(self, name):
        if isinstance(name, str) and name not in self.order:
            self.order.append(name)

    def _function(self, node):
        if self.depth > 0:
            self._bind(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.depth += 1
        self.visit(node.args)
        for stmt in node.body:
            self.visit(stmt)
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node):
        if self.depth > 0:
            self._bind(node.name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Lambda(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_arg(self, node):
        self._bind(node.arg)
        self.generic_visit(node)

    def visit_Name(self, node):
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._bind(node.id)

    def visit_ExceptHandler(self, node):
        self._bind(node.name)
        self.generic_visit(node)

    def visit_Global(self, node):
        for name in node.names:
            self._bind(name)

    visit_Nonlocal = visit_Global


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping = mapping

    def _strip_docstring(self, node):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]

    def visit_Module(self, node):
        self._strip_docstring(node)
        return self.generic_visit(node)

    def _function(self, node):
        self._strip_docstring(node)
        node.name = self.mapping.get(node.name, node.name)
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _function

    def visit_arg(self, node):
        node.arg = self.mapping.get(node.arg, node.arg)
        node.annotation = None
        return node

    def visit_Name(self, node):
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_ExceptHandler(self, node):
        if node.name:
            node.name = self.mapping.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_Global(self, node):
        node.names = [self.mapping.get(n, n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global


def normalise(source: str) -> dict:
    """{"tokens": normalised AST dump as space-separated tokens, "nodes": AST size} (child side)."""
    tree = ast.parse(_plain_python(source))
    binder = _Binder()
    binder.visit(tree)
    mapping = {name: f"v{i}" for i, name in enumerate(binder.order)}
    tree = _Renamer(mapping).visit(tree)
    nodes = sum(1 for _ in ast.walk(tree))
    dump = ast.dump(tree, annotate_fields=False).replace("Load()", "").replace("'", " ")
    tokens = _TOKEN.findall(dump)
    return {"tokens": " ".join(tokens[:MAX_TOKENS]), "nodes": nodes, "truncated": len(tokens) > MAX_TOKENS}


def _plain_python(source: str) -> str:
    """IPython magics and shell escapes (``%timeit``, ``!pip``) commented out, so the rest parses."""
    return "\n".join("# " + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _cell_source(cell) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def _exercise_id(source: str) -> str | None:
    for line in source.splitlines()[:30]:
        match = _HEADER.match(line)
        if match:
            return match.group(1)
    return None


class _Refused(Exception):
    """A file this reader will not read (the message says why)."""


def inspect_file(path: str, max_bytes: int = MAX_NOTEBOOK_BYTES) -> dict:
    """One notebook: {"assignment", "exercises": {id: normalised}, "error"} (child side; never raises)."""
    result = {"assignment": None, "exercises": {}, "error": None}
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise _Refused(
                f"the file is {size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB a submission may have"
            )
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
        nb = json.loads(data.decode("utf-8"))
        if not isinstance(nb, dict):
            raise _Refused("not a notebook (the file holds no JSON object)")
        metadata = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
        stored = metadata.get("qgf_courseware") if isinstance(metadata.get("qgf_courseware"), dict) else {}
        assignment = stored.get("assignment")
        result["assignment"] = assignment[:200] if isinstance(assignment, str) else None
        cells = nb.get("cells") if isinstance(nb.get("cells"), list) else []
        exercises: dict = {}
        for cell in cells:
            if not isinstance(cell, dict) or cell.get("cell_type") != "code":
                continue
            source = _cell_source(cell)
            ex_id = _exercise_id(source)
            if ex_id is None:
                continue
            if ex_id not in exercises and len(exercises) >= MAX_EXERCISES:
                continue
            try:
                exercises[ex_id] = normalise(source)  # the last copy wins, as in grading
            except RecursionError:
                exercises[ex_id] = {"error": "the cell is nested too deeply to compare"}
            except MemoryError:
                exercises[ex_id] = {"error": "the cell is too large to compare"}
            except (SyntaxError, ValueError) as err:
                exercises[ex_id] = {"error": f"{type(err).__name__}: {str(err)[:100]}"}
        result["exercises"] = exercises
    except _Refused as err:
        result["error"] = str(err)
    except RecursionError:
        result["error"] = "the notebook's JSON is nested too deeply"
    except MemoryError:
        result["error"] = "the notebook is too large to read"
    except UnicodeDecodeError:
        result["error"] = "not a notebook (the file is not UTF-8 text)"
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        result["error"] = f"not a readable notebook ({str(err)[:200]})"
    except OSError as err:
        result["error"] = f"cannot read the file ({type(err).__name__})"
    except Exception as err:  # anything else our reader trips over costs this file only
        result["error"] = f"not a readable notebook ({type(err).__name__})"
    return result


def compare(
    items: list[dict],
    threshold: float = THRESHOLD,
    min_nodes: int = MIN_NODES,
    *,
    budget: float = COMPARE_SECONDS,
    max_pairs: int = MAX_PAIRS,
) -> dict:
    """Pairs of items of the same group whose token sequences have a ratio >= threshold (child side).

    Returns {"pairs": [[i, j, ratio]], "notes": {group: note}}. Identical sequences are grouped first (their
    pairs are 1.0 without comparing); ``difflib`` compares the distinct ones, with its cheap upper bounds first.
    A group whose comparisons run past ``budget`` seconds (in all) or that has more than ``max_pairs`` pairs is
    cut short with a note saying so.
    """
    import time
    from difflib import SequenceMatcher

    deadline = time.monotonic() + budget
    groups: dict = {}
    for index, item in enumerate(items):
        if item.get("nodes", 0) >= min_nodes and item.get("tokens"):
            groups.setdefault(item.get("group"), {}).setdefault(item["tokens"], []).append(index)
    pairs, notes = [], {}
    for group, distinct in groups.items():
        found = []
        keys = list(distinct)
        for members in distinct.values():
            found += [[members[i], members[j], 1.0] for j in range(len(members)) for i in range(j)]
        sequences = [key.split(" ") for key in keys]
        stopped = None
        for j in range(1, len(keys)):
            if stopped:
                break
            matcher = SequenceMatcher(None, autojunk=False)
            matcher.set_seq2(sequences[j])
            for i in range(j):
                if time.monotonic() > deadline:
                    stopped = f"stopped after {budget:g} s: compared {j} of {len(keys)} distinct cells"
                    break
                matcher.set_seq1(sequences[i])
                if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
                    continue
                ratio = matcher.ratio()
                if ratio >= threshold:
                    found += [[a, b, round(ratio, 4)] for a in distinct[keys[i]] for b in distinct[keys[j]]]
            if len(found) > max_pairs:
                stopped = f"more than {max_pairs} pairs (the exercise likely has one natural answer): listing the first"
                break
        if not stopped and len(found) > max_pairs:
            stopped = f"more than {max_pairs} pairs (the exercise likely has one natural answer): listing the first"
        if stopped:
            notes[group] = stopped
        found.sort(key=lambda p: -p[2])
        pairs += found[:max_pairs]
    return {"pairs": pairs, "notes": notes}


def handle(request: dict) -> dict:  # pragma: no cover - runs in the limited child
    import signal

    op = request.get("op")
    if op == "inspect":
        results = []

        def alarm(*_):
            raise TimeoutError

        signal.signal(signal.SIGALRM, alarm)
        for path in request.get("paths", []):
            signal.setitimer(signal.ITIMER_REAL, float(request.get("seconds", SECONDS_PER_FILE)))
            try:
                results.append(inspect_file(str(path), int(request.get("max_bytes", MAX_NOTEBOOK_BYTES))))
            except TimeoutError:
                results.append({"assignment": None, "exercises": {}, "error": "reading it took too long"})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return {"results": results}
    if op == "compare":
        return compare(
            request.get("items", []),
            float(request.get("threshold", THRESHOLD)),
            int(request.get("min_nodes", MIN_NODES)),
            budget=float(request.get("budget", COMPARE_SECONDS)),
            max_pairs=int(request.get("max_pairs", MAX_PAIRS)),
        )
    raise ValueError(f"unknown op {op!r}")


# ---------------------------------------------------------------------------
# Trusted side
# ---------------------------------------------------------------------------


def _clean(answer) -> dict:
    """An inspection answer with checked types and bounded sizes."""
    if not isinstance(answer, dict):
        return {"assignment": None, "exercises": {}, "error": "the inspecting process answered nonsense"}
    assignment = answer.get("assignment")
    error = answer.get("error")
    exercises = {}
    budget = MAX_FILE_TOKENS
    raw = answer.get("exercises") if isinstance(answer.get("exercises"), dict) else {}
    for ex_id, value in list(raw.items())[:MAX_EXERCISES]:
        if not isinstance(ex_id, str) or not isinstance(value, dict):
            continue
        if isinstance(value.get("error"), str):
            exercises[ex_id[:50]] = {"error": value["error"][:200]}
        elif isinstance(value.get("tokens"), str) and isinstance(value.get("nodes"), int):
            tokens = value["tokens"].split(" ")[: min(MAX_TOKENS, budget)]
            budget -= len(tokens)
            if not tokens:
                exercises[ex_id[:50]] = {"error": "not compared (the notebook's exercise cells are too long)"}
                continue
            exercises[ex_id[:50]] = {"tokens": " ".join(t[:MAX_TOKEN_CHARS] for t in tokens), "nodes": value["nodes"]}
    return {
        "assignment": assignment[:200] if isinstance(assignment, str) else None,
        "exercises": exercises,
        "error": error[:300] if isinstance(error, str) else None,
    }


def inspect_notebooks(
    paths: Sequence,
    *,
    batch: int = BATCH,
    seconds_per_file: float = SECONDS_PER_FILE,
    memory: int = CHILD_MEMORY,
    max_bytes: int = MAX_NOTEBOOK_BYTES,
) -> list[dict]:
    """For each path: {"assignment": metadata's name or None, "exercises": {...}, "error": None or why not}.

    Never parses anything in this process and never raises for a bad file.
    """
    from qgf_lite.courseware.limited import LimitedFailed, run_limited

    paths = [str(Path(p).resolve()) for p in paths]
    results: list = [None] * len(paths)

    def run(indices):
        request = {
            "op": "inspect",
            "paths": [paths[i] for i in indices],
            "max_bytes": max_bytes,
            "seconds": seconds_per_file,
        }
        try:
            answer = run_limited(SCRIPT, request, timeout=20.0 + seconds_per_file * len(indices), memory=memory)
            found = answer.get("results")
            if not isinstance(found, list) or len(found) != len(indices):
                raise LimitedFailed("answered for the wrong number of files")
        except LimitedFailed as err:
            if len(indices) == 1:
                results[indices[0]] = {
                    "assignment": None,
                    "exercises": {},
                    "error": f"the process reading it failed ({str(err)[:200]})",
                }
                return
            half = len(indices) // 2
            run(indices[:half])
            run(indices[half:])
            return
        for i, value in zip(indices, found):
            results[i] = _clean(value)

    for start in range(0, len(paths), batch):
        run(list(range(start, min(start + batch, len(paths)))))
    return results


def similar_pairs(
    submissions: dict,
    references: dict,
    *,
    threshold: float = THRESHOLD,
    min_nodes: int = MIN_NODES,
    budget: float = COMPARE_SECONDS,
) -> list[dict]:
    """Near-identical exercise cells. submissions: {name: (assignment, inspection)}; references:
    {assignment: inspection of its autograder notebook}. Returns rows sorted by ratio (highest first)."""
    items, labels = [], []
    for name, (assignment, found) in sorted(submissions.items()):
        for ex_id, value in (found or {}).get("exercises", {}).items():
            if "tokens" in value:
                items.append({"group": f"{assignment}\0{ex_id}", "tokens": value["tokens"], "nodes": value["nodes"]})
                labels.append((assignment, ex_id, name, False))
    for assignment, found in sorted(references.items()):
        for ex_id, value in (found or {}).get("exercises", {}).items():
            if "tokens" in value:
                items.append({"group": f"{assignment}\0{ex_id}", "tokens": value["tokens"], "nodes": value["nodes"]})
                labels.append((assignment, ex_id, "reference solution", True))
    if len(items) < 2:
        return []
    from qgf_lite.courseware.limited import run_limited

    request = {
        "op": "compare",
        "items": items,
        "threshold": threshold,
        "min_nodes": min_nodes,
        "budget": budget,
        "max_pairs": MAX_PAIRS,
    }
    answer = run_limited(SCRIPT, request, timeout=budget + 120.0, memory=CHILD_MEMORY)
    rows = []
    notes = answer.get("notes") if isinstance(answer.get("notes"), dict) else {}
    for group, note in notes.items():
        assignment, _, ex_id = str(group).partition("\0")
        rows.append(
            {
                "assignment": assignment,
                "exercise": ex_id,
                "submission": "",
                "other": "",
                "ratio": "",
                "nodes": "",
                "note": str(note)[:300],
            }
        )
    for pair in answer.get("pairs", []):
        try:
            i, j, ratio = int(pair[0]), int(pair[1]), float(pair[2])
            a, b = labels[i], labels[j]
        except (TypeError, ValueError, IndexError):
            continue
        if a[3] and not b[3]:
            a, b = b, a
        rows.append(
            {
                "assignment": a[0],
                "exercise": a[1],
                "submission": a[2],
                "other": b[2],
                "ratio": round(ratio, 3),
                "nodes": items[i]["nodes"],
                "note": "",
            }
        )
    rows.sort(
        key=lambda r: (
            -(r["ratio"] if r["ratio"] != "" else 2.0),
            r["assignment"],
            r["exercise"],
            r["submission"],
            r["other"],
        )
    )
    return rows


SIMILARITY_COLUMNS = ("assignment", "exercise", "submission", "other", "ratio", "nodes", "note")


def similarity_csv(rows: list[dict]) -> str:
    """similarity.csv's text (every field made spreadsheet-safe)."""
    from qgf_lite.courseware.gradebook import safe_field

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SIMILARITY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: safe_field(row.get(c, "")) for c in SIMILARITY_COLUMNS})
    return buffer.getvalue()


__all__ = ["MAX_NOTEBOOK_BYTES", "THRESHOLD", "inspect_notebooks", "normalise", "similar_pairs", "similarity_csv"]


if __name__ == "__main__":  # pragma: no cover - the limited child
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from limited import serve

    serve(handle)
