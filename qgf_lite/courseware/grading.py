"""Grading a submission: the student's code runs sandboxed, the grade is decided here.

For each submission the grader

1. reads the notebook in a limited child (:mod:`qgf_lite.courseware.reading`): a truncated, huge or hostile file
   gives a row saying so, never a crash of the grader;
2. runs the reference's setup cells here (trusted) and hands their results to a sandboxed child
   (:mod:`qgf_lite.courseware.sandbox`) as data: third-party modules by name, plain values as arrays; nothing
   of qgf_lite crosses, and qgf_lite is not importable there. The child then runs the submission's exercise
   cells (the last one when a student duplicated a cell) and its cheap helper cells (imports, ``def``s,
   constants; see :func:`~qgf_lite.courseware.assignments.is_setup_code`), in notebook order. Check cells of the
   submission are never used; nothing else of the notebook runs;
3. runs, in this (trusted) process, the *reference's* check cell of each question, on inputs drawn from the
   grading seed, with the student's functions replaced by stand-ins that call them in the child and return
   plain arrays; then the question's hidden checks (:mod:`qgf_lite.courseware.questions`);
4. reports (it does not score) code that names the package's own implementation: the sandbox has none to call,
   so such code simply fails there.

A time-out, a memory blow-up or a dead child costs the question that caused it; the child is restarted for the
remaining questions, as long as the submission's overall time limit allows.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import os
import threading
import time
import types
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qgf_lite.courseware.assignments import (
    METADATA_KEY,
    find_exercises,
    graded_cell_indices,
    is_setup_cell,
    read_notebook,
    to_python,
)
from qgf_lite.courseware.questions import Question, questions_for, sandbox_modules
from qgf_lite.courseware.reading import find_reference_uses, read_submission
from qgf_lite.courseware.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxLost,
    StudentFunction,
    _remote_exception,
    choose_backend,
    decode,
    encode,
    function_builders,
)
from qgf_lite.courseware.wire import WireError

DEFAULT_SEED = 20260417  # used only when neither --seed nor an autograder's grading_seed.txt gives one


@dataclass(frozen=True)
class Limits:
    """timeout: wall-clock seconds for a whole submission; question_timeout: for one question (or one cell);
    memory: resident bytes of the submission's processes; disk: bytes they may write in all."""

    timeout: float = 300.0
    question_timeout: float = 60.0
    memory: int = 4 * 2**30
    disk: int = 256 * 2**20

    def __post_init__(self):
        for name in ("timeout", "question_timeout", "memory", "disk"):
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


@dataclass
class _Plan:
    assignment: str
    exercises: list  # Exercise of the reference
    functions: dict  # exercise id -> names its reference cell defines
    check_sources: dict  # exercise id -> python source of the reference check cell
    setup_sources: list  # python sources of the reference setup cells (run here, never in the child)
    cells: list  # [{"index": label, "source": python}] for the child: the submission's cells only
    exercise_cell: dict  # exercise id -> label of the submission's cell
    exercise_source: dict  # exercise id -> python source submitted
    duplicates: dict  # exercise id -> number of cells with its header
    too_large: dict  # exercise id -> label of an exercise cell too large to run
    reference_uses: dict  # exercise id -> forbidden package functions its code names (a report)
    stored_assignment: str | None = None  # what the notebook's metadata says it is


def assignment_name(reference_nb, reference_path) -> str:
    return reference_nb.metadata.get(METADATA_KEY, {}).get("assignment") or Path(reference_path).stem


def _reference_parts(reference_nb, reference_path):
    exercises = find_exercises(reference_nb, name=str(reference_path), strict=True)
    graded = graded_cell_indices(reference_nb, exercises)
    setup = [i for i in graded if is_setup_cell(reference_nb.cells[i])]
    setup_sources = [_python(reference_nb.cells[i].source) for i in setup]
    functions = {ex.id: _defined_names(reference_nb.cells[ex.cell_index].source) for ex in exercises}
    check_sources = {ex.id: _python(reference_nb.cells[ex.check_index].source) for ex in exercises}
    return exercises, setup_sources, functions, check_sources


