"""Hostile submissions against the namespace backends (bwrap, then unshare): expected grades, nothing escapes.

The container backend (uid) and Gradescope's layout are tested in tests/courseware/test_grading_container.py.
"""

import pytest
from hostile_grading import (
    REPO,
    check_expected_grades,
    check_hostile_text_is_bounded,
    check_nothing_escaped,
    grade_hostile,
    require_backend,
)

from qgf_lite import courseware as cw


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    cw.build(out, [REPO / "notebooks" / "01_flow_matching.ipynb"], log=lambda _: None)
    return out / "autograder"


@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_hostile_submissions_under_namespace_backends(backend, autograder, tmp_path):
    require_backend(backend)
    graded = grade_hostile(autograder, tmp_path, backend)
    check_expected_grades(graded)
    check_nothing_escaped(graded)
    check_hostile_text_is_bounded(graded)


def test_the_child_sees_an_allow_list(tmp_path):
    """What the bwrap child can see: no clone, no package, no home, its own /proc only, read-only system."""
    require_backend("bwrap")
    import time

    from qgf_lite.courseware.sandbox import Sandbox, SandboxConfig
    from qgf_lite.courseware.wire import decode

    sandbox = Sandbox(SandboxConfig(backend="bwrap", memory=2**31))
    probe = r"""
import os
def probe():
    out = {}
    out["root"] = sorted(os.listdir("/"))
    out["etc"] = sorted(os.listdir("/etc")) if os.path.isdir("/etc") else []
    out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["clone"] = sorted(os.listdir(REPO)) if os.path.isdir(REPO) else []
    out["home"] = sorted(os.listdir(HOME)) if os.path.isdir(HOME) else []
    try:
        import qgf_lite
        out["qgf_lite"] = "imported"
    except ImportError as err:
        out["qgf_lite"] = str(err)
    writable = []
    for place in ["/", "/usr", "/tmp", "/sandbox", "/dev", "/proc"] + [p for p in __import__("sys").path if p]:
        try:
            open(os.path.join(place, "w.txt"), "w").close()
            writable.append(place)
        except OSError:
            pass
    out["writable"] = writable
    return out
""".replace("REPO", repr(str(REPO))).replace("HOME", repr(str(__import__("pathlib").Path.home())))
    try:
        sandbox.send({"op": "init", "handover": {}, "cells": [{"index": "probe", "source": probe}], "names": ["probe"]})
        deadline = time.monotonic() + 60
        while sandbox.receive(deadline, "starting")[0].get("op") != "ready":
            pass
        sandbox.send({"op": "call", "name": "probe", "args": {"t": "tuple", "items": []}})
        reply, arrays = sandbox.receive(deadline, "probing")
        seen = decode(reply["value"], arrays)
    finally:
        sandbox.close()
        sandbox.cleanup()
    # At most the folders on the way to the interpreter and site-packages (a venv inside the clone, Python
    # inside the home folder), never the package, the notebooks, the tests or dist/.
    assert set(seen["clone"]) <= {".venv", "venv"}, seen["clone"]
    assert set(seen["home"]) <= {".pyenv", ".local"}, seen["home"]
    assert "not available while grading" in seen["qgf_lite"]
    assert max(seen["pids"]) < 10  # its own PID namespace: nothing of the grader's
    assert sorted(seen["writable"]) == ["/sandbox", "/tmp"]
    assert not {"home", "var", "opt", "mnt", "srv"} & set(seen["root"]), seen["root"]
    assert set(seen["etc"]) <= {"alternatives"}, seen["etc"]  # no passwd, hosts, machine-id...
