#!/usr/bin/env bash
# Issue 21 item 4 (scene): every command of the longer-trained scene run, in order; each step resumes or is
# skipped when its output exists, so rerunning the script continues an interrupted run.
set -euo pipefail
export MUJOCO_GL=egl
data=runs/data/scene-play-v0.npz
[ -f "$data" ] || qgf-lite generate scene --type play --episodes 1000 --workers 2 --seed 0 --out "$data"
# 1. seed 0 to 50k steps, the architecture of scene-long.toml; its checkpoint is kept for the diagnostic
qgf-lite train scene-play-singletask-task2-v0 --dataset-path "$data" --out runs/scene-long/train-50k \
    --steps 50000 --seed 0 --hidden 256 --layers 2 --horizon 5 --batch-size 256 --log-every 500 --checkpoint-every 5000
# 2. QGF's gradient against the exact chain-rule gradient, per flow time, at 50k steps
python benchmarks/gradient_agreement.py --checkpoint runs/scene-long/train-50k/checkpoint.msgpack --dataset "$data" \
    --states 512 --weight 0.01 --out benchmarks/results/gradient_agreement/scene-50k-w0.01.json
# 3. continue to 150k steps (init_from), choose weights on held-out start states, evaluate every method
qgf-lite sweep benchmarks/sweeps/scene-long.toml
# 4. the same diagnostic at 150k steps
python benchmarks/gradient_agreement.py --checkpoint runs/scene-long/scene/task2/train/checkpoint.msgpack \
    --dataset "$data" --states 512 --weight 0.01 --out benchmarks/results/gradient_agreement/scene-150k-w0.01.json
