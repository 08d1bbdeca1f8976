"""Reading an assignment notebook: its exercises, its cheap setup cells, and the student / solution /
autograder versions derived from it (see :mod:`qgf_lite.courseware`)."""

from __future__ import annotations

import ast
import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nbformat

# nbformat is imported where a notebook is read or written: its import takes about a second, and the limited
# reader of submissions (reading.py) loads this file for its parsing helpers alone.


ASSIGNMENTS = (
    "01_flow_matching.ipynb",
    "02_critic_learning.ipynb",
    "03_guided_sampling.ipynb",
    "04_test_time_compute.ipynb",
    "05_ogbench_manipulation.ipynb",
    "06_test_time_vs_training_time.ipynb",
)

EXERCISE_HEADER = re.compile(
    r"^\s*#\s*EXERCISE\s+(?P<id>[0-9A-Za-z][0-9A-Za-z._-]*)\s*:\s*(?P<title>.*?)\s*"
    r"\[\s*(?P<points>\d+(?:\.\d+)?)\s*points?\s*\]\s*$"
)
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
CHECK_TAG_PREFIX = "check:"
SETUP_TAG = "setup"
SOLUTION_ONLY_TAG = "solution-only"
METADATA_KEY = "qgf_courseware"
NBFORMAT_VERSION = 4

# Calls that are cheap and side-effect free enough to run while grading.
# Anything else (training, data generation, plotting) makes a cell non-setup.
_SETUP_CALLS = frozenset(
    {
        "bool",
        "int",
        "float",
        "str",
        "tuple",
        "list",
        "dict",
        "set",
        "frozenset",
        "range",
        "len",
        "min",
        "max",
        "abs",
        "round",
        "print",
        "os.environ.get",
        "os.environ.setdefault",
        "os.getenv",
        "Path",
        "pathlib.Path",
        "Path.cwd",
        "pathlib.Path.cwd",
        "warnings.filterwarnings",
        "warnings.simplefilter",
        "jax.config.update",
        "np.set_printoptions",
        "numpy.set_printoptions",
        "dataclasses.field",
        "field",
        "functools.partial",
        "partial",
    }
)
# Line magics that only configure the session (`%load_ext autoreload`, ...).
_SETUP_MAGICS = frozenset({"load_ext", "autoreload", "matplotlib", "config"})


@dataclass(frozen=True)
class Exercise:
    """One graded question of a notebook."""

    id: str
    title: str
    points: float
    cell_index: int
    check_index: int | None


# ---------------------------------------------------------------------------
# Reading notebooks
# ---------------------------------------------------------------------------


