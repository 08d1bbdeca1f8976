"""similarity.csv: near-identical exercise cells (normalised AST) are reported, honest work is not, scores are
untouched; submissions are read in a limited child and a hostile file costs its own answer only."""

import csv
from pathlib import Path

import nbformat
import pytest

from qgf_lite import courseware as cw
from qgf_lite.courseware import batch, limited
from qgf_lite.courseware.similarity import compare, inspect_notebooks, normalise, similar_pairs

REFERENCE = '''# EXERCISE 1.4: The Euler sampler [2 points]
def euler_sample(velocity, noise, steps):
    """Integrate da/dt = velocity(a, t) from t = 0 to 1 in `steps` Euler steps, then clip."""
    a = noise
    dt = 1.0 / steps
    for k in range(steps):
        t = jnp.full((a.shape[0],), k * dt)
        a = a + velocity(a, t) * dt
    return jnp.clip(a, -1.0, 1.0)
'''
RENAMED_COPY = '''# EXERCISE 1.4: The Euler sampler [2 points]
def euler_sample(v_field, x0, n):
    """My own integrator, written from scratch."""
    # step through time
    x = x0
    h = 1.0 / n
    for i in range(n):
        time = jnp.full((x.shape[0],), i * h)  # the current time
        x = x + v_field(x, time) * h
    return jnp.clip(x, -1.0, 1.0)
'''
LIGHTLY_EDITED_COPY = """# EXERCISE 1.4: The Euler sampler [2 points]
def euler_sample(f, z, m):
    z2 = z
    step = 1 / m
    for j in range(m):
        tt = jnp.ones((z2.shape[0],)) * (j * step)
        z2 = z2 + step * f(z2, tt)
    return jnp.clip(z2, -1, 1)
"""
HONEST = """# EXERCISE 1.4: The Euler sampler [2 points]
def euler_sample(velocity, noise, steps):
    batch = noise.shape[0]
    def body(i, state):
        times = jnp.broadcast_to(i / steps, (batch,))
        return state + velocity(state, times) / steps
    out = jax.lax.fori_loop(0, steps, body, noise)
    return jnp.minimum(jnp.maximum(out, -1.0), 1.0)
"""
HONEST_TOO = """# EXERCISE 1.4: The Euler sampler [2 points]
def euler_sample(velocity, noise, steps):
    ts = jnp.linspace(0.0, 1.0, steps, endpoint=False)
    a = noise
    for t in ts:
        a = a + velocity(a, jnp.full(a.shape[:1], t)) / steps
    return jnp.clip(a, -1, 1)
"""
SHORT = """# EXERCISE 1.1: Interpolate [1 point]
def interpolate(a0, a1, t):
    return (1 - t[:, None]) * a0 + t[:, None] * a1
"""


def _notebook(path: Path, *sources, assignment="01_flow_matching", check=False):
    nb = nbformat.v4.new_notebook()
    nb.metadata["qgf_courseware"] = {"assignment": assignment}
    for source in sources:
        nb.cells.append(nbformat.v4.new_code_cell(source))
        if check:
            ex_id = source.split()[2].rstrip(":")
            cell = nbformat.v4.new_code_cell("check()")
            cell.metadata["tags"] = [f"check:{ex_id}"]
            nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_normalising_renames_bound_names_and_drops_docstrings_and_comments():
    assert normalise(REFERENCE)["tokens"] == normalise(RENAMED_COPY)["tokens"]
    assert normalise(REFERENCE)["tokens"] != normalise(HONEST)["tokens"]
    tokens = normalise(REFERENCE)["tokens"].split()
    assert "euler_sample" in tokens and "jnp" in tokens  # the exercise's name and globals are kept
    assert "noise" not in tokens and "Integrate" not in tokens
    assert normalise("%timeit f()\n!pip install x\ndef f():\n    return 1\n")["nodes"] > 0  # magics skipped


def test_compare_reports_copies_and_not_honest_solutions():
    items = [
        {"group": "g", **normalise(src)} for src in (REFERENCE, RENAMED_COPY, LIGHTLY_EDITED_COPY, HONEST, HONEST_TOO)
    ]
    pairs = {(i, j): r for i, j, r in compare(items)["pairs"]}
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}
    assert pairs[(0, 1)] == 1.0 and 0.9 <= pairs[(0, 2)] < 1.0
    short = [{"group": "g", **normalise(SHORT)}, {"group": "g", **normalise(SHORT)}]
    assert compare(short)["pairs"] == []  # too short to tell copying from the one natural answer


