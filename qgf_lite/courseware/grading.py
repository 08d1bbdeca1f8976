"""Grading a submission: the student's code runs sandboxed, the grade is decided here.

For each submission the grader

1. reads the notebook (a truncated or unreadable file gives a row saying so, never a crash);
2. sends to a sandboxed child (:mod:`qgf_lite.courseware.sandbox`) the reference's setup cells, then the
   submission's exercise cells (the last one when a student duplicated a cell) and its cheap helper cells
   (imports, ``def``s, constants; see :func:`~qgf_lite.courseware.assignments.is_setup_code`), in notebook order.
   Check cells of the submission are never used; nothing else of the notebook runs;
3. runs, in this (trusted) process, the *reference's* check cell of each question, on inputs drawn from the
   grading seed, with the student's functions replaced by stand-ins that call them in the child and return
   plain arrays; then the question's hidden checks (:mod:`qgf_lite.courseware.questions`);
4. scores 0 a question whose code uses the package's own implementation of it (read from the code, and
   recorded at run time by tripwires in the child).

A time-out, a memory blow-up or a dead child costs the question that caused it; the child is restarted for the
remaining questions, as long as the submission's overall time limit allows.
"""

from __future__ import annotations

import ast
import contextlib
import io
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qgf_lite.courseware.assignments import (
    METADATA_KEY,
    check_id,
    exercise_header,
    find_exercises,
    graded_cell_indices,
    is_setup_cell,
    is_setup_code,
    read_notebook,
    submitted_exercises,
    to_python,
)
from qgf_lite.courseware.questions import Question, questions_for
from qgf_lite.courseware.sandbox import (
    Sandbox,
    SandboxLost,
    StudentFunction,
    decode,
    encode,
    function_builders,
)

DEFAULT_SEED = 20260417  # used only when neither --seed nor an autograder's grading_seed.txt gives one


