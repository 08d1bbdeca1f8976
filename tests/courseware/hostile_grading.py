"""Shared by the hostile-grading tests: grade tests/fixtures/grading/hostile under one sandbox backend, then check
that nothing escaped (no marked file anywhere it could matter, no marked process alive, the gradebook unchanged
after the daemons had time to act)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "tests" / "fixtures" / "grading" / "hostile"
EXPECTED = json.loads((HOSTILE / "expected.json").read_text())
MARK = "qgf_escape"
SEED = "515151"
HUGE = "huge_helper_cell"
EXPECTED[HUGE] = {"total": 6, "questions": {"1.1": 1, "1.2": 2, "1.3": 1, "1.4": 2}}


def require_backend(backend: str) -> None:
    """Skip where the backend cannot work; in CI (root, namespaces available) a missing backend fails."""
    from qgf_lite.courseware.sandbox import probe_backend

    reason = probe_backend(backend)
    if reason is None:
        return
    if os.environ.get("CI") and backend in ("bwrap", "uid"):
        pytest.fail(f"CI must test the {backend} backend, but: {reason}")
    pytest.skip(f"{backend} backend unavailable here: {reason}")


@contextlib.contextmanager
def interpreter_reachable_by_others():
    """The uid backend runs the child as another user: make the folders above the interpreter and site-packages
    traversable (o+x, not listable) for the test's duration, as docs/TEACHING.md tells a teacher to."""
    targets = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable))}
    targets |= {os.path.realpath(p) for p in sys.path if p.endswith("site-packages")}
    changed = []
    for target in targets:
        path = target
        while path != "/":
            path = os.path.dirname(path)
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH)
                changed.append((path, stat.S_IMODE(mode)))
    try:
        yield
    finally:
        for path, mode in changed:
            os.chmod(path, mode)


def make_huge_helper(target: Path) -> None:
    """The honest notebook with a 7 MB helper cell (made here rather than committed)."""
    nb = nbformat.read(HOSTILE / "honest_01_flow_matching.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "# EXERCISE 1.1" in c.source)
    nb.cells.insert(index, nbformat.v4.new_code_cell("BIG = [" + ", ".join(["0"] * 3_500_000) + "]"))
    nbformat.write(nb, target)


def marked_processes() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if MARK.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def marked_files(roots) -> list[str]:
    found = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root):
            if current.startswith(("/proc", "/sys")) or ".git" in dirs and current == str(REPO):
                dirs[:] = [d for d in dirs if d != ".git"]
            found += [os.path.join(current, n) for n in files + dirs if MARK in n]
            if current.count(os.sep) - str(root).count(os.sep) >= 6:
                dirs[:] = []
    return found


def grade_hostile(autograder: Path, root: Path, backend: str, env_extra=None) -> dict:
    subs = root / "submissions"
    subs.mkdir(parents=True)
    for path in HOSTILE.glob("*.ipynb"):
        shutil.copy(path, subs / path.name)
    make_huge_helper(subs / f"{HUGE}_01_flow_matching.ipynb")
    out = root / "out" / "grades.csv"
    env = dict(os.environ, QGF_SANDBOX_BACKEND=backend, **(env_extra or {}))
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qgf_lite.courseware",
            "grade",
            str(subs),
            "--autograder-dir",
            str(autograder),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--seed",
            SEED,
            "--question-timeout",
            "25",
            "--memory",
            "1.5",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        cwd=root,
    )
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    first = out.read_bytes()
    time.sleep(10)  # the daemon would rewrite the gradebook within 8 s
    with open(out, newline="") as handle:
        rows = {
            Path(row["submission"]).name.replace("_01_flow_matching.ipynb", ""): row for row in csv.DictReader(handle)
        }
    return {
        "rows": rows,
        "first": first,
        "out": out,
        "subs": subs,
        "root": root,
        "seconds": seconds,
        "stderr": done.stderr,
    }


def check_nothing_escaped(graded: dict) -> None:
    assert graded["out"].read_bytes() == graded["first"], "the gradebook changed after grading ended"
    assert marked_processes() == []
    import numpy

    site = os.path.dirname(os.path.dirname(numpy.__file__))
    roots = [site, str(REPO), "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), str(graded["root"])]
    assert marked_files(roots) == []
    assert sorted(p.name for p in graded["subs"].iterdir()) == sorted(
        [p.name for p in HOSTILE.glob("*.ipynb")] + [f"{HUGE}_01_flow_matching.ipynb"]
    )


def check_expected_grades(graded: dict) -> None:
    for name, want in EXPECTED.items():
        row = graded["rows"][name]
        got = {q: float(row[q]) for q in want["questions"]}
        assert got == {q: float(v) for q, v in want["questions"].items()}, (name, row["status"])


def check_hostile_text_is_bounded(graded: dict) -> None:
    text = graded["out"].read_text()
    assert max(len(line) for line in text.splitlines()) < 4000
    for row in graded["rows"].values():
        for value in row.values():
            assert not str(value).startswith(("=", "+", "-", "@")) or str(value).lstrip("-").replace(".", "").isdigit()
    status = graded["rows"]["knock_over_the_grader"]["status"]
    assert "too large" in status and "SystemError" not in graded["stderr"]
