#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, what the GPU machine lacks for benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_wheels.sh            # wheels into .whl/, EGL loader packages into .gl/
#   bash benchmarks/gpu_wheels.sh --no-gl    # wheels only
#
# The device (kind nvidia-h200, see benchmarks/README.md "GPU check") has no network. Its image already holds
# Python 3.12 with jax + the CUDA 13 plugin, flax, optax, numpy, scipy, absl-py, lxml, pyparsing, tqdm, imageio,
# msgpack, cloudpickle and typing-extensions; it lacks the OGBench stack below. Versions are pinned to the
# project's development environment (/work/main/.venv: ogbench 1.2.2, mujoco 4.0.0, dm_control 1.0.50,
# gymnasium 1.4.0); jax, flax and optax stay the device's own (its CUDA build).
#
# Everything carried travels with the working tree, 64 MiB in all, so two wheels are slimmed after download:
#   * dm_control: only dm_control.mjcf / .mujoco / .viewer / .rl / ._render are imported by OGBench's
#     manipulation environments; the suite, locomotion, composer, ... (about 110 MB unpacked) are dropped;
#   * imageio-ffmpeg: the platform-independent wheel, without the bundled ffmpeg binary (qgf_lite's ogbench
#     extra checks that the module exists; the GPU check writes no video).
# mujoco-studio (the interactive app) and labmaze / dm-tree are not imported on this path and are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PYVER=${GPU_PYTHON_VERSION:-3.12}   # the device's python3 (KINDS.md: Python 3.12.3)
DEST=.whl
WITH_GL=1
[ "${1:-}" = "--no-gl" ] && WITH_GL=0

WHEELS=(
  ogbench==1.2.2
  dm-control==1.0.50
  dm-env==1.6
  mujoco==4.0.0
  mujoco-core==4.0.0
  gymnasium==1.4.0
  farama-notifications==0.0.6
  glfw==2.11.0
  pyopengl==3.1.10
  imageio-ffmpeg==0.8.1
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$DEST"
for spec in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$spec"
done

# Drop what is never imported here; RECORD loses the same lines, so each wheel stays valid.
"$PY" - "$DEST" <<'EOF'
import glob, os, sys, zipfile

DROP = {
    "dm_control-*.whl": ("dm_control/locomotion/", "dm_control/suite/", "dm_control/composer/",
                         "dm_control/blender/", "dm_control/manipulation/", "dm_control/entities/",
                         "dm_control/mujoco/testing/", "dm_control/mjcf/test_assets/"),
    "imageio_ffmpeg-*.whl": ("imageio_ffmpeg/binaries/ffmpeg-",),
}


def slim(path, drop):
    with zipfile.ZipFile(path) as src:
        names = [n for n in src.namelist() if not n.startswith(drop)]
        if len(names) == len(src.namelist()):
            return  # already slim
        tmp = path + ".part"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in names:
                data = src.read(name)
                if name.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if not line.startswith(drop)).encode()
                dst.writestr(src.getinfo(name), data)
    os.replace(tmp, path)
    print(f"slimmed {os.path.basename(path)}: {os.path.getsize(path) / 2**20:.1f} MiB")


for pattern, drop in DROP.items():
    for path in glob.glob(os.path.join(sys.argv[1], pattern)):
        slim(path, drop)
EOF

if [ "$WITH_GL" = 1 ]; then
  # EGL loaders, as the device notes (/work/.library/device/README.md) describe: MuJoCo and dm_control load
  # libEGL at import when MUJOCO_GL=egl. gpu_check.sh unpacks them there only if the image has no libEGL.
  mkdir -p .gl /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update -qq
  (cd .gl && apt-get "${o[@]}" download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

du -ch "$DEST"/*.whl | tail -1
ls -1 "$DEST"
[ "$WITH_GL" = 1 ] && ls -1 .gl
echo "carry: .whl .gl (the working tree and carried paths together must stay under 64 MiB)"