def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    """Read and validate a notebook, with errors that name the file."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {str(path)!r}; pass the path to an .ipynb file")
    try:
        nb = nbformat.read(path, as_version=NBFORMAT_VERSION)
    except Exception as err:  # nbformat raises several unrelated types
        raise ValueError(f"{str(path)!r} is not a readable Jupyter notebook: {err}") from err
    return nb


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_header(cell, *, anywhere: bool = False) -> tuple[str, str, float] | None:
    """(id, title, points) if the cell's first non-blank line is an exercise header.

    anywhere=True (for submissions) also accepts a header below other lines, e.g. an import a student put
    above it.
    """
    if cell.get("cell_type") != "code":
        return None
    for line in cell.source.splitlines():
        if not line.strip():
            continue
        match = EXERCISE_HEADER.match(line)
        if match is not None:
            return match["id"], match["title"], float(match["points"])
        if not anywhere:
            return None
    return None


def submitted_exercises(nb) -> tuple[dict[str, int], dict[str, int]]:
    """For a submission: {exercise id: index of its cell} (the last one when a student duplicated the cell)
    and {exercise id: how many cells carry its header}."""
    cells: dict[str, int] = {}
    counts: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if check_id(cell) is not None:
            continue
        header = exercise_header(cell, anywhere=True)
        if header is not None:
            cells[header[0]] = index
            counts[header[0]] = counts.get(header[0], 0) + 1
    return cells, counts


def check_id(cell) -> str | None:
    """The exercise id a check cell belongs to, from its `check:<id>` tag."""
    if cell.get("cell_type") != "code":
        return None
    for tag in cell_tags(cell):
        if tag.startswith(CHECK_TAG_PREFIX):
            return tag[len(CHECK_TAG_PREFIX) :].strip()
    return None


def find_exercises(nb, *, name: str = "notebook", strict: bool = True) -> list[Exercise]:
    """All exercises of a notebook, in order, each paired with its check cell.

    strict=True (for source notebooks) rejects duplicate ids, exercises without a
    check cell after them, and check cells without an exercise. strict=False (for
    submissions, which students may have edited) only rejects duplicates.
    """
    headers: dict[str, tuple[str, float, int]] = {}
    checks: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        header = exercise_header(cell)
        if header is not None:
            ex_id, title, points = header
            if ex_id in headers:
                raise ValueError(
                    f"{name}: exercise id {ex_id!r} appears twice (cells {headers[ex_id][2]} and {index}); "
                    "give every exercise a unique id"
                )
            headers[ex_id] = (title, points, index)
        tagged = check_id(cell)
        if tagged is not None and tagged not in checks:
            checks[tagged] = index
    exercises = []
    for ex_id, (title, points, index) in headers.items():
        check_index = checks.get(ex_id)
        if check_index is not None and check_index < index:
            check_index = None
        if strict and check_index is None:
            raise ValueError(
                f"{name}: exercise {ex_id} (cell {index}) has no check cell after it; tag the code cell "
                f"that checks it with '{CHECK_TAG_PREFIX}{ex_id}'"
            )
        if strict and points <= 0:
            raise ValueError(f"{name}: exercise {ex_id} must be worth a positive number of points")
        exercises.append(Exercise(ex_id, title, points, index, check_index))
    if strict:
        orphans = sorted(set(checks) - set(headers))
        if orphans:
            raise ValueError(
                f"{name}: check cells tagged for unknown exercises {orphans}; "
                "fix the tag or add the '# EXERCISE <id>: <title> [<n> points]' header"
            )
    return exercises


# ---------------------------------------------------------------------------
# Which cells are cheap setup cells
# ---------------------------------------------------------------------------


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, ast.Call):  # Path.cwd() / get_ipython() chains
        base = _dotted_name(node.func)
        return None if base is None else f"{base}()"
    return None


def _is_setup_magic(call: ast.Call) -> bool:
    name = _dotted_name(call.func)
    if name not in ("get_ipython().run_line_magic",) or not call.args:
        return False
    magic = call.args[0]
    return isinstance(magic, ast.Constant) and magic.value in _SETUP_MAGICS


def _is_cheap_expression(node: ast.AST | None) -> bool:
    """Literals, names, containers, operators and allow-listed calls only."""
    if node is None:
        return True
    if isinstance(node, (ast.Constant, ast.Name)):
        return True
    if isinstance(node, ast.Attribute):
        return _is_cheap_expression(node.value)
    if isinstance(node, ast.Call):
        if _dotted_name(node.func) not in _SETUP_CALLS and not _is_setup_magic(node):
            return False
        args = list(node.args) + [kw.value for kw in node.keywords]
        return all(_is_cheap_expression(arg) for arg in args)
    if isinstance(node, ast.Starred):
        return _is_cheap_expression(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_cheap_expression(elt) for elt in node.elts)
    if isinstance(node, ast.Dict):
        return all(_is_cheap_expression(n) for n in list(node.keys) + list(node.values))
    if isinstance(node, ast.BinOp):
        return _is_cheap_expression(node.left) and _is_cheap_expression(node.right)
    if isinstance(node, ast.UnaryOp):
        return _is_cheap_expression(node.operand)
    if isinstance(node, ast.BoolOp):
        return all(_is_cheap_expression(v) for v in node.values)
    if isinstance(node, ast.Compare):
        return _is_cheap_expression(node.left) and all(_is_cheap_expression(c) for c in node.comparators)
    if isinstance(node, ast.IfExp):
        return all(_is_cheap_expression(n) for n in (node.test, node.body, node.orelse))
    if isinstance(node, ast.Subscript):
        return _is_cheap_expression(node.value) and _is_cheap_expression(node.slice)
    if isinstance(node, ast.Slice):
        return all(_is_cheap_expression(n) for n in (node.lower, node.upper, node.step))
    if isinstance(node, ast.JoinedStr):
        return all(_is_cheap_expression(v) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return _is_cheap_expression(node.value)
    return False


def _is_setup_statement(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
        return True
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # Defining a function runs only its decorators and defaults.
        return all(_is_cheap_expression(d) for d in stmt.decorator_list) and all(
            _is_cheap_expression(d) for d in stmt.args.defaults + stmt.args.kw_defaults
        )
    if isinstance(stmt, ast.ClassDef):
        return all(_is_cheap_expression(d) for d in stmt.decorator_list + stmt.bases) and all(
            _is_setup_statement(s) for s in stmt.body
        )
    if isinstance(stmt, ast.Assign):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.Expr):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.If):
        return _is_cheap_expression(stmt.test) and all(_is_setup_statement(s) for s in stmt.body + stmt.orelse)
    return False


def to_python(source: str) -> str:
    """IPython cell source (magics, shell escapes) as plain Python."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def is_setup_code(source: str) -> bool:
    """True if running this cell is cheap: imports, defs and constant assignments only."""
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        return False
    return bool(tree.body) and all(_is_setup_statement(stmt) for stmt in tree.body)


def is_setup_cell(cell) -> bool:
    if cell.get("cell_type") != "code" or exercise_header(cell) or check_id(cell):
        return False
    if SOLUTION_ONLY_TAG in cell_tags(cell):
        return False  # students never have these cells, so grading must not need them
    return SETUP_TAG in cell_tags(cell) or is_setup_code(cell.source)


# ---------------------------------------------------------------------------
# Source transformations
# ---------------------------------------------------------------------------


