"""Gradescope: an ``autograder.zip`` per assignment, and the command its ``run_autograder`` calls.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once when building the image, and
for each submission copies the student's files into ``/autograder/submission`` and runs
``/autograder/run_autograder``, which must write ``/autograder/results/results.json``
(https://gradescope-autograders.readthedocs.io/en/latest/specs/). ``GRADESCOPE_ROOT`` replaces ``/autograder``
(the tests use a temporary folder laid out the same way).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import nbformat

from qgf_lite.courseware.assignments import METADATA_KEY, make_autograder_notebook, read_notebook

ROOT_VARIABLE = "GRADESCOPE_ROOT"

_RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this once per submission, as root. GRADESCOPE_ROOT replaces /autograder (for testing elsewhere).
set -u
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
PYTHON="${{QGF_PYTHON:-$ROOT/venv/bin/python}}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$ROOT/results"
# The student's code runs as an unprivileged sandbox uid (backend "uid": containers have no user namespaces),
# and nothing of the autograder (grading seed, reference), the submission or the results is readable by it.
chmod -R o= "$ROOT/source" "$ROOT/submission" "$ROOT/results" 2>/dev/null || true
cd "$ROOT/source"
QGF_SANDBOX_BACKEND="${{QGF_SANDBOX_BACKEND:-uid}}" "$PYTHON" -m qgf_lite.courseware gradescope --root "$ROOT" \\
    --reference "$ROOT/source/{notebook}" --timeout {timeout:g} --question-timeout {question_timeout:g}
"""

_SETUP = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, while building the autograder image (Ubuntu). qgf_lite needs Python 3.11
# or 3.12: use the image's python3 when it is one of those, else install 3.11 (deadsnakes on older Ubuntus).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
supported() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; }
PY=""
for candidate in python3 python3.12 python3.11; do
  if command -v "$candidate" >/dev/null && supported "$candidate"; then PY=$(command -v "$candidate"); break; fi
done
if [ -z "$PY" ]; then
  apt-get install -y -qq python3.11 python3.11-venv >/dev/null 2>&1 || {
    apt-get install -y -qq software-properties-common >/dev/null
    add-apt-repository -y ppa:deadsnakes/ppa && apt-get update -qq
    apt-get install -y -qq python3.11 python3.11-venv >/dev/null
  }
  PY=$(command -v python3.11)
