"""Does QGF improve on BC on the ring bandit, and how close does it get to the tilted target?

Trains the toy BC flow + critic once (qgf_lite.toy.experiments), then measures with the TRUE reward:
1. mean reward of BC and of QGF at several weights, over several sampling seeds;
2. at equal compute (qgf_lite.SamplerSpec.cost): QGF vs the noisy-gradient mode, the Jacobian mode, best-of-N and a
   gradient-step baseline, with their distances (sliced Wasserstein, MMD) to pi_ref exp(w Q);
3. the best distance to pi_ref exp(w_t Q) each sampler family reaches over its own knob (QGF / noisy: the weight;
   best-of-N: N), i.e. which sampler can represent the tilted target at all.

Prints the figures whichever way they fall; the last line is JSON.
Usage: python benchmarks/toy_quality.py [--quick] [--train-steps N]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from qgf_lite.samplers import SamplerSpec, specs_from_names
from qgf_lite.toy import experiments as tx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer training steps, samples and seeds")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--weight", type=float, default=1.0, help="QGF weight and tilted-target weight")
    args = parser.parse_args()
    train_steps = args.train_steps or (1500 if args.quick else 3000)
    num = 500 if args.quick else 2000
    seeds = 3 if args.quick else 5
    w = args.weight

    start = time.perf_counter()
    setup = tx.train_toy_bandit("ring", num_steps=train_steps, progress=False)
    train_s = time.perf_counter() - start
    print(f"trained BC flow + critic on the ring bandit: {train_steps} steps in {train_s:.1f} s")

    # 1. reward, several sampling seeds
    weights = [0.5, 1.0, 2.0] if w in (0.5, 1.0, 2.0) else [w]
    specs = specs_from_names(["bc", "qgf"], weights)
    rows = tx.evaluate_specs(setup, specs, 1, num=num, num_seeds=seeds, progress=False)
    print(f"\n1. mean true reward over {seeds} sampling seeds ({num} actions each)")
    print(tx.format_table(rows, ["label", "cost", "mean_reward", "mean_reward_std", "frac_best_region"]))

    # 2. equal compute at weight w, distances to the tilted target at w
    equal = tx.evaluate_specs(
        setup, tx.equal_compute_specs(w), 2, num=num, num_seeds=seeds, target_weight=w, progress=False
    )
    print(f"\n2. equal compute at w = {w:g}: distances to pi_ref exp({w:g} Q)")
    print(
        tx.format_table(
            equal,
            ["label", "cost", "mean_reward", "frac_best_region", "sw_to_target", "mmd_to_target", "sw_to_behaviour"],
        )
    )

    # 3. the closest each family gets to the tilted target at w, over its own knob
    knob_weights = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0]
    target = tx.tilted_target_samples(setup, w, jax.random.PRNGKey(3), num)
    best = {}
    for mode in ("qgf", "noisy"):
        samples = tx.guided_samples_for_weights(setup, knob_weights, jax.random.PRNGKey(4), num, mode=mode)
        sws = [tx.score_samples(setup, s, jax.random.PRNGKey(5), target=target)["sw_to_target"] for s in samples]
        i = int(np.argmin(sws))
        best[mode] = {"knob": knob_weights[i], "sw_to_target": sws[i]}
    bfn_sws = []
    for n in (1, 2, 4, 8):
        s = tx.draw_samples(setup, SamplerSpec("best_of_n", n=n), jax.random.PRNGKey(6), num)
        bfn_sws.append(tx.score_samples(setup, s, jax.random.PRNGKey(5), target=target)["sw_to_target"])
    i = int(np.argmin(bfn_sws))
    best["best_of_n"] = {"knob": (1, 2, 4, 8)[i], "sw_to_target": bfn_sws[i]}
    print(f"\n3. closest sliced Wasserstein distance to pi_ref exp({w:g} Q) over each sampler's own knob")
    for name, b in best.items():
        print(f"  {name:10s} best knob {b['knob']:<5g} SW {b['sw_to_target']:.4f}")

    by_name = {r["label"]: r for r in rows}
    eq = {r["label"]: r for r in equal}
    bc_name, qgf_name = (spec.label for spec in specs_from_names(["bc", "qgf"], [w]))
    noisy_name = SamplerSpec("guided", mode="noisy", weight=w).label
    bfn_name = next(r["label"] for r in equal if r["method"] == "best_of_n")
    summary = {
        "benchmark": "toy_quality",
        "train_steps": train_steps,
        "train_s": round(train_s, 2),
        "weight": w,
        "bc_mean_reward": round(by_name[bc_name]["mean_reward"], 4),
        "qgf_mean_reward": round(by_name[qgf_name]["mean_reward"], 4),
        "bc_frac_best": round(by_name[bc_name]["frac_best_region"], 4),
        "qgf_frac_best": round(by_name[qgf_name]["frac_best_region"], 4),
        "equal_compute": {
            k: {
                "cost": v["cost"],
                "mean_reward": round(v["mean_reward"], 4),
                "sw_to_target": round(v["sw_to_target"], 4),
                "mmd_to_target": round(v["mmd_to_target"], 4),
            }
            for k, v in eq.items()
            if k in (qgf_name, noisy_name, bfn_name)
        },
        "closest_to_target": {k: {"knob": v["knob"], "sw": round(v["sw_to_target"], 4)} for k, v in best.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
