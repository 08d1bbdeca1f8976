"""Optional Weights & Biases logging for ``qgf-lite train`` and ``qgf-lite eval`` (``--wandb``).

Runs always log to their folder (``log.jsonl``, ``eval.json``); with ``--wandb`` the same records also go to a W&B
run: the config and run metadata once, every logged training chunk (losses, Q and V means, steps/s, the slice of a
streamed 100M folder), and an evaluation's results table (one row per setting, with its 95% intervals), its success
per setting and its video. ``WANDB_MODE=offline`` (or ``--wandb-mode offline``) writes the run under ``WANDB_DIR``
or the run folder for a later ``wandb sync``, with no network. Needs the ``wandb`` extra:
``pip install 'qgf_lite[wandb]'``.
"""

from __future__ import annotations

import numbers
import os

WANDB_MODES = ("online", "offline", "disabled")
EVAL_COLUMNS = (
    "label",
    "method",
    "weight",
    "episodes",
    "successes",
    "success_rate",
    "success_ci95_low",
    "success_ci95_high",
    "return_mean",
    "length_mean",
)


def require_wandb():
    """The ``wandb`` module, or an ImportError that says how to install it."""
    try:
        import wandb
    except ImportError as err:
        raise ImportError(
            "--wandb needs the wandb package, which is not installed: pip install 'qgf_lite[wandb]' (or pip install "
            "wandb); or leave --wandb out (runs always log to log.jsonl / eval.json in their folder)."
        ) from err
    return wandb


def scalars(record: dict, prefix: str) -> dict:
    """The numeric entries of a log record under ``prefix/``; a per-seed list becomes its mean plus one per seed."""
    out = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, numbers.Number):
            out[f"{prefix}/{key}"] = float(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Number) for v in value):
            out[f"{prefix}/{key}"] = sum(map(float, value)) / len(value)
            out.update({f"{prefix}/{key}_seed{i}": float(v) for i, v in enumerate(value)})
    return out


class WandbTracker:
    """One W&B run. ``start(config)`` opens it, ``log_train(record)`` logs a training chunk, ``log_eval(report)``
    an evaluation report, ``log_video(path)`` a video, ``finish()`` closes it (idempotent)."""

    def __init__(
        self,
        *,
        project: str = "qgf_lite",
        name: str | None = None,
        mode: str | None = None,
        directory=None,
        job_type: str = "train",
        tags=(),
    ):
        if mode is not None and mode not in WANDB_MODES:
            raise ValueError(f"`mode` must be one of {', '.join(WANDB_MODES)}, got {mode!r}.")
        self.wandb = require_wandb()  # fails before any training or evaluation starts
        self.settings = dict(
            project=project,
            name=name,
            mode=mode,
            job_type=job_type,
            tags=list(tags),
            dir=None if directory is None else str(directory),
        )
        self.run = None

    def start(self, config: dict) -> None:
        if self.run is not None:
            return
        if self.settings["dir"] is not None:
            os.makedirs(self.settings["dir"], exist_ok=True)
        kwargs = {k: v for k, v in self.settings.items() if v is not None}
        self.run = self.wandb.init(config=config, **kwargs)

    def log_train(self, record: dict) -> None:
        self.run.log(scalars(record, "train"), step=int(record["step"]))

    def log_eval(self, report: dict) -> None:
        rows = []
        for r in report["results"]:
            low, high = r.get("success_ci95", (None, None))
            rows.append(
                [
                    r.get("label"),
                    r.get("method"),
                    r.get("weight"),
                    r.get("episodes"),
                    r.get("successes"),
                    r.get("success_rate"),
                    low,
                    high,
                    r.get("return_mean"),
                    r.get("length_mean"),
                ]
            )
        table = self.wandb.Table(columns=list(EVAL_COLUMNS), data=rows)
        logged = {"eval/results": table}
        logged.update({f"eval/success/{r['label']}": r["success_rate"] for r in report["results"]})
        self.run.log(logged)
        self.run.summary["eval/best_label"] = max(report["results"], key=lambda r: r["success_rate"])["label"]

    def log_video(self, path, caption: str = "") -> None:
        self.run.log({"eval/video": self.wandb.Video(str(path), caption=caption)})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


__all__ = ["EVAL_COLUMNS", "WANDB_MODES", "WandbTracker", "require_wandb", "scalars"]
