#!/usr/bin/env bash
# The GPU check in one command (benchmarks/README.md, "GPU check"):
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --out $OUT/gpu_check.json]
#
# On the device machine, from the repository root: installs the wheels carried in .whl/ (made here by
# benchmarks/gpu_wheels.sh) into /tmp/site and puts them on PYTHONPATH, unpacks the EGL loaders carried in .gl/
# if the image has no libEGL (as root only), then runs benchmarks/gpu_check.py with the device's python3.
# GPU_CHECK_INSTALL=0 skips both steps (a machine that already has everything); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}

if [ "${GPU_CHECK_INSTALL:-1}" != 0 ]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  egl_found=$(ldconfig -p 2>/dev/null | grep -c 'libEGL\.so\.1' || true)
  if compgen -G ".gl/*.deb" >/dev/null && [ "${egl_found:-0}" = 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      for f in .gl/*.deb; do dpkg -x "$f" /; done
      ldconfig
    else
      echo "gpu_check.sh: no libEGL and not root; MuJoCo will run with MUJOCO_GL=disable" >&2
    fi
  fi
  nvidia_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [ -f "$nvidia_egl" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nvidia_egl"
  fi
fi

export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