@dataclass(frozen=True)
class Limits:
    """timeout: wall-clock seconds for a whole submission; question_timeout: for one question (or one cell);
    memory: resident bytes of the submission's process."""

    timeout: float = 300.0
    question_timeout: float = 60.0
    memory: int = 4 * 2**30

    def __post_init__(self):
        for name in ("timeout", "question_timeout", "memory"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")


# ---------------------------------------------------------------------------
# Which code runs where
# ---------------------------------------------------------------------------


def _python(source: str) -> str:
    try:
        return to_python(source)
    except Exception:
        return source


def _defined_names(source: str) -> list[str]:
    """Top-level functions and variables a (reference) exercise cell defines, functions first."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    functions, variables = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            functions.append(node.name)
        elif isinstance(node, ast.Assign):
            variables += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return functions + [v for v in variables if v not in functions]


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


def find_reference_uses(source: str, forbidden: tuple, other_sources=()) -> list[str]:
    """The forbidden ``module:attribute`` references the code of an exercise uses (read, not run)."""
    attrs = {path.partition(":")[2]: path for path in forbidden}
    if not attrs:
        return []
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    others = []
    for other in other_sources:
        try:
            others.append(ast.parse(_python(other)))
        except SyntaxError:
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


@dataclass
class _Plan:
    assignment: str
    exercises: list  # Exercise of the reference
    functions: dict  # exercise id -> names its reference cell defines
    check_sources: dict  # exercise id -> python source of the reference check cell
    setup_sources: list  # python sources of the reference setup cells
    cells: list  # [{"index": label, "source": python}] for the child
    exercise_cell: dict  # exercise id -> label of the submission's cell
    exercise_source: dict  # exercise id -> python source submitted
    duplicates: dict  # exercise id -> number of cells with its header


def assignment_name(reference_nb, reference_path) -> str:
    return reference_nb.metadata.get(METADATA_KEY, {}).get("assignment") or Path(reference_path).stem


def _plan(reference_nb, reference_path, submission_nb) -> _Plan:
    exercises = find_exercises(reference_nb, name=str(reference_path), strict=True)
    graded = graded_cell_indices(reference_nb, exercises)
    setup = [i for i in graded if is_setup_cell(reference_nb.cells[i])]
    setup_sources = [_python(reference_nb.cells[i].source) for i in setup]
    functions = {ex.id: _defined_names(reference_nb.cells[ex.cell_index].source) for ex in exercises}
    check_sources = {ex.id: _python(reference_nb.cells[ex.check_index].source) for ex in exercises}

    cells = [{"index": f"setup cell {i}", "source": src} for i, src in zip(setup, setup_sources)]
    submitted, counts = submitted_exercises(submission_nb)
    wanted = {ex.id for ex in exercises}
    chosen = {submitted[ex_id]: ex_id for ex_id in wanted if ex_id in submitted}
    known_setup = set(setup_sources)
    exercise_cell, exercise_source = {}, {}
    for index, cell in enumerate(submission_nb.cells):
        if cell.get("cell_type") != "code" or check_id(cell) is not None:
            continue
        if index in chosen:
            ex_id = chosen[index]
            label = f"cell {index} (exercise {ex_id})"
            source = _python(cell.source)
            cells.append({"index": label, "source": source})
            exercise_cell[ex_id], exercise_source[ex_id] = label, source
            continue
        if exercise_header(cell, anywhere=True) is not None:
            continue  # an earlier copy of a duplicated exercise, or an exercise this assignment lacks
        source = _python(cell.source)
        if source in known_setup or not is_setup_code(cell.source):
            continue
        cells.append({"index": f"cell {index} (helper)", "source": source})
    return _Plan(assignment_name(reference_nb, reference_path), exercises, functions, check_sources,
                 setup_sources, cells, exercise_cell, exercise_source, counts)


# ---------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------


def _seed(seed: int, *parts) -> int:
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0]) | 1  # never 0 (0 means "public seeds")


# ---------------------------------------------------------------------------
# A submission's sandbox, restarted after a kill
# ---------------------------------------------------------------------------


class _Session:
    def __init__(self, path: Path, plan: _Plan, tripwires, limits: Limits, deadline: float, hide, isolate,
                 jax_cache=None, keep_jax_cache=None):
        self.path, self.plan, self.tripwires, self.limits = path, plan, list(tripwires), limits
        self.deadline, self.hide, self.isolate = deadline, hide, isolate
        self.jax_cache, self.keep_jax_cache = jax_cache, keep_jax_cache
        self.sandbox = None
        self.excluded: set = set()
        self.cell_errors: dict = {}
        self.cell_lost: dict = {}
        self.names: dict = {}
        self.fired: set = set()
        self.call_deadline = deadline
        self.starts = 0
        self.builders = function_builders()

    def close(self):
        if self.sandbox is not None:
            self.sandbox.close()
            if self.keep_jax_cache is not None:
                self.sandbox.keep_jax_cache(Path(self.keep_jax_cache))
            self.sandbox.cleanup()
            self.sandbox = None

    def ensure(self):
        while self.sandbox is None:
            if time.monotonic() >= self.deadline:
                raise SandboxLost(f"the submission's time limit ({self.limits.timeout:g} s) was used up")
            self.starts += 1
            self.sandbox = Sandbox(self.path, memory_limit=self.limits.memory, hide=self.hide, isolate=self.isolate,
                                   jax_cache=self.jax_cache)
            cells = [c for c in self.plan.cells if c["index"] not in self.excluded]
            names = sorted({n for names in self.plan.functions.values() for n in names})
            current = None
            try:
                self.sandbox.send({"op": "init", "cells": cells, "names": names, "tripwires": self.tripwires})
                while True:
                    limit = min(time.monotonic() + self.limits.question_timeout, self.deadline)
                    what = f"running {current}" if current else "starting Python and JAX"
                    header, _ = self.sandbox.receive(limit, what)
                    op = header.get("op")
                    if op == "cell_start":
                        current = str(header.get("index"))
                    elif op == "cell_done":
                        if header.get("error"):
                            self.cell_errors[str(header.get("index"))] = header["error"]
                        current = None
                    elif op == "ready":
                        self.names = dict(header.get("names", {}))
                        break
            except SandboxLost as lost:
                self.close()
                if current is None:
                    raise
                self.excluded.add(current)
                self.cell_lost[current] = lost.reason

    def call(self, op, name, payload):
        self.ensure()
        arrays: dict = {}
        callbacks: list = []

        def register(fn):
            callbacks.append(fn)
            return len(callbacks) - 1

        header = {"op": op, "name": name, "args": encode(tuple(payload["args"]), arrays, register=register)}
        if op == "vjp":
            header["argnum"] = payload["argnum"]
            header["cotangent"] = encode(payload["cotangent"], arrays)
        self.sandbox.send(header, arrays)
        while True:
            reply, out = self.sandbox.receive(self.call_deadline, f"calling {name}")
            if reply.get("op") != "callback":
                break
            self._answer_callback(reply, out, callbacks)
        self.fired.update(reply.get("tripwires", []) if isinstance(reply.get("tripwires"), list) else [])
        if reply.get("op") == "raised":
            from qgf_lite.courseware.sandbox import _remote_exception

            raise _remote_exception(reply.get("error", {}))
        try:
            return decode(reply.get("value", {}), out, self.builders)
        except Exception as err:
            raise SandboxLost(f"the submission's answer could not be read ({err})") from None


    def _answer_callback(self, request, arrays, callbacks):
        """The child calls one of the check's own functions (one without a ``qgf_spec`` recipe) back."""
        out: dict = {}
        try:
            fn = callbacks[int(request.get("id", -1))]
            args = decode(request.get("args", {}), arrays)
            if not isinstance(args, tuple):
                raise TypeError("bad callback arguments")
            reply = {"op": "callback_result", "value": encode(fn(*args), out, callables=False)}
        except Exception as err:  # the child passed inputs the check's function rejects
            out = {}
            reply = {"op": "callback_result", "error": f"{type(err).__name__}: {err}"[:500]}
        self.sandbox.send(reply, out)


# ---------------------------------------------------------------------------
# Trusted side: the reference's setup cells, once per thread and assignment
# ---------------------------------------------------------------------------

_TRUSTED = threading.local()


def _trusted_namespace(plan: _Plan) -> dict:
    from qgf_lite.checks._core import emit

    cache = getattr(_TRUSTED, "cache", None)
    if cache is None:
        cache = _TRUSTED.cache = {}
    key = (plan.assignment, tuple(plan.setup_sources))
    if key not in cache:
        namespace = {"__name__": "__qgf_grader__", "print": lambda *a, **k: emit(" ".join(map(str, a)))}
        namespace["get_ipython"] = lambda: _Quiet()
        with contextlib.redirect_stderr(io.StringIO()):
            from qgf_lite.checks._core import collect_output

            with collect_output([]):
                for source in plan.setup_sources:
                    exec(compile(source, "<reference setup>", "exec"), namespace)
        cache[key] = namespace
    return dict(cache[key])


class _Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _message_of(err: BaseException) -> str:
    from qgf_lite.checks import CheckFailed

    if isinstance(err, CheckFailed):
        return str(err)
    if isinstance(err, AssertionError):
        return f"AssertionError: {err}".strip()
    return f"{type(err).__name__}: {err}".strip()


# ---------------------------------------------------------------------------
# Grading one submission
# ---------------------------------------------------------------------------


def _empty_report(path, reference, status, exercises=(), assignment=None):
    questions = {
        ex.id: {"title": ex.title, "points": 0.0, "max_points": ex.points, "passed": False, "message": status,
                "checks": [], "flags": []}
        for ex in exercises
    }
    return {"notebook": str(path), "reference": None if reference is None else str(reference),
            "assignment": assignment, "questions": questions, "total": 0.0,
            "max_total": float(sum(ex.points for ex in exercises)), "status": status}


def grade_submission(
    path,
    reference,
    *,
    seed: int = DEFAULT_SEED,
    limits: Limits = Limits(),
    questions: dict | None = None,
    hide=(),
    isolate: bool | None = None,
    jax_cache=None,
    keep_jax_cache=None,
) -> dict:
    """Grade one submission against an autograder (or source) notebook; never raises for a bad submission.

    jax_cache: a folder of JAX compilations (from :func:`warm_jax_cache`) each sandbox starts with a copy of.

    Returns {"notebook", "reference", "assignment", "questions": {id: {"title", "points", "max_points",
    "passed", "message", "checks": [{"name", "hidden", "points", "max_points", "passed", "message"}],
    "flags"}}, "total", "max_total", "status"}.
    """
    path = Path(path)
    reference_nb = read_notebook(reference)
    assignment = assignment_name(reference_nb, reference)
    exercises = find_exercises(reference_nb, name=str(reference), strict=True)
    try:
        submission = read_notebook(path)
    except (FileNotFoundError, ValueError) as err:
        return _empty_report(path, reference, f"unreadable: {err}", exercises, assignment)
    plan = _plan(reference_nb, reference, submission)
    definitions = questions_for(plan.assignment) if questions is None else questions
    tripwires = sorted({p for q in definitions.values() for p in q.forbidden()})
    start = time.monotonic()
    session = _Session(path, plan, tripwires, limits, start + limits.timeout, hide, isolate, jax_cache,
                       keep_jax_cache)
    report = {"notebook": str(path), "reference": str(reference), "assignment": plan.assignment, "questions": {}}
    problems = []
    try:
        for ex in plan.exercises:
            question = definitions.get(ex.id, Question())
            if (question.function and question.function not in plan.functions.get(ex.id, [])) or (
                    question.check and question.check not in plan.check_sources.get(ex.id, "")):
                question = Question()  # a definition written for another notebook's exercise
            result = _grade_question(ex, plan, question, session, seed, limits)
            report["questions"][ex.id] = result
            problems += [f"{ex.id}: {flag}" for flag in result["flags"]]
    finally:
        session.close()
    exercise_labels = set(plan.exercise_cell.values())
    problems += [f"{label}: {reason}" for label, reason in session.cell_lost.items() if label not in exercise_labels]
    report["total"] = float(sum(q["points"] for q in report["questions"].values()))
    report["max_total"] = float(sum(q["max_points"] for q in report["questions"].values()))
    report["status"] = "ok" if not problems else "; ".join(problems)
    report["seconds"] = round(time.monotonic() - start, 2)
    report["sandbox_starts"] = session.starts
    return report


def _grade_question(ex, plan: _Plan, question: Question, session: _Session, seed: int, limits: Limits) -> dict:
    from qgf_lite.checks._core import collect_output, grading_seed

    public_points, hidden_points = question.split_points(ex.points)
    checks = [{"name": "public check", "hidden": False, "points": 0.0, "max_points": public_points,
               "passed": False, "message": ""}]
    checks += [{"name": h.name, "hidden": True, "points": 0.0, "max_points": p, "passed": False, "message": ""}
               for h, p in zip(question.hidden, hidden_points)]
    result = {"title": ex.title, "points": 0.0, "max_points": ex.points, "passed": False, "message": "",
              "checks": checks, "flags": []}

    def fail_all(message, flag=None):
        for check in checks:
            check["message"] = check["message"] or message
        result["message"] = message
        if flag:
            result["flags"].append(flag)
        return result

    if ex.id not in plan.exercise_cell:
        return fail_all(f"no cell with the header '# EXERCISE {ex.id}: ...' in the submission; keep the exercise "
                        "header line when you edit the cell", "exercise cell missing")
    notes = []
    if plan.duplicates.get(ex.id, 1) > 1:
        notes.append(f"{plan.duplicates[ex.id]} cells carry this exercise's header; the last one was graded")
    other_sources = [c["source"] for c in plan.cells if c["index"].endswith("(helper)")]
    used = find_reference_uses(plan.exercise_source[ex.id], question.forbidden(), other_sources)
    if used:
        names = ", ".join(u.replace(":", ".") for u in used)
        return fail_all(f"the exercise uses the package's own implementation ({names}); write it yourself",
                        f"uses the reference implementation ({names})")

    names = plan.functions.get(ex.id, [])
    question_start = time.monotonic()
    session.call_deadline = min(question_start + limits.question_timeout, session.deadline)
    session.fired = set()
    lost = None
    try:
        session.ensure()
        session.call_deadline = min(time.monotonic() + limits.question_timeout, session.deadline)
    except SandboxLost as err:
        lost = err.reason
    label = plan.exercise_cell[ex.id]
    cell_problem = None
    if label in session.cell_lost:
        cell_problem = f"running the exercise cell: {session.cell_lost[label]}"
    elif label in session.cell_errors:
        error = session.cell_errors[label]
        cell_problem = f"the exercise cell raised {error.get('type')}: {error.get('message')}"
    if lost is not None:
        return fail_all(f"not graded: {lost}", lost)
    missing = [n for n in names if n not in session.names]
    if missing:
        message = f"the exercise cell does not define {', '.join('`' + n + '`' for n in missing)}"
        flag = None
        if label in session.cell_lost:
            flag = session.cell_lost[label]
        elif cell_problem and "SyntaxError" in cell_problem:
            flag = "syntax error"
        elif cell_problem:
            flag = f"the exercise cell raised {session.cell_errors[label].get('type')}"
        return fail_all(f"{cell_problem}; {message}" if cell_problem else message, flag)

    namespace = _trusted_namespace(plan)
    for other in {n for names_of in plan.functions.values() for n in names_of} - set(names):
        if session.names.get(other) == "callable":  # a check may also use earlier exercises' functions
            namespace[other] = StudentFunction(session, other)
    for name in names:
        if session.names.get(name) == "callable":
            namespace[name] = StudentFunction(session, name)
        else:
            try:
                namespace[name] = session.call("get", name, {"args": ()})
            except SandboxLost as err:
                return fail_all(f"not graded: {err.reason}", err.reason)
    main = namespace[names[0]] if names else None
    runs = [("public", None)] + [("hidden", h) for h in question.hidden]
    for check, (kind, hidden) in zip(checks, runs):
        lines: list = []
        try:
            with collect_output(lines):
                if kind == "public":
                    with grading_seed(_seed(seed, plan.assignment, ex.id, "public")):
                        exec(compile(plan.check_sources[ex.id], f"<check {ex.id}>", "exec"), namespace)
                else:
                    rng = np.random.default_rng(_seed(seed, plan.assignment, ex.id, hidden.name))
                    with grading_seed(_seed(seed, plan.assignment, ex.id, hidden.name, "inputs")):
                        hidden.run(main, rng)
            check["passed"] = True
            check["points"] = check["max_points"]
            check["message"] = "\n".join(lines).strip() or "passed"
        except SandboxLost as err:
            check["message"] = err.reason
            session.close()  # a fresh child for the next question
            result["flags"].append(err.reason)
            for rest in checks[checks.index(check) + 1:]:
                rest["message"] = f"not run: {err.reason}"
            break
        except BaseException as err:  # noqa: B036 - the trusted check's own error is a failed check
            if isinstance(err, KeyboardInterrupt):
                raise
            check["message"] = _message_of(err)
    fired = sorted(session.fired & set(question.forbidden()))
    if fired:
        names_used = ", ".join(f.replace(":", ".") for f in fired)
        return fail_all(f"the exercise called the package's own implementation ({names_used}) while graded; "
                        "write it yourself", f"called the reference implementation ({names_used})")
    result["points"] = float(sum(c["points"] for c in checks))
    result["passed"] = all(c["passed"] for c in checks)
    public = checks[0]["message"]
    if cell_problem and not checks[0]["passed"]:
        public = f"{public} (the exercise cell itself failed: {cell_problem})"
    result["message"] = "; ".join([public] + notes)
    return result


def warm_jax_cache(reference, target, *, seed: int = DEFAULT_SEED, limits: Limits = Limits(), hide=()) -> bool:
    """Grade the reference's own solutions once and keep the JAX compilations its sandbox made in ``target``.

    Students' code mostly runs the same operations on the same (grading-seed) shapes, so starting each sandbox
    with a copy of this cache saves most of JAX's per-operation compile time (about 3 of 5 CPU seconds per
    submission of assignment 01). Only trusted code (the reference) writes this cache; every sandbox gets its
    own copy. Returns whether the reference scored full marks (if not, the cache is still usable).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    report = grade_submission(reference, reference, seed=seed, limits=limits, hide=hide, keep_jax_cache=target)
    return report["total"] == report["max_total"]


def grade_notebook(
    path,
    reference=None,
    *,
    cell_timeout: float = 60.0,
    timeout: float = 300.0,
    memory: int = 4 * 2**30,
    seed: int = DEFAULT_SEED,
    **kwargs,
) -> dict:
    """Grade one submission (see :func:`grade_submission`); ``reference`` is required.

    reference: the autograder notebook (``dist/autograder/<name>.ipynb``) or the source notebook with solutions.
    The submission's own check cells are never used: a grade must not depend on code the student could edit.
    """
    if reference is None:
        raise ValueError(
            "grading needs the reference notebook: pass reference='dist/autograder/<name>.ipynb' (or the source "
            "notebook); a submission's own check cells are never trusted"
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"notebook not found: {str(path)!r}; pass the path to an .ipynb file")
    limits = Limits(timeout=timeout, question_timeout=cell_timeout, memory=memory)
    return grade_submission(path, reference, seed=seed, limits=limits, **kwargs)


__all__ = ["DEFAULT_SEED", "Limits", "find_reference_uses", "grade_notebook", "grade_submission", "warm_jax_cache"]
