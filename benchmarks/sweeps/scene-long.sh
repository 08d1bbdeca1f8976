#!/usr/bin/env bash
# Issue 21 item 4 (scene): every command of the longer-trained scene run, in the order they ran (2026-12-04).
# Each step resumes or is skipped when its output exists, so rerunning the script continues an interrupted run.
set -euo pipefail
export MUJOCO_GL=egl
data=runs/data/scene-play-v0.npz
common=(--seed 0 --hidden 256 --layers 2 --horizon 5 --batch-size 256 --log-every 500 --checkpoint-every 5000)
[ -f "$data" ] || qgf-lite generate scene --type play --episodes 1000 --workers 2 --seed 0 --out "$data"
# 1. seed 0 to 50k steps, the architecture of scene-long.toml; this checkpoint is kept for the diagnostic
qgf-lite train scene-play-singletask-task2-v0 --dataset-path "$data" --out runs/scene-long/train-50k --steps 50000 "${common[@]}"
# 2. on to 150k steps, into the sweep's own training folder (the sweep then finds the run finished)
qgf-lite train scene-play-singletask-task2-v0 --dataset-path "$data" --out runs/scene-long/scene/task2/train \
    --init-from runs/scene-long/train-50k/checkpoint.msgpack --steps 150000 "${common[@]}"
# 3. QGF's gradient against the exact chain-rule gradient, per flow time, on QGF's path (w = 0.01, QGF's best
#    weight on scene at 50k steps) and on the plain flow's path (w = 0), at 50k and 150k steps
ckpt50=runs/scene-long/train-50k/checkpoint.msgpack
ckpt150=runs/scene-long/scene/task2/train/checkpoint.msgpack
out=benchmarks/results/gradient_agreement
python benchmarks/gradient_agreement.py --checkpoint $ckpt50 --dataset "$data" --states 512 --weight 0.01 --out $out/scene-50k-w0.01.json
python benchmarks/gradient_agreement.py --checkpoint $ckpt150 --dataset "$data" --states 512 --weight 0.01 --out $out/scene-150k-w0.01.json
python benchmarks/gradient_agreement.py --checkpoint $ckpt50 --checkpoint $ckpt150 --dataset "$data" --states 512 --weight 0 \
    --out $out/scene-50k-150k-w0.json
# 4. weights chosen on held-out start states, every gradient mode evaluated at 150k steps
qgf-lite sweep benchmarks/sweeps/scene-long.toml
