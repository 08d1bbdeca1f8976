"""Running a submission's code in a child process that sees nothing it should not and can change nothing.

The child (:mod:`qgf_lite.courseware.child`) runs the exercise and helper cells and answers "call your function
on these inputs" with plain arrays (:mod:`qgf_lite.courseware.wire`). The grade is decided in the parent from
those numbers alone. This module starts that child under one of three backends:

``bwrap``
    bubblewrap (Debian's ``bubblewrap``). New user, PID, network, IPC and UTS namespaces, no further user
    namespaces, all capabilities dropped, an unprivileged uid. The file system is an allow-list: ``/usr`` and
    the interpreter and its third-party site-packages read-only (with any installed ``qgf_lite`` hidden under
    an empty folder), a fresh ``/proc`` of its own PID namespace, a minimal read-only ``/dev``, and writable
    only ``/sandbox`` (size-capped tmpfs: the child's files, its ``tmp`` and its JAX cache), a 1 MiB ``/tmp``
    and ``/dev/shm``. The clone, the package source, ``dist/``, the autograder, the gradebook, other
    submissions and every home folder are simply not there.
``unshare``
    The same view built with util-linux alone (``unshare``, ``mount``, ``pivot_root``, ``setpriv``) where
    bubblewrap is missing: a tmpfs root with the same read-only binds, ``pivot_root`` into it (so there is no
    old root to escape to), then every capability and the bounding set dropped with ``no_new_privs``.
``uid``
    For containers without user namespaces (Docker, Gradescope), when the grader runs as root: the child runs
    as a dedicated unprivileged uid/gid (one per parallel job, from :data:`UID_BASE`; no account needed),
    in its own folder (mode 700), with the package, the autograder, the submissions, the gradebook and the
    results folders made unreadable to "other" (``chmod o=``) and checked unreadable by a probe running as
    that uid before any submission. At the end every process of that uid is killed (``kill(-1)`` as the uid,
    repeated until none is left: no daemon survives) and its files in ``/tmp``, ``/var/tmp`` and ``/dev/shm``
    are removed. It does not hide the rest of the file system that is world-readable, or other processes'
    command lines, and it does not cut the network: see docs/TEACHING.md.

:func:`choose_backend` picks the first that works (``bwrap``, ``unshare``, ``uid``) and refuses to grade,
naming the fix, when none does, unless the teacher passes ``--unsafe-no-sandbox`` (backend ``none``: the
child runs as the grader's user with only the resource limits).

Every backend: the child's process tree is killed (SIGKILL) on a wall-clock deadline or when its resident
memory passes the limit (polled); the child sets hard limits on itself before any student code (file size,
address space, core files; processes under ``uid``); the writable space is capped (tmpfs size, or polled
folder size under ``uid``).
"""

from __future__ import annotations

import builtins
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qgf_lite.courseware.wire import Opaque, WireError, decode, encode, pack, unpack

BACKENDS = ("bwrap", "unshare", "uid")
UID_BASE = int(os.environ.get("QGF_SANDBOX_UID_BASE", "61000"))
UID_SLOTS = 64
SANDBOX_ROOT = "/sandbox"  # the child's writable folder, as the namespace backends show it
JAX_CACHE_FOLDER = "jax_cache"
_HERE = Path(__file__).resolve().parent

__all__ = [
    "BACKENDS",
    "Opaque",
    "Sandbox",
    "SandboxConfig",
    "SandboxLost",
    "SandboxUnavailable",
    "StudentFunction",
    "choose_backend",
    "decode",
    "encode",
    "function_builders",
    "isolation_available",
    "probe_backend",
]


class SandboxUnavailable(RuntimeError):
    """No backend can isolate the child here; the message names the fix."""


