"""Courseware: student versions, solutions and an autograder from one notebook.

Each teaching notebook is the single source of truth. It contains the
solutions, fenced like this inside an exercise cell::

    # EXERCISE 1.1: Interpolate between noise and data [2 points]
    def interpolate(a0, a1, t):
        ### BEGIN SOLUTION
        return (1 - t) * a0 + t * a1
        ### END SOLUTION

and the next code cell (tagged ``check:1.1``) calls a check that raises an
``AssertionError`` explaining the mismatch. From that we derive

* a student version: solution blocks become a TODO plus
  ``raise NotImplementedError``, outputs cleared, ``solution-only`` cells dropped;
* a solutions version: marker lines removed, outputs cleared;
* an autograder: a notebook holding only the cells needed for grading, which
  :func:`grade_notebook` combines with the exercise cells of a submission and
  runs in a fresh kernel. A question earns its points iff its check cell runs
  without error.

Which cells the grader runs: the exercise and check cells, plus *setup* cells.
A setup cell is either tagged ``setup`` or is recognised as cheap by reading
its code: only imports, function/class definitions and assignments of
constant-like expressions (see :func:`is_setup_code`). Everything else
(training loops, plots, data generation) is skipped, which keeps grading fast;
an exercise therefore has to work given the setup cells alone.

Command line::

    python -m qgf_lite.courseware build --out dist
    python -m qgf_lite.courseware grade submission.ipynb [--reference REF.ipynb]
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import nbformat

ASSIGNMENTS = (
    "01_flow_matching.ipynb",
    "02_critic_learning.ipynb",
    "03_guided_sampling.ipynb",
    "04_test_time_compute.ipynb",
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
        "bool", "int", "float", "str", "tuple", "list", "dict", "set", "frozenset",
        "range", "len", "min", "max", "abs", "round", "print",
        "os.environ.get", "os.environ.setdefault", "os.getenv",
        "Path", "pathlib.Path", "Path.cwd", "pathlib.Path.cwd",
        "warnings.filterwarnings", "warnings.simplefilter",
        "jax.config.update", "np.set_printoptions", "numpy.set_printoptions",
        "dataclasses.field", "field", "functools.partial", "partial",
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


def exercise_header(cell) -> tuple[str, str, float] | None:
    """(id, title, points) if the cell's first non-blank line is an exercise header."""
    if cell.get("cell_type") != "code":
        return None
    for line in cell.source.splitlines():
        if not line.strip():
            continue
        match = EXERCISE_HEADER.match(line)
        if match is None:
            return None
        return match["id"], match["title"], float(match["points"])
    return None


def check_id(cell) -> str | None:
    """The exercise id a check cell belongs to, from its `check:<id>` tag."""
    if cell.get("cell_type") != "code":
        return None
    for tag in cell_tags(cell):
        if tag.startswith(CHECK_TAG_PREFIX):
            return tag[len(CHECK_TAG_PREFIX):].strip()
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
        return (
            all(_is_cheap_expression(d) for d in stmt.decorator_list + stmt.bases)
            and all(_is_setup_statement(s) for s in stmt.body)
        )
    if isinstance(stmt, ast.Assign):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.Expr):
        return _is_cheap_expression(stmt.value)
    if isinstance(stmt, ast.If):
        return _is_cheap_expression(stmt.test) and all(
            _is_setup_statement(s) for s in stmt.body + stmt.orelse
        )
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
    return "\n".join(
        line for line in source.splitlines() if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)
    )


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


