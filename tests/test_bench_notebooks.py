"""benchmarks/bench_notebooks.py: its --quick run works end to end (CI covers it), and no notebook header or README
row quotes less CPU time than the committed measurement of that notebook's full run."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "notebook_times.json"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_notebooks", REPO / "benchmarks" / "bench_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_notebooks"] = module
    spec.loader.exec_module(module)
    return module


def test_header_quote_rounds_up(bench):
    assert bench.header_quote(59.4) == "1 min" and bench.header_quote(60) == "1 min"
    assert bench.header_quote(101) == "1 min 50 s" and bench.header_quote(41) == "50 s"
    assert bench.header_quote(210.6) == "4 min" and bench.header_quote(121) == "2 min 30 s"
    for seconds in (1, 9.9, 59.4, 101, 119.9, 121, 210.6, 600):
        assert bench.quoted_seconds(f"about {bench.header_quote(seconds)} of CPU time") >= seconds
    assert bench.quoted_seconds("about TIME_04 of CPU time") is None


def test_quick_run_measures_one_smoke_notebook(bench, tmp_path):
    pytest.importorskip("nbconvert")
    out = tmp_path / "times.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["notebooks"][f"{bench.QUICK_NOTEBOOK} (smoke)"]
    assert entry["mode"] == "smoke" and entry["cpu_s"] > 0 and entry["wall_s"] > 0
    assert entry["cpu_s"] == pytest.approx(entry["user_s"] + entry["sys_s"], abs=0.11)
    assert len(entry["load_average_start"]) == 3 and entry["header_quote"]


def _full_runs():
    if not RESULTS.is_file():
        return []
    return [
        (name, entry)
        for name, entry in json.loads(RESULTS.read_text())["notebooks"].items()
        if entry.get("mode") == "full"
    ]


@pytest.mark.parametrize(
    "name, entry",
    _full_runs()
    or [
        pytest.param(
            None,
            None,
            marks=pytest.mark.skip(reason="no committed measurement: run python benchmarks/bench_notebooks.py"),
        )
    ],
)
def test_headers_quote_at_least_the_measured_cpu_time(bench, name, entry):
    notebook = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    header = "".join(notebook["cells"][0]["source"])
    quoted = bench.quoted_seconds(header)
    assert quoted is not None, f"{name}: its header quotes no 'about ... of CPU time'"
    assert quoted >= entry["cpu_s"], f"{name}: header says {quoted} s, a full run measured {entry['cpu_s']} s"
    row = next(
        line for line in (REPO / "notebooks" / "README.md").read_text().splitlines() if line.startswith(f"| `{name}`")
    )
    in_readme = bench.quoted_seconds(re.sub(r"\|\s*$", "", row).split("|")[-1].strip() + " of CPU time")
    assert in_readme is not None and in_readme >= entry["cpu_s"], row
