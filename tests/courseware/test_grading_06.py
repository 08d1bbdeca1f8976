"""Notebook 06's exercises in the courseware: built, selftested, and graded with partial credit and hidden checks.

The typical bugs of each exercise lose the public check and the hidden check that targets them, and keep the
points of the hidden check they do not touch; a reference import scores 0 for its question.
"""

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from qgf_lite import courseware as cw

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "06_test_time_vs_training_time.ipynb"

# (old text in the solution, new text) per variant; each names the exercise it breaks.
VARIANTS = {
    "solved": [],
    "flow_target_not_frozen": [("jax.lax.stop_gradient(targets)", "targets")],
    "ties_to_the_first_weight": [("best = tied[np.argmin(weights[tied])]", "best = int(np.argmax(means))")],
    "imports_the_reference": [
        (
            "def select_weight(weights, heldout_scores, test_scores):",
            "from qgf_lite.toy.comparison import select_weight\n\n\ndef _unused(weights, heldout_scores, test_scores):",
        )
    ],
}
EXPECTED = {  # (6.1, 6.2) out of (2, 2): the public check is half, each of the two hidden checks a quarter
    "solved": (2.0, 2.0),
    "flow_target_not_frozen": (0.5, 2.0),  # public (gradient) and the hidden gradient check fail
    "ties_to_the_first_weight": (2.0, 0.5),  # public (tie case) and the hidden tie check fail
    "imports_the_reference": (2.0, 0.0),
}


def test_notebook_06_is_an_assignment_graded_with_hidden_checks(tmp_path):
    assert NOTEBOOK.name in cw.ASSIGNMENTS
    built = cw.build(tmp_path / "dist", [NOTEBOOK], log=lambda _: None)
    assert cw.selftest(tmp_path / "dist", built) == []  # solutions full marks, student versions zero

    solution = json.loads((tmp_path / "dist" / "solutions" / NOTEBOOK.name).read_text())
    subs = tmp_path / "subs"
    subs.mkdir()
    for name, edits in VARIANTS.items():
        nb = copy.deepcopy(solution)
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            if source.startswith("# EXERCISE"):
                for old, new in edits:
                    source = source.replace(old, new)
                cell["source"] = source
        assert json.dumps(nb) != json.dumps(solution) or not edits, f"{name}: an edit did not apply"
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    out = tmp_path / "out" / "grades.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qgf_lite.courseware",
            "grade",
            str(subs),
            "--autograder-dir",
            str(tmp_path / "dist" / "autograder"),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--seed",
            "606",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = {Path(row["submission"]).stem: row for row in csv.DictReader(handle)}
    got = {name: (float(row["6.1"]), float(row["6.2"])) for name, row in rows.items()}
    assert got == EXPECTED, got
    assert (
        "names the package's implementation (qgf_lite.toy.comparison.select_weight)"
        in rows["imports_the_reference"]["status"]
    )