fi
"$PY" -m venv /autograder/venv 2>/dev/null || { apt-get install -y -qq "$(basename "$PY")-venv" >/dev/null; "$PY" -m venv /autograder/venv; }
/autograder/venv/bin/python -m pip install -q --upgrade pip
/autograder/venv/bin/python -m pip install -q -r /autograder/source/requirements.txt
/autograder/venv/bin/python -c "import qgf_lite.courseware; print('qgf_lite courseware ready')"
"""


def course_requirement(release: str | None) -> str:
    """The pip requirement (with the ``course`` extra) the autograder image installs."""
    if release is None:
        try:
            from qgf_lite.presentation.notebook_tools import read_project_source

            release = read_project_source(".").requirement
        except (FileNotFoundError, ValueError, KeyError):
            from qgf_lite.version import __version__

            release = __version__
    release = release.strip()
    if release[0].isdigit():
        return f"qgf_lite[course]=={release}"
    if release.startswith("qgf_lite @"):
        return "qgf_lite[course] @" + release[len("qgf_lite @") :]
    return release  # a wheel path or URL: the course extra's dependencies come from the line below


def write_gradescope(
    out, built: dict, *, release: str | None = None, timeout: float = 300.0, question_timeout: float = 60.0
) -> list[Path]:
    """Write ``<out>/gradescope/<assignment>/autograder.zip`` for every built assignment."""
    from qgf_lite.courseware.batch import SEED_FILE

    out = Path(out)
    seed_text = (out / "autograder" / SEED_FILE).read_text()
    requirement = course_requirement(release)
    requirements = requirement + "\n"
    if not requirement.startswith("qgf_lite[course]"):
        requirements += "nbformat>=5.9\nnbclient>=0.8\nipykernel>=6\n"
    written = []
    for stem in built:
        notebook = f"{stem}.ipynb"
        folder = out / "gradescope" / stem
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "autograder.zip"
        # The reference inside the zip holds no solution: the grader needs only the setup and check cells and
        # the exercises' function names, so it is made from the student version.
        reference = make_autograder_notebook(read_notebook(out / "student" / notebook), name=notebook)
        reference_text = nbformat.writes(reference)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in {
                "setup.sh": _SETUP,
                "run_autograder": _RUN_AUTOGRADER.format(
                    notebook=notebook, timeout=timeout, question_timeout=question_timeout
                ),
                "requirements.txt": requirements,
                SEED_FILE: seed_text,
            }.items():
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o700 if name in ("setup.sh", "run_autograder") else 0o600) << 16
                archive.writestr(info, text)
            info = zipfile.ZipInfo(notebook)
            info.external_attr = 0o600 << 16
            archive.writestr(info, reference_text)
        target.chmod(0o600)  # it holds the grading seed
        written.append(target)
    return written


def gradescope_results(report: dict, note: str = "") -> dict:
    """Gradescope's results.json for one graded submission."""
    tests = []
    for ex_id, q in report.get("questions", {}).items():
        for check in q.get("checks", []):
            hidden = check["hidden"]
            if hidden:
                output = "passed" if check["passed"] else "failed (hidden check: its inputs are not shown)"
            else:
                output = check["message"]
            if q.get("flags") and not check["passed"]:
                output = f"{output}\n{q['message']}" if output != q["message"] else output
            tests.append(
                {
                    "name": f"{ex_id} {q['title']}: "
                    + (f"hidden check: {check['name']}" if hidden else "public check"),
                    "score": round(check["points"], 6),
                    "max_score": round(check["max_points"], 6),
                    "output": output,
                    "visibility": "after_published" if hidden else "visible",
                }
            )
        if not q.get("checks"):
            tests.append(
                {
                    "name": f"{ex_id} {q['title']}",
                    "score": 0.0,
                    "max_score": q["max_points"],
                    "output": q["message"],
                    "visibility": "visible",
                }
            )
    output = f"{report.get('total', 0):g} / {report.get('max_total', 0):g} points."
    if report.get("status") not in (None, "ok"):
        output += f" Grading notes: {report['status']}"
    if note:
        output += f" {note}"
    return {
        "score": round(float(report.get("total", 0.0)), 6),
        "output": output,
        "tests": tests,
        "visibility": "visible",
        "stdout_visibility": "hidden",
    }


def run_gradescope(
    root=None, reference=None, *, seed: int | None = None, limits=None, backend: str | None = None, unsafe: bool = False
) -> dict:
    """Grade ``<root>/submission/*.ipynb`` and write ``<root>/results/results.json``."""
    from qgf_lite.courseware.batch import read_seed
    from qgf_lite.courseware.grading import Limits, assignment_name, grade_submission

    root = Path(root or os.environ.get(ROOT_VARIABLE) or "/autograder")
    reference = Path(reference)
    results_path = root / "results" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    seed, _ = read_seed(reference.parent, seed)
    candidates = sorted(p for p in (root / "submission").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not candidates:
        results = {"score": 0.0, "output": "No .ipynb file was submitted: upload your notebook.", "tests": []}
        results_path.write_text(json.dumps(results, indent=2))
        return results
    wanted = assignment_name(read_notebook(reference), reference)

    def matches(path):
        try:
            return read_notebook(path).metadata.get(METADATA_KEY, {}).get("assignment") == wanted
        except (ValueError, FileNotFoundError):
            return False

    chosen = next((p for p in candidates if matches(p)), None) or next(
        (p for p in candidates if wanted in p.stem), candidates[0]
    )
    note = "" if len(candidates) == 1 else f"(graded {chosen.name}, one of {len(candidates)} notebooks submitted)"
    report = grade_submission(
        chosen,
        reference,
        seed=seed,
        limits=limits or Limits(),
        backend=backend,
        unsafe=unsafe,
        hide=[reference.parent, results_path.parent, root / "submission"],
    )
    results = gradescope_results(report, note)
    results_path.write_text(json.dumps(results, indent=2))
    return results


__all__ = ["course_requirement", "gradescope_results", "run_gradescope", "write_gradescope"]