def _plan(reference_nb, reference_path, description: dict) -> _Plan:
    """What runs where, from the reference (trusted) and a submission's description (see reading.py)."""
    exercises, setup_sources, functions, check_sources = _reference_parts(reference_nb, reference_path)
    wanted = {ex.id for ex in exercises}
    cells_in = description.get("cells", [])
    last, counts = {}, {}
    for entry in cells_in:
        header = entry.get("header")
        if entry.get("type") == "code" and header and entry.get("check") is None:
            last[str(header[0])] = entry["index"]
            counts[str(header[0])] = counts.get(str(header[0]), 0) + 1
    chosen = {last[ex_id]: ex_id for ex_id in wanted if ex_id in last}
    known_setup = set(setup_sources)
    cells, exercise_cell, exercise_source, too_large = [], {}, {}, {}
    for entry in cells_in:
        index = entry.get("index")
        if entry.get("type") != "code" or entry.get("check") is not None:
            continue
        if index in chosen:
            ex_id = chosen[index]
            label = f"cell {index} (exercise {ex_id})"
            exercise_cell[ex_id], exercise_source[ex_id] = label, entry.get("python", "")
            if entry.get("too_large"):
                too_large[ex_id] = label
            else:
                cells.append({"index": label, "source": entry.get("python", "")})
            continue
        if entry.get("header"):
            continue  # an earlier copy of a duplicated exercise, or an exercise this assignment lacks
        if entry.get("setup_code") and entry.get("python") not in known_setup:
            cells.append({"index": f"cell {index} (helper)", "source": entry["python"]})
    return _Plan(
        assignment_name(reference_nb, reference_path),
        exercises,
        functions,
        check_sources,
        setup_sources,
        cells,
        exercise_cell,
        exercise_source,
        counts,
        too_large,
        dict(description.get("reference_uses", {})),
        description.get("assignment"),
    )


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
    def __init__(
        self, plan: _Plan, config: SandboxConfig, limits: Limits, deadline: float, jax_cache=None, keep_jax_cache=None
    ):
        self.plan, self.config, self.limits = plan, config, limits
        self.deadline = deadline
        self.jax_cache, self.keep_jax_cache = jax_cache, keep_jax_cache
        self.sandbox = None
        self.excluded: set = set()
        self.cell_errors: dict = {}
        self.cell_lost: dict = {}
        self.names: dict = {}
        self.call_deadline = deadline
        self.starts = 0
        self.builders = function_builders()
        self.handover, self.handover_arrays = _handover(_trusted_namespace(plan))

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
            self.sandbox = Sandbox(self.config, jax_cache=self.jax_cache)
            cells = [c for c in self.plan.cells if c["index"] not in self.excluded]
            names = sorted({n for names in self.plan.functions.values() for n in names})
            current = None
            try:
                self.sandbox.send(
                    {"op": "init", "handover": self.handover, "cells": cells, "names": names}, self.handover_arrays
                )
                while True:
                    limit = min(time.monotonic() + self.limits.question_timeout, self.deadline)
                    what = f"running {current}" if current else "starting Python and JAX"
                    header, _ = self.sandbox.receive(limit, what)
                    op = header.get("op")
                    if op == "cell_start":
                        current = str(header.get("index"))[:100]
                    elif op == "cell_done":
                        error = header.get("error")
                        if error:
                            error = error if isinstance(error, dict) else {}
                            self.cell_errors[str(header.get("index"))[:100]] = {
                                "type": str(error.get("type", "Error"))[:60],
                                "message": str(error.get("message", ""))[:500],
                            }
                        current = None
                    elif op == "ready":
                        names = header.get("names", {})
                        self.names = (
                            {str(k)[:100]: str(v)[:10] for k, v in names.items()} if isinstance(names, dict) else {}
                        )
                        break
            except SandboxLost as lost:
                self.close()
                if current is None or current not in {c["index"] for c in cells}:
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
        if reply.get("op") == "raised":
            raise _remote_exception(reply.get("error", {}))
        try:
            return decode(reply.get("value", {}), out, self.builders)
        except (WireError, RecursionError, TypeError, ValueError) as err:
            raise SandboxLost(f"the submission's answer could not be read ({str(err)[:200]})") from None

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


