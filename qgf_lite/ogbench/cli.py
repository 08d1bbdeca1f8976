"""The ``qgf-lite`` command: ``generate`` an OGBench dataset offline, ``train`` BC + IQL, ``eval`` samplers.

    qgf-lite generate cube-single --episodes 1000 --out data/cube-single-play-v0.npz
    qgf-lite train cube-single-play-singletask-task2-v0 --dataset-path data/cube-single-play-v0.npz \\
        --steps 1000000 --out runs/cube-single
    qgf-lite eval runs/cube-single/checkpoint.msgpack --methods bc qgf best_of_n --weights 0.01 0.04 0.1 \\
        --episodes 50 --out runs/cube-single/eval --video runs/cube-single/eval/qgf.mp4

Every QGFConfig field (but the dataset's obs_dim/action_dim) is a ``train`` flag: ``qgf-lite train --help``;
every ``qgf_lite.ogbench.evaluation.EvalConfig`` field is an ``eval`` flag: ``qgf-lite eval --help``.
``eval --methods`` takes the names of ``qgf_lite.specs_from_names``: methods (bc, guided, best_of_n,
guided_best_of_n, gradient_step) or guidance modes as shorthand (qgf, jacobian, noisy, bptt, qgf_best_of_n, ...).
``eval --critic online`` guides with the online critic instead of the paper's Polyak target critic.

Bad input (unknown ids, missing or corrupted files, mismatched checkpoints, diverging losses) prints one
message and exits with status 2; an interrupted ``train`` resumes when rerun with the same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


# Short spellings kept from the first CLI (README and docs/results.md use them), as extra names of a field's flag.
FLAG_ALIASES = {"learning_rate": ("--lr",)}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per QGFConfig field but obs_dim/action_dim (``dest`` = the field name), plus --hidden/--layers.

    Generated from ``dataclasses.fields`` so that a new field is a new flag with no second list to keep in step (a
    loop rather than a dependency such as tyro, for one parser). bool -> --flag/--no-flag; Tuple[X, ...] -> one or
    more values; Optional[X] -> --flag X, or --no-flag for None. A flag left out is no override (its default is
    SUPPRESS), so QGFConfig stays the one place that holds the defaults.
    """
    from qgf_lite.ogbench.train import DATASET_FIELDS, HIDDEN_FIELDS
    from qgf_lite.training import QGFConfig

    # --hidden/--layers are make_config's shorthands (train.SHORTHANDS), not fields: the README uses them.
    fields = [f for f in dataclasses.fields(QGFConfig) if f.name not in DATASET_FIELDS and f.name != "learners"]
    hints = typing.get_type_hints(QGFConfig)  # resolves the string annotations of `from __future__ import annotations`
    group = parser.add_argument_group(
        "network and hyper-parameters (QGFConfig fields; defaults: the reference code's, or --preset's)"
    )
    widths = next(f.default for f in fields if f.name == HIDDEN_FIELDS[0])
    group.add_argument(
        "--hidden",
        type=int,
        default=argparse.SUPPRESS,
        help=f"width of every hidden layer of all three networks (default: {widths[0]})",
    )
    group.add_argument(
        "--layers",
        type=int,
        default=argparse.SUPPRESS,
        help=f"hidden layers of each of the three networks (default: {len(widths)}); the *-hidden "
        "flags below override both for their network",
    )
    for field in fields:
        _add_field_argument(group, field.name, field, hints[field.name], "QGFConfig")
    # Each learner (qgf_lite.learners): --<learner> enables it, --<learner>-<option> sets its options.
    from qgf_lite.learners import get_learner, learner_names

    for name in learner_names():
        learner = get_learner(name)
        group.add_argument(
            f"--{name}",
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=f"{learner.summary} (default: off)",
        )
        options_hints = typing.get_type_hints(learner.options)
        for field in dataclasses.fields(learner.options):
            _add_field_argument(
                group, f"{name}_{field.name}", field, options_hints[field.name], learner.options.__name__
            )