class SandboxLost(BaseException):
    """The child was killed or died. A BaseException, so a check's ``except Exception`` cannot hide it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def function_builders() -> dict:
    """How the checks' toy functions are rebuilt from their ``qgf_spec`` recipe (the same code as the child's)."""
    from qgf_lite.checks.fields import BUILDERS

    return dict(BUILDERS)


# ---------------------------------------------------------------------------
# Which backend
# ---------------------------------------------------------------------------

_PROBES: dict = {}


def _namespaces_disabled() -> bool:
    return bool(os.environ.get("QGF_SANDBOX_NO_UNSHARE"))  # e.g. to test the container backend on a laptop


def probe_backend(backend: str) -> str | None:
    """None when ``backend`` works here, else why not (cached per process)."""
    if backend in _PROBES:
        return _PROBES[backend]
    reason = None
    if backend in ("bwrap", "unshare") and _namespaces_disabled():
        reason = "namespaces are switched off (QGF_SANDBOX_NO_UNSHARE is set)"
    elif backend == "bwrap":
        if shutil.which("bwrap") is None:
            reason = "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        else:
            reason = _probe_run(
                [
                    "bwrap",
                    "--unshare-user",
                    "--unshare-pid",
                    "--unshare-net",
                    "--disable-userns",
                    "--die-with-parent",
                    "--ro-bind",
                    "/",
                    "/",
                    "--proc",
                    "/proc",
                    "true",
                ]
            )
    elif backend == "unshare":
        missing = [t for t in ("unshare", "setpriv", "pivot_root", "mount") if shutil.which(t) is None]
        if missing:
            reason = f"{', '.join(missing)} not found (util-linux)"
        else:
            reason = _probe_run(["unshare", "-r", "-m", "-n", "-p", "-f", "--mount-proc", "true"])
    elif backend == "uid":
        if os.geteuid() != 0:
            reason = "the uid backend needs the grader to run as root (it drops the child to another uid)"
    elif backend != "none":
        reason = f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)}"
    _PROBES[backend] = reason
    return reason


def _probe_run(command) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{command[0]} failed: {err}"
    if done.returncode:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        return f"{command[0]} cannot create namespaces here ({said[0][:200]})"
    return None


def choose_backend(requested: str | None = None, *, unsafe: bool = False) -> str:
    """The backend to use: ``requested`` (or $QGF_SANDBOX_BACKEND, default ``auto``: the first that works).

    Raises :class:`SandboxUnavailable` naming the fix when none works, unless ``unsafe`` (then ``"none"``).
    """
    requested = (requested or os.environ.get("QGF_SANDBOX_BACKEND") or "auto").strip()
    if requested == "none":
        if not unsafe:
            raise SandboxUnavailable(
                "the 'none' backend runs student code with your rights; pass "
                "--unsafe-no-sandbox (unsafe=True) to accept that"
            )
        return "none"
    if requested != "auto":
        reason = probe_backend(requested)
        if reason:
            raise SandboxUnavailable(f"sandbox backend {requested!r} does not work here: {reason}")
        return requested
    reasons = []
    for backend in BACKENDS:
        reason = probe_backend(backend)
        if reason is None:
            return backend
        reasons.append(f"{backend}: {reason}")
    if unsafe:
        return "none"
    raise SandboxUnavailable(
        "no sandbox can isolate student code here (" + "; ".join(reasons) + "). Fix: install bubblewrap "
        "(apt-get install bubblewrap) on a machine that allows unprivileged user namespaces, or grade as root "
        "inside a throw-away container (the uid backend), or pass --unsafe-no-sandbox to run student code "
        "with your own rights."
    )


def isolation_available() -> bool:
    """True where a namespace backend (bwrap or unshare) works."""
    return probe_backend("bwrap") is None or probe_backend("unshare") is None


# ---------------------------------------------------------------------------
# What the child may see
# ---------------------------------------------------------------------------


def _package_dirs() -> list[Path]:
    """Where qgf_lite's source lives (the installed package, or the clone's package folder)."""
    return [_HERE.parent.resolve()]


def _python_view() -> tuple[str, list[str], list[str], list[str]]:
    """(interpreter, the child's sys.path, read-only paths to show, folders to hide inside them).

    Only the standard library and site-packages folders are shown: never a checkout, a test folder or
    anything else on the grader's sys.path. An installed qgf_lite inside a site-packages is hidden.
    """
    interpreter = os.path.realpath(sys.executable)
    base = os.path.realpath(sys.base_prefix)
    package_parent = str(_HERE.parent.resolve().parent)
    path, show, hide = [], [], []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        is_site = os.path.basename(real) in ("site-packages", "dist-packages")
        if not (is_site or real == base or real.startswith(base + os.sep)):
            continue
        if real == package_parent and not is_site:
            continue
        path.append(real)
        if os.path.isdir(os.path.join(real, "qgf_lite")):
            hide.append(os.path.join(real, "qgf_lite"))
    show = [base, os.path.dirname(interpreter)]
    show += [p for p in path if not (p == base or p.startswith(base + os.sep))]
    return interpreter, path, sorted(set(show)), sorted(set(hide))


def _system_paths() -> list[tuple[str, str | None]]:
    """(path, symlink target or None) for the system folders every backend shows read-only."""
    out = []
    for name in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/alternatives"):
        if os.path.islink(name):
            out.append((name, os.readlink(name)))
        elif os.path.isdir(name):
            out.append((name, None))
    return out


def stage_lib(folder: Path, modules: Sequence[str] = ()) -> Path:
    """Copy the child's own code (and the modules an assignment declares) into ``folder/lib``."""
    lib = Path(folder) / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_HERE / "child.py", lib / "qgf_child.py")
    shutil.copyfile(_HERE / "wire.py", lib / "qgf_wire.py")
    shutil.copyfile(_HERE.parent / "checks" / "fields.py", lib / "qgf_fields.py")
    for module in modules:
        parts = module.split(".")
        if parts[0] != "qgf_lite":
            raise ValueError(f"declared sandbox module {module!r} is not a qgf_lite module")
        source = _HERE.parent.joinpath(*parts[1:]).with_suffix(".py")
        if not source.is_file():
            raise ValueError(f"declared sandbox module {module!r} has no file {source}")
        target = lib.joinpath(*parts).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, len(parts)):
            init = lib.joinpath(*parts[:i], "__init__.py")
            if not init.exists():
                init.write_text("")
        shutil.copyfile(source, target)
    return lib


