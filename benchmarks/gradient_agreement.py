"""QGF's gradient against the exact chain-rule gradient on OGBench states, per flow time t, for trained checkpoints.

    python benchmarks/gradient_agreement.py --checkpoint runs/scene-cpu/task2/seed0/ckpt_50000.msgpack \
        --dataset runs/data/scene-play-v0.npz [--checkpoint ...] [--states 512] [--weight 0.03] [--out FILE.json]

For each checkpoint: ``--states`` observations drawn (seeded) from the dataset, one QGF sampling run at
``--weight`` from seeded noise, and at every Euler step the cosine between g_qgf (the critic's gradient at the
one-step estimate, Jacobian dropped) and g_jac (the exact gradient through the estimate), and their norm ratio
(``qgf_lite.gradient_agreement``). Prints one table per checkpoint and writes every figure to ``--out`` as JSON,
with the exact command. The question it answers (issue 21): is QGF's gradient a crude stand-in for the exact one
for an undertrained flow, and does more training close the gap?
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import jax
import numpy as np


def measure(checkpoint: Path, observations: np.ndarray, *, states: int, weight: float, seed: int) -> dict:
    from qgf_lite.checkpoint import load_checkpoint
    from qgf_lite.gradient_agreement import gradient_agreement
    from qgf_lite.training import critic_fn, guidance_critic_params, velocity_fn

    config, state, extra = load_checkpoint(checkpoint)
    if observations.shape[1] != config.obs_dim:
        raise SystemExit(
            f"{checkpoint}: the checkpoint expects observations of size {config.obs_dim}, the dataset "
            f"has {observations.shape[1]}: pass the dataset the checkpoint was trained on."
        )
    rng = np.random.default_rng(seed)
    obs = observations[rng.choice(len(observations), size=min(states, len(observations)), replace=False)]
    noise = jax.random.normal(jax.random.PRNGKey(seed), (len(obs), config.chunk_dim))
    out = gradient_agreement(
        velocity_fn(config, state.policy_params),
        critic_fn(config, guidance_critic_params(state)),
        obs.astype(np.float32),
        noise,
        steps=config.flow_steps,
        weight=weight,
    )
    return {
        "checkpoint": str(checkpoint),
        "step": int(np.asarray(state.step).reshape(-1)[0]),
        "states": len(obs),
        "t": np.asarray(out["t"]).round(4).tolist(),
        "mean_cosine": np.asarray(out["mean_cosine"]).round(4).tolist(),
        "median_norm_ratio": np.asarray(out["median_norm_ratio"]).round(4).tolist(),
        "undefined_fraction": np.isnan(np.asarray(out["cosine"])).mean(axis=1).round(4).tolist(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        type=Path,
        help="a qgf_lite checkpoint (repeat for several, e.g. 50k and 150k steps)",
    )
    parser.add_argument("--dataset", required=True, type=Path, help="an OGBench-format .npz with `observations`")
    parser.add_argument("--states", type=int, default=512)
    parser.add_argument("--weight", type=float, default=0.0, help="guidance weight of the measured path (0: BC's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.dataset.is_file():
        raise SystemExit(f"No dataset at {args.dataset}: generate one with `qgf-lite generate` or pass its path.")
    with np.load(args.dataset) as data:
        observations = np.asarray(data["observations"])
    rows = [measure(c, observations, states=args.states, weight=args.weight, seed=args.seed) for c in args.checkpoint]
    for row in rows:
        print(f"\n{row['checkpoint']} (step {row['step']}, {row['states']} states, weight {args.weight:g})")
        print("   t   cos(g_qgf, g_jac)  |g_qgf|/|g_jac|  undefined")
        for t, c, r, u in zip(row["t"], row["mean_cosine"], row["median_norm_ratio"], row["undefined_fraction"]):
            print(f"{t:5.2f}  {c:17.3f}  {r:15.3f}  {u:9.2f}")
    result = {
        "command": "python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "weight": args.weight,
        "seed": args.seed,
        "checkpoints": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
