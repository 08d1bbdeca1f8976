"""Published OGBench numbers to print beside a sweep's table, labelled with the scale they were measured at.

They come from the QAM paper's released per-run data (offline RL, 1M gradient steps, 4 x 512 networks, action
chunks of H = 5, 12 seeds, mean success over the five single-task variants of each domain; scene and puzzle-3x3 in
OGBench's sparse-reward variants). A CPU sweep here is far smaller, so these are a reference point for the
order of magnitude at full scale, never a row of the same table.
"""

from __future__ import annotations

SOURCE = "QAM paper, released data"
SCALE = "1M steps, 4 x 512 networks, H = 5, 12 seeds, mean of tasks 1-5"
# Domains whose published runs used OGBench's sparse-reward variant (reward only on full success), where a sweep
# here trains on the default reward (minus the number of goal conditions not yet met, every step).
SPARSE_REWARD = frozenset({"scene", "puzzle-3x3"})

# Mean success % over task1..task5. CGQL is classifier guidance at the noisy action (the noisy-gradient mode).
SUCCESS = {
    "cube-double": {"QAM": 64.2, "FQL": 45.7, "CGQL": 38.5, "DSRL": 74.0, "IFQL": 10.8, "ReBRAC": 8.7},
    "cube-triple": {"QAM": 3.4, "FQL": 3.1, "CGQL": 8.0, "DSRL": 1.4, "IFQL": 0.3, "ReBRAC": 0.8},
    "scene": {"QAM": 96.9, "FQL": 78.5, "CGQL": 38.3, "DSRL": 99.4, "IFQL": 84.0, "ReBRAC": 65.0},
    "puzzle-3x3": {"QAM": 99.5, "FQL": 70.3, "CGQL": 47.6, "DSRL": 86.6, "IFQL": 100.0, "ReBRAC": 78.8},
}


def published_reference(domain: str) -> dict | None:
    """``{"domain", "scale", "source", "success": {method: mean success %}}`` for ``domain``, or None."""
    if domain not in SUCCESS:
        return None
    scale = SCALE + ("; OGBench's sparse-reward variant" if domain in SPARSE_REWARD else "")
    return {"domain": domain, "scale": scale, "source": SOURCE, "success": dict(SUCCESS[domain])}


__all__ = ["SCALE", "SOURCE", "SPARSE_REWARD", "SUCCESS", "published_reference"]