# ---------------------------------------------------------------------------
# The container backend's protections
# ---------------------------------------------------------------------------

_UID_LOCK = threading.Lock()
_UIDS_IN_USE: set = set()
_PROTECTED: set = set()
_CHECKED: set = set()  # protection checks already passed in this process


def _acquire_uid() -> int:
    with _UID_LOCK:
        for slot in range(UID_SLOTS):
            uid = UID_BASE + slot
            if uid in _UIDS_IN_USE:
                continue
            try:
                pwd.getpwuid(uid)
            except KeyError:
                _UIDS_IN_USE.add(uid)
                return uid
        raise SandboxUnavailable(
            f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_SLOTS - 1} (each must belong "
            "to no account); set QGF_SANDBOX_UID_BASE to a free range"
        )


def _release_uid(uid: int) -> None:
    with _UID_LOCK:
        _UIDS_IN_USE.discard(uid)


def _within(path: str, other: str) -> bool:
    return path == other or path.startswith(other.rstrip(os.sep) + os.sep)


def protect_paths(paths: Sequence[str | os.PathLike], keep: Sequence[str] = ()) -> list[str]:
    """``chmod o=`` each existing path, once per process; returns the paths changed. Root only.

    A path above something the child needs (``keep``: the interpreter, site-packages) is not closed itself:
    every entry in it is, except the one on the way to what is needed (recursively), so a virtual environment
    inside the clone, or Python inside a home folder, stays usable while the rest of the clone or home is not.
    """
    keep = [os.path.realpath(k) for k in keep]
    changed = []

    def close(path):
        if path in _PROTECTED or not os.path.lexists(path) or os.path.islink(path):
            return
        if any(_within(k, path) for k in keep):
            if any(k == path for k in keep):
                return  # needed itself
            try:
                entries = os.listdir(path)
            except OSError:
                return
            for entry in entries:
                close(os.path.join(path, entry))
            return
        mode = os.lstat(path).st_mode
        if mode & 0o007:
            os.chmod(path, stat.S_IMODE(mode) & ~0o007)
            changed.append(path)
        _PROTECTED.add(path)

    with _UID_LOCK:
        for raw in paths:
            path = os.path.realpath(raw)
            if path not in ("/", "/tmp", "/usr", "/var", "/etc"):
                close(path)
    return changed