def _add_field_argument(group, dest: str, field, hint, owner: str, aliases=(), **extra) -> None:
    """One flag for a dataclass field (``dest`` with - for _). bool -> --flag/--no-flag; Tuple[X, ...] -> one or
    more values; Optional[X] -> --flag X, or --no-flag for None. ``aliases``: more names of the flag; ``extra``:
    argparse keywords that replace the generated ones (``action``, ``choices``, ``metavar``, ``type``, ``help``)."""
    flag = "--" + dest.replace("_", "-")
    flags = [flag, *FLAG_ALIASES.get(dest, ()), *aliases]
    default = " ".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
    kwargs = dict(dest=dest, default=argparse.SUPPRESS, help=f"{field.metadata.get('help', dest)} (default: {default})")
    args = typing.get_args(hint)

    def add(target, **generated):
        target.add_argument(*flags, **{**generated, **kwargs, **extra})

    if hint is bool:
        add(group, action=argparse.BooleanOptionalAction)
    elif hint in (int, float, str):
        add(group, type=hint)
    elif typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        add(group, type=args[0], nargs="+")
    elif typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        optional = group.add_mutually_exclusive_group()
        add(optional, type=next(a for a in args if a is not type(None)))
        optional.add_argument(
            flag.replace("--", "--no-", 1),
            dest=dest,
            action="store_const",
            const=None,
            default=argparse.SUPPRESS,
            help=f"{dest} = None (see {flag})",
        )
    else:  # fails at once (every `qgf-lite` call builds the parser) when a field of a new kind is added
        raise TypeError(f"{owner}.{field.name} has type {hint}; teach add_config_arguments to parse it.")


def config_overrides(args: argparse.Namespace) -> dict:
    """The QGFConfig fields and hidden/layers shorthands given on the command line, for ``train``/``make_config``."""
    from qgf_lite.ogbench.train import SHORTHANDS
    from qgf_lite.training import QGFConfig

    names = set(QGFConfig.option_names()).union(SHORTHANDS)
    # nargs="+" gives lists; QGFConfig is frozen and hashed (a static jit argument), so tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env", help="single-task dataset name, e.g. cube-single-play-singletask-task2-v0")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset-path", default=None, help="training .npz (its -val.npz must sit next to it)")
    data.add_argument(
        "--dataset-dir",
        default=None,
        help="folder with <env>-<type>-v0.npz (default ~/.ogbench/data), or with OGBench's 100M layout: "
        "<env>-<type>-100m-v0/ holding <env>-<type>-v0-000.npz, -001.npz, ... (streamed slice by "
        "slice; default $OGBENCH_DATA_DIR/<env>-<type>-100m-v0 when it exists)",
    )
    parser.add_argument(
        "--rotate-every",
        type=int,
        default=1000,
        help="with a 100M folder: steps on one slice before moving to the next (default 1000)",
    )
    parser.add_argument("--out", required=True, help="run folder: checkpoint.msgpack and log.jsonl go here")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="total training steps of the run (default: the preset's, 1000000 without one)",
    )
    parser.add_argument(
        "--preset",
        choices=("paper", "official-defaults"),
        default=None,
        help='start from a named setting (docs/algorithm.md "Presets"); the other flags override '
        "it. paper: 4 x 1024, batch 1024, discount 0.999, H 5, 500k steps; official-defaults: "
        "4 x 512, batch 256 (QGFConfig's defaults)",
    )
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more seeds (several: vmapped)")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--log-every", type=int, default=1_000)
    parser.add_argument("--init-from", default=None, help="start a new run from this checkpoint's weights")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_wandb_arguments(parser)
    add_config_arguments(parser)


def add_wandb_arguments(parser: argparse.ArgumentParser) -> None:
    """--wandb and its options (qgf_lite.tracking; needs the `wandb` extra)."""
    group = parser.add_argument_group("Weights & Biases (optional; pip install 'qgf_lite[wandb]')")
    group.add_argument(
        "--wandb",
        action="store_true",
        help="also log to a W&B run: config, losses, evaluation tables and video (runs always log to "
        "their folder); WANDB_MODE=offline logs without network, for a later `wandb sync`",
    )
    group.add_argument("--wandb-project", default="qgf_lite", help="W&B project (default qgf_lite)")
    group.add_argument("--wandb-name", default=None, help="W&B run name (default: W&B's)")
    group.add_argument(
        "--wandb-mode",
        choices=("online", "offline", "disabled"),
        default=None,
        help="W&B mode (default: $WANDB_MODE, else W&B's own default)",
    )


def wandb_tracker(args, job_type: str, directory):
    """A ``WandbTracker`` for ``--wandb``, else None; without the wandb package a ValueError saying how to get it
    (before any training or evaluation starts)."""
    if not getattr(args, "wandb", False):
        return None
    from qgf_lite.tracking import WandbTracker

    # W&B's files go to $WANDB_DIR when set, else next to the run's own (its folder, or the working directory).
    # (passed explicitly: W&B reads its environment once per process)
    directory = os.environ.get("WANDB_DIR") or directory
    try:
        return WandbTracker(
            project=args.wandb_project,
            name=args.wandb_name,
            mode=args.wandb_mode,
            directory=directory,
            job_type=job_type,
        )
    except ImportError as err:
        raise ValueError(str(err)) from err