def colab_setup_cell(pip_spec: str):
    """A first cell that installs `pip_spec` and enables widgets on Google Colab only.

    Elsewhere it does nothing, and the grader skips it (it is not a setup cell).
    """
    if not isinstance(pip_spec, str) or not pip_spec.strip() or "\n" in pip_spec:
        raise ValueError(f"colab_install must be one pip requirement string, got {pip_spec!r}")
    source = "\n".join(
        [
            "# Google Colab only: install qgf_lite and turn on ipywidgets. Does nothing elsewhere.",
            "import sys",
            "",
            'if "google.colab" in sys.modules:',
            "    import subprocess",
            "",
            f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", {pip_spec.strip()!r}], check=True)',
            "    from google.colab import output",
            "",
            "    output.enable_custom_widget_manager()",
        ]
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["colab-setup"]
    return cell


def add_colab_setup(nb, pip_spec: str) -> None:
    """Insert the Colab cell after a leading title markdown cell (or first)."""
    position = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(position, colab_setup_cell(pip_spec))


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


# ---------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------


def _error_message(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return None


def _stdout(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
    ).strip()


def _grading_plan(reference, submission, sub_name: str) -> tuple[list, list[Exercise], dict[str, str]]:
    """Cells to run, the questions, and per-question problems found before running.

    With a reference (autograder) notebook, setup and check cells come from it and
    only exercise cells from the submission, so edited or deleted checks cannot
    change the grade. Without one, the submission is graded as it stands.
    """
    problems: dict[str, str] = {}
    if reference is None:
        exercises = find_exercises(submission, name=sub_name, strict=False)
        for ex in exercises:
            if ex.check_index is None:
                problems[ex.id] = f"the check cell tagged '{CHECK_TAG_PREFIX}{ex.id}' is missing"
        indices = graded_cell_indices(submission, exercises)
        return [copy.deepcopy(submission.cells[i]) for i in indices], exercises, problems

    exercises = find_exercises(reference, name="reference", strict=True)
    submitted = {ex.id: ex for ex in find_exercises(submission, name=sub_name, strict=False)}
    by_index = {ex.cell_index: ex for ex in exercises}
    cells = []
    for index in graded_cell_indices(reference, exercises):
        ex = by_index.get(index)
        if ex is None:
            cells.append(copy.deepcopy(reference.cells[index]))
        elif ex.id in submitted:
            cells.append(copy.deepcopy(submission.cells[submitted[ex.id].cell_index]))
        else:
            problems[ex.id] = (
                f"no cell starting with '# EXERCISE {ex.id}:' in the submission; "
                "keep the exercise header line when you edit the cell"
            )
    return cells, exercises, problems


def grade_notebook(
    path: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    *,
    cell_timeout: float = 300.0,
    kernel_name: str = "python3",
    smoke: bool = True,
) -> dict:
    """Grade a submitted notebook in a fresh kernel.

    Runs the setup cells, each exercise cell and each check cell (nothing else),
    and awards a question's points iff its check cell finishes without an error.

    Args:
      path: the submitted .ipynb.
      reference: optional autograder notebook (``dist/autograder/<name>.ipynb``);
        when given, setup and check cells are taken from it instead of the
        submission. Use it for real grading.
      cell_timeout: seconds any single cell may run.
      kernel_name: Jupyter kernel to start.
      smoke: set QGF_SMOKE=1 in the kernel so setup code picks small sizes.

    Returns:
      {"notebook", "reference", "questions": {id: {"title", "points",
      "max_points", "passed", "message"}}, "total", "max_total"}.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if cell_timeout <= 0:
        raise ValueError(f"cell_timeout must be positive seconds, got {cell_timeout!r}")
    path = Path(path)
    submission = read_notebook(path)
    ref_nb = None if reference is None else read_notebook(reference)
    cells, exercises, problems = _grading_plan(ref_nb, submission, str(path))

    exercise_of_check = {}
    exercise_of_cell = {}
    for position, cell in enumerate(cells):
        if check_id(cell) is not None:
            exercise_of_check[position] = check_id(cell)
        header = exercise_header(cell)
        if header is not None:
            exercise_of_cell[position] = header[0]

    outcome: dict[str, tuple[bool, str]] = {ex_id: (False, msg) for ex_id, msg in problems.items()}
    exercise_errors: dict[str, str] = {}
    run_nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(submission.metadata))
    env = dict(os.environ)
    if smoke:
        env["QGF_SMOKE"] = "1"
    client = NotebookClient(
        run_nb,
        timeout=cell_timeout,
        kernel_name=kernel_name,
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(path.resolve().parent)}},
    )
    fatal = None
    with client.setup_kernel(env=env):
        for position, cell in enumerate(run_nb.cells):
            if fatal is not None:
                break
            if exercise_of_check.get(position) in problems:
                continue  # nothing to check; keep the message saying why
            try:
                client.execute_cell(cell, position)
            except CellTimeoutError:
                cell.outputs = [
                    nbformat.v4.new_output(
                        "error", ename="Timeout", evalue=f"cell ran longer than {cell_timeout:g} s", traceback=[]
                    )
                ]
            except DeadKernelError as err:
                fatal = f"the kernel died ({err}); later questions were not graded"
                cell.outputs = [nbformat.v4.new_output("error", ename="DeadKernel", evalue=fatal, traceback=[])]
            error = _error_message(cell)
            if position in exercise_of_cell and error:
                exercise_errors[exercise_of_cell[position]] = error
            if position in exercise_of_check:
                ex_id = exercise_of_check[position]
                if error is None:
                    outcome[ex_id] = (True, _stdout(cell) or "check passed")
                else:
                    outcome[ex_id] = (False, error)

    questions = {}
    for ex in exercises:
        passed, message = outcome.get(ex.id, (False, fatal or "the check cell did not run"))
        if not passed and ex.id in exercise_errors:
            message = f"{message} (the exercise cell itself failed: {exercise_errors[ex.id]})"
        questions[ex.id] = {
            "title": ex.title,
            "points": ex.points if passed else 0.0,
            "max_points": ex.points,
            "passed": passed,
            "message": message,
        }
    return {
        "notebook": str(path),
        "reference": None if reference is None else str(reference),
        "questions": questions,
        "total": sum(q["points"] for q in questions.values()),
        "max_total": sum(q["max_points"] for q in questions.values()),
    }


# ---------------------------------------------------------------------------
# Building dist/
# ---------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Write text so readers never see half a file (temp file + os.replace)."""
    from qgf_lite.fileio import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def write_notebook(nb, path: Path) -> None:
    nbformat.validate(nb)
    write_atomically(path, nbformat.writes(nb))


def has_exercises(nb) -> bool:
    return any(exercise_header(cell) for cell in nb.cells)


def _autograder_readme(built: dict[str, list[Exercise]]) -> str:
    lines = [
        "# Autograder",
        "",
        "Generated by `python -m qgf_lite.courseware build`; do not edit by hand.",
        "Each notebook here holds only the cells grading runs (setup, exercises with",
        "solutions, checks). Grade a submission with",
        "",
        "    python grade.py SUBMISSION.ipynb [MORE.ipynb ...]",
        "",
        "which picks the matching reference notebook in this folder and prints a JSON",
        "report per submission. Equivalent:",
        "",
        "    python -m qgf_lite.courseware grade SUBMISSION.ipynb --reference <this folder>/<name>.ipynb",
        "",
        "A question earns its points iff its check cell runs without error in a fresh",
        "kernel (QGF_SMOKE=1). Setup and check cells come from the reference, only the",
        "exercise cells from the submission.",
        "",
        "| assignment | question | points |",
        "| --- | --- | --- |",
    ]
    for assignment, exercises in built.items():
        for ex in exercises:
            lines.append(f"| {assignment} | {ex.id}: {ex.title} | {ex.points:g} |")
    return "\n".join(lines) + "\n"


_GRADE_SCRIPT = '''\
"""Grade submissions against the reference notebooks in this folder.

Usage: python grade.py SUBMISSION.ipynb [MORE.ipynb ...]
"""
import sys
from pathlib import Path

from qgf_lite.courseware import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    sys.exit(main(["grade", *sys.argv[1:], "--autograder-dir", str(HERE)]))
'''


def build(
    out: str | os.PathLike,
    notebooks: Iterable[str | os.PathLike] | None = None,
    *,
    notebooks_dir: str | os.PathLike = "notebooks",
    colab_install: str | None = None,
    log=print,
) -> dict[str, list[Exercise]]:
    """Write student/, solutions/ and autograder/ under `out`.

    notebooks: source notebooks; default: the course assignments found in
    `notebooks_dir`. Notebooks without exercise markers are skipped with a message.
    colab_install: pip requirement (e.g. "qgf_lite @ git+https://...") that a
    first cell installs when the student or solution notebook runs on Colab.
    Returns {assignment name: its exercises}.
    """
    if colab_install is not None:
        colab_setup_cell(colab_install)  # validate before writing anything
    out = Path(out)
    if notebooks is None:
        notebooks_dir = Path(notebooks_dir)
        if not notebooks_dir.is_dir():
            raise FileNotFoundError(
                f"notebooks_dir {str(notebooks_dir)!r} does not exist; run from the repository root "
                "or pass --notebooks-dir"
            )
        sources = []
        for name in ASSIGNMENTS:
            candidate = notebooks_dir / name
            if candidate.is_file():
                sources.append(candidate)
            else:
                log(f"skip {candidate}: not found")
    else:
        sources = [Path(p) for p in notebooks]

    built: dict[str, list[Exercise]] = {}
    for source in sources:
        nb = read_notebook(source)
        if not has_exercises(nb):
            log(f"skip {source}: no '# EXERCISE <id>: <title> [<n> points]' cells")
            continue
        name = source.name
        stem = source.stem
        if stem in built:
            raise ValueError(f"two source notebooks are named {name!r}; assignment names must be unique")
        exercises = find_exercises(nb, name=str(source))
        student = make_student_notebook(nb, name=name)
        solutions = make_solution_notebook(nb, name=name)
        if colab_install is not None:
            add_colab_setup(student, colab_install)
            add_colab_setup(solutions, colab_install)
        write_notebook(student, out / "student" / name)
        write_notebook(solutions, out / "solutions" / name)
        write_notebook(make_autograder_notebook(nb, name=name), out / "autograder" / name)
        built[stem] = exercises
        total = sum(ex.points for ex in exercises)
        log(f"built {name}: {len(exercises)} exercises, {total:g} points")
    if built:
        write_atomically(out / "autograder" / "README.md", _autograder_readme(built))
        write_atomically(out / "autograder" / "grade.py", _GRADE_SCRIPT)
    else:
        log("no assignments with exercises found; nothing built")
    return built


def selftest(out: str | os.PathLike, built: dict[str, list[Exercise]], **grade_kwargs) -> list[str]:
    """Grade each built solutions and student notebook against its autograder.

    Solutions must earn full marks and untouched student versions zero; returns
    the problems found (empty when the build is consistent).
    """
    out = Path(out)
    problems = []
    for stem in built:
        reference = out / "autograder" / f"{stem}.ipynb"
        solved = grade_notebook(out / "solutions" / f"{stem}.ipynb", reference, **grade_kwargs)
        for ex_id, q in solved["questions"].items():
            if not q["passed"]:
                problems.append(f"{stem} solutions: exercise {ex_id} fails its check: {q['message']}")
        blank = grade_notebook(out / "student" / f"{stem}.ipynb", reference, **grade_kwargs)
        for ex_id, q in blank["questions"].items():
            if q["passed"]:
                problems.append(f"{stem} student version: exercise {ex_id} passes before any work is done")
    return problems


def find_reference(submission: str | os.PathLike, autograder_dir: str | os.PathLike) -> Path:
    """The autograder notebook matching a submission (by metadata, else by file name)."""
    autograder_dir = Path(autograder_dir)
    if not autograder_dir.is_dir():
        raise FileNotFoundError(f"autograder_dir {str(autograder_dir)!r} does not exist; run the build first")
    nb = read_notebook(submission)
    assignment = nb.metadata.get(METADATA_KEY, {}).get("assignment")
    candidates = [assignment] if assignment else []
    stem = Path(submission).stem
    candidates += [Path(a).stem for a in ASSIGNMENTS if stem.startswith(Path(a).stem) or Path(a).stem in stem]
    for candidate in candidates:
        reference = autograder_dir / f"{candidate}.ipynb"
        if reference.is_file():
            return reference
    available = sorted(p.name for p in autograder_dir.glob("*.ipynb"))
    raise ValueError(
        f"cannot tell which assignment {str(submission)!r} is (no '{METADATA_KEY}' metadata and no "
        f"matching file name); pass --reference, one of {available}"
    )


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgf_lite.courseware", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_build = sub.add_parser("build", help="build student, solution and autograder notebooks")
    p_build.add_argument("notebooks", nargs="*", help="source notebooks (default: the course assignments)")
    p_build.add_argument("--out", default="dist", help="output folder (default: dist)")
    p_build.add_argument("--notebooks-dir", default="notebooks", help="where the assignments live")
    p_build.add_argument(
        "--colab-install",
        metavar="PIP_SPEC",
        help='add a first cell that pip-installs PIP_SPEC on Google Colab, e.g. "qgf_lite @ git+https://..."',
    )

    p_build.add_argument(
        "--selftest",
        action="store_true",
        help="then grade every solutions (must pass) and student (must fail) notebook; exit 1 otherwise",
    )

    p_grade = sub.add_parser("grade", help="grade submissions; prints a JSON report")
    p_grade.add_argument("submissions", nargs="+", help="submitted .ipynb files")
    group = p_grade.add_mutually_exclusive_group()
    group.add_argument("--reference", help="autograder notebook to take setup and check cells from")
    group.add_argument("--autograder-dir", help="folder of autograder notebooks; the matching one is picked")
    p_grade.add_argument("--timeout", type=float, default=300.0, help="seconds per cell (default 300)")
    p_grade.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")

    args = parser.parse_args(argv)
    if args.command == "build":
        built = build(
            args.out, args.notebooks or None, notebooks_dir=args.notebooks_dir, colab_install=args.colab_install
        )
        if not built:
            return 1
        if args.selftest:
            problems = selftest(args.out, built)
            for problem in problems:
                print(f"SELFTEST FAILED: {problem}")
            if problems:
                return 1
            print(f"selftest passed: {len(built)} assignments grade full marks solved and zero unsolved")
        return 0

    reports = []
    for submission in args.submissions:
        reference = args.reference
        if args.autograder_dir:
            reference = find_reference(submission, args.autograder_dir)
        reports.append(
            grade_notebook(submission, reference, cell_timeout=args.timeout, kernel_name=args.kernel)
        )
    print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