def _handover(namespace: dict) -> tuple[dict, dict]:
    """What the setup cells made, as the child receives it: third-party modules and functions by name, plain
    values (numbers, strings, arrays, containers of them) as data. Anything of qgf_lite stays here."""
    imports, attrs, values, arrays = [], [], {}, {}

    def of_package(module_name) -> bool:
        return str(module_name or "").split(".")[0] in ("qgf_lite", "__qgf_grader__", "__main__", "builtins")

    for name, value in namespace.items():
        if name.startswith("_") or name in ("get_ipython", "print"):
            continue
        if isinstance(value, types.ModuleType):
            if not of_package(value.__name__):
                imports.append([name, value.__name__])
            continue
        module = getattr(value, "__module__", None)
        if callable(value) and not hasattr(value, "__array__"):
            qualname = getattr(value, "__qualname__", "")
            if module and not of_package(module) and "." not in qualname and "<" not in qualname:
                try:
                    if getattr(importlib.import_module(module), qualname, None) is value:
                        attrs.append([name, module, qualname])
                except Exception:
                    pass
            continue
        trial: dict = {}
        tree = encode(value, trial, callables=False)
        if not _has_opaque(tree):
            offset = len(arrays)
            renamed = {f"h{offset + i}": a for i, a in enumerate(trial.values())}
            keys = dict(zip(trial, renamed))
            values[name] = _rename_arrays(tree, keys)
            arrays.update(renamed)
    return {"imports": imports, "attrs": attrs, "values": {"t": "dict", "items": values}}, arrays