class MethodNames(argparse.Action):
    """``--methods``: sampler names separated by spaces, commas or both (``bc qgf``, ``bc,qgf``, ``bc, qgf``), each
    one of ``qgf_lite.samplers.SAMPLER_NAMES``; an unknown name is argparse's "invalid choice" error."""

    def __call__(self, parser, namespace, values, option_string=None):
        from qgf_lite.samplers import SAMPLER_NAMES

        names = [name for value in values for name in value.split(",") if name.strip()]
        names = [name.strip() for name in names]
        if not names:
            parser.error(f"argument {option_string}: name at least one method, e.g. `bc qgf` or `bc,qgf`.")
        for name in names:
            if name not in SAMPLER_NAMES:
                parser.error(
                    f"argument {option_string}: invalid choice: {name!r} (choose from "
                    f"{', '.join(SAMPLER_NAMES)}; separate several by spaces or commas)"
                )
        setattr(namespace, self.dest, names)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, where to write, and one flag per EvalConfig field (``dest`` = the field name), made by
    ``_add_field_argument`` as ``train``'s are from QGFConfig; a flag left out keeps EvalConfig's default
    (``eval_settings``). ``eval_flag_options`` gives some flags their parser (--methods), choices or old names."""
    from qgf_lite.ogbench.evaluation import EvalConfig

    parser.add_argument("checkpoint", help="checkpoint.msgpack written by `qgf-lite train`")
    parser.add_argument("--env", default=None, help="single-task env name (default: the one it was trained on)")
    parser.add_argument("--out", default=None, help="folder for eval.json and the success-vs-weight plot")
    parser.add_argument("--video", default=None, help="also render one guided episode to this .mp4/.gif")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_wandb_arguments(parser)
    group = parser.add_argument_group("evaluation settings (EvalConfig fields)")
    hints = typing.get_type_hints(EvalConfig)
    options = eval_flag_options()
    for field in dataclasses.fields(EvalConfig):
        _add_field_argument(group, field.name, field, hints[field.name], "EvalConfig", **options.get(field.name, {}))


def eval_flag_options() -> dict:
    """What the generated eval flags need beyond their field's type: --methods' own parser (names separated by
    spaces or commas), the choices of --critic and --video-method, --steps as the old name of --flow-steps, and the
    help of the two flags whose command-line default differs from EvalConfig's."""
    from qgf_lite.guidance import MODES
    from qgf_lite.ogbench.evaluation import EvalConfig
    from qgf_lite.samplers import SAMPLER_NAMES, SAMPLERS
    from qgf_lite.training import CRITIC_CHOICES

    methods = "; ".join(f"{name}: {entry.summary}" for name, entry in SAMPLERS.items())
    return {
        "methods": dict(
            action=MethodNames,
            type=str,
            metavar="NAME",
            help=f"samplers to evaluate, separated by spaces or commas (`bc qgf fql` or `bc,qgf,fql`; "
            f"default: {' '.join(EvalConfig().methods)}). {methods}. A guidance mode "
            f"({', '.join(MODES)}) names guided in that mode, <mode>_best_of_n guided_best_of_n in "
            f"that mode. Choose from {', '.join(SAMPLER_NAMES)}",
        ),
        "flow_steps": dict(aliases=("--steps",), metavar="K"),
        "critic": dict(choices=CRITIC_CHOICES),
        "video_method": dict(choices=SAMPLER_NAMES, metavar="NAME"),
        "workers": dict(
            help="processes that step the environments while the sampler runs here "
            "(default: one per CPU core, at most --num-envs; 0: in this process)"
        ),
        "video_weight": dict(
            help="guidance weight of the video (default: the best weight > 0 of the video's sampler in this evaluation)"
        ),
    }


def eval_settings(args: argparse.Namespace):
    """The EvalConfig of the eval flags given; the others keep EvalConfig's defaults, but --workers (one per CPU
    core, at most --num-envs: the command line has the machine to itself)."""
    from qgf_lite.ogbench.evaluation import EvalConfig

    given = {name: getattr(args, name) for name in EvalConfig.names() if hasattr(args, name)}
    settings = EvalConfig(**given)
    if "workers" not in given:
        settings = settings.replace(workers=min(os.cpu_count() or 1, settings.num_envs))
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qgf-lite", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="generate an OGBench dataset with the scripted oracles", add_help=False)
    add_train_arguments(sub.add_parser("train", help="train BC (flow matching) + IQL on action chunks"))
    add_eval_arguments(sub.add_parser("eval", help="evaluate samplers of a checkpoint in its environment"))
    from qgf_lite.ogbench.sweep import add_sweep_arguments

    add_sweep_arguments(sub.add_parser("sweep", help="domains x tasks x seeds -> train -> evaluate, via submitit"))
    return parser