def _readable_as(uid: int, paths: Sequence[str]) -> list[str]:
    """Which of ``paths`` the uid can still open or list (a probe run as that uid)."""
    if not paths:
        return []
    code = (
        "import os,sys\nfor p in sys.argv[1:]:\n    try:\n        os.listdir(p) if os.path.isdir(p) else "
        "open(p,'rb').close()\n        print(p)\n    except OSError: pass\n"
    )
    interpreter = os.path.realpath(sys.executable)
    try:
        done = subprocess.run(
            [interpreter, "-I", "-S", "-c", code, *paths],
            capture_output=True,
            text=True,
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
            timeout=60,
        )
    except PermissionError:
        raise SandboxUnavailable(
            f"the sandbox uid cannot run {interpreter}: install Python and the libraries where every user can "
            "read them (e.g. /usr/local, /opt or a virtual environment outside any home folder), or make the "
            "folders above it traversable (chmod o+x)"
        ) from None
    return [line for line in done.stdout.splitlines() if line]


def _processes() -> dict[int, tuple[int, int, int]]:
    """{pid: (ppid, real uid, resident pages)} of every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/status", "rb") as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith(b"Uid:"))
            table[int(entry)] = (int(fields[1]), uid, int(fields[21]))
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return table


def _descendants(root: int, table) -> list[int]:
    children: dict = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def _kill_uid(uid: int, rounds: int = 50) -> bool:
    """SIGKILL every process of ``uid`` (``kill(-1)`` run as that uid, repeated); True when none is left."""
    killer = [
        os.path.realpath(sys.executable),
        "-I",
        "-S",
        "-c",
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\n",
    ]
    for _ in range(rounds):
        if not any(u == uid for _, u, _ in _processes().values()):
            return True
        subprocess.run(killer, user=uid, group=uid, extra_groups=[], cwd="/", capture_output=True, timeout=30)
        time.sleep(0.05)
    return not any(u == uid for _, u, _ in _processes().values())


def _remove_files_of(uid: int, roots=("/tmp", "/var/tmp", "/dev/shm")) -> None:
    for root in roots:
        if not os.path.isdir(root):
            continue
        for current, dirs, files in os.walk(root, topdown=False):
            for name in files + dirs:
                path = os.path.join(current, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if info.st_uid == uid:
                    try:
                        shutil.rmtree(path) if stat.S_ISDIR(info.st_mode) else os.unlink(path)
                    except OSError:
                        pass


def _folder_size(folder: Path, cap: int) -> int:
    total = 0
    for current, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_blocks * 512
            except OSError:
                pass
            if total > cap:
                return total
    return total


# ---------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxConfig:
    """backend: one of BACKENDS or "none" (see :func:`choose_backend`); memory: resident bytes of the child's
    processes; disk: bytes it may write in all; file_limit: bytes of one file; address_space: its RLIMIT_AS
    (default memory + 4 GiB: JAX reserves far more virtual memory than it uses); modules: qgf_lite modules
    copied into the sandbox (declared per assignment); protect: paths the uid backend makes unreadable."""

    backend: str
    memory: int = 4 * 2**30
    disk: int = 256 * 2**20
    file_limit: int = 64 * 2**20
    address_space: int | None = None
    modules: tuple = ()
    protect: tuple = ()

    def address_limit(self) -> int:
        return int(self.address_space or self.memory + 4 * 2**30)


_UNSHARE_SCRIPT = r"""
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
R="$QGF_ROOT"
mount -t tmpfs -o size=4m,mode=755 qgf-root "$R"
show() {
  src=$1; dst="$R$1"
  if [ -L "$src" ]; then mkdir -p "$(dirname "$dst")"; ln -s "$(readlink "$src")" "$dst"; return; fi
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : > "$dst"; fi
  mount --rbind "$src" "$dst"
  mount -o remount,bind,ro "$dst"
}
printf '%s\n' "$QGF_SHOW" | while IFS= read -r p; do if [ -n "$p" ]; then show "$p"; fi; done
printf '%s\n' "$QGF_HIDE" | while IFS= read -r p; do
  if [ -n "$p" ] && [ -d "$R$p" ]; then mount -t tmpfs -o size=4k,mode=555 qgf-hidden "$R$p"; fi