def _has_opaque(tree) -> bool:
    """Whether an encoded value holds anything the wire cannot carry (then it is not handed over at all)."""
    if isinstance(tree, dict):
        return tree.get("t") == "opaque" or any(_has_opaque(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_opaque(v) for v in tree)
    return False


def _rename_arrays(tree, keys: dict):
    if isinstance(tree, dict):
        return {k: (keys.get(v, v) if k == "a" else _rename_arrays(v, keys)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rename_arrays(v, keys) for v in tree]
    return tree


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
        ex.id: {
            "title": ex.title,
            "points": 0.0,
            "max_points": ex.points,
            "passed": False,
            "message": status,
            "checks": [],
            "flags": [],
        }
        for ex in exercises
    }
    return {
        "notebook": str(path),
        "reference": None if reference is None else str(reference),
        "assignment": assignment,
        "questions": questions,
        "total": 0.0,
        "max_total": float(sum(ex.points for ex in exercises)),
        "status": status,
    }


def _sandbox_config(limits: Limits, plan: _Plan, backend, unsafe: bool, protect) -> SandboxConfig:
    # "trusted": the reference's own solutions (warm_jax_cache); no student code runs, so no sandbox is needed.
    chosen = "none" if backend == "trusted" else choose_backend(backend, unsafe=unsafe)
    return SandboxConfig(
        backend=chosen,
        memory=int(limits.memory),
        disk=int(limits.disk),
        modules=tuple(sandbox_modules(plan.assignment)),
        protect=tuple(str(p) for p in protect),
    )


def grade_submission(path, reference, **options) -> dict:
    """Grade one submission against an autograder (or source) notebook; never raises for a bad submission.

    Keyword options: seed, limits, questions, hide, backend, unsafe, jax_cache, keep_jax_cache (see
    :func:`_grade_submission`). Returns the report (see there).
    """
    with _GATE.shared():
        report = _grade_submission(path, reference, **options)
    _bound_trusted_memory()
    return report


def _grade_submission(
    path,
    reference,
    *,
    seed: int = DEFAULT_SEED,
    limits: Limits = Limits(),
    questions: dict | None = None,
    hide=(),
    backend: str | None = None,
    unsafe: bool = False,
    jax_cache=None,
    keep_jax_cache=None,
) -> dict:
    """Grade one submission against an autograder (or source) notebook; never raises for a bad submission.

    hide: folders the container (uid) backend makes unreadable to the sandbox user besides the package (the
    autograder, the submissions, the gradebook); the namespace backends show nothing outside their allow-list
    anyway. backend: see :func:`qgf_lite.courseware.sandbox.choose_backend` (default: the first that works);
    a machine where none works raises :class:`~qgf_lite.courseware.sandbox.SandboxUnavailable` unless
    ``unsafe``. jax_cache: a folder of JAX compilations (from :func:`warm_jax_cache`) each sandbox starts from.

    Returns {"notebook", "reference", "assignment", "questions": {id: {"title", "points", "max_points",
    "passed", "message", "checks": [{"name", "hidden", "points", "max_points", "passed", "message"}],
    "flags"}}, "total", "max_total", "status", "backend"}.
    """
    path = Path(path)
    reference_nb = read_notebook(reference)
    assignment = assignment_name(reference_nb, reference)
    exercises = find_exercises(reference_nb, name=str(reference), strict=True)
    definitions = questions_for(assignment) if questions is None else questions
    forbidden = {ex_id: list(q.forbidden()) for ex_id, q in definitions.items()}
    if not path.is_file():
        return _empty_report(path, reference, "unreadable: no such file", exercises, assignment)
    description = read_submission(path, forbidden)
    if "error" in description:
        return _empty_report(path, reference, str(description["error"])[:300], exercises, assignment)
    plan = _plan(reference_nb, reference, description)
    config = _sandbox_config(limits, plan, backend, unsafe, hide)
    start = time.monotonic()
    session = _Session(plan, config, limits, start + limits.timeout, jax_cache, keep_jax_cache)
    report = {
        "notebook": str(path),
        "reference": str(reference),
        "assignment": plan.assignment,
        "questions": {},
        "backend": config.backend,
    }
    problems = []
    stored = plan.stored_assignment
    if isinstance(stored, str) and stored and stored != plan.assignment:
        problems.append(f"the notebook's metadata names assignment {stored[:60]!r}, graded as {plan.assignment!r}")
    try:
        for ex in plan.exercises:
            question = definitions.get(ex.id, Question())
            if (question.function and question.function not in plan.functions.get(ex.id, [])) or (
                question.check and question.check not in plan.check_sources.get(ex.id, "")
            ):
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


TRUSTED_MEMORY_SOFT_LIMIT = 750 * 2**20  # after a clear about 300 MiB: one clear every ~20 submissions


class _SharedExclusive:
    """Many submissions are graded at once (shared); dropping JAX's caches waits for none to be (exclusive)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


_GATE = _SharedExclusive()


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _bound_trusted_memory() -> None:
    """The checks jit-compile for every new shape the hidden checks draw, and JAX keeps every executable: about
    12 MiB more per submission in this process (measured: 516 MiB after the warm-up, 608 MiB 8 submissions
    later). Past a soft limit, once no submission is being graded, drop JAX's caches and hand the freed memory
    back (malloc_trim): 588 -> 292 MiB; recompiling costs less than a grader that grows without end."""
    if _resident_bytes() <= TRUSTED_MEMORY_SOFT_LIMIT:
        return
    with _GATE.exclusive():
        if _resident_bytes() <= TRUSTED_MEMORY_SOFT_LIMIT:
            return
        import ctypes
        import gc

        import jax

        jax.clear_caches()
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _grade_question(ex, plan: _Plan, question: Question, session: _Session, seed: int, limits: Limits) -> dict:
    from qgf_lite.checks._core import collect_output, grading_seed

    public_points, hidden_points = question.split_points(ex.points)
    checks = [
        {
            "name": "public check",
            "hidden": False,
            "points": 0.0,
            "max_points": public_points,
            "passed": False,
            "message": "",
        }
    ]
    checks += [
        {"name": h.name, "hidden": True, "points": 0.0, "max_points": p, "passed": False, "message": ""}
        for h, p in zip(question.hidden, hidden_points)
    ]
    result = {
        "title": ex.title,
        "points": 0.0,
        "max_points": ex.points,
        "passed": False,
        "message": "",
        "checks": checks,
        "flags": [],
    }

    def fail_all(message, flag=None):
        for check in checks:
            check["message"] = check["message"] or message
        result["message"] = message
        if flag:
            result["flags"].append(flag)
        return result

    if ex.id not in plan.exercise_cell:
        return fail_all(
            f"no cell with the header '# EXERCISE {ex.id}: ...' in the submission; keep the exercise "
            "header line when you edit the cell",
            "exercise cell missing",
        )
    notes = []
    if plan.duplicates.get(ex.id, 1) > 1:
        notes.append(f"{plan.duplicates[ex.id]} cells carry this exercise's header; the last one was graded")
    if ex.id in plan.too_large:
        return fail_all(
            "the exercise cell is too large to grade (more than 200,000 characters)", "exercise cell too large"
        )
    used = [u for u in plan.reference_uses.get(ex.id, []) if u in question.forbidden()]
    if used:  # a report for the teacher: the sandbox has no qgf_lite, so such code fails there on its own
        result["flags"].append(
            "names the package's implementation (" + ", ".join(str(u).replace(":", ".") for u in used) + ")"
        )

    names = plan.functions.get(ex.id, [])
    question_start = time.monotonic()
    session.call_deadline = min(question_start + limits.question_timeout, session.deadline)
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
            for rest in checks[checks.index(check) + 1 :]:
                rest["message"] = f"not run: {err.reason}"
            break
        except BaseException as err:  # noqa: B036 - the trusted check's own error is a failed check
            if isinstance(err, KeyboardInterrupt):
                raise
            check["message"] = _message_of(err)
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
    report = grade_submission(
        reference, reference, seed=seed, limits=limits, hide=hide, backend="trusted", keep_jax_cache=target
    )
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