def run_train(args) -> int:
    from qgf_lite.ogbench.train import train
    from qgf_lite.training import PRESET_STEPS

    steps = args.steps if args.steps is not None else PRESET_STEPS.get(args.preset, 1_000_000)
    preset = {} if args.preset is None else {"preset": args.preset}
    tracker = wandb_tracker(args, "train", args.out)
    try:
        result = train(
            args.env,
            args.out,
            steps=steps,
            dataset_path=args.dataset_path,
            dataset_dir=args.dataset_dir,
            seeds=args.seed,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            init_from=args.init_from,
            progress=not args.no_progress,
            rotate_every=args.rotate_every,
            tracker=tracker,
            **preset,
            **config_overrides(args),
        )
    finally:
        if tracker is not None:
            tracker.finish()
    if result.start_step >= result.final_step:
        print(f"{result.checkpoint_path} is already at step {result.final_step}; nothing to do.")
        return 0
    resumed = f" (resumed from step {result.start_step})" if result.start_step else ""
    last = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k}={last[k]}" for k in ("policy_loss", "critic_loss", "value_loss") if k in last)
    print(
        f"trained to step {result.final_step}{resumed} in {result.seconds:.0f} s "
        f"({result.steps_per_second:.1f} steps/s); {losses}\n"
        f"checkpoint: {result.checkpoint_path}\nlog: {result.log_path}"
    )
    return 0


def best_guided_weight(report: dict, spec) -> float | None:
    """The weight > 0 of the report's best row among the weight sweep of ``spec`` (a SamplerSpec; its own weight
    is ignored), or None when the report has none."""
    from qgf_lite.samplers import SamplerSpec

    family = spec.with_weight(0.0) if spec.takes_weight else spec
    rows = [r for r in report["results"] if r["weight"] > 0 and SamplerSpec.from_dict(r).with_weight(0.0) == family]
    if not rows:
        return None
    return max(rows, key=lambda r: (r["success_rate"], r["return_mean"]))["weight"]


def run_eval(args) -> int:
    from qgf_lite.ogbench.evaluation import video_format_for

    settings = eval_settings(args)  # bad settings fail here, before the checkpoint is read
    if args.video:
        video_format_for(args.video)  # a bad video path fails now, not after the whole evaluation
    tracker = wandb_tracker(args, "eval", args.out)
    try:
        return _run_eval(args, settings, tracker)
    finally:
        if tracker is not None:
            tracker.finish()


def _run_eval(args, settings, tracker) -> int:
    from qgf_lite.ogbench.evaluation import evaluate, record_video, results_table

    report = evaluate(args.checkpoint, args.env, settings, out=args.out, progress=not args.no_progress)
    if tracker is not None:
        tracker.start(
            {
                "checkpoint": str(args.checkpoint),
                "env_name": report.get("env_name", args.env),
                **dataclasses.asdict(settings),
            }
        )
        tracker.log_eval(report)
    print(results_table(report))
    if args.out:
        print(f"wrote {os.path.join(args.out, 'eval.json')} and success_vs_weight.html")
    if args.video:
        if not hasattr(args, "video_weight"):  # the best weight of the video's sampler family in this evaluation
            family = settings.video_spec(report["flow_steps"])
            weight = best_guided_weight(report, family)
            weight = weight if weight is not None else (settings.weights[0] if settings.weights else 0.0)
            settings = settings.replace(video_weight=weight)
        video = record_video(args.checkpoint, args.video, args.env, settings)
        print(f"video ({video['setting']}, success={video['success']}): {video['path']}")
        if tracker is not None:
            tracker.log_video(video["path"], caption=f"{video['setting']}, success={video['success']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate":
        from qgf_lite.ogbench.generate import main_generate

        return main_generate(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sweep":
            from qgf_lite.ogbench.sweep import run_sweep_command

            return run_sweep_command(args)
        return run_train(args) if args.command == "train" else run_eval(args)
    except USER_ERRORS as err:
        print(f"qgf-lite {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " Rerun the same command to resume from the last checkpoint." if args.command == "train" else ""
        print(f"qgf-lite {args.command}: interrupted.{hint}", file=sys.stderr)
        return 130


__all__ = [
    "add_config_arguments",
    "add_eval_arguments",
    "add_train_arguments",
    "add_wandb_arguments",
    "best_guided_weight",
    "build_parser",
    "config_overrides",
    "eval_flag_options",
    "eval_settings",
    "FLAG_ALIASES",
    "main",
    "MethodNames",
    "run_eval",
    "run_train",
    "USER_ERRORS",
    "wandb_tracker",
]


if __name__ == "__main__":
    sys.exit(main())