def _leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def stub_solution(source: str, ex_id: str, title: str, *, where: str = "cell") -> str:
    """Replace each BEGIN/END SOLUTION block by a TODO comment and a raise."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == BEGIN_SOLUTION:
            if inside:
                raise ValueError(f"{where}: nested '{BEGIN_SOLUTION}' at line {number} of exercise {ex_id}")
            inside = True
            indent = _leading_whitespace(line)
            out.append(f"{indent}# TODO (exercise {ex_id}): write your code here, then run the check cell below.")
            out.append(f'{indent}raise NotImplementedError("Exercise {ex_id}: {_escape(title)}")')
        elif marker == END_SOLUTION:
            if not inside:
                raise ValueError(f"{where}: '{END_SOLUTION}' without a BEGIN at line {number} of exercise {ex_id}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: exercise {ex_id} has '{BEGIN_SOLUTION}' without a matching '{END_SOLUTION}'")
    return "\n".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def strip_solution_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def _has_solution_block(source: str) -> bool:
    return any(line.strip() == BEGIN_SOLUTION for line in source.splitlines())


def clear_outputs(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def _tag_notebook(nb, assignment: str, version: str, exercises: Sequence[Exercise]) -> None:
    nb.metadata[METADATA_KEY] = {
        "assignment": assignment,
        "version": version,
        "questions": {ex.id: {"title": ex.title, "points": ex.points} for ex in exercises},
    }


def make_student_notebook(nb, *, name: str = "notebook"):
    """Student version: solutions stubbed out, outputs and solution-only cells removed."""
    exercises = find_exercises(nb, name=name)
    student = copy.deepcopy(nb)
    for ex in exercises:
        cell = student.cells[ex.cell_index]
        if not _has_solution_block(cell.source):
            raise ValueError(
                f"{name}: exercise {ex.id} has no '{BEGIN_SOLUTION}' ... '{END_SOLUTION}' block; "
                "fence the part students must write"
            )
        cell.source = stub_solution(cell.source, ex.id, ex.title, where=name)
    exercise_cells = {ex.cell_index for ex in exercises}
    for index, cell in enumerate(student.cells):
        stray = cell.cell_type == "code" and index not in exercise_cells and _has_solution_block(cell.source)
        if stray and SOLUTION_ONLY_TAG not in cell_tags(cell):
            # Would leak into the student version otherwise.
            raise ValueError(
                f"{name}: cell {index} has '{BEGIN_SOLUTION}' but no '# EXERCISE <id>: <title> [<n> points]' "
                f"header; add the header or tag the cell '{SOLUTION_ONLY_TAG}'"
            )
    student.cells = [c for c in student.cells if SOLUTION_ONLY_TAG not in cell_tags(c)]
    clear_outputs(student)
    _tag_notebook(student, Path(name).stem, "student", exercises)
    return student


def make_solution_notebook(nb, *, name: str = "notebook"):
    """Solutions version: full code without the marker lines, outputs cleared."""
    exercises = find_exercises(nb, name=name)
    solution = copy.deepcopy(nb)
    for cell in solution.cells:
        if cell.cell_type == "code":
            cell.source = strip_solution_markers(cell.source)
    clear_outputs(solution)
    _tag_notebook(solution, Path(name).stem, "solutions", exercises)
    return solution


def make_autograder_notebook(nb, *, name: str = "notebook"):
    """Only the cells grading runs: setup, exercises (with solutions) and checks.

    Running it top to bottom must pass every check, which makes it its own test.
    """
    exercises = find_exercises(nb, name=name)
    graded = graded_cell_indices(nb, exercises)
    reference = copy.deepcopy(nb)
    reference.cells = [reference.cells[i] for i in graded]
    for cell in reference.cells:
        cell.source = strip_solution_markers(cell.source)
    clear_outputs(reference)
    _tag_notebook(reference, Path(name).stem, "autograder", exercises)
    return reference


def graded_cell_indices(nb, exercises: Sequence[Exercise]) -> list[int]:
    wanted = {ex.cell_index for ex in exercises}
    wanted |= {ex.check_index for ex in exercises if ex.check_index is not None}
    wanted |= {i for i, cell in enumerate(nb.cells) if is_setup_cell(cell)}
    return sorted(wanted)


__all__ = [
    "ASSIGNMENTS",
    "BEGIN_SOLUTION",
    "cell_tags",
    "check_id",
    "CHECK_TAG_PREFIX",
    "clear_outputs",
    "END_SOLUTION",
    "Exercise",
    "EXERCISE_HEADER",
    "exercise_header",
    "find_exercises",
    "graded_cell_indices",
    "is_setup_cell",
    "is_setup_code",
    "make_autograder_notebook",
    "make_solution_notebook",
    "make_student_notebook",
    "METADATA_KEY",
    "NBFORMAT_VERSION",
    "read_notebook",
    "SETUP_TAG",
    "SOLUTION_ONLY_TAG",
    "strip_solution_markers",
    "stub_solution",
    "submitted_exercises",
    "to_python",
]
