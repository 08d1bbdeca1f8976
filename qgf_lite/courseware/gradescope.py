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

from qgf_lite.courseware.assignments import METADATA_KEY, read_notebook

ROOT_VARIABLE = "GRADESCOPE_ROOT"

_RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this once per submission. GRADESCOPE_ROOT replaces /autograder (for testing elsewhere).
set -u
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
"${{QGF_PYTHON:-python3}}" -m qgf_lite.courseware gradescope --root "$ROOT" \\
    --reference "$ROOT/source/{notebook}" --timeout {timeout:g} --question-timeout {question_timeout:g}
"""

_SETUP = """\
#!/usr/bin/env bash
# Gradescope runs this once while building the autograder image.
set -eu
apt-get update -qq && apt-get install -y -qq util-linux >/dev/null || true  # unshare, for the sandbox
python3 -m pip install --upgrade pip
python3 -m pip install -r /autograder/source/requirements.txt
"""


def course_requirement(release: str | None) -> str:
    """The pip requirement (with the ``course`` extra) the autograder image installs."""
    if release is None:
        try:
            from qgf_lite.notebook_tools import read_project_source

            release = read_project_source(".").requirement
        except (FileNotFoundError, ValueError, KeyError):
            from qgf_lite.version import __version__

            release = __version__
    release = release.strip()
    if release[0].isdigit():
        return f"qgf_lite[course]=={release}"
    if release.startswith("qgf_lite @"):
        return "qgf_lite[course] @" + release[len("qgf_lite @"):]
    return release  # a wheel path or URL: the course extra's dependencies come from the line below


def write_gradescope(out, built: dict, *, release: str | None = None, timeout: float = 300.0,
                     question_timeout: float = 60.0) -> list[Path]:
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
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in {
                "setup.sh": _SETUP,
                "run_autograder": _RUN_AUTOGRADER.format(notebook=notebook, timeout=timeout,
                                                         question_timeout=question_timeout),
                "requirements.txt": requirements,
                SEED_FILE: seed_text,
            }.items():
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o755 if name in ("setup.sh", "run_autograder") else 0o644) << 16
                archive.writestr(info, text)
            archive.write(out / "autograder" / notebook, notebook)
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
            tests.append({
                "name": f"{ex_id} {q['title']}: " + (f"hidden check: {check['name']}" if hidden else "public check"),
                "score": round(check["points"], 6),
                "max_score": round(check["max_points"], 6),
                "output": output,
                "visibility": "after_published" if hidden else "visible",
            })
        if not q.get("checks"):
            tests.append({"name": f"{ex_id} {q['title']}", "score": 0.0, "max_score": q["max_points"],
                          "output": q["message"], "visibility": "visible"})
    output = f"{report.get('total', 0):g} / {report.get('max_total', 0):g} points."
    if report.get("status") not in (None, "ok"):
        output += f" Grading notes: {report['status']}"
    if note:
        output += f" {note}"
    return {"score": round(float(report.get("total", 0.0)), 6), "output": output, "tests": tests,
            "visibility": "visible", "stdout_visibility": "hidden"}


def run_gradescope(root=None, reference=None, *, seed: int | None = None, limits=None) -> dict:
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
        (p for p in candidates if wanted in p.stem), candidates[0])
    note = "" if len(candidates) == 1 else f"(graded {chosen.name}, one of {len(candidates)} notebooks submitted)"
    report = grade_submission(chosen, reference, seed=seed, limits=limits or Limits(),
                              hide=[reference.parent, results_path.parent])
    results = gradescope_results(report, note)
    results_path.write_text(json.dumps(results, indent=2))
    return results


__all__ = ["course_requirement", "gradescope_results", "run_gradescope", "write_gradescope"]
