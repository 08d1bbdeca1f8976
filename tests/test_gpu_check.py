"""benchmarks/gpu_check.py: the --quick run end to end through its wrapper, bad --out paths, and the budget logic.

The quick run is the real command line (bash benchmarks/gpu_check.sh --quick) at tiny sizes on the CPU; what
it measures is not checked, only that every section ran and reported finite figures into one valid JSON file.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
WRAPPER = ROOT / "benchmarks" / "gpu_check.sh"
WHEELS = ROOT / "benchmarks" / "gpu_wheels.sh"
SECTIONS = (
    "bench_kernels",
    "seed_throughput",
    "paper_seed_throughput",
    "paper_train",
    "official_defaults_train",
    "slice_rotation",
    "cube_double",
)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def strict_json(path) -> dict:
    """The file as strict JSON: NaN or Infinity anywhere is an error."""

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(pathlib.Path(path).read_text(), parse_constant=reject)


def numbers(tree, path=""):
    """Every (path, value) leaf that is a number or None, under ``tree``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{path}/{i}")
    elif tree is None or (isinstance(tree, (int, float)) and not isinstance(tree, bool)):
        yield path, tree


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run through the wrapper, into a folder that does not exist yet."""
    out = tmp_path_factory.mktemp("gpu") / "not" / "yet" / "gpu_check.json"
    env = dict(
        os.environ,
        GPU_CHECK_INSTALL="0",
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("XLA_FLAGS", None)  # let --quick pick its cheap compile settings
    t0 = time.perf_counter()
    done = subprocess.run(
        ["bash", str(WRAPPER), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, strict_json(out), done.stdout, wall


def test_quick_run_writes_every_section_with_finite_figures(quick_run):
    out, report, stdout, wall = quick_run
    assert report["schema"] == "qgf_lite.gpu_check/1" and report["mode"] == "quick"
    assert report["complete"] is True and report["within_budget"] is True and report["errors"] == []
    assert report["warnings"] == []
    assert list(report["sections"]) == list(SECTIONS)
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["status"] == "ok" and section["ran"] is True, (name, section.get("traceback"))
        assert section["seconds"] > 0 and section["allotted_s"] >= section["min_s"]
        for path, value in numbers(section):
            assert value is not None and math.isfinite(value), f"{name}{path} = {value}"
    assert 0 < report["total_s"] < wall + 1
    assert "wrote" in stdout.splitlines()[-1]
    assert not list(out.parent.glob("*.tmp"))  # written atomically


def test_quick_run_reports_the_requested_figures(quick_run):
    _, report, _, _ = quick_run
    env = report["environment"]
    for key in ("jax_version", "backend", "platform", "device_kind", "python"):
        assert isinstance(env[key], str) and env[key], key
    assert env["device_count"] >= 1 and len(env["devices"]) == env["device_count"]
    assert len(env["load_average_start"]) == 3 and len(env["load_average_end"]) == 3
    assert env["xla_flags"]  # --quick as a script chose the cheap compile settings

    kernels = report["sections"]["bench_kernels"]
    for key in (
        "scan_vs_step_ratio_official_defaults",
        "scan_vs_step_ratio_toy",
        "train_steps_per_s_official_defaults",
        "step_pattern_steps_per_s_official_defaults",
        "guided_ms_batch1",
        "guided_ms_batch1000",
    ):
        assert kernels[key] > 0, key
    assert kernels["scan_vs_step_ratio_official_defaults"] == pytest.approx(
        kernels["train_steps_per_s_official_defaults"] / kernels["step_pattern_steps_per_s_official_defaults"]
    )

    for name, counts in (("seed_throughput", ["1", "4", "16"]), ("paper_seed_throughput", ["1", "4", "10", "16"])):
        section = report["sections"][name]
        assert section["preset"] == ("paper" if name.startswith("paper") else "official-defaults")
        seeds = section["per_num_seeds"]
        assert list(seeds) == counts
        for n, figures in seeds.items():
            assert figures["seed_steps_per_s"] == pytest.approx(int(n) * figures["steps_per_s_per_seed"])
            assert section["seed_steps_vs_one_seed"][n] == pytest.approx(
                figures["seed_steps_per_s"] / seeds["1"]["seed_steps_per_s"]
            )
    paper, official = report["sections"]["paper_train"], report["sections"]["official_defaults_train"]
    assert paper["preset"] == "paper" and official["preset"] == "official-defaults"
    assert paper["steps_per_s"] > 0 and official["steps_per_s"] > 0
    assert paper["minutes_for_500k_steps"] == pytest.approx(500_000 / paper["steps_per_s"] / 60)

    rotation = report["sections"]["slice_rotation"]
    assert rotation["preset"] == "paper" and rotation["data"]["num_slices"] == 2
    assert rotation["repeats_run"] == 1 and set(rotation["runs"]) == {"in_memory", "streamed", "synchronous"}
    for mode in ("streamed", "synchronous"):
        (run,) = rotation["runs"][mode]
        assert run["slices"] == [0, 1]  # one chunk per slice, in order
        assert run["max_resident"] <= 2  # never more than two slices held
    assert rotation["streamed_vs_in_memory"] == pytest.approx(
        rotation["median_chunk_steps_per_s"]["streamed"] / rotation["median_chunk_steps_per_s"]["in_memory"]
    )
    assert rotation["target_met"] == (rotation["streamed_vs_in_memory"] >= 0.95)

    cube = report["sections"]["cube_double"]
    assert cube["env_name"] == "cube-double-play-singletask-task2-v0"
    assert cube["generate"]["episodes"] >= 1 and cube["generate"]["transitions"] > 0
    assert cube["train"]["steps"] == cube["train"]["planned_steps"]
    evaluation = cube["evaluate"]
    assert evaluation["status"] == "ok"
    assert [r["label"] for r in evaluation["results"]] == ["BC", "QGF w=0.02", "QGF w=0.08"]
    for r in evaluation["results"]:
        low, high = r["success_ci95"]
        assert 0 <= low <= r["success_rate"] <= high <= 1 and r["episodes"] == evaluation["episodes_per_setting"]


def test_out_that_is_a_directory_is_a_clear_error(gpu_check, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--quick", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "is an existing directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_below_a_file_is_a_clear_error(gpu_check, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--quick", "--out", str(blocker / "gpu_check.json")])
    assert stop.value.code == 2
    assert "cannot create its folder" in capsys.readouterr().err


def test_tiny_budget_skips_the_sections_and_still_writes_valid_json(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    t0 = time.perf_counter()
    report = gpu_check.main(["--quick", "--budget-s", "1", "--out", str(out)])
    assert time.perf_counter() - t0 < 30  # nothing heavy ran
    assert strict_json(out) == report
    assert report["complete"] is True and report["budget_s"] == 1
    for name in SECTIONS:
        section = report["sections"][name]
        assert section["status"] == "skipped: budget" and section["ran"] is False, name
        assert section["allotted_s"] is None and section["seconds"] == 0


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_budget_shares_the_time_and_skips_what_no_longer_fits(gpu_check):
    clock = FakeClock()
    budget = gpu_check.Budget(20.0, start=clock.now, clock=clock)
    deadlines = {}

    def spend(name, seconds):
        def run(deadline):
            deadlines[name] = deadline
            clock.now += seconds
            return {"spent": seconds}

        return run

    def broken(deadline):
        raise RuntimeError("no device")

    sections = [
        gpu_check.Section("a", 0.25, 3.0, spend("a", 14.0)),
        gpu_check.Section("b", 0.2, 2.0, spend("b", 1.0)),
        gpu_check.Section("c", 0.1, 1.0, broken),
        gpu_check.Section("d", 0.45, 6.0, spend("d", 1.0)),
    ]
    results = gpu_check.run_sections(sections, budget, log=lambda line: None)
    # a: a quarter of 20 s. b: 6 s left, its share (1.6 s) is below its minimum, so it gets the minimum.
    assert results["a"]["allotted_s"] == pytest.approx(5.0) and deadlines["a"] == pytest.approx(105.0)
    assert results["b"]["allotted_s"] == pytest.approx(2.0) and results["b"]["status"] == "ok"
    # c fails: recorded with its error, and the rest go on.
    assert results["c"]["status"] == "error: RuntimeError: no device" and results["c"]["ran"] is False
    assert "RuntimeError" in results["c"]["traceback"]
    # d needs 6 s and only 5 s are left: skipped.
    assert results["d"] == {
        "status": "skipped: budget",
        "ran": False,
        "allotted_s": None,
        "min_s": 6.0,
        "started_at_s": pytest.approx(15.0),
        "seconds": 0.0,
    }
    assert "d" not in deadlines


def test_unused_time_passes_to_later_sections(gpu_check):
    clock = FakeClock()
    budget = gpu_check.Budget(100.0, start=clock.now, reserve_s=10.0, clock=clock)
    assert budget.allot(0.25, [0.75], 1.0) == pytest.approx(22.5)
    clock.now += 2.0  # the first section finished early: 88 s left for the last one
    assert budget.allot(0.75, [], 1.0) == pytest.approx(88.0)
    assert budget.allot(0.75, [], 89.0) is None


def test_a_section_past_its_deadline_skips_its_later_items(gpu_check, monkeypatch):
    import jax.numpy as jnp

    calls = []

    def fake_init(config, seeds):
        return {"w": jnp.zeros((len(seeds), 2))}

    def fake_compiled(config, steps, multi_seed=False):
        def run(state, dataset):
            calls.append(state["w"].shape[0])
            return state, {"policy_loss": jnp.ones((state["w"].shape[0], steps))}

        return run

    monkeypatch.setattr(gpu_check.qgf_lite, "init_train_states", fake_init)
    monkeypatch.setattr(gpu_check.qgf_lite, "compiled_train_steps", fake_compiled)
    plan = gpu_check.quick_plan()
    out = gpu_check.section_seed_throughput(plan, deadline=time.perf_counter() - 1.0, measured={})
    # The section was admitted, so its first item runs once (compile call + one timed call); then the deadline.
    assert calls == [1, 1]
    assert out["per_num_seeds"]["1"]["seed_steps_per_s"] > 0
    assert out["per_num_seeds"]["4"] == out["per_num_seeds"]["16"] == "skipped: budget"
    assert out["skipped"] == ["4", "16"]


def test_scripts_parse_and_pin_their_wheels():
    for script in (WRAPPER, WHEELS):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    text = WHEELS.read_text()
    for package in ("ogbench==", "mujoco==", "mujoco-core==", "dm-control==", "gymnasium==", "imageio-ffmpeg=="):
        assert package in text, package
    assert "--python-version" in text and "--only-binary=:all:" in text and "--no-deps" in text


def test_full_plan_times_both_presets(gpu_check):
    from qgf_lite.training import QGFConfig

    plan = gpu_check.full_plan("gpu")
    assert plan.paper == QGFConfig.paper(40, 5)
    assert plan.official_defaults == QGFConfig.official_defaults(40, 5)
    assert {"paper_train", "official_defaults_train"} <= {name for name, _, _ in plan.sections}