@pytest.fixture
def graded(tmp_path, monkeypatch):
    calls = []

    def fake(path, reference, **kwargs):
        calls.append(Path(path).name)
        return {
            "notebook": str(path),
            "assignment": "01_flow_matching",
            "total": 1.0,
            "max_total": 2.0,
            "status": "ok",
            "questions": {
                "1.4": {
                    "title": "t",
                    "points": 1.0,
                    "max_points": 2.0,
                    "passed": False,
                    "message": "m",
                    "checks": [],
                    "flags": [],
                }
            },
        }

    monkeypatch.setattr(batch, "grade_submission", fake)
    auto = tmp_path / "autograder"
    _notebook(auto / "01_flow_matching.ipynb", SHORT, REFERENCE, check=True)
    subs = tmp_path / "subs"
    _notebook(subs / "ann_01_flow_matching.ipynb", SHORT, RENAMED_COPY)
    _notebook(subs / "ben_01_flow_matching.ipynb", SHORT, LIGHTLY_EDITED_COPY)
    _notebook(subs / "cat_01_flow_matching.ipynb", SHORT, HONEST)
    _notebook(subs / "dan_01_flow_matching.ipynb", SHORT, HONEST_TOO)
    deep = "# EXERCISE 1.4: The Euler sampler [2 points]\nx = " + "(" * 50_000 + ")" * 50_000 + "\n"
    _notebook(subs / "eve_01_flow_matching.ipynb", SHORT, deep)
    out = tmp_path / "out" / "grades.csv"
    rows = cw.grade_batch([subs], out=out, autograder_dir=auto, seed=1, progress=False, log=lambda _: None)
    return {"rows": rows, "out": out, "calls": calls, "subs": subs, "auto": auto}


def test_similarity_csv_lists_copies_of_each_other_and_of_the_reference(graded):
    with open(graded["out"].parent / "similarity.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    pairs = {(r["submission"], r["other"]): float(r["ratio"]) for r in table}
    assert set(pairs) == {
        ("ann_01_flow_matching.ipynb", "reference solution"),
        ("ann_01_flow_matching.ipynb", "ben_01_flow_matching.ipynb"),
        ("ben_01_flow_matching.ipynb", "reference solution"),
    }
    assert pairs[("ann_01_flow_matching.ipynb", "reference solution")] == 1.0
    assert {r["exercise"] for r in table} == {"1.4"} and {r["assignment"] for r in table} == {"01_flow_matching"}
    # It changes no score: every submission (the deeply nested cell too) was graded and kept its grade.
    assert sorted(graded["calls"]) == sorted(p.name for p in graded["subs"].iterdir())
    assert all(r["total"] == "1" and r["status"] == "ok" for r in graded["rows"])


def test_a_file_that_kills_the_reading_child_costs_its_own_answer(tmp_path, monkeypatch):
    real = limited.run_limited

    def crashing(script, request, **kwargs):
        if any("poison" in p for p in request.get("paths", [])):
            raise limited.LimitedFailed("exit code -11")  # what a parser crash (segfault) looks like
        return real(script, request, **kwargs)

    monkeypatch.setattr(limited, "run_limited", crashing)
    paths = [_notebook(tmp_path / f"s{i}.ipynb", REFERENCE) for i in range(5)]
    paths.insert(2, _notebook(tmp_path / "poison.ipynb", REFERENCE))
    found = inspect_notebooks(paths, batch=4)
    assert [f["error"] is None for f in found] == [True, True, False, True, True, True]
    assert found[2]["error"] == "the process reading it failed (exit code -11)"
    assert all(f["assignment"] == "01_flow_matching" for i, f in enumerate(found) if i != 2)


def test_reading_limits_cost_one_file(tmp_path):
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (21 * 2**20))
    nested = tmp_path / "nested.ipynb"
    nested.write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    binary = tmp_path / "binary.ipynb"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    fine = _notebook(tmp_path / "fine.ipynb", REFERENCE)
    found = inspect_notebooks([big, nested, binary, fine, tmp_path / "missing.ipynb"])
    assert found[0]["error"].startswith("the file is 21.0 MiB, more than the 20 MiB")
    assert found[1]["error"] == "the notebook's JSON is nested too deeply"
    assert found[2]["error"] == "not a notebook (the file is not UTF-8 text)"
    assert found[3]["error"] is None and found[3]["exercises"]["1.4"]["nodes"] > 40
    assert found[4]["error"] == "cannot read the file (FileNotFoundError)"


def test_similar_pairs_of_nothing_is_empty():
    assert similar_pairs({}, {}) == []


def test_comparing_is_bounded_in_time_and_in_pairs():
    same = [{"group": "g", **normalise(REFERENCE)} for _ in range(30)]  # identical: no difflib needed
    result = compare(same, max_pairs=100)
    assert len(result["pairs"]) == 100 and "more than 100 pairs" in result["notes"]["g"]
    distinct = [{"group": "g", **normalise(REFERENCE.replace("1.0 / steps", f"{i}.0 / steps"))} for i in range(5)]
    result = compare(distinct, budget=0.0)
    assert result["pairs"] == [] and result["notes"]["g"].startswith("stopped after 0 s")