done
mkdir -p "$R/sandbox" "$R/tmp" "$R/proc" "$R/dev/shm"
mount -t tmpfs -o "size=$QGF_DISK,mode=755" qgf-sandbox "$R/sandbox"
mkdir "$R/sandbox/lib" "$R/sandbox/tmp"
cp -R "$QGF_STAGE/lib/." "$R/sandbox/lib/"
if [ -d "$QGF_STAGE/jax_seed" ]; then mkdir "$R/sandbox/jax_seed" && cp -R "$QGF_STAGE/jax_seed/." "$R/sandbox/jax_seed/"; fi
mount -t tmpfs -o size=1m,mode=1777 qgf-tmp "$R/tmp"
mount -t tmpfs -o size=1m,mode=1777 qgf-shm "$R/dev/shm"
for d in null zero full random urandom; do : > "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
mount -t proc proc "$R/proc"
cd "$R"
mkdir .old
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,ro,bind / 2>/dev/null || mount -o remount,ro /
cd /sandbox
PATH=/usr/bin:/bin
exec setpriv --no-new-privs --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- "$QGF_PYTHON" -I -S /sandbox/lib/qgf_child.py
"""


class Sandbox:
    """One child process (restarted by the grader after it is killed)."""

    def __init__(self, config: SandboxConfig, *, jax_cache: Path | None = None):
        self.config = config
        self.backend = config.backend
        self.killed_for: str | None = None
        self.log = bytearray()
        self._messages: queue.Queue = queue.Queue()
        self.uid: int | None = None
        self.stage = Path(tempfile.mkdtemp(prefix="qgf_grade_"))
        os.chmod(self.stage, 0o700)
        stage_lib(self.stage, config.modules)
        interpreter, child_path, show, hide = _python_view()
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "QGF_SMOKE": "1",
            "MPLBACKEND": "Agg",
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
            # JAX otherwise writes a GPU autotuning folder under the cache folder into every compilation's options,
            # and so into its cache key: each sandbox's own path would make every warmed entry a miss.
            "JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES": "none",
            "QGF_SANDBOX_PATH": os.pathsep.join(child_path),
            "QGF_SANDBOX_FILE_LIMIT": str(int(config.file_limit)),
            "QGF_SANDBOX_ADDRESS_LIMIT": str(config.address_limit()),
            "QGF_SANDBOX_MODULES": ",".join(config.modules),
        }
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # older OpenBLAS builds crash without them here
            if os.environ.get(name):
                env[name] = os.environ[name]
        if jax_cache is not None and Path(jax_cache).is_dir():
            shutil.copytree(jax_cache, self.stage / "jax_seed")
        if self.backend in ("bwrap", "unshare"):
            home = SANDBOX_ROOT
            self.workdir = None
            env.update(
                HOME=home,
                TMPDIR=f"{home}/tmp",
                JAX_COMPILATION_CACHE_DIR=f"{home}/{JAX_CACHE_FOLDER}",
                QGF_SANDBOX_JAX_CACHE_SEED=f"{home}/jax_seed",
            )
            if self.backend == "bwrap":
                command = self._bwrap_command(interpreter, show, hide)
            else:
                root = self.stage / "root"
                root.mkdir()
                env.update(
                    QGF_ROOT=str(root),
                    QGF_STAGE=str(self.stage),
                    QGF_PYTHON=interpreter,
                    QGF_DISK=str(int(config.disk)),
                    QGF_SHOW="\n".join([p for p, _ in _system_paths()] + show),
                    QGF_HIDE="\n".join(hide),
                )
                command = ["unshare", "-r", "-m", "-n", "-p", "-f", "--kill-child", "sh", "-c", _UNSHARE_SCRIPT]
            cwd, popen_user = str(self.stage), {}
        else:
            # uid / none: a real folder on disk is the child's home.
            self.workdir = self.stage / "sandbox"
            (self.workdir / "tmp").mkdir(parents=True)
            shutil.move(str(self.stage / "lib"), str(self.workdir / "lib"))
            if (self.stage / "jax_seed").is_dir():
                shutil.move(str(self.stage / "jax_seed"), str(self.workdir / JAX_CACHE_FOLDER))
            env.update(
                HOME=str(self.workdir),
                TMPDIR=str(self.workdir / "tmp"),
                JAX_COMPILATION_CACHE_DIR=str(self.workdir / JAX_CACHE_FOLDER),
            )
            command = [interpreter, "-I", "-S", str(self.workdir / "lib" / "qgf_child.py")]
            cwd, popen_user = str(self.workdir), {}
            if self.backend == "uid":
                self.uid = _acquire_uid()
                if not _kill_uid(self.uid):  # leftovers of an earlier, interrupted run
                    raise SandboxUnavailable(f"processes of sandbox uid {self.uid} cannot be killed")
                env["QGF_SANDBOX_NPROC"] = "512"  # threads count too; JAX starts a few dozen
                for current, dirs, files in os.walk(self.stage):
                    for name in [current] + [os.path.join(current, n) for n in dirs + files]:
                        os.lchown(name, self.uid, self.uid)
                os.chmod(self.stage, 0o711)  # the uid may pass through to its folder, not list the stage
                self._check_protection(interpreter, child_path, hide)
                popen_user = {"user": self.uid, "group": self.uid, "extra_groups": [], "umask": 0o077}
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **popen_user,  # no preexec_fn: unsafe with JAX's threads in the grader
        )
        self.pgid = self.process.pid
        self._alive = True
        self._stopped = threading.Event()  # wakes the watcher at once on kill, so close() does not wait out a beat
        self._threads = [
            threading.Thread(target=self._read_messages, daemon=True),
            threading.Thread(target=self._read_log, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- starting
    def _bwrap_command(self, interpreter, show, hide) -> list[str]:
        command = [
            "bwrap",
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ]
        for path, target in _system_paths():
            command += ["--symlink", target, path] if target is not None else ["--ro-bind", path, path]
        for path in show:
            command += ["--ro-bind", path, path]
        for path in hide:
            command += ["--tmpfs", path]
        command += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(2**20),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            str(2**20),
            "--tmpfs",
            "/tmp",
            "--size",
            str(int(self.config.disk)),
            "--tmpfs",
            SANDBOX_ROOT,
            "--ro-bind",
            str(self.stage / "lib"),
            f"{SANDBOX_ROOT}/lib",
            "--dir",
            f"{SANDBOX_ROOT}/tmp",
        ]
        if (self.stage / "jax_seed").is_dir():
            command += ["--ro-bind", str(self.stage / "jax_seed"), f"{SANDBOX_ROOT}/jax_seed"]
        command += [
            "--remount-ro",
            "/",
            "--chdir",
            SANDBOX_ROOT,
            interpreter,
            "-I",
            "-S",
            f"{SANDBOX_ROOT}/lib/qgf_child.py",
        ]
        return command

    def _check_protection(self, interpreter, child_path, hide) -> None:
        """Under ``uid``: make the protected paths unreadable to the uid, and check that they are and that what
        the child needs is still readable. Protected: what the grader names (autograder, submissions,
        gradebook, results), the package, the clone it lives in, any installed copy, the home folder."""
        clone = _HERE.parent.parent
        protected = [str(p) for p in self.config.protect if p] + [str(p) for p in _package_dirs()] + list(hide)
        if (clone / "pyproject.toml").is_file() or (clone / ".git").exists():
            protected.append(str(clone))
        protected.append(os.path.expanduser("~"))
        needed = [os.path.dirname(interpreter), os.path.realpath(sys.base_prefix)] + list(child_path)
        key = (tuple(sorted(set(protected))), tuple(needed))
        if key in _CHECKED:
            return
        protect_paths(protected, keep=needed)
        leaked = _readable_as(
            self.uid,
            sorted(p for p in set(os.path.realpath(q) for q in protected) if not any(_within(k, p) for k in needed)),
        )
        if leaked:
            raise SandboxUnavailable(
                f"the sandbox uid can still read {leaked[0]} after chmod o= (ACLs or a "
                "parent mount?); grade elsewhere or fix its permissions"
            )
        readable = set(_readable_as(self.uid, needed))
        missing = [p for p in needed if p not in readable]
        if missing:
            raise SandboxUnavailable(
                f"the sandbox uid cannot read {missing[0]}, which the child needs: install Python and the "
                "libraries where every user can read them (e.g. /usr/local, /opt or a virtual environment "
                "outside any home folder), or make the folders above it traversable (chmod o+x)"
            )
        _CHECKED.add(key)

    # -- background threads
    def _read_messages(self):
        try:
            while True:
                self._messages.put(unpack(self.process.stdout, allow_complex=False))
        except WireError as err:  # malformed or oversized: ends the session
            self._messages.put(err)
        except (EOFError, OSError, ValueError) as err:  # the child ended, or close() closed the pipe
            self._messages.put(EOFError(str(err)))
        except Exception as err:
            self._messages.put(err)

    def _read_log(self):
        try:
            for chunk in iter(lambda: self.process.stderr.read(4096), b""):
                self.log += chunk
                del self.log[:-20_000]
        except (OSError, ValueError):
            pass

    def _members(self, table) -> list[int]:
        if self.uid is not None:
            return [pid for pid, (_, uid, _) in table.items() if uid == self.uid]
        return _descendants(self.process.pid, table)

    def _watch(self):
        page = os.sysconf("SC_PAGE_SIZE")
        beat = 0
        while self._alive and self.process.poll() is None:
            table = _processes()
            rss = sum(table[pid][2] for pid in self._members(table) if pid in table) * page
            if rss > self.config.memory:
                self.killed_for = f"memory limit exceeded ({self.config.memory / 2**30:.3g} GiB resident)"
                self.kill()
                return
            beat += 1
            if (
                self.workdir is not None
                and beat % 3 == 0
                and _folder_size(self.workdir, self.config.disk) > self.config.disk
            ):
                self.killed_for = f"disk limit exceeded ({self.config.disk / 2**20:.0f} MiB written)"
                self.kill()
                return
            self._stopped.wait(0.3)

    # -- talking to the child
    def send(self, header: dict, arrays: dict | None = None) -> None:
        try:
            self.process.stdin.write(pack(header, arrays))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise SandboxLost(self._death_reason()) from None

    def receive(self, deadline: float, what: str) -> tuple[dict, dict]:
        remaining = deadline - time.monotonic()
        try:
            message = self._messages.get(timeout=max(remaining, 0.0))
        except queue.Empty:
            self.killed_for = f"time limit exceeded while {what}"
            self.kill()
            raise SandboxLost(self.killed_for) from None
        if isinstance(message, BaseException):
            if not isinstance(message, EOFError):
                self.killed_for = f"the grading process sent a malformed answer ({str(message)[:200]})"
                self.kill()
            raise SandboxLost(self._death_reason())
        return message

    def _death_reason(self) -> str:
        if self.killed_for:
            return self.killed_for
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        if code is not None and code < 0:
            return f"the process running the submission died (signal {-code})"
        return f"the process running the submission died (exit code {code})"

    def kill(self) -> None:
        """SIGKILL everything the submission started: the process group, every descendant, every process of
        its uid. Namespace backends: killing the namespace's first process ends the whole PID namespace."""
        self._alive = False
        self._stopped.set()
        for _ in range(3):
            table = _processes()
            members = [p for p in self._members(table) if p != os.getpid()]
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if not members:
                break
        if self.uid is not None:
            _kill_uid(self.uid)
        try:
            self.process.kill()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def keep_jax_cache(self, target: Path) -> None:
        """Copy the child's compilation cache to ``target`` (after a trusted run of the reference)."""
        source = self.workdir / JAX_CACHE_FOLDER if self.workdir is not None else None
        if source is not None and source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)

    def close(self) -> None:
        if self._alive and self.process.poll() is None and not self.killed_for:
            try:  # a clean exit first, so the child's CPU time is accounted to the grader (benchmarks)
                self.process.stdin.write(pack({"op": "exit"}))
                self.process.stdin.flush()
                self.process.wait(timeout=2)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)

    def cleanup(self) -> None:
        """Remove the child's folder and, under ``uid``, its files elsewhere (after :meth:`close`)."""
        if self.uid is not None:
            _remove_files_of(self.uid)
            _release_uid(self.uid)
            self.uid = None
        shutil.rmtree(self.stage, ignore_errors=True)


# ---------------------------------------------------------------------------
# The student's functions, as the trusted side sees them
# ---------------------------------------------------------------------------


def _remote_exception(error) -> Exception:
    """The child's exception as one of ours: a builtin type when it names one, else a bounded generic one."""
    error = error if isinstance(error, dict) else {}
    name = str(error.get("type", "Exception"))[:60]
    message = str(error.get("message", ""))[:2000]
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:
            pass
    label = name if name.isidentifier() else "Error"
    return type(label, (Exception,), {})(message)


class StudentFunction:
    """Calls the student's function ``name`` in the sandbox; usable wherever a check expects the function."""

    def __init__(self, session, name: str):
        self._session = session
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError("the autograder passes positional arguments only")
        return self._session.call("call", self.__name__, {"args": args})

    def qgf_vjp(self, args, argnum, cotangent):
        return self._session.call(
            "vjp", self.__name__, {"args": tuple(args), "argnum": int(argnum), "cotangent": cotangent}
        )

    def __repr__(self):
        return f"<student function {self.__name__}>"
