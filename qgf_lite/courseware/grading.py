"""Grading a submission against an autograder notebook in a fresh kernel."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nbformat

from qgf_lite.courseware.assignments import (
    CHECK_TAG_PREFIX,
    Exercise,
    check_id,
    exercise_header,
    find_exercises,
    graded_cell_indices,
    read_notebook,
)

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


